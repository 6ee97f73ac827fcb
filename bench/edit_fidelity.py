"""Part 2: edit fidelity on the analytic model, where "the same picture, other class" is defined.

A sample of class A is inverted with condition A and regenerated with condition B
(B = A + 1 mod K), at strength (denoise) s and cfg c. Two scores per method:

- hit rate: how often the result's most likely class is B;
- position kept: the cosine between the source's whitened offset inside A,
  (x - mu_A) / s_A, and the result's inside B, (y - mu_B) / s_B. 1 is a perfect edit (the
  same place in the other class); 0 is a fresh sample of B.

Methods: every exact method of edict_core.spec.SPECS (methods.EXACT), DDIM inversion
(inversion with A, generation with B), and plain img2img (SDEdit: KSampler euler from seeded
noise at the same strength, condition B). Each exact method runs at its spec's default settings;
the scheduler is the part's (normal for the grid), not the method's default, so that every
method is scored along the same sigmas; the by-scheduler table adds the others.
"""

import torch

from . import analytic_model as am
from . import env, methods, report
from .methods import Run

METHODS = methods.METHODS + ("SDEdit",)


def scene(per_class=16, size=4, seed=0):
    classes = am.GaussianClasses(size=size, seed=seed)
    source = torch.arange(classes.num_classes).repeat_interleave(per_class)
    target = (source + 1) % classes.num_classes
    x0 = classes.sample(source, torch.Generator().manual_seed(seed + 2))
    return {"classes": classes, "model": am.analytic_model(classes), "source": source, "target": target,
            "latent": am.latent(x0)}


def edit(comfy, method, s, strength, cfg, steps, scheduler="normal"):
    """(edited samples [B, C, H, W] of scene `s` with `method`, the inverted noisy state
    [B, C, H, W] at the edit's start level, or None for SDEdit)."""
    classes = s["classes"]
    run = Run(s["model"], am.class_conditioning(classes, s["source"]), am.unconditional(classes), cfg, steps,
              denoise=strength, scheduler=scheduler)
    target = am.class_conditioning(classes, s["target"])
    if method == "SDEdit":
        return methods.sdedit(comfy, run, s["latent"], target), None
    inverted = methods.invert(comfy, method, run, s["latent"])
    noisy = inverted if method == "DDIM" else inverted["samples"]
    return methods.regenerate(comfy, method, run, inverted, positive=target), noisy


def score(s, edited):
    """(hit rate, mean position cosine) of edited samples against scene `s`."""
    classes = s["classes"]
    hit = float((classes.classify(edited) == s["target"]).double().mean())
    before = classes.position(s["latent"]["samples"], s["source"]).flatten(1)
    after = classes.position(edited, s["target"]).flatten(1)
    cosine = float(torch.nn.functional.cosine_similarity(before, after, dim=1).mean())
    return hit, cosine


def measure(comfy, s, strengths, cfgs, steps, scheduler="normal"):
    """Rows {method, cfg, strength, steps, scheduler, hit, position, off_ddim}; off_ddim is
    how far the method's inverted noisy state lies from DDIM inversion's (relative norm; the
    ODE's own answer to discretization error), NaN for DDIM and SDEdit."""
    rows = []
    for cfg in cfgs:
        for strength in strengths:
            noisy, block = {}, []
            for method in METHODS:
                edited, noisy[method] = edit(comfy, method, s, strength, cfg, steps, scheduler)
                hit, cosine = score(s, edited)
                block.append({"method": method, "cfg": cfg, "strength": strength, "steps": steps,
                              "scheduler": scheduler, "hit": hit, "position": cosine, "off_ddim": float("nan")})
            for row in block:
                if row["method"] in methods.EXACT:
                    row["off_ddim"] = env.relative_error(noisy[row["method"]], noisy["DDIM"])
            rows += block
    return rows


def _by_scheduler(comfy, s, grid_rows, scheduler, strengths, cfg, steps):
    """measure() along `scheduler`, taking the rows the grid (normal, same steps) already has."""
    known = [r for r in grid_rows if r["scheduler"] == scheduler and r["cfg"] == cfg and r["strength"] in strengths]
    if {r["strength"] for r in known} == set(strengths):
        return sorted(known, key=lambda r: strengths.index(r["strength"]))
    return measure(comfy, s, strengths, (cfg,), steps, scheduler)


