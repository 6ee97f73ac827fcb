"""The demo: the EDICT edit and round-trip example workflows, headless through a real ComfyUI
server, or the ComfyUI UI with the pack installed (--ui). Run it through scripts/demo.sh,
which sets up the same environment as the tests.

Without --ckpt it uses the tiny seeded checkpoint the tests build (random weights: the
pictures are noise-like, the round-trip figures are real) and a picture drawn here."""

import argparse
import os
import shutil
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(REPO)  # for harness/; appended, so the pack's nodes/ never shadows ComfyUI's

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from harness.comfy import CKPT_NAME, PACK_NAME, relative_error  # noqa: E402
from harness.server import ComfyServer, prepare_base as prepare_server_base  # noqa: E402
from harness.workflows import INPUT_IMAGE, adapted, api_prompt, nodes_of_type  # noqa: E402

BASE = os.path.join(REPO, ".demo")  # reused between runs: the tiny checkpoint is built once
# Round-trip latents to save, by the class of the node that makes them.
RECONSTRUCTIONS = {"EDICTSample": "EDICT", "BDIASample": "BDIA", "SamplerCustom": "DDIM"}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", help="an SD1.5 checkpoint file (default: the tiny seeded one)")
    parser.add_argument("--image", help="a photo to edit (default: a picture drawn by the demo)")
    parser.add_argument("--out", default=os.path.join(REPO, "demo_output"), help="where the PNGs and report.md go")
    parser.add_argument("--steps", type=int, default=50, help="steps of every sampler (the papers' 50)")
    parser.add_argument("--gpu", action="store_true", help="let ComfyUI use the GPU (default: --cpu)")
    parser.add_argument("--ui", action="store_true", help="start the ComfyUI UI on 127.0.0.1 instead")
    parser.add_argument("--port", type=int, default=8188, help="port of the UI (with --ui)")
    return parser.parse_args()


def prepare_base(args):
    """The demo's ComfyUI base directory with the checkpoint and the input image in place.
    Returns the checkpoint's name."""
    prepare_server_base(BASE, picture_size=512 if args.ckpt else 64)
    if args.image:
        Image.open(args.image).convert("RGB").save(os.path.join(BASE, "input", INPUT_IMAGE))
    if not args.ckpt:
        return CKPT_NAME
    ckpt_name = os.path.basename(args.ckpt)
    link = os.path.join(BASE, "models", "checkpoints", ckpt_name)
    if os.path.islink(link):
        os.remove(link)
    os.symlink(os.path.abspath(args.ckpt), link)
    return ckpt_name


def with_measurements(prompt):
    """The round-trip prompt plus SaveLatent nodes on the input latent and each reconstruction,
    and the input through the VAE alone: the best any inversion can decode to."""
    prompt = dict(prompt)
    encode, loader = nodes_of_type(prompt, "VAEEncode")[0], nodes_of_type(prompt, "CheckpointLoaderSimple")[0]
    prompt["vae_decode"] = {"class_type": "VAEDecode", "inputs": {"samples": [encode, 0], "vae": [loader, 2]}}
    prompt["vae_save"] = {"class_type": "SaveImage", "inputs": {"images": ["vae_decode", 0], "filename_prefix": "demo/vae"}}
    sources = {"input": encode}
    for class_type, method in RECONSTRUCTIONS.items():
        # the DDIM pair is inversion -> sampling: the sampling node reads the inversion's output
        sources[method] = [i for i in nodes_of_type(prompt, class_type)
                           if prompt[prompt[i]["inputs"]["latent_image"][0]]["class_type"] != "VAEEncode"][0]
    for key, node_id in sources.items():
        prompt[f"save_{key}"] = {"class_type": "SaveLatent",
                                 "inputs": {"samples": [node_id, 0], "filename_prefix": f"demo/{key}"}}
    return prompt


def output_file(entry, node_id, kind):
    item = entry["outputs"][node_id][kind][0]
    return os.path.join(BASE, "output", item["subfolder"], item["filename"])


def run(server, prompt, what):
    print(f"[demo] running {what} ...", flush=True)
    start = time.time()
    entry = server.run_prompt(prompt, timeout=3600)
    if entry["status"]["status_str"] != "success":
        raise SystemExit(f"[demo] {what} failed: {entry['status']['messages'][-1]}\n{server.log()}")
    return entry, time.time() - start


