"""Part 4: time and round-trip error against steps and batch size.

Steps (10 to 500) on the analytic model at cfg 7: a round trip (invert, then sample back)
through the nodes for every exact method of edict_core.spec.SPECS. Without a network its time
is ComfyUI's and our own per-step work, so it shows our loop's growth. Error: the float32
result against the input, and the float64 result (the Sample record's `branch`, before its
float32 cast), where the rounding of the float64 pair shows first.

Batch (1 to 8) on the tiny checkpoint at cfg 7: one method's round trip (BATCH_METHOD) against
KSampler (euler) with the same number of model calls, so the network's own batch scaling is
seen beside ComfyUI's, and the round trip's error at each batch.

Timing: each point is the minimum of `repeats` runs (the least disturbed by other work on
the machine). Linearity: a least-squares line time = a + b * n through all points; a is
the fixed cost of a run (model load check, session setup, records). The criterion is that
every point from LINEAR_FROM steps (every batch point) lies within LINEAR_TOLERANCE of the
line, relative to its own time; smaller step counts are listed but dominated by a.
"""

import time

import torch

from . import analytic_model as am
from . import env, methods, report
from harness.comfy import counting_model

from .cost import PROMPT
from .methods import Run

ROUNDING_THRESHOLD = 1e-13  # float64 eps is 2.2e-16; above this the pair's rounding shows
LINEAR_FROM, LINEAR_TOLERANCE = 50, 0.10
# The batch part measures one method on purpose: it shows how the network's time grows with
# the batch beside KSampler's, which any one method shows (the per-method cost is the cost
# part's). BDIA, at one call per step like KSampler, matches its call count step for step.
BATCH_METHOD = "BDIA"


def linear_fit(ns, ts, from_n=0):
    """Least-squares t = a + b n. Returns (a, b, largest |t - fit| / t over points n >= from_n,
    or over the largest point when none reaches from_n, as in the smoke test)."""
    n, t = torch.tensor(ns, dtype=torch.float64), torch.tensor(ts, dtype=torch.float64)
    design = torch.stack([torch.ones_like(n), n], dim=1)
    a, b = torch.linalg.lstsq(design, t.unsqueeze(1)).solution.squeeze(1).tolist()
    judged = n >= min(from_n, float(n.max()))
    deviation = ((t - (a + b * n)).abs() / t)[judged]
    return a, b, float(deviation.max())


