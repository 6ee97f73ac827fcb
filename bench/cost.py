"""Part 3: what each exact method costs against ComfyUI's own KSampler (euler).

Same model, latent, conditioning and cfg for every run. The exact methods are those of
edict_core.spec.SPECS (bench/methods.py), each inverting and sampling through its nodes at
its default settings. Each run is sized to about the same number of model calls (KSampler
euler N steps, a method of k calls a step N/k steps), and the calls each run really made are
counted, not assumed: the model is a clone with a unet function wrapper that counts every
batched cond/uncond evaluation, used alike by KSampler and by our nodes. The count is checked
against the spec's (spec.calls): a method that starts its pair with a DDIM step (BDIA, O-BELM)
makes N calls inverting a clean latent but N - 1 sampling from the inverted pair. Inversion
starts from a VAE-encoded picture, sampling from that inversion. The runs alternate round by
round (the order rotates each round), so load from other processes hits all of them alike;
the figure is the median over rounds of wall time / counted calls, and the ratio is ours
over KSampler's.

Memory: on CPU, torch's profiler (profile_memory) records every allocation and free; the
peak of their running sum over a run is the run's peak allocated memory beyond what
existed before it (weights excluded). "Extra" is ours minus KSampler's, also expressed in
float32 latent-sized buffers (B*C*H*W*4 bytes). It is measured at several latent sizes and
fitted as extra = fixed + k * latent_bytes: k is the number of latent-sized buffers that
grow with the picture, the fixed part what any small run allocates (schedules, records,
ComfyUI's bookkeeping). On a GPU the same is read from torch.cuda.max_memory_allocated.

If a ratio misses its target, the cProfile of that run and of KSampler, listed beside the
figures, shows where the time goes.
"""

import cProfile
import io
import pstats
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from harness.comfy import counting_model

from . import env, methods, report
from .methods import Run

TARGET_CPU, TARGET_GPU, TARGET_BUFFERS = 1.05, 1.02, 4
DIRECTIONS = {"invert": "Invert", "sample": "Sample"}  # an op's direction -> the node's role
OPS = ("KSampler",) + tuple(f"{m} {d}" for m in methods.EXACT for d in DIRECTIONS)
PROMPT = "a photo of a dog on the beach"


def setup(comfy, size=64, batch=1, cfg=7.0):
    """The shared inputs: the counted tiny model, prompt pair, and a VAE-encoded drawn
    picture of size x size (latent [batch, 4, size/8, size/8])."""
    clip, vae = comfy.tiny["clip"], comfy.tiny["vae"]
    with torch.inference_mode():
        latent = comfy.VAEEncode().encode(vae, env.drawn_images(batch, size))[0]
    model, counter = counting_model(comfy.tiny["model"])  # counter: one entry per network call
    return {"model": model, "counter": counter, "positive": env.encode_text(comfy, clip, PROMPT),
            "negative": env.encode_text(comfy, clip, ""), "latent": latent, "cfg": cfg}


