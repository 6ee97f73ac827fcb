"""The bench's one command: `python -m bench.run [--quick] [--parts ...] [--ckpt PATH --images DIR]`.

Starts a real ComfyUI in this process on the CPU (as the tests do), runs the chosen parts,
prints each part's markdown and writes <out>/<part>.md and .png, then <out>/summary.md
with the headline figures. --quick is the smoke-test size (seconds per part); the default
is the full CPU run committed in bench/results (about 15 minutes on 2 shared cores).
"""

import argparse
import math
import os
import time

from . import env

PARTS = ("reconstruction", "edit_fidelity", "cost", "scaling")

FULL = {
    "analytic_steps": (50, 100, 200), "analytic_per_class": 4,
    # The tiny UNet costs 0.3 s per call on 2 idle CPU cores and several seconds on a
    # shared, loaded one; its full grid (11k calls) would take hours there. The committed CPU
    # run keeps 10 steps at cfg 7 for it; --tiny-steps/--tiny-guidance restore the grid.
    "tiny_steps": (10,), "tiny_guidance": (("cond", 7.0),),
    "edit": dict(strengths=(0.3, 0.5, 0.7, 0.9), cfgs=(3.0, 7.0), steps=20, per_class=8),
    "cost": dict(size=64, calls=4, rounds=5),
    "scaling": dict(steps_list=(10, 20, 50, 100, 200, 500), batches=(1, 2, 4, 8), batch_calls=1),
}
QUICK = {
    "analytic_steps": (4, 8), "analytic_per_class": 1,
    "tiny_steps": (3,), "tiny_guidance": (("cond", 7.0),),
    "edit": dict(strengths=(0.5, 0.9), cfgs=(7.0,), steps=16, per_class=2),
    "cost": dict(size=64, calls=2, rounds=1),
    "scaling": dict(steps_list=(4, 8), batches=(1, 2), batch_calls=1),
}


def run_parts(comfy, out_dir, parts, sizes, ckpt=None, images=None):
    """Run `parts` at `sizes` (FULL or QUICK); returns {part: result}."""
    from . import cost, edit_fidelity, reconstruction, scaling

    results = {}
    if "reconstruction" in parts:
        scenes = [(reconstruction.analytic_scene(sizes["analytic_per_class"]), sizes["analytic_steps"],
                   reconstruction.GUIDANCE),
                  (reconstruction.tiny_scene(comfy), sizes["tiny_steps"], sizes["tiny_guidance"])]
        if ckpt:
            scenes.append((reconstruction.checkpoint_scene(comfy, ckpt, images), (50, 100, 200),
                           reconstruction.GUIDANCE))
        results["reconstruction"] = reconstruction.run(comfy, out_dir, scenes)
    if "edit_fidelity" in parts:
        results["edit_fidelity"] = edit_fidelity.run(comfy, out_dir, **sizes["edit"])
    if "cost" in parts:
        results["cost"] = cost.run(comfy, out_dir, **sizes["cost"])
    if "scaling" in parts:
        results["scaling"] = scaling.run(comfy, out_dir, **sizes["scaling"])
    return results


def _ratio(value):
    return "inf (exact to the last float32 bit)" if math.isinf(value) else f"{value:.3g}"


def summary(results, seconds):
    """The headline figures, as markdown."""
    lines = [f"# Benchmark summary\n\nAll figures computed by `python -m bench.run` in one run of "
             f"{seconds / 60:.1f} minutes; CPU only (no GPU was lent to this run).\n"]
    if "reconstruction" in results:
        lines.append("**Reconstruction error ratios at cfg 7, conditional** ([table](reconstruction.md)):\n")
        for name, (rows, ratios) in results["reconstruction"].items():
            for steps, (edict, bdia) in sorted(ratios.items()):
                lines.append(f"- {name}, {steps} steps, latent MSE: DDIM/EDICT {_ratio(edict)}, DDIM/BDIA {_ratio(bdia)}")
            if any("pixel_mse" in r for r in rows):
                from .reconstruction import headline
                for steps, (edict, bdia) in sorted(headline(rows, "pixel_mse").items()):
                    lines.append(f"- {name}, {steps} steps, pixel MSE (VAE floor included): DDIM/EDICT "
                                 f"{_ratio(edict)}, DDIM/BDIA {_ratio(bdia)}")
    if "cost" in results:
        c = results["cost"]
        lines.append("\n**Time per model call against KSampler (euler)** ([table](cost.md)):\n")
        for name, value in c["ratios"].items():
            if name != "KSampler":
                extra = (c["memory"][name] - c["memory"]["KSampler"]) / c["latent_bytes"]
                lines.append(f"- {name}: {value:.3f}x; extra peak memory {extra:.1f} latent-sized buffers")
        if c["missed"]:
            lines.append(f"- target missed by: {', '.join(c['missed'])} (profile in cost.md)")
    if "scaling" in results:
        s = results["scaling"]
        lines.append("\n**Scaling** ([table](scaling.md)):\n")
        lines += [f"- {what} against {against}: {slope}, max deviation from linear {dev}" for what, against, slope, dev in s["lines"]]
        lines.append(f"- EDICT's float64 round trip: relative error above 1e-13 first at {s['onset']} steps"
                     if s["onset"] else "- EDICT's float64 round trip: relative error below 1e-13 at every step count run")
    if "edit_fidelity" in results:
        lines.append("\n**Edit fidelity** (analytic model, cfg 7, strength 0.7; [table](edit_fidelity.md)):\n")
        for r in results["edit_fidelity"]:
            if r["cfg"] == 7.0 and r["strength"] == 0.7:
                lines.append(f"- {r['method']}: hit rate {r['hit']:.2f}, position kept {r['position']:.3f}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-test sizes (seconds per part)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--ckpt", help="a checkpoint file to add to the reconstruction table")
    parser.add_argument("--images", help="a folder of images for --ckpt (captions as <name>.txt)")
    parser.add_argument("--out", default=env.RESULTS, help="where the tables and plots go")
    parser.add_argument("--tiny-steps", type=int, nargs="+", help="tiny checkpoint's step counts (e.g. 50 100 200)")
    parser.add_argument("--tiny-guidance", choices=("uncond", "1", "3", "7"), nargs="+",
                        help="tiny checkpoint's guidance settings (cfg values are conditional)")
    args = parser.parse_args(argv)
    if bool(args.ckpt) != bool(args.images):
        parser.error("--ckpt and --images go together")
    start = time.perf_counter()
    comfy = env.start()
    sizes = dict(QUICK if args.quick else FULL)
    if args.tiny_steps:
        sizes["tiny_steps"] = tuple(args.tiny_steps)
    if args.tiny_guidance:
        sizes["tiny_guidance"] = tuple(("uncond", 1.0) if g == "uncond" else ("cond", float(g))
                                       for g in args.tiny_guidance)
    results = run_parts(comfy, args.out, args.parts, sizes, args.ckpt, args.images)
    text = summary(results, time.perf_counter() - start)
    print(text)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
