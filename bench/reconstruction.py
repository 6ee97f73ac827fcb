"""Part 1: reconstruction error, after the EDICT paper's Table 1.

Invert a clean latent fully (denoise 1.0, the paper's setting) and sample it back with the
same conditioning and cfg; score the result against the input. Every exact method of
edict_core.spec.SPECS (methods.EXACT) and DDIM inversion, each unconditional (empty prompt /
uniform class mixture, cfg 1) and conditional at cfg 1, 3 and 7, for each step count.
Three kinds of model:

- analytic: the Gaussian-class model of analytic_model.py (the truth is known);
- tiny: the seeded tiny SD1.x checkpoint of the tests, on images drawn in code;
- checkpoint: any checkpoint and a folder of images (SD1.5 on COCO val is the paper's).

Errors: latent MSE (mean over elements, in LATENT units), and where a VAE exists pixel
MSE in [0, 1] of the decoded result against the image, beside the VAE's own round-trip
floor MSE(decode(encode(image)), image), which no inversion can beat.
"""

import glob
import math
import os

import numpy as np
import torch
from PIL import Image

from . import analytic_model as am
from . import env, methods, report
from .methods import Run

GUIDANCE = (("uncond", 1.0), ("cond", 1.0), ("cond", 3.0), ("cond", 7.0))


def analytic_scene(per_class=4, size=4, seed=0):
    """Exact samples of every class, each conditioned on its own class."""
    classes = am.GaussianClasses(size=size, seed=seed)
    labels = torch.arange(classes.num_classes).repeat_interleave(per_class)
    x0 = classes.sample(labels, torch.Generator().manual_seed(seed + 1))
    return {"name": "analytic", "model": am.analytic_model(classes),
            "positive": am.class_conditioning(classes, labels), "uncond": am.unconditional(classes),
            "latent": am.latent(x0)}


def tiny_scene(comfy, batch=1, size=64):
    """Drawn pictures through the tiny checkpoint's VAE; the prompt from the tests."""
    clip, vae = comfy.tiny["clip"], comfy.tiny["vae"]
    return _vae_scene(comfy, "tiny", comfy.tiny["model"], clip, vae, env.drawn_images(batch, size),
                      "a photo of a dog on the beach")


def checkpoint_scene(comfy, ckpt, image_dir, size=512, limit=None):
    """Any checkpoint and a folder of images, center-cropped to size x size. A caption can
    sit beside an image as <name>.txt (COCO captions, say); the first image's caption, or
    "a photograph", conditions the whole batch."""
    model, clip, vae = env.load_checkpoint(comfy, ckpt)
    paths = sorted(p for p in glob.glob(os.path.join(image_dir, "*"))
                   if p.lower().endswith((".png", ".jpg", ".jpeg", ".webp")))[:limit]
    if not paths:
        raise SystemExit(f"no images in {image_dir}")
    images = torch.stack([_load_image(p, size) for p in paths])
    caption = os.path.splitext(paths[0])[0] + ".txt"
    prompt = open(caption).read().strip() if os.path.exists(caption) else "a photograph"
    return _vae_scene(comfy, os.path.basename(ckpt), model, clip, vae, images, prompt)


def _load_image(path, size):
    image = Image.open(path).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)


def _vae_scene(comfy, name, model, clip, vae, images, prompt):
    with torch.inference_mode():
        latent = comfy.VAEEncode().encode(vae, images)[0]
        floor = float(((comfy.VAEDecode().decode(vae, latent)[0] - images) ** 2).mean())
    return {"name": name, "model": model, "positive": env.encode_text(comfy, clip, prompt),
            "uncond": env.encode_text(comfy, clip, ""), "latent": latent,
            "vae": vae, "images": images, "vae_floor": floor}


def measure(comfy, scene, steps_list, guidance=GUIDANCE):
    """Round trips for every method, guidance and step count. Returns a list of rows
    {method, guidance, cfg, steps, latent_mse, rel_error, pixel_mse?}."""
    original = scene["latent"]["samples"]
    rows = []
    for kind, cfg in guidance:
        positive = scene["uncond"] if kind == "uncond" else scene["positive"]
        for steps in steps_list:
            run = Run(scene["model"], positive, scene["uncond"], cfg, steps)
            for method in methods.METHODS:
                inverted = methods.invert(comfy, method, run, scene["latent"])
                back = methods.regenerate(comfy, method, run, inverted)
                row = {"method": method, "guidance": kind, "cfg": cfg, "steps": steps,
                       "latent_mse": float(((back.double() - original.double()) ** 2).mean()),
                       "rel_error": env.relative_error(back, original)}
                if "vae" in scene:
                    with torch.inference_mode():
                        decoded = comfy.VAEDecode().decode(scene["vae"], {"samples": back})[0]
                    row["pixel_mse"] = float(((decoded - scene["images"]) ** 2).mean())
                rows.append(row)
    return rows