def widget_steps(method, calls):
    """The steps widget that gives a method about `calls` model calls: calls / (calls per
    step), at least one step (Rex's RK4 makes 8 calls a step, more than the quick size's 4),
    plus one, since normal's last step, sigma_min to 0, is not run by an exact method."""
    return max(calls // methods.calls_per_step(method), 1) + 1


def make_ops(comfy, setup_, calls):
    """({op name: callable running it once with about `calls` model calls}, {op name: the
    prepared steps it runs, as its record says}, KSampler's being `calls`)."""
    s = setup_
    latent = s["latent"]
    runs = {m: Run(s["model"], s["positive"], s["negative"], s["cfg"], widget_steps(m, calls)) for m in methods.EXACT}
    inverted = {m: methods.invert(comfy, m, run, latent) for m, run in runs.items()}

    def ksampler():
        comfy.KSampler().sample(s["model"], 0, calls, s["cfg"], "euler", "normal", s["positive"],
                                s["negative"], latent, denoise=1.0)

    def ours(method, direction):
        source = latent if direction == "invert" else inverted[method]
        extra = {} if direction == "invert" else {"seed": 0}
        return lambda: env.run_node(comfy, methods.node(method, DIRECTIONS[direction]), latent_image=source,
                                    **runs[method].node_inputs(), **methods.settings(method), **extra)

    ops, steps = {"KSampler": ksampler}, {"KSampler": calls}
    for method in methods.EXACT:
        for direction in DIRECTIONS:
            ops[f"{method} {direction}"] = ours(method, direction)
            steps[f"{method} {direction}"] = len(inverted[method][methods.RECORD_KEY]["sigmas"]) - 1
    return ops, steps


def expected_calls(name, steps):
    """The model calls op `name` must make over `steps` prepared steps, by the spec."""
    if name == "KSampler":
        return steps
    method, direction = name.rsplit(" ", 1)
    return methods.calls(method, steps, started=direction == "invert")


def time_alternating(ops, counter, rounds):
    """({op: [seconds per model call, one per round]}, {op: calls per run}); the order
    rotates every round."""
    names = list(ops)
    times, calls = {name: [] for name in names}, {}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            counter.clear()
            start = time.perf_counter()
            ops[name]()
            seconds = time.perf_counter() - start
            calls[name] = len(counter)
            times[name].append(seconds / len(counter))
    return times, calls


def peak_memory(op, latent_bytes):
    """(peak bytes allocated during op() beyond what was allocated before it, name of the
    torch op whose allocation reached the peak, "1x a / 2x b": the net count of blocks of one
    and of two float32 latents' bytes this run had allocated at that peak)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        op()
        return torch.cuda.max_memory_allocated() - before, "n/a", "n/a"
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        op()
    # Allocations and frees inside an op are booked on the op itself (self memory, at its
    # start); frees outside any op come as "[memory]" events.
    events = sorted((e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage,
                     e.name) for e in prof.events())
    # Latent-sized blocks are counted by size: an allocation of exactly one (or two) float32
    # latents' bytes adds one, a free of that size takes one away. Two latents' bytes is a
    # float64 latent or a float32 cond+uncond batch; frees of blocks made before the run
    # can make a count negative.
    running, peak, at, live, live_at_peak = 0, 0, "none", {1: 0, 2: 0}, {1: 0, 2: 0}
    for _, delta, name in events:
        running += delta
        if abs(delta) in (latent_bytes, 2 * latent_bytes):
            live[abs(delta) // latent_bytes] += 1 if delta > 0 else -1
        if running > peak:
            peak, at, live_at_peak = running, name, dict(live)
    return peak, at, f"1x {live_at_peak[1]} / 2x {live_at_peak[2]}"


def profile_top(op, lines=14):
    """cProfile of one run: the functions with the most own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    op()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(lines)
    text = out.getvalue()
    return text[text.find("ncalls"):].rstrip()


def measure_time(comfy, size, calls, rounds):
    setup_ = setup(comfy, size)
    ops, steps = make_ops(comfy, setup_, calls)
    for op in ops.values():  # warm-up: model load, first-call allocations
        op()
    times, counted = time_alternating(ops, setup_["counter"], rounds)
    return setup_, ops, steps, times, counted


def measure_memory(comfy, size, calls=4):
    """{op: (peak bytes, op at the peak, live latent blocks)} and the latent's float32 bytes
    at one size. 4 calls: every method gets at least two prepared steps (BDIA and O-BELM need
    two; normal ends at sigma_min)."""
    setup_ = setup(comfy, size)
    ops, _ = make_ops(comfy, setup_, calls)
    latent_bytes = setup_["latent"]["samples"].numel() * 4
    return {name: peak_memory(op, latent_bytes) for name, op in ops.items()}, latent_bytes


def fit_buffers(points):
    """points [(latent_bytes, extra_bytes)] -> (fixed bytes, buffers per latent): least squares."""
    x = torch.tensor([p[0] for p in points], dtype=torch.float64)
    y = torch.tensor([p[1] for p in points], dtype=torch.float64)
    design = torch.stack([torch.ones_like(x), x], dim=1)
    fixed, slope = torch.linalg.lstsq(design, y.unsqueeze(1)).solution.squeeze(1).tolist()
    return fixed, slope


def run(comfy, out_dir, sizes=((64, 32), (256, 8)), rounds=5, memory_sizes=(64, 128, 256)):
    """sizes: (image side, model calls per run) pairs; a 32x32 latent costs the tiny UNet
    about 13x an 8x8 one, so fewer calls there still make runs of several seconds."""
    target = TARGET_GPU if torch.cuda.is_available() else TARGET_CPU
    sections, ratios, missed, shapes, counts = [], {}, [], {}, {}
    fig, axes = report.figure(len(sizes) + 1, width=5)
    for ax, (size, calls) in zip(axes[0], sizes):
        setup_, ops, steps, times, counted = measure_time(comfy, size, calls, rounds)
        seconds = statistics.median(times["KSampler"]) * calls
        shape = tuple(setup_["latent"]["samples"].shape)
        shapes[size] = shape
        base = statistics.median(times["KSampler"])
        rows = []
        for name in OPS:
            median = statistics.median(times[name])
            ratios[(name, size)] = median / base
            counts[(name, size)] = {"steps": steps[name], "counted": counted[name],
                                    "expected": expected_calls(name, steps[name])}
            ok = ratios[(name, size)] <= target
            if name != "KSampler" and not ok:
                missed.append((name, size))
            rows.append([name, steps[name], counted[name], expected_calls(name, steps[name]), median * 1e3,
                         min(times[name]) * 1e3, max(times[name]) * 1e3,
                         "-" if name == "KSampler" else f"{median / base:.3f}",
                         "-" if name == "KSampler" else ("yes" if ok else "**no**")])
        text = (f"### Image {size}x{size}, latent {shape}: about {calls} model calls per run (KSampler euler "
                f"{calls} steps; steps widget " + ", ".join(f"{m} {widget_steps(m, calls)}" for m in methods.EXACT)
                + f"), {seconds:.1f} s per KSampler run\n\n"
                + report.table(["run", "steps run", "model calls (counted)", "model calls (spec)", "ms / call (median)",
                                "min", "max",
                                "ratio to KSampler", f"within {target}x"], rows))
        for name, run_size in missed:
            if run_size == size:
                text += (f"\n\n**{name} misses the target here.** cProfile of one {name} run, own time per "
                         f"function:\n\n```\n{profile_top(ops[name])}\n```\n\nOne KSampler run:\n\n```\n"
                         f"{profile_top(ops['KSampler'])}\n```")
        sections.append(text)
        ax.boxplot([[t * 1e3 for t in times[n]] for n in OPS])
        ax.set_xticks(range(1, len(OPS) + 1), OPS, rotation=20, fontsize=7)
        ax.set(ylabel="ms per model call", title=f"latent {shape[2]}x{shape[3]}, cfg {setup_['cfg']:g}")

    memory, mem_rows, points = {}, [], {n: [] for n in OPS[1:]}
    for size in memory_sizes:
        peaks, latent_bytes = measure_memory(comfy, size)
        memory[size] = (peaks, latent_bytes)
        for name in OPS:
            peak, at, blocks = peaks[name]
            extra = peak - peaks["KSampler"][0]
            if name != "KSampler":
                points[name].append((latent_bytes, extra))
            mem_rows.append([f"{size}x{size}", name, peak / 2 ** 20, at, blocks,
                             "-" if name == "KSampler" else f"{extra / 2 ** 10:.1f}",
                             "-" if name == "KSampler" else f"{extra / latent_bytes:.1f}"])
    fits = {name: fit_buffers(p) for name, p in points.items()}
    fit_rows = [[name, f"{fixed / 2 ** 10:.1f}", f"{slope:.2f}", "yes" if slope <= TARGET_BUFFERS else "**no**"]
                for name, (fixed, slope) in fits.items()]
    ax = axes[0][-1]
    for name, pts in points.items():
        ax.plot([b / 2 ** 10 for b, _ in pts], [e / b for b, e in pts], marker="o", label=name)
    ax.axhline(TARGET_BUFFERS, color="gray", linestyle=":", label="target")
    ax.set(xscale="log", xlabel="latent KiB (float32)", ylabel="extra peak / latent bytes",
           title="extra memory vs KSampler")
    ax.legend(fontsize=7)
    text = (f"Tiny SD1.x checkpoint, cfg 7 (cond and uncond batched), normal scheduler; model calls "
            f"counted by a unet function wrapper on the shared model; {rounds} alternating rounds after "
            f"one warm-up; median of time / counted calls. Target: at most {target}x KSampler's time per call, "
            f"extra peak memory at most {TARGET_BUFFERS} latent-sized buffers.\n\n"
            + "\n\n".join(sections)
            + "\n\n### Peak memory (runs of about 2 calls; the peak is reached within one step)\n\n"
            + report.table(["image", "run", "peak MiB", "op at the peak", "net blocks at the peak (1x / 2x latent)",
                            "extra KiB vs KSampler", "extra in latent buffers"], mem_rows)
            + "\n\nBlocks: allocations minus frees of exactly one float32 latent's bytes (1x) and of "
              "two (2x: a float64 latent, or a float32 cond+uncond batch as KSampler has too) during the "
              "run; frees of blocks made before it (the input LATENT, an inverted pair handed to Sample) "
              "count against it, hence negative counts."
            + "\n\n**Fit** extra = fixed + k * latent bytes over the sizes above (k: the latent-sized buffers "
              "that grow with the picture):\n\n"
            + report.table(["run", "fixed KiB", "k (latent buffers)", f"k <= {TARGET_BUFFERS}"], fit_rows))
    report.write_part(out_dir, "cost", "Cost against ComfyUI's KSampler", text, fig)
    return {"ratios": ratios, "missed": missed, "memory": memory, "fits": fits, "shapes": shapes, "calls": counts}
