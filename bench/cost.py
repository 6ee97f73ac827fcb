"""Part 3: what EDICT and BDIA cost against ComfyUI's own KSampler (euler).

Same model, latent, conditioning and cfg; every run makes the same number of model calls
(one call = one batched cond/uncond evaluation): KSampler at K steps, BDIA at K steps,
EDICT at K/2 steps (two calls per step). Inversion starts from a VAE-encoded picture,
sampling from that inversion. The five runs alternate round by round (the order rotates
each round), so load from other processes on the machine hits all of them alike; the
figure is the median over rounds of wall time / model calls, and the ratio is ours over
KSampler's.

Memory: on CPU, torch's profiler (profile_memory) records every allocation and free; the
peak of their running sum over a run is the run's peak allocated memory beyond what
existed before it (weights excluded); an op's own allocations count at its start. "Extra" is ours minus KSampler's, also expressed in
float32 latent-sized buffers (B*C*H*W*4 bytes). On a GPU the same is read from
torch.cuda.max_memory_allocated.

If a ratio misses its target, the cProfile of one EDICT sampling run and one KSampler
run, listed beside the figures, shows where the time goes.
"""

import cProfile
import io
import pstats
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from . import env, methods, report
from .methods import Run

TARGET_CPU, TARGET_GPU, TARGET_BUFFERS = 1.05, 1.02, 4
OPS = ("KSampler", "EDICT invert", "EDICT sample", "BDIA invert", "BDIA sample")


def setup(comfy, size=64, batch=1, cfg=7.0):
    clip, vae = comfy.tiny["clip"], comfy.tiny["vae"]
    with torch.inference_mode():
        latent = comfy.VAEEncode().encode(vae, env.drawn_images(batch, size))[0]
    return {"model": comfy.tiny["model"], "positive": env.encode_text(comfy, clip, "a photo of a dog on the beach"),
            "negative": env.encode_text(comfy, clip, ""), "latent": latent, "cfg": cfg}


def _runs(setup_, calls):
    """op name -> callable running it once with `calls` model calls."""
    edict = Run(setup_["model"], setup_["positive"], setup_["negative"], setup_["cfg"], calls // 2)
    bdia = Run(setup_["model"], setup_["positive"], setup_["negative"], setup_["cfg"], calls)
    latent = setup_["latent"]
    return edict, bdia, latent


def make_ops(comfy, setup_, calls):
    edict, bdia, latent = _runs(setup_, calls)
    inverted = {"EDICT": methods.invert(comfy, "EDICT", edict, latent),
                "BDIA": methods.invert(comfy, "BDIA", bdia, latent)}

    def ksampler():
        comfy.KSampler().sample(bdia.model, 0, calls, bdia.cfg, "euler", "normal", bdia.positive,
                                bdia.negative, latent, denoise=1.0)

    def our(method, run, direction):
        node = f"{method}{direction}"
        if direction == "Invert":
            return lambda: env.run_node(comfy, node, latent_image=latent, **run.node_inputs(),
                                        **methods._extra(method))
        return lambda: env.run_node(comfy, node, latent_image=inverted[method], seed=0,
                                    **run.node_inputs(), **methods._extra(method))

    return {"KSampler": ksampler, "EDICT invert": our("EDICT", edict, "Invert"),
            "EDICT sample": our("EDICT", edict, "Sample"), "BDIA invert": our("BDIA", bdia, "Invert"),
            "BDIA sample": our("BDIA", bdia, "Sample")}


def time_alternating(ops, calls, rounds):
    """{op: [seconds per model call, one per round]}; the order rotates every round."""
    names = list(ops)
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            ops[name]()
            times[name].append((time.perf_counter() - start) / calls)
    return times


def peak_memory(op):
    """Peak bytes allocated during op() beyond what was allocated before it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        op()
        return torch.cuda.max_memory_allocated() - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        op()
    # Allocations and frees inside an op are booked on the op itself (self memory, at its
    # start); frees outside any op come as "[memory]" events.
    events = sorted((e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
                    for e in prof.events())
    running, peak = 0, 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def profile_top(op, lines=12):
    """cProfile of one run: the functions with the most own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    op()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(lines)
    text = out.getvalue()
    return text[text.find("ncalls"):].rstrip()


def measure(comfy, setup_, calls=16, rounds=5, memory_calls=4):
    ops = make_ops(comfy, setup_, calls)
    for op in ops.values():  # warm-up: model load, first-call allocations
        op()
    times = time_alternating(ops, calls, rounds)
    memory_ops = make_ops(comfy, setup_, memory_calls)
    memory = {name: peak_memory(op) for name, op in memory_ops.items()}
    return times, memory, ops


def run(comfy, out_dir, size=64, calls=16, rounds=5):
    setup_ = setup(comfy, size)
    times, memory, ops = measure(comfy, setup_, calls, rounds)
    latent_bytes = setup_["latent"]["samples"].numel() * 4
    base = statistics.median(times["KSampler"])
    target = TARGET_GPU if torch.cuda.is_available() else TARGET_CPU
    rows, ratios = [], {}
    for name in OPS:
        median = statistics.median(times[name])
        ratios[name] = median / base
        extra = memory[name] - memory["KSampler"]
        rows.append([name, median * 1e3, min(times[name]) * 1e3, max(times[name]) * 1e3,
                     "-" if name == "KSampler" else f"{ratios[name]:.3f}",
                     "-" if name == "KSampler" else ("yes" if ratios[name] <= target else "**no**"),
                     memory[name] / 2 ** 20, extra / 1024, "-" if name == "KSampler" else f"{extra / latent_bytes:.1f}"])
    missed = [n for n in OPS[1:] if ratios[n] > target]
    profiles = ""
    if missed:
        profiles = ("\n\n### Profile (a target was missed)\n\nOne EDICT sampling run, own time per function:\n\n```\n"
                    + profile_top(ops["EDICT sample"]) + "\n```\n\nOne KSampler run:\n\n```\n"
                    + profile_top(ops["KSampler"]) + "\n```")
    shape = tuple(setup_["latent"]["samples"].shape)
    text = (f"Tiny SD1.x checkpoint, image {size}x{size} (latent {shape}), cfg {setup_['cfg']:g} (cond and "
            f"uncond batched), normal scheduler, {calls} model calls per run (KSampler euler {calls} steps, "
            f"EDICT {calls // 2} steps, BDIA {calls} steps), {rounds} alternating rounds after one warm-up, "
            f"median. Target: at most {target}x KSampler's time per call; extra memory at most "
            f"{TARGET_BUFFERS} latent-sized buffers ({TARGET_BUFFERS * latent_bytes} bytes). Peak memory from "
            f"runs of {4} calls.\n\n"
            + report.table(["run", "ms / call (median)", "min", "max", "ratio to KSampler", "within target",
                            "peak MiB", "extra KiB vs KSampler", "extra in latent buffers"], rows)
            + profiles)
    fig, axes = report.figure(1, width=7)
    ax = axes[0][0]
    ax.boxplot([[t * 1e3 for t in times[n]] for n in OPS])
    ax.set_xticks(range(1, len(OPS) + 1), OPS, rotation=15)
    ax.set_ylabel("ms per model call")
    ax.set_title(f"time per model call, latent {shape}, cfg {setup_['cfg']:g}")
    report.write_part(out_dir, "cost", "Cost against ComfyUI's KSampler", text, fig)
    return {"ratios": ratios, "memory": memory, "latent_bytes": latent_bytes, "missed": missed}