def side_by_side(paths, titles, target):
    pictures = [Image.open(p).convert("RGB") for p in paths]
    width, height = pictures[0].size
    scale = max(1, 256 // width)
    canvas = Image.new("RGB", (len(pictures) * width * scale, height * scale), "white")
    for i, picture in enumerate(pictures):
        canvas.paste(picture.resize((width * scale, height * scale), Image.NEAREST), (i * width * scale, 0))
    canvas.save(target)
    return f"{target} ({' | '.join(titles)})"


def headless(args, ckpt_name):
    os.makedirs(args.out, exist_ok=True)
    fitted = dict(ckpt=ckpt_name, image=INPUT_IMAGE, steps=args.steps)
    server = ComfyServer(BASE, cpu=not args.gpu).start()
    try:
        edit, edit_time = run(server, adapted(api_prompt("edict_edit"), **fitted), "the EDICT edit")
        round_trip, round_trip_time = run(server, with_measurements(adapted(api_prompt("round_trip_check"), **fitted)),
                                          "the round-trip check (EDICT, BDIA, DDIM)")
    finally:
        server.stop()

    prompt = api_prompt("round_trip_check")
    files = {"input.png": os.path.join(BASE, "input", INPUT_IMAGE),
             "edit.png": output_file(edit, nodes_of_type(api_prompt("edict_edit"), "SaveImage")[0], "images")}
    for node_id in nodes_of_type(prompt, "SaveImage"):
        method = prompt[node_id]["inputs"]["filename_prefix"].split("_")[-1]
        files[f"reconstruction_{method}.png"] = output_file(round_trip, node_id, "images")
    files["vae_only.png"] = output_file(round_trip, "vae_save", "images")
    for name, source in files.items():
        shutil.copyfile(source, os.path.join(args.out, name))
    reference = load_file(output_file(round_trip, "save_input", "latents"))["latent_tensor"].double()
    errors = {m: relative_error(load_file(output_file(round_trip, f"save_{m}", "latents"))["latent_tensor"], reference)
              for m in RECONSTRUCTIONS.values()}
    out = lambda name: os.path.join(args.out, name)  # noqa: E731
    before_after = side_by_side(
        [out(n) for n in ("input.png", "vae_only.png", "reconstruction_edict.png", "reconstruction_ddim.png", "edit.png")],
        ["input", "VAE encode+decode", "EDICT round trip", "DDIM round trip", "EDICT edit"], out("before_after.png"))
    write_report(args, ckpt_name, errors, edit_time, round_trip_time, out("report.md"))
    print(open(out("report.md")).read())
    print(f"[demo] wrote {args.out}: input.png, reconstruction_edict.png, reconstruction_bdia.png, "
          f"reconstruction_ddim.png, vae_only.png, edit.png, report.md\n[demo] side by side: {before_after}")


def write_report(args, ckpt_name, errors, edit_time, round_trip_time, path):
    prompt = api_prompt("round_trip_check")
    invert = prompt[nodes_of_type(prompt, "EDICTInvert")[0]]["inputs"]
    with open(path, "w") as f:
        f.write(f"# Exact inversion demo\n\ncheckpoint `{ckpt_name}`, image `{args.image or 'drawn by the demo'}`, "
                f"{args.steps} steps at denoise {invert['denoise']}, cfg {invert['cfg']}, "
                f"device {'GPU' if args.gpu else 'CPU'}, torch {torch.__version__}\n\n"
                "Round trip (invert, then sample with the same prompt), relative error of the latent:\n\n"
                "| method | relative error |\n|---|---|\n")
        for method, error in errors.items():
            f.write(f"| {method}{' inversion (Euler backwards, FlipSigmas)' if method == 'DDIM' else ''} | {error:.2e} |\n")
        f.write("\nThe decoded reconstructions can match the input only as far as the VAE does (vae_only.png); "
                "the tiny default checkpoint has a random-weight VAE, so its pictures are noise-like.\n")
        f.write(f"\nTime: EDICT edit {edit_time:.1f} s; round-trip check (EDICT, BDIA and DDIM, each "
                f"inverting and sampling) {round_trip_time:.1f} s; {os.cpu_count()} CPU cores, load average "
                f"{os.getloadavg()[0]:.1f} at the end (times grow with other work on the machine).\n")


def ui(args):
    server = ComfyServer(BASE, port=args.port, cpu=not args.gpu, log_path="/dev/stdout")  # ComfyUI's log and progress bars in this terminal
    server.start()
    print(f"\n[demo] ComfyUI with the pack: {server.url}\n"
          f"[demo] the EDICT edit example: {server.url}/?template=edict_edit&source={PACK_NAME}\n"
          f"[demo] every example: Templates (left bar) -> Extensions -> {PACK_NAME}\n"
          "[demo] choose your checkpoint in Load Checkpoint; Ctrl+C stops the server.", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a kill stops the server too, as Ctrl+C does
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def main():
    args = parse_args()
    ckpt_name = prepare_base(args)
    if args.ui:
        ui(args)
    else:
        headless(args, ckpt_name)


if __name__ == "__main__":
    main()