def run(comfy, out_dir, strengths=(0.5, 0.7, 0.9), cfgs=(1.0, 3.0, 7.0), steps=50, per_class=16,
        sweep_steps=(20, 50, 100, 200), sweep_cfg=7.0, sweep_strength=0.7,
        schedulers=("normal", "karras", "exponential"), scheduler_strengths=(0.5, 0.7), scheduler_cfg=3.0):
    """The grid at `steps` (normal scheduler), the steps sweep at (sweep_cfg, sweep_strength)
    that shows how the exact methods' position depends on the step size at high cfg, and the
    schedulers at scheduler_cfg, which decide O-BELM's edits (see SCHEDULERS)."""
    s = scene(per_class)
    rows = measure(comfy, s, strengths, cfgs, steps)
    sweep = [r for n in sweep_steps for r in measure(comfy, s, (sweep_strength,), (sweep_cfg,), n)]
    by_scheduler = [r for name in schedulers for r in _by_scheduler(comfy, s, rows, name, scheduler_strengths,
                                                                  scheduler_cfg, steps)]
    fig, axes = report.figure(3, width=4.6)
    for method in METHODS:
        for cfg, style in zip(cfgs, ("-", "--", ":")):
            pts = [(r["strength"], r["hit"], r["position"]) for r in rows if r["method"] == method and r["cfg"] == cfg]
            xs, hits, positions = zip(*pts)
            for ax, ys in ((axes[0][0], hits), (axes[0][1], positions)):
                ax.plot(xs, ys, style, marker="o", color=methods.color(method), label=f"{method} cfg {cfg:g}")
        pts = [(r["steps"], r["position"]) for r in sweep if r["method"] == method]
        axes[0][2].plot(*zip(*pts), marker="o", color=methods.color(method), label=method)
    axes[0][0].set(xlabel="strength (denoise)", ylabel="hit rate: result in class B", title=f"edit lands in B ({steps} steps)")
    axes[0][1].set(xlabel="strength (denoise)", ylabel="cosine of whitened offsets", title=f"position kept ({steps} steps)")
    axes[0][2].set(xlabel="steps", ylabel="cosine of whitened offsets", xscale="log",
                   title=f"position kept, cfg {sweep_cfg:g}, strength {sweep_strength:g}")
    axes[0][1].legend(fontsize=6)
    axes[0][2].legend(fontsize=7)
    body = [[r["method"], r["cfg"], r["strength"], r["hit"], r["position"], r["off_ddim"]] for r in rows]
    def at(n, method, key):
        return next(r[key] for r in sweep if r["steps"] == n and r["method"] == method)
    sweep_body = [[n] + [at(n, m, "position") for m in METHODS] + [at(n, m, "off_ddim") for m in methods.EXACT]
                  for n in sweep_steps]
    text = (f"Analytic model: {s['classes'].num_classes} Gaussian classes in a latent of "
            f"{tuple(s['latent']['samples'].shape[1:])}, {len(s['source'])} samples ({per_class} per class), "
            f"each edited from its class A to B = A + 1; {steps} steps, normal scheduler. EDICT's "
            "result is its pair averaged by Latent Pair Mix (0.5).\n\n"
            + report.table(["method", "cfg", "strength", "hit rate (class B)", "position kept (cosine)",
                            "inverted state off DDIM's (rel.)"], body)
            + f"\n\n**Position kept against steps** at cfg {sweep_cfg:g}, strength {sweep_strength:g}:\n\n"
            + report.table(["steps"] + [f"{m} position" for m in METHODS]
                           + [f"{m} inverted state off DDIM's" for m in methods.EXACT], sweep_body)
            + "\n\n" + EXPLANATION
            + f"\n\n**Position kept by scheduler** at cfg {scheduler_cfg:g}, {steps} steps (hit rate in "
            "brackets):\n\n"
            + report.table(["scheduler", "strength"] + [f"{m} position" for m in METHODS],
                           [[r["scheduler"], r["strength"]]
                            + [f"{x['position']:.3g} ({x['hit']:.2g})" for x in by_scheduler
                               if (x["scheduler"], x["strength"]) == (r["scheduler"], r["strength"])]
                            for r in by_scheduler if r["method"] == METHODS[0]])
            + "\n\n" + SCHEDULERS)
    report.write_part(out_dir, "edit_fidelity", "Edit fidelity on the analytic model", text, fig)
    return {"rows": rows, "sweep": sweep, "by_scheduler": by_scheduler}


EXPLANATION = """Why position is not exactly 1, and why EDICT and BDIA fall behind DDIM at cfg 7. Even an
exact ODE solve maps position to position only up to a shift: inverting with A to noise level
sigma and generating with B carries the class-mean difference mu_A - mu_B, shrunk by about
s / sqrt(s^2 + sigma^2), into the result, so every method stays below 1 at cfg 1. EDICT and
BDIA are not DDIM's Euler step, and their inversions are expansive: EDICT's inverse mixing
multiplies the difference of its two branches by 1 / p^2 = 1.16 per step, BDIA's backward step
divides its residual by gamma = 0.94. In a round trip with the same conditioning the sampler
contracts exactly what the inversion expanded (the reconstruction table is exact); in an edit
the sampler runs under B and the expanded part of the inverted state, which DDIM inversion
does not have (the "off DDIM's" column), is not cancelled. At cfg 7 the guided direction
changes fast, so the inverted state departs further from DDIM's: with coarse steps from the
step size, with many steps from the growing amplification (the same amplification makes
EDICT's float64 round trip lose digits from about 200 steps in the scaling part). That is a
property of these recurrences, not a bug in the pack: the reconstruction it must undo is exact,
and DDIM inversion on the same session code keeps position."""

SCHEDULERS = """Why O-BELM's edits depend on the scheduler. O-BELM steps from the two latest states, and
its recurrence has a second solution beside the one that follows the ODE: a mode that flips
sign each step and is multiplied by rho^2 per step, rho the ratio of a step's length in sigma
to the one before; over a run it is damped by (last step / first step)^2. Where steps shrink
toward the clean end (karras, exponential, and normal over a whole schedule) that damps it.
Where consecutive steps are about equal in sigma (normal's tail, which an edit at denoise 0.5
to 0.7 runs) rho is about 1: the method is then the leapfrog scheme, whose second mode grows on
the directions the denoiser contracts (pulling toward the class). In a round trip inversion and generation cancel it exactly (the
reconstruction table); in an edit, generation runs under other conditioning and the mode is
not cancelled. EDICT and BDIA damp their second mode by p and gamma < 1 on any schedule."""
