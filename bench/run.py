"""The bench's one command: `python -m bench.run [--quick] [--parts ...] [--ckpt PATH --images DIR]`.

Starts a real ComfyUI in this process on the CPU (as the tests do), runs the chosen parts,
prints each part's markdown and writes <out>/<part>.md and .png, then <out>/summary.md with
the headline figures of every part, this run's and, for the parts it did not run, the last run's
(kept in <out>/summary.json). --quick is the smoke-test size (seconds per part); the default
is the full CPU run committed in bench/results (every part but edits and controls, with all four
methods of edict_core.spec.SPECS: 56.2 minutes on 2 cores).
The methods are SPECS' (bench/methods.py): one added there joins every part.
"""

import argparse
import json
import math
import os
import time

from . import env, report

PARTS = ("reconstruction", "edit_fidelity", "cost", "scaling", "convergence", "model", "edits", "controls")

FULL = {
    "analytic_steps": (50, 100, 200), "analytic_per_class": 4,
    # The whole grid of the EDICT paper's Table 1 on the tiny checkpoint too: about 11k model
    # calls, some 11 minutes on 2 idle cores.
    "tiny_steps": (50, 100, 200), "tiny_guidance": (("uncond", 1.0), ("cond", 1.0), ("cond", 3.0), ("cond", 7.0)),
    "edit": dict(strengths=(0.3, 0.5, 0.7, 0.9), cfgs=(1.0, 3.0, 7.0), steps=50, per_class=8,
                 sweep_steps=(20, 50, 100, 200)),
    "cost": dict(sizes=((64, 32), (256, 8)), rounds=5, memory_sizes=(64, 128, 256)),
    "scaling": dict(steps_list=(10, 20, 50, 100, 200, 500), batches=(1, 2, 4, 8), batch_steps=8, repeats=3),
    "convergence": dict(calls=(10, 14, 20, 25, 35, 50, 70, 100, 140, 200), trip_steps=(10, 20, 50, 100, 200, 500, 1000),
                        per_class=2, asymptotic_from=70),
    # The committed learned model (bench/learned_model.py): what it draws, as its manifest measured it.
    "model": dict(count=200, cfgs=(3.0, 7.5), steps=30),
    # The same model edited three ways.
    "edits": dict(scenes_count=100, cfgs=(1.0, 3.0, 7.0), denoises=(0.6, 0.8, 1.0), steps=50, accuracy_count=100,
                  round_trip_denoises=(1.0,)),
    # The same model edited with attention control (bench/controls.py).
    "controls": dict(scenes_count=12, cfgs=(1.0, 3.0, 7.0), denoise=1.0, steps=50),
}
QUICK = {
    "analytic_steps": (4, 8), "analytic_per_class": 1,
    "tiny_steps": (3,), "tiny_guidance": (("cond", 7.0),),
    "edit": dict(strengths=(0.5, 0.9), cfgs=(3.0,), steps=16, per_class=2, sweep_steps=(8, 16),
                 schedulers=("normal", "karras"), scheduler_strengths=(0.5,)),
    "cost": dict(sizes=((64, 4),), rounds=1, memory_sizes=(64, 128)),
    "scaling": dict(steps_list=(4, 8), batches=(1, 2), batch_steps=3, repeats=1),
    "convergence": dict(calls=(10, 20, 40), trip_steps=(10, 20), per_class=1, rk4_steps=(200, 400), asymptotic_from=20),
    # The committed learned model in each (the same file on every machine, digest checked).
    "model": dict(count=8, cfgs=(3.0,), steps=10),
    "edits": dict(scenes_count=3, cfgs=(3.0,), denoises=(0.8, 1.0), steps=6, accuracy_count=6),
    "controls": dict(scenes_count=2, cfgs=(3.0,), steps=6, method_names=("BDIA", "DDIM")),
}