def ratio(a, b):
    """a / b, infinite where b is exactly 0 (a round trip exact to the last bit)."""
    return math.inf if b == 0 else a / b


def headline(rows, metric="latent_mse", cfg=7.0):
    """{steps: {exact method: DDIM's error / the method's}} at cfg 7 (conditional)."""
    pick = {(r["method"], r["steps"]): r[metric] for r in rows if r["guidance"] == "cond" and r["cfg"] == cfg}
    steps = sorted({s for _, s in pick})
    return {s: {m: ratio(pick[("DDIM", s)], pick[(m, s)]) for m in methods.EXACT} for s in steps}


def _label(row):
    return "uncond" if row["guidance"] == "uncond" else f"cond cfg {row['cfg']:g}"


def markdown(scene, rows):
    steps = sorted({r["steps"] for r in rows})
    metrics = [("latent_mse", "latent MSE")] + ([("pixel_mse", "pixel MSE")] if "vae" in scene else [])
    parts = []
    for metric, title in metrics:
        lookup = {(r["method"], _label(r), r["steps"]): r[metric] for r in rows}
        labels = list(dict.fromkeys(_label(r) for r in rows))
        body = [[m, label] + [lookup.get((m, label, s), "-") for s in steps] for m in methods.METHODS for label in labels]
        parts.append(f"**{title}** by steps:\n\n" + report.table(["method", "guidance"] + [f"{s} steps" for s in steps], body))
    if "vae" in scene:
        parts.append(f"VAE round-trip floor (pixel MSE of decode(encode(image))): {scene['vae_floor']:.3g}")
    ratio_columns = ["steps"] + [f"DDIM / {m}" for m in methods.EXACT]
    ratios = headline(rows)
    parts.append("**Error ratios at cfg 7, conditional (latent MSE)**:\n\n"
                 + report.table(ratio_columns, [[s, *ratios[s].values()] for s in sorted(ratios)]))
    if "vae" in scene:
        pixel = headline(rows, "pixel_mse")
        parts.append("**Error ratios at cfg 7, conditional (pixel MSE, VAE floor included, as the paper)**:\n\n"
                     + report.table(ratio_columns, [[s, *pixel[s].values()] for s in sorted(pixel)]))
    return "\n\n".join(parts)


def plot(ax, rows, title):
    """Latent MSE against steps, one line per method and guidance (log scale; exact zeros
    are drawn at 1e-20 so they stay visible)."""
    marks = {"uncond": "o", "cond cfg 1": "s", "cond cfg 3": "^", "cond cfg 7": "D"}
    for method in methods.METHODS:
        for label, mark in marks.items():
            pts = sorted((r["steps"], max(r["latent_mse"], 1e-20)) for r in rows
                         if r["method"] == method and _label(r) == label)
            if pts:
                ax.plot(*zip(*pts), marker=mark, color=methods.color(method), label=f"{method} {label}", alpha=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("steps")
    ax.set_ylabel("latent MSE of the round trip")
    ax.set_title(title)


def run(comfy, out_dir, scenes_and_grids):
    """scenes_and_grids: [(scene, [(steps_list, guidance), ...])], each grid a block of the
    scene's table (cells no block covers print "-"). Writes reconstruction.md/.png and
    returns {scene name: (rows, headline ratios)}."""
    fig, axes = report.figure(len(scenes_and_grids))
    sections, results = [], {}
    for ax, (scene, grids) in zip(axes[0], scenes_and_grids):
        rows = [row for steps_list, guidance in grids for row in measure(comfy, scene, steps_list, guidance)]
        shape = tuple(scene["latent"]["samples"].shape)
        sections.append(f"## {scene['name']} (latent {shape})\n\n{markdown(scene, rows)}")
        plot(ax, rows, f"{scene['name']} {shape}")
        results[scene["name"]] = (rows, headline(rows))
    axes[0][-1].legend(fontsize=6, ncol=3)
    intro = ("Full inversion (denoise 1.0), normal scheduler, "
             + ", ".join(methods.settings_text(m) for m in methods.EXACT)
             + "; inverted and regenerated with the same conditioning and cfg. Unconditional = "
             "the empty prompt (analytic: the uniform class mixture) at cfg 1. EDICT's result is "
             "its pair averaged by Latent Pair Mix (0.5). An error of exactly 0 means the round "
             "trip returned every float32 of the latent.")
    report.write_part(out_dir, "reconstruction", "Reconstruction error (EDICT paper, Table 1)",
                      intro + "\n\n" + "\n\n".join(sections), fig)
    return results
