"""Part 4: time and round-trip error against steps and batch size.

Steps (10 to 500) on the analytic model at cfg 7: an EDICT and a BDIA round trip
(invert, then sample back) through the nodes. Its time is ComfyUI's and our per-step
work without a network, so it shows our own loop's growth. Error: the float32 result
against the input, and EDICT's float64 branch (the record's `branch`, before its float32
cast), where the rounding of the float64 pair shows first.

Batch (1 to 8) on the tiny checkpoint at cfg 7: BDIA sampling against KSampler (euler)
with the same model calls, so the network's own batch scaling is seen beside ComfyUI's.

Linearity: a least-squares line through (n, time); the figure is the largest deviation
of a point from it, relative to that point's time.
"""

import time

import torch

from . import analytic_model as am
from . import env, methods, report
from .methods import Run

ROUNDING_THRESHOLD = 1e-13  # float64 eps is 2.2e-16; above this the pair's rounding shows


def linear_deviation(ns, ts):
    n, t = torch.tensor(ns, dtype=torch.float64), torch.tensor(ts, dtype=torch.float64)
    design = torch.stack([torch.ones_like(n), n], dim=1)
    coef = torch.linalg.lstsq(design, t.unsqueeze(1)).solution.squeeze(1)
    fit = design @ coef
    return float(((t - fit).abs() / t).max()), float(coef[1])


def steps_scaling(comfy, steps_list, per_class=1, cfg=7.0):
    classes = am.GaussianClasses()
    labels = torch.arange(classes.num_classes).repeat_interleave(per_class)
    latent = am.latent(classes.sample(labels, torch.Generator().manual_seed(3)))
    original = latent["samples"]
    rows = []
    for steps in steps_list:
        run = Run(am.analytic_model(classes), am.class_conditioning(classes, labels), am.unconditional(classes),
                  cfg, steps)
        for method in ("EDICT", "BDIA"):
            start = time.perf_counter()
            inverted = methods.invert(comfy, method, run, latent)
            back = env.run_node(comfy, f"{method}Sample", latent_image=inverted, seed=0, **run.node_inputs(),
                                **methods._extra(method))
            seconds = time.perf_counter() - start
            row = {"method": method, "steps": steps, "seconds": seconds,
                   "calls": 2 * steps * methods.calls_per_step(method),
                   "error32": env.relative_error(back["samples"], original), "error64": float("nan")}
            if method == "EDICT":
                row["error64"] = env.relative_error(back["exact_inversion"]["branch"], original)
            rows.append(row)
    return rows


def batch_scaling(comfy, batches, calls=4, size=64, cfg=7.0):
    clip, vae = comfy.tiny["clip"], comfy.tiny["vae"]
    positive, negative = env.encode_text(comfy, clip, "a photo"), env.encode_text(comfy, clip, "")
    model = comfy.tiny["model"]
    rows = []
    for batch in batches:
        latent = {"samples": torch.zeros(batch, 4, size // 8, size // 8)}
        run = Run(model, positive, negative, cfg, calls)
        for name in ("KSampler", "BDIA sample"):
            start = time.perf_counter()
            if name == "KSampler":
                comfy.KSampler().sample(model, 0, calls, cfg, "euler", "normal", positive, negative, latent)
            else:
                env.run_node(comfy, "BDIASample", latent_image=latent, seed=0, **run.node_inputs(),
                             **methods._extra("BDIA"))
            rows.append({"run": name, "batch": batch, "seconds": time.perf_counter() - start})
    return rows


def rounding_onset(rows):
    """Smallest step count whose EDICT float64 round trip is off by more than the threshold."""
    over = [r["steps"] for r in rows if r["method"] == "EDICT" and r["error64"] > ROUNDING_THRESHOLD]
    return min(over) if over else None


def run(comfy, out_dir, steps_list=(10, 20, 50, 100, 200, 500), batches=(1, 2, 4, 8), batch_calls=4):
    step_rows = steps_scaling(comfy, steps_list)
    # One unmeasured warm-up run so the first batch point does not pay the model load.
    batch_scaling(comfy, batches[:1], batch_calls)
    batch_rows = batch_scaling(comfy, batches, batch_calls)
    onset = rounding_onset(step_rows)
    fig, axes = report.figure(3, width=4.6)
    lines = []
    for method, color in (("EDICT", "tab:blue"), ("BDIA", "tab:green")):
        rows = [r for r in step_rows if r["method"] == method]
        ns, ts = [r["steps"] for r in rows], [r["seconds"] for r in rows]
        deviation, slope = linear_deviation(ns, ts)
        lines.append([f"{method} round trip (analytic)", "steps", f"{slope * 1e3:.3g} ms / step", f"{deviation:.1%}"])
        axes[0][0].plot(ns, ts, marker="o", color=color, label=method)
        axes[0][1].plot(ns, [max(r["error32"], 1e-18) for r in rows], marker="o", color=color,
                        label=f"{method} float32 result")
        if method == "EDICT":
            axes[0][1].plot(ns, [max(r["error64"], 1e-18) for r in rows], marker="x", linestyle="--",
                            color=color, label="EDICT float64 branch")
    for name, color in (("KSampler", "tab:gray"), ("BDIA sample", "tab:green")):
        rows = [r for r in batch_rows if r["run"] == name]
        ns, ts = [r["batch"] for r in rows], [r["seconds"] for r in rows]
        deviation, slope = linear_deviation(ns, ts)
        lines.append([f"{name} (tiny, {batch_calls} calls)", "batch", f"{slope:.3g} s / sample", f"{deviation:.1%}"])
        axes[0][2].plot(ns, ts, marker="o", color=color, label=name)
    axes[0][0].set(xlabel="steps", ylabel="seconds", title="round trip time (analytic, cfg 7)")
    axes[0][1].set(xlabel="steps", ylabel="relative error (0 drawn at 1e-18)", xscale="log", yscale="log",
                   title="round trip error")
    axes[0][2].set(xlabel="batch", ylabel="seconds", title=f"sampling time (tiny, {batch_calls} calls)")
    for ax in axes[0]:
        ax.legend(fontsize=7)
    step_table = report.table(["method", "steps", "model calls", "seconds", "rel. error float32 result",
                               "rel. error float64 branch"],
                              [[r["method"], r["steps"], r["calls"], r["seconds"], r["error32"], r["error64"]]
                               for r in step_rows])
    batch_table = report.table(["run", "batch", "seconds"], [[r["run"], r["batch"], r["seconds"]] for r in batch_rows])
    onset_text = (f"EDICT's float64 branch first exceeds a relative error of {ROUNDING_THRESHOLD:g} at "
                  f"**{onset} steps**." if onset else
                  f"EDICT's float64 branch stays below a relative error of {ROUNDING_THRESHOLD:g} up to "
                  f"{max(steps_list)} steps.")
    text = ("**Linearity** (largest deviation of a point from the least-squares line, relative to "
            "its time):\n\n" + report.table(["what", "against", "slope", "max deviation"], lines)
            + f"\n\n**Float64 rounding**: {onset_text}\n\n**Steps** (analytic model, cfg 7, one sample per "
            "class, invert + sample):\n\n" + step_table
            + "\n\n**Batch** (tiny checkpoint, cfg 7, 64x64 images):\n\n" + batch_table)
    report.write_part(out_dir, "scaling", "Scaling with steps and batch", text, fig)
    return {"onset": onset, "lines": lines}
