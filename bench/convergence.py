"""Part 5: order of convergence, and how far round trips stay exact, on the analytic model.

Runs edict_core's routines directly (pure torch, no nodes, no guider) on the exact denoiser
of analytic_model.GaussianClasses in sampler space, with CFG written out:
D = D_u + cfg * (D_c - D_u), positive = each sample's class, negative = the unconditional
mixture. Schedules are ComfyUI's karras on SD1.5's model_sampling (the analytic MODEL's),
ending on its sigma_min, the floor (see Scene.sigmas).

Methods: DDIM and every method of edict_core.spec.SPECS, run through its spec's routines
(start_noisy then sample; start_clean, invert, then sample) at its default settings, or at
each setting of VARIANTS, so a method added to SPECS joins with nothing edited here.

Generation: from the same noise x_T = sigma_max * n, each method's float64 state at the
floor against a reference solve of the probability-flow ODE dx/dsigma = (x - D) / sigma
(classical RK4 in karras' ramp variable u, sigma = (a + u (b - a))^7; two resolutions, and
their difference is reported). Error = relative L2 error over the batch, as a function of
model calls (spec.calls: EDICT makes two per step, Rex two per stage of its tableau, the others
one). Order = minus the
least-squares slope of log error against log calls.

Round trip: exact float32 class samples, inverted and regenerated with the same cfg and
schedule; the pair stays float64 as the pack keeps it, the denoiser is fed float32 states and
returns float32 (as ComfyUI's network does); the result is cast to float32 and compared with
the input. DDIM's round trip is invert_ddim then sample_ddim.
"""

import math

import torch

import comfy.samplers
import edict_core as core
from edict_core.spec import SPECS

from . import analytic_model as am
from .reference import rk4_solve
from . import report

RK4_STEPS = (1000, 2000)
TOLERANCE = 1e-6
CFGS = (1.0, 7.0)
# Settings measured instead of a method's defaults, by spec name. BDIA's gamma decides both its
# order (second at 1.0, first below it) and its exact range (inversion grows rounding by 1/gamma
# per step), so three values are measured: 1.0, the editing default 0.94 and 0.5 (the authors'
# 10-step text-to-image value). Every other method runs at its defaults.
# Rex's tableau decides its order and its calls a step (2 per stage), so each is measured, at
# the default coupling zeta.
VARIANTS = {"bdia": ({"gamma": 1.0}, {"gamma": 0.94}, {"gamma": 0.5}),
            "rex": ({"tableau": "euler"}, {"tableau": "midpoint"}, {"tableau": "rk4"})}
PALETTE = ("tab:blue", "tab:olive", "tab:green", "tab:cyan", "tab:red", "tab:purple", "tab:orange", "tab:brown",
           "tab:pink")


def _methods():
    """{row name: (MethodSpec, settings)}, DDIM's None: DDIM, then each method of SPECS at its
    defaults (named by its title) or at each of its VARIANTS (title and values: "BDIA 0.94")."""
    rows = {"DDIM": None}
    for spec in SPECS.values():
        for changed in VARIANTS.get(spec.name, ({},)):
            name = " ".join([spec.title] + [str(value) for value in changed.values()])
            rows[name] = (spec, dict(spec.defaults, **changed))
    return rows


METHODS = _methods()
COLORS = dict({"DDIM": "tab:gray"}, **{name: PALETTE[i % len(PALETTE)] for i, name in enumerate(list(METHODS)[1:])})


def calls_per_step(name):
    return 1 if METHODS[name] is None else METHODS[name][0].step_calls(METHODS[name][1])


def model_calls(name, steps):
    """Model calls of a generation of `steps` steps from one noisy latent."""
    return steps if METHODS[name] is None else METHODS[name][0].calls(steps, started=True, settings=METHODS[name][1])


def generate(name, model, x, sigmas, scale):
    if METHODS[name] is None:
        return core.sample_ddim(model, x, sigmas)
    spec, settings = METHODS[name]
    pair = spec.start_noisy(model, x, sigmas, scale, **settings)
    return spec.sample(model, pair, sigmas, scale, **settings)[0]


def round_trip(name, model, x0, sigmas, scale):
    if METHODS[name] is None:
        return core.sample_ddim(model, core.invert_ddim(model, x0, sigmas), sigmas)
    spec, settings = METHODS[name]
    clean = spec.start_clean(model, x0, sigmas, scale, **settings)
    noisy = spec.invert(model, clean, sigmas, scale, **settings)
    return spec.sample(model, noisy, sigmas, scale, **settings)[0]