def run_parts(comfy, out_dir, parts, sizes, ckpt=None, images=None):
    """Run `parts` at `sizes` (FULL or QUICK); returns {part: result}."""
    from . import controls, convergence, cost, edit_fidelity, edits, learned_model, reconstruction, scaling

    results = {}
    if "reconstruction" in parts:
        tiny_blocks = [(sizes["tiny_steps"], sizes["tiny_guidance"])]
        scenes = [(reconstruction.analytic_scene(sizes["analytic_per_class"]),
                   [(sizes["analytic_steps"], reconstruction.GUIDANCE)]),
                  (reconstruction.tiny_scene(comfy), tiny_blocks)]
        if ckpt:
            scenes.append((reconstruction.checkpoint_scene(comfy, ckpt, images),
                           [((50, 100, 200), reconstruction.GUIDANCE)]))
        results["reconstruction"] = reconstruction.run(comfy, out_dir, scenes)
    if "edit_fidelity" in parts:
        results["edit_fidelity"] = edit_fidelity.run(comfy, out_dir, **sizes["edit"])
    if "cost" in parts:
        results["cost"] = cost.run(comfy, out_dir, **sizes["cost"])
    if "scaling" in parts:
        results["scaling"] = scaling.run(comfy, out_dir, **sizes["scaling"])
    if "convergence" in parts:
        results["convergence"] = convergence.run(out_dir, **sizes["convergence"])
    for name, module in (("model", learned_model), ("edits", edits), ("controls", controls)):  # the learned model's
        if name in parts:
            results[name] = module.run(comfy, out_dir, **sizes[name])
    return results


def _ratio(value):
    return "inf (exact to the last float32 bit)" if math.isinf(value) else f"{value:.3g}"