def min_time(op, repeats):
    """(fastest of `repeats` runs in seconds, the last run's result)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = op()
        best = min(best, time.perf_counter() - start)
    return best, result


def steps_scaling(comfy, steps_list, repeats=3, per_class=1, cfg=7.0):
    classes = am.GaussianClasses()
    labels = torch.arange(classes.num_classes).repeat_interleave(per_class)
    latent = am.latent(classes.sample(labels, torch.Generator().manual_seed(3)))
    original = latent["samples"]
    model = am.analytic_model(classes)
    rows = []
    for steps in steps_list:
        run = Run(model, am.class_conditioning(classes, labels), am.unconditional(classes), cfg, steps)
        for method in methods.EXACT:
            def round_trip():
                return methods.sample(comfy, method, run, methods.invert(comfy, method, run, latent))
            seconds, back = min_time(round_trip, repeats)
            rows.append({"method": method, "steps": steps, "seconds": seconds,
                         "error32": env.relative_error(back["samples"], original),
                         "error64": env.relative_error(back[methods.RECORD_KEY]["branch"], original)})
    return rows


def batch_scaling(comfy, batches, steps=8, repeats=3, size=64, cfg=7.0):
    """A BATCH_METHOD round trip of `steps` steps each way (normal's last step, sigma_min to 0,
    is not run) against KSampler euler with as many model calls as the round trip made."""
    clip, vae = comfy.tiny["clip"], comfy.tiny["vae"]
    positive, negative = env.encode_text(comfy, clip, PROMPT), env.encode_text(comfy, clip, "")
    model, counter = counting_model(comfy.tiny["model"])  # counter: one entry per network call
    run = Run(model, positive, negative, cfg, steps)
    trip = f"{BATCH_METHOD} round trip"
    rows = []
    for batch in batches:
        with torch.inference_mode():
            latent = comfy.VAEEncode().encode(vae, env.drawn_images(batch, size))[0]

        def round_trip():
            inverted = methods.invert(comfy, BATCH_METHOD, run, latent)
            return methods.regenerate(comfy, BATCH_METHOD, run, inverted)

        def ksampler():
            return comfy.KSampler().sample(model, 0, rows[-1]["calls"], cfg, "euler", "normal", positive,
                                           negative, latent)[0]["samples"]

        for name, op in ((trip, round_trip), ("KSampler", ksampler)):
            counter.clear()
            seconds, back = min_time(op, repeats)
            error = env.relative_error(back, latent["samples"]) if name != "KSampler" else float("nan")
            rows.append({"run": name, "batch": batch, "seconds": seconds, "calls": len(counter) // repeats,
                         "error32": error})
    return rows


def rounding_onset(rows):
    """{method: smallest step count whose float64 round trip is off by more than the
    threshold, or None where none is}."""
    onset = {}
    for r in rows:
        if r["error64"] > ROUNDING_THRESHOLD and onset.get(r["method"]) is None:
            onset[r["method"]] = r["steps"]
        onset.setdefault(r["method"], None)
    return onset


def run(comfy, out_dir, steps_list=(10, 20, 50, 100, 200, 500), batches=(1, 2, 4, 8), batch_steps=8, repeats=3):
    step_rows = steps_scaling(comfy, steps_list, repeats)
    batch_scaling(comfy, batches[:1], batch_steps, repeats=1)  # warm-up: model load
    batch_rows = batch_scaling(comfy, batches, batch_steps, repeats)
    onset = rounding_onset(step_rows)
    fig, axes = report.figure(3, width=4.6)
    lines = []
    for method in methods.EXACT:
        color = methods.color(method)
        rows = [r for r in step_rows if r["method"] == method]
        ns, ts = [r["steps"] for r in rows], [r["seconds"] for r in rows]
        a, b, deviation = linear_fit(ns, ts, LINEAR_FROM)
        lines.append([f"{method} round trip (analytic)", "steps", f"{a * 1e3:.3g} ms + {b * 1e3:.3g} ms / step",
                      f">= {LINEAR_FROM} steps", f"{deviation:.1%}", "yes" if deviation <= LINEAR_TOLERANCE else "**no**"])
        axes[0][0].plot(ns, ts, marker="o", color=color, label=method)
        axes[0][0].plot(ns, [a + b * n for n in ns], linestyle=":", color=color)
        axes[0][1].plot(ns, [max(r["error32"], 1e-18) for r in rows], marker="o", color=color,
                        label=f"{method} float32 result")
        axes[0][1].plot(ns, [max(r["error64"], 1e-18) for r in rows], marker="x", linestyle="--",
                        color=color, label=f"{method} float64 result")
    for name in ("KSampler", f"{BATCH_METHOD} round trip"):
        rows = [r for r in batch_rows if r["run"] == name]
        ns, ts = [r["batch"] for r in rows], [r["seconds"] for r in rows]
        a, b, deviation = linear_fit(ns, ts)
        lines.append([f"{name} (tiny, {rows[0]['calls']} calls)", "batch", f"{a:.3g} s + {b:.3g} s / sample",
                      "all", f"{deviation:.1%}", "yes" if deviation <= LINEAR_TOLERANCE else "**no**"])
        axes[0][2].plot(ns, ts, marker="o", color=methods.color(name.split()[0]), label=name)
    axes[0][0].set(xlabel="steps", ylabel="seconds (min of repeats)", title="round trip time (analytic, cfg 7)")
    axes[0][1].set(xlabel="steps", ylabel="relative error (0 drawn at 1e-18)", xscale="log", yscale="log",
                   title="round trip error")
    axes[0][2].set(xlabel="batch", ylabel="seconds (min of repeats)", title="tiny checkpoint, cfg 7")
    for ax in axes[0]:
        ax.legend(fontsize=7)
    step_table = report.table(["method", "steps", "seconds", "rel. error float32 result", "rel. error float64 result"],
                              [[r["method"], r["steps"], r["seconds"], r["error32"], r["error64"]] for r in step_rows])
    batch_table = report.table(["run", "batch", "model calls", "seconds", "rel. error of the round trip"],
                               [[r["run"], r["batch"], r["calls"], r["seconds"], r["error32"]] for r in batch_rows])
    text = (f"Each time is the minimum of {repeats} runs. **Linearity**: least-squares line time = a + b n; "
            f"linear means every point from {LINEAR_FROM} steps (every batch point) within "
            f"{LINEAR_TOLERANCE:.0%} of the line, relative to its own time.\n\n"
            + report.table(["what", "against", "fit", "points judged", "max deviation", "linear"], lines)
            + "\n\n**Float64 rounding** (the Sample record's float64 `branch` against the input): "
            + onset_text(onset, max(steps_list)) + "\n\n**Steps** (analytic model, cfg 7, one sample per "
            "class, invert + sample):\n\n" + step_table
            + f"\n\n**Batch** (tiny checkpoint, cfg 7, 64x64 images, {BATCH_METHOD} {batch_steps} steps each way):\n\n"
            + batch_table)
    report.write_part(out_dir, "scaling", "Scaling with steps and batch", text, fig)
    last = max(steps_list)
    at_last = {r["method"]: r["error32"] for r in step_rows if r["steps"] == last}
    return {"onset": onset, "lines": lines, "last_steps": last, "error_at_last": at_last,
            "steps": step_rows, "batch": batch_rows}


def onset_text(onset, largest):
    """One sentence per method: where its float64 round trip first exceeds the threshold."""
    return "; ".join(f"{method} first exceeds a relative error of {ROUNDING_THRESHOLD:g} at **{steps} steps**"
                     if steps else f"{method} stays below {ROUNDING_THRESHOLD:g} up to {largest} steps"
                     for method, steps in onset.items()) + "."