class Scene:
    """The mixture, its ComfyUI model_sampling, the batch's classes and the cfg'd denoiser."""

    def __init__(self, per_class):
        self.classes = am.GaussianClasses()
        self.sampling = am.analytic_model(self.classes).get_model_object("model_sampling")
        self.floor = float(self.sampling.sigma_min)
        labels = torch.arange(self.classes.num_classes).repeat_interleave(per_class)
        self.cond = torch.nn.functional.one_hot(labels, self.classes.num_classes).to(torch.float64)
        self.uncond = torch.full_like(self.cond, 1.0 / self.classes.num_classes)
        self.x0 = self.classes.sample(labels, torch.Generator().manual_seed(1)).to(torch.float32)
        noise = torch.randn(self.x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        self.noise = noise * float(self.sigmas(1)[0])

    def sigmas(self, steps):
        """`steps` karras steps from sigma_max to the floor, as the nodes prepare them: ComfyUI's
        karras of n + 1 steps reaches sigma_min after n and then steps to 0; prepare_sigmas
        drops the 0, and takes the last sigma, which float32 rounding leaves some 10 ulps
        (1.9e-8) above the floor, for the floor (schedule.FLOOR_ULPS), so no step of rounding
        length is run: n steps."""
        sigmas = comfy.samplers.calculate_sigmas(self.sampling, "karras", steps + 1)
        sigmas = core.prepare_sigmas(sigmas, self.floor)
        assert len(sigmas) - 1 == steps, (steps, sigmas)
        return sigmas

    def scale(self, sigma):
        one = torch.ones(1, dtype=torch.float64)
        return float(self.sampling.calculate_input(torch.tensor(sigma, dtype=torch.float64), one))

    def denoiser(self, cfg, float32_io=False):
        def model(x, sigma):
            if float32_io:
                x = x.to(torch.float32)
            s = torch.full((x.shape[0],), float(sigma), dtype=torch.float64)
            uncond = self.classes.denoise(x, s, self.uncond)
            out = uncond + cfg * (self.classes.denoise(x, s, self.cond) - uncond)
            return out.to(torch.float32) if float32_io else out
        return model


def reference_solve(scene, model, x, start, steps, rho=7.0):
    """RK4 on dx/dsigma = (x - D) / sigma in u, sigma = (a + u (b - a))^rho, from start to the floor."""
    return rk4_solve(model, x, start, scene.floor, steps, rho)


def fit_order(points):
    """Minus the least-squares slope of log error against log calls over (calls, error)."""
    if len(points) < 2:
        return float("nan")
    logs = torch.tensor([[math.log(c), math.log(e)] for c, e in points], dtype=torch.float64)
    x, y = logs[:, 0] - logs[:, 0].mean(), logs[:, 1] - logs[:, 1].mean()
    return float(-(x * y).sum() / (x * x).sum())


def interpolate_calls(points, target):
    """Calls at which the log-log polyline through (calls, error) first reaches `target`."""
    for (c0, e0), (c1, e1) in zip(points, points[1:]):
        if e0 > target >= e1:
            t = (math.log(e0) - math.log(target)) / (math.log(e0) - math.log(e1))
            return math.exp(math.log(c0) + t * (math.log(c1) - math.log(c0)))
    return 0.0 if points and points[0][1] <= target else float("inf")


def error_at(points, calls):
    """Log-log interpolated error at `calls` (nan outside the measured range)."""
    for (c0, e0), (c1, e1) in zip(points, points[1:]):
        if c0 <= calls <= c1:
            t = (math.log(calls) - math.log(c0)) / (math.log(c1) - math.log(c0))
            return math.exp(math.log(e0) + t * (math.log(e1) - math.log(e0)))
    return float("nan")


def split_bdia(scene, model, reference, calls, delta=0.01):
    """Why BDIA 0.94 can beat second-order methods at some call counts: its error is the
    second-order error of gamma = 1 plus a part first order in the step and proportional to
    1 - gamma (the forward and backward DDIM residuals cancel only at gamma = 1). Measured
    from the error vectors e(gamma) at `calls`: the first-order part per unit of 1 - gamma,
    f = (e(1 - delta) - e(1)) / delta; the cosine between f and e(1) (negative: they cancel);
    and how far e(1) + 0.06 f lands from e(0.94), relative to |e(1)|."""
    sigmas = scene.sigmas(calls)
    e = {g: core.sample_bdia(model, scene.noise, sigmas, scene.scale, g) - reference
         for g in (1.0, 1.0 - delta, 0.94)}
    first = (e[1.0 - delta] - e[1.0]) / delta
    norm = torch.linalg.vector_norm
    return {"calls": calls, "second": float(norm(e[1.0]) / norm(reference)),
            "first": float(0.06 * norm(first) / norm(reference)),
            "cosine": float((first * e[1.0]).sum() / (norm(first) * norm(e[1.0]))),
            "actual": float(norm(e[0.94]) / norm(reference)),
            "mismatch": float(norm(e[1.0] + 0.06 * first - e[0.94]) / norm(e[1.0]))}


def measure_generation(scene, calls_list, rk4_steps, asymptotic_from):
    rows, checks, splits = [], {}, []
    start = float(scene.sigmas(1)[0])
    for cfg in CFGS:
        model = scene.denoiser(cfg)
        coarse, fine = (reference_solve(scene, model, scene.noise, start, n) for n in rk4_steps)
        checks[cfg] = core.relative_error(coarse, fine)
        for name in METHODS:
            points = []
            for target in calls_list:
                steps = max(target // calls_per_step(name), 2)
                sigmas = scene.sigmas(steps)
                x = generate(name, model, scene.noise, sigmas, scene.scale)
                points.append((model_calls(name, len(sigmas) - 1), core.relative_error(x, fine)))
            tail = [p for p in points if p[0] >= asymptotic_from]
            rows.append({"method": name, "cfg": cfg, "points": points, "order": fit_order(points),
                         "order_tail": fit_order(tail)})
        # BDIA alone, on purpose: split_bdia explains BDIA 0.94's curve (see its docstring).
        for n in sorted({min(calls_list), 50, max(calls_list)}):
            splits.append(dict(split_bdia(scene, model, fine, n), cfg=cfg))
    return rows, checks, splits


def measure_round_trips(scene, steps_list):
    rows = []
    for cfg in CFGS:
        model = scene.denoiser(cfg, float32_io=True)
        for name in METHODS:
            errors = []
            for steps in steps_list:
                back = round_trip(name, model, scene.x0.to(torch.float64), scene.sigmas(steps), scene.scale)
                errors.append(core.relative_error(back.to(torch.float32), scene.x0))
            exact_to = 0
            for steps, error in zip(steps_list, errors):
                if error > TOLERANCE:
                    break
                exact_to = steps
            rows.append({"method": name, "cfg": cfg, "errors": errors, "exact_to": exact_to})
    return rows


def _headlines(gen_rows, trip_rows):
    """The targets: O-BELM against BDIA 0.94 at 50 calls (the comparison O-BELM was added to
    win: the same exactness at one call per step, at higher order), exactness to 1000 steps,
    orders of every method."""
    by = {(r["method"], r["cfg"]): r for r in gen_rows}
    lines = []
    for cfg in CFGS:
        target = error_at(by[("BDIA 0.94", cfg)]["points"], 50)
        if math.isnan(target):
            continue  # 50 calls not measured (the quick sizes)
        obelm = by[("O-BELM", cfg)]["points"]
        lines.append(f"cfg {cfg:g}: BDIA 0.94 at 50 calls {target:.3g}; O-BELM at 25 calls "
                     f"{error_at(obelm, 25):.3g}, at 50 calls {error_at(obelm, 50):.3g}; O-BELM reaches "
                     f"BDIA 0.94's 50-call error at {interpolate_calls(obelm, target):.0f} calls")
    for cfg in CFGS:
        target = error_at(by[("O-BELM", cfg)]["points"], 50)
        if math.isnan(target) or ("Rex rk4", cfg) not in by:
            continue
        rex = by[("Rex rk4", cfg)]["points"]
        lines.append(f"cfg {cfg:g}: O-BELM at 50 calls {target:.3g}; Rex rk4 at 25 calls {error_at(rex, 25):.3g}, "
                     f"at 50 calls {error_at(rex, 50):.3g}; Rex rk4 reaches O-BELM's 50-call error at "
                     f"{interpolate_calls(rex, target):.0f} calls")
    for cfg in CFGS:
        lines.append(f"cfg {cfg:g}, orders (all points / tail): " + ", ".join(
            f"{r['method']} {r['order']:.2f} / {r['order_tail']:.2f}" for r in gen_rows if r["cfg"] == cfg))
    for cfg in CFGS:
        lines.append(f"cfg {cfg:g}, float32 round trip within {TOLERANCE:g} up to: " + ", ".join(
            f"{r['method']} {r['exact_to']}" for r in trip_rows if r["cfg"] == cfg))
    return lines


def run(out_dir, calls=(10, 14, 20, 25, 35, 50, 70, 100, 140, 200),
        trip_steps=(10, 20, 50, 100, 200, 500, 1000), per_class=2, rk4_steps=RK4_STEPS, asymptotic_from=70):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors of a few hundred numbers: more threads only hand work around
    try:
        scene = Scene(per_class)
        gen_rows, checks, splits = measure_generation(scene, calls, rk4_steps, asymptotic_from)
        trip_rows = measure_round_trips(scene, trip_steps)
    finally:
        torch.set_num_threads(threads)
    lines = _headlines(gen_rows, trip_rows)

    fig, axes = report.figure(4, width=4.4)
    for col, cfg in enumerate(CFGS):
        ax = axes[0][col]
        for r in (r for r in gen_rows if r["cfg"] == cfg):
            cs, es = zip(*r["points"])
            ax.plot(cs, es, marker="o", markersize=3, color=COLORS[r["method"]],
                    label=f"{r['method']} (order {r['order_tail']:.2f})")
        ax.set(xscale="log", yscale="log", xlabel="model calls", ylabel="relative error vs ODE solve",
               title=f"generation error, cfg {cfg:g}")
        ax.legend(fontsize=7)
        ax = axes[0][2 + col]
        for r in (r for r in trip_rows if r["cfg"] == cfg):
            ax.plot(trip_steps, [max(e, 1e-12) for e in r["errors"]], marker="o", markersize=3,
                    color=COLORS[r["method"]], label=r["method"])
        ax.axhline(TOLERANCE, color="black", linestyle=":", linewidth=1)
        ax.set(xscale="log", yscale="log", xlabel="steps", ylabel="relative error (0 drawn at 1e-12)",
               title=f"float32 round trip, cfg {cfg:g}")
        ax.legend(fontsize=7)

    calls_measured = [c for c, _ in gen_rows[0]["points"]]
    gen_table = report.table(
        ["method", "cfg"] + [f"{c} calls" for c in calls_measured]
        + ["order (all)", f"order (>= {asymptotic_from} calls)"],
        [[r["method"], r["cfg"]] + [e for _, e in r["points"]] + [r["order"], r["order_tail"]] for r in gen_rows])
    # Methods of several calls a step run calls // k steps: their own calls, named under the table.
    own_calls = "; ".join(f"{r['method']}'s are {', '.join(str(c) for c, _ in r['points'])}" for r in gen_rows
                          if r["cfg"] == CFGS[0] and [c for c, _ in r["points"]] != calls_measured)
    trip_table = report.table(
        ["method", "cfg"] + [f"{n} steps" for n in trip_steps] + [f"exact (<= {TOLERANCE:g}) up to"],
        [[r["method"], r["cfg"]] + r["errors"] + [r["exact_to"]] for r in trip_rows])
    text = (f"One torch thread. Batch: {scene.x0.shape[0]} samples ({per_class} per class), "
            f"latent {tuple(scene.x0.shape[1:])}. "
            f"Reference: RK4 at {rk4_steps[1]} steps; it differs from RK4 at {rk4_steps[0]} steps by "
            + ", ".join(f"{e:.1e} (cfg {c:g})" for c, e in checks.items()) + ".\n\n"
            + "\n".join(f"- {line}" for line in lines)
            + "\n\n**Generation error** against the ODE solve, by model calls (a method of k calls a step runs "
            f"calls // k steps{': ' + own_calls if own_calls else ''}; orders are fitted on the calls actually "
            "made):\n\n"
            + gen_table
            + "\n\n**Why BDIA 0.94's curve dips, then stalls** (split_bdia): its error e(0.94) is BDIA 1.0's "
            "error e(1.0), second order, plus about 0.06 f, where f = de/d(1 - gamma) (measured at gamma 0.99) is "
            "first order in the step. f points against e(1.0) (cosine near -1), so |e(0.94)| ~ 0.06 |f| - |e(1.0)|: "
            "a first-order term minus a second-order one, which vanishes near 50 calls (the dip) and then grows "
            "back to first order. Where the last column is small (cfg 1) this split is quantitative; where it "
            "is not (cfg 7), e depends on gamma far from linearly between 0.99 and 0.94 and the split is "
            "only qualitative. Norms are relative to the reference.\n\n"
            + report.table(["cfg", "calls", "e(1.0), 2nd order", "0.06 f, 1st order", "cosine(f, e(1.0))",
                            "e(0.94) measured", "mismatch of e(1.0) + 0.06 f, per e(1.0)"],
                           [[r["cfg"], r["calls"], r["second"], r["first"], r["cosine"], r["actual"], r["mismatch"]]
                            for r in splits])
            + f"\n\n**Round trip** (float32 latent, float64 pair): relative error of the result; "
            f"exact = within {TOLERANCE:g} at that step count and every smaller one.\n\n" + trip_table)
    report.write_part(out_dir, "convergence", "Order of convergence and exact range", text, fig)
    return {"lines": lines, "generation": gen_rows, "round_trip": trip_rows, "reference_check": checks,
            "bdia_split": splits}