def sections(results):
    """Each part's headline lines, as markdown: {part: [line]} for the parts in `results`."""
    found = {}
    if "reconstruction" in results:
        lines = found.setdefault("reconstruction", [])
        lines.append("**Reconstruction error ratios at cfg 7, conditional** ([table](reconstruction.md)):\n")
        from .reconstruction import headline

        def ratios_text(by_method):
            return ", ".join(f"DDIM/{method} {_ratio(value)}" for method, value in by_method.items())

        for name, (rows, ratios) in results["reconstruction"].items():
            for steps, by_method in sorted(ratios.items()):
                lines.append(f"- {name}, {steps} steps, latent MSE: {ratios_text(by_method)}")
            if any("pixel_mse" in r for r in rows):
                for steps, by_method in sorted(headline(rows, "pixel_mse").items()):
                    lines.append(f"- {name}, {steps} steps, pixel MSE (VAE floor included): {ratios_text(by_method)}")
    if "cost" in results:
        lines = found.setdefault("cost", [])
        c = results["cost"]
        lines.append("\n**Time per model call against KSampler (euler), calls counted** ([table](cost.md)):\n")
        for (name, size), value in c["ratios"].items():
            if name != "KSampler":
                shape = c["shapes"][size]
                lines.append(f"- {name}, latent {shape[2]}x{shape[3]}: {value:.3f}x")
        if c["missed"]:
            lines.append("- target 1.05x missed by: " + ", ".join(f"{n} at {s}x{s}" for n, s in c["missed"])
                         + " (profile in cost.md)")
        largest = max(c["memory"])
        peaks, latent_bytes = c["memory"][largest]
        lines.append(f"\n**Extra peak memory against KSampler** (latent-sized buffers; at image {largest}x{largest}, "
                     "and the fitted slope k that grows with the latent):\n")
        for name, (fixed, slope) in c["fits"].items():
            extra = (peaks[name][0] - peaks["KSampler"][0]) / latent_bytes
            lines.append(f"- {name}: {extra:.1f} at {largest}x{largest}; k = {slope:.2f}, fixed {fixed / 1024:.0f} KiB")
    if "scaling" in results:
        lines = found.setdefault("scaling", [])
        s = results["scaling"]
        lines.append("\n**Scaling** ([table](scaling.md)):\n")
        lines += [f"- {what} against {against}: {fit}; max deviation ({judged}) {dev}, linear: {ok}"
                  for what, against, fit, judged, dev, ok in s["lines"]]
        lines += [f"- {method}'s float64 round trip: relative error above 1e-13 first at {steps} steps" if steps
                  else f"- {method}'s float64 round trip: relative error below 1e-13 at every step count run"
                  for method, steps in s["onset"].items()]
        lines.append(f"- float32 round-trip error at {s['last_steps']} steps (cfg 7): "
                     + ", ".join(f"{m} {e:.3g}" for m, e in s["error_at_last"].items()))
    if "edit_fidelity" in results:
        lines = found.setdefault("edit_fidelity", [])
        e = results["edit_fidelity"]
        lines.append("\n**Edit fidelity** (analytic model, strength 0.7, hit rate / position kept; "
                     "[table](edit_fidelity.md)):\n")
        for cfg in sorted({r["cfg"] for r in e["rows"]}):
            picked = [r for r in e["rows"] if r["cfg"] == cfg and r["strength"] == 0.7]
            if picked:
                lines.append(f"- cfg {cfg:g}, {picked[0]['steps']} steps: "
                             + ", ".join(f"{r['method']} {r['hit']:.2f} / {r['position']:.3f}" for r in picked))
        for n in sorted({r["steps"] for r in e["sweep"]}):
            lines.append(f"- cfg 7, {n} steps, position kept: "
                         + ", ".join(f"{r['method']} {r['position']:.3f}" for r in e["sweep"] if r["steps"] == n))
        for name, strength, cfg in dict.fromkeys((r["scheduler"], r["strength"], r["cfg"]) for r in e["by_scheduler"]):
            lines.append(f"- {name} scheduler, strength {strength:g}, cfg {cfg:g}, position kept: "
                         + ", ".join(f"{r['method']} {r['position']:.3f}" for r in e["by_scheduler"]
                                     if (r["scheduler"], r["strength"]) == (name, strength)))
    if "model" in results:
        lines = found.setdefault("model", [])
        m = results["model"]
        lines.append(f"\n**The learned model** ([table](learned_model.md)): trained {m['info']['seconds'] / 60:.0f} "
                     "minutes, committed; held-out text to image, colour / shape / background:\n")
        lines += [f"- cfg {cfg:g}: {a['color']:.2f} / {a['shape']:.2f} / {a['background']:.2f}"
                  for cfg, a in m["accuracy"].items()]
    if "edits" in results:
        lines = found.setdefault("edits", [])
        e = results["edits"]
        a = e["accuracy"]
        lines.append(f"\n**Edits on the learned model** ([table](edits.md)): held-out text to image at cfg 3: "
                     f"colour {a['color']:.2f}, shape {a['shape']:.2f}, background {a['background']:.2f}\n")
        from .edits import ratios
        for cfg in sorted({t["cfg"] for t in e["trips"]}):
            top = max(t["denoise"] for t in e["trips"])
            r = ratios(e["trips"], cfg, top)
            lines.append(f"- cfg {cfg:g}, denoise {top:g}, round-trip latent MSE: "
                         + ", ".join(f"DDIM/{m} {_ratio(v)}" for m, v in r.items()))
        for cfg, by_method in e["matched"].items():
            lines.append(f"- cfg {cfg:g}, at equal hit rate with DDIM, structure distance / background PSNR: "
                         + ", ".join(f"{m} {v[1][0]:.3f} / {v[1][1]:.1f} vs DDIM {v[2][0]:.3f} / {v[2][1]:.1f} "
                                     f"(hit {v[0]:.2f})" if v else f"{m} n/a" for m, v in by_method.items()))
    if "controls" in results:
        lines = found.setdefault("controls", [])
        lines.append("\n**Attention control on the learned model** ([table](controls.md)): structure distance / "
                     "background PSNR / hit, by method, cfg and control:\n")
        lines += [f"- {m}, cfg {cfg:g}, {row}: {v['structure']:.3f} / {v['psnr']:.1f} dB / {v['hit']:.2f}"
                  for (m, cfg, row), v in results["controls"]["averaged"].items()]
    if "convergence" in results:
        lines = found.setdefault("convergence", [])
        lines.append("\n**Order of convergence and exact range** (analytic model; [table](convergence.md)):\n")
        lines += [f"- {line}" for line in results["convergence"]["lines"]]
    return found


def summary(results, seconds, load=None, earlier=None):
    """The headline figures, as markdown, in PARTS' order. load: the 1-minute load average at the
    start. earlier: {part: {"lines", "run"}} of parts an earlier run measured (summary.json),
    kept where this run did not run them, each with the run it came from."""
    at_start = f"; load average {load:.2f} at its start" if load is not None else ""
    run = f"{time.strftime('%Y-%m-%d %H:%M')}, {seconds / 60:.1f} minutes on {report.machine()}{at_start}"
    merged = dict(earlier or {})
    merged.update({part: {"lines": lines, "run": run} for part, lines in sections(results).items()})
    text = [f"# Benchmark summary\n\nComputed by `python -m bench.run`; this run: {run}. A part that this run "
            "did not run keeps the lines of the run that last ran it, named under them.\n"]
    for part in PARTS:
        if part in merged:
            text += merged[part]["lines"]
            if merged[part]["run"] != run:
                text.append(f"\n(from an earlier run: {merged[part]['run']})")
    return "\n".join(text) + "\n", merged




def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (seconds per part)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--ckpt", help="a checkpoint file to add to the reconstruction table")
    parser.add_argument("--images", help="a folder of images for --ckpt (captions as <name>.txt)")
    parser.add_argument("--out", default=env.RESULTS, help="where the tables and plots go")
    parser.add_argument("--tiny-steps", type=int, nargs="+", help="tiny checkpoint's step counts (e.g. 50 100 200)")
    parser.add_argument("--edits-scenes", type=int,
                        help="held-out scenes of the edits part (default 100; fewer where the cores are shared)")
    parser.add_argument("--tiny-guidance", choices=("uncond", "1", "3", "7"), nargs="+",
                        help="tiny checkpoint's guidance settings (cfg values are conditional)")
    args = parser.parse_args(argv)
    if bool(args.ckpt) != bool(args.images):
        parser.error("--ckpt and --images go together")
    start, load = time.perf_counter(), os.getloadavg()[0]
    comfy = env.start()
    sizes = dict(QUICK if args.quick else FULL)
    if args.tiny_steps:
        sizes["tiny_steps"] = tuple(args.tiny_steps)
    if args.tiny_guidance:
        sizes["tiny_guidance"] = tuple(("uncond", 1.0) if g == "uncond" else ("cond", float(g))
                                       for g in args.tiny_guidance)
    if args.edits_scenes:
        full = dict(sizes["edits"])["scenes_count"]
        sizes["edits"] = dict(sizes["edits"], scenes_count=args.edits_scenes)
        if args.edits_scenes < full:
            sizes["edits"]["reduction"] = (f"{args.edits_scenes} held-out scenes instead of {full} (`--edits-scenes "
                                           f"{args.edits_scenes}`), to fit the run in the time a session had on 2 CPU cores; "
                                           "every cfg, denoise, method and edit of the full grid ran.")
    results = run_parts(comfy, args.out, args.parts, sizes, args.ckpt, args.images)
    kept = os.path.join(args.out, "summary.json")  # every part's last headline, so a partial run keeps the rest
    earlier = {}
    if os.path.exists(kept):
        with open(kept) as f:
            earlier = json.load(f)
    text, merged = summary(results, time.perf_counter() - start, load, earlier)
    print(text)
    with open(kept, "w") as f:
        json.dump(merged, f, indent=1)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
