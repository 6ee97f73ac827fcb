"""Part: attention control on the learned model (bench/learned_model.py), judged against ground
truth as the edits part judges plain edits (bench/edits.py: structure distance, background
PSNR, hit).

Held-out scenes are inverted with their captions by each exact method and by DDIM inversion,
then edited three ways (colour, shape, background) with each row's control: a plain edit,
mutual self-attention (Exact Attention Control, preset auto: MasaCtrl's on this UNet) and
prompt-to-prompt's cross-attention maps in the first 80% of the steps (the row as first measured:
without the node's self-attention map replacement and LocalBlend, whose PIE-Bench defaults are
not measured here yet; each scene's own caption pair aligned through the CLIP, as the node aligns
one pair). The exact methods run
the pack's Sample nodes; DDIM runs the same lockstep over DDIM sampling from DDIM-inverted noise
(harness.ddim.ddim_controlled), the baseline that PIE-Bench's "DDIM + P2P" row stands for: its
source branch does not retrace the source. Reported besides: the source branch's end error, the
time of a controlled edit over a plain one, and the most one evaluation's record held.
"""

import time

import torch

from harness.ddim import ddim_controlled

from . import edits, methods, report, scenes
from . import learned_model as lm
from .env import pack_module, run_node
from .methods import Run

ROWS = ("plain", "+ mutual self-attention", "+ P2P")
PICTURES = 4  # scenes in the figure


def _controls(comfy, clip, source, sources, targets):
    """{row: ATTENTION_CONTROL or None} for one edit kind (P2P: a caption pair per scene);
    source: the captions' CONDITIONING, the simple Sample nodes' source branch."""
    attention = pack_module("comfy_adapter.attention")
    masa = run_node(comfy, "ExactAttentionControl", preset="auto", inject="keys and values", step_start=0.08,
                    step_end=1.0, layer_start=0.625, layer_end=1.0, source_positive=source)
    p2p = attention.p2p_control(clip, sources, targets, 0.0, 0.8, source_positive=source)
    return {"plain": None, ROWS[1]: masa, ROWS[2]: p2p}


def measure(comfy, learned, count, cfgs, denoise, steps, method_names, log=print):
    """Rows {method, cfg, row, kind, hit, kept, structure, psnr, seconds, source_end, peak_bytes}."""
    held = scenes.held_out(count)
    images, masks = scenes.render_batch(held)
    latent = lm.encode(images)
    targets = {kind: [scenes.edits(s)[kind] for s in held] for kind in edits.KINDS}
    captions = [s.caption for s in held]
    source = lm.conditioning(comfy, learned.clip, captions)
    negative = lm.conditioning(comfy, learned.clip, [""] * count)
    edit_conds = {kind: lm.conditioning(comfy, learned.clip, [t.caption for t in targets[kind]])
                  for kind in edits.KINDS}
    controls = {kind: _controls(comfy, learned.clip, source, captions, [t.caption for t in targets[kind]])
                for kind in edits.KINDS}
    out, pictures = [], {"source": images[:PICTURES]}
    for cfg in cfgs:
        for method in method_names:
            run = Run(learned.model, source, negative, cfg, edits.method_steps(method, steps), denoise=denoise)
            inverted = methods.invert(comfy, method, run, latent)
            for kind in edits.KINDS:
                for row in ROWS:
                    control = controls[kind][row]
                    started = time.perf_counter()
                    samples, info = _edit(comfy, method, run, inverted, edit_conds[kind], control)
                    seconds = time.perf_counter() - started
                    decoded = lm.decode(samples.float())
                    judged = edits._judge_edit(kind, held, targets[kind], decoded, masks, images)
                    pictures[(method, cfg, row, kind)] = decoded[:PICTURES]
                    source_end = float("nan")
                    if info is not None:
                        back = info["source_branch"].double()
                        source_end = float(((back - latent["samples"].double()) ** 2).mean())
                    out.append(dict(method=method, cfg=cfg, row=row, kind=kind, seconds=seconds, source_end=source_end,
                                    peak_bytes=info["peak_record_bytes"] if info else 0, **judged))
                if log:
                    mine = [r for r in out if (r["method"], r["cfg"], r["kind"]) == (method, cfg, kind)]
                    log(f"  {method} cfg {cfg:g} {kind}: " + "; ".join(
                        f"{r['row']} hit {r['hit']:.2f} structure {r['structure']:.3f} {r['seconds']:.1f} s"
                        for r in mine))
    return out, pictures


def figure(pictures, cfg, kind, method_names):
    """The first scenes' `kind` edits at `cfg`: the source, then a row per method and control."""
    import matplotlib.pyplot as plt

    keys = [(m, row) for m in method_names for row in ROWS if (m, cfg, row, kind) in pictures]
    count = pictures["source"].shape[0]
    fig, axes = plt.subplots(len(keys) + 1, count, figsize=(1.3 * count + 2.2, 1.3 * (len(keys) + 1)), squeeze=False)
    for i, (label, batch) in enumerate([("source", pictures["source"])] +
                                        [(f"{m} {row}", pictures[(m, cfg, row, kind)]) for m, row in keys]):
        for j in range(count):
            ax = axes[i][j]
            ax.imshow(batch[j].clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"{kind} edits, cfg {cfg:g}", fontsize=9)
    return fig


def _edit(comfy, method, run, inverted, positive, control):
    """One edit: (LATENT samples [B, C, H, W], the control's report with the source branch, or None)."""
    if method == "DDIM":
        if control is None:
            return methods.regenerate(comfy, method, run, inverted, positive=positive), None
        edit, source_branch, info = ddim_controlled(run.model, run.positive, positive, run.negative, run.cfg,
                                                    inverted, run.steps, run.denoise, control)
        return edit.to(torch.float32), dict(info, source_branch=source_branch)
    edit_run = Run(**{**run.__dict__, "positive": positive})
    extra = {} if control is None else {"attention_control": control}
    latent = run_node(comfy, methods.node(method, "Sample"), latent_image=inverted, seed=0,
                      **edit_run.node_inputs(), **methods.settings(method), **extra)
    info = latent["exact_inversion"].get("attention_control") if control is not None else None
    if methods.SPEC[method].name == "edict":
        latent = run_node(comfy, "LatentPairMix", latent=latent, weight=0.5)
    return latent["samples"], info


def _mean(rows, key, kinds):
    values = [r[key] for r in rows if r["kind"] in kinds and r[key] == r[key]]
    return sum(values) / len(values) if values else float("nan")


def averaged(rows):
    """{(method, cfg, row): {hit (three kinds), structure (colour, background), psnr (colour,
    shape), seconds per edit, source_end, peak_bytes}}."""
    out = {}
    for key in dict.fromkeys((r["method"], r["cfg"], r["row"]) for r in rows):
        mine = [r for r in rows if (r["method"], r["cfg"], r["row"]) == key]
        out[key] = {"hit": _mean(mine, "hit", edits.KINDS), "structure": _mean(mine, "structure", ("color", "background")),
                    "psnr": _mean(mine, "psnr", ("color", "shape")), "seconds": _mean(mine, "seconds", edits.KINDS),
                    "source_end": _mean(mine, "source_end", edits.KINDS),
                    "peak_bytes": max(r["peak_bytes"] for r in mine)}
    return out


def run(comfy, out_dir, scenes_count=12, cfgs=(3.0,), denoise=1.0, steps=50, method_names=None):
    """Load the committed learned model, run every row and write controls.md. Returns figures."""
    started = time.perf_counter()
    learned = lm.load(comfy)
    method_names = tuple(method_names or methods.METHODS)
    rows, pictures = measure(comfy, learned, scenes_count, cfgs, denoise, steps, method_names)
    avg = averaged(rows)
    body = [[m, c, row, v["hit"], v["structure"], v["psnr"], v["seconds"] / avg[(m, c, "plain")]["seconds"],
             v["source_end"], v["peak_bytes"] / 1024] for (m, c, row), v in avg.items()]
    verdict = []
    for cfg in cfgs:
        for row in ROWS[1:]:
            ddim = avg.get(("DDIM", cfg, row))
            for m in method_names:
                if m == "DDIM" or ddim is None:
                    continue
                v = avg[(m, cfg, row)]
                verdict.append(f"- cfg {cfg:g}, {row}: {m} structure {v['structure']:.3f} vs DDIM's {ddim['structure']:.3f}"
                               f" (ratio {ddim['structure'] / max(v['structure'], 1e-9):.2f}), background PSNR "
                               f"{v['psnr']:.1f} vs {ddim['psnr']:.1f} dB, hit {v['hit']:.2f} vs {ddim['hit']:.2f}")
    text = (
        f"The committed learned model ({learned.info['parameters'] / 1e6:.2f}M parameters, sha256 "
        f"{learned.info['sha256'][:12]}..., [learned_model.md](learned_model.md)); {scenes_count} held-out scenes as one batch, {edits.steps_text(steps)}, "
        f"denoise {denoise:g}, cfg " + ", ".join(f"{c:g}" for c in cfgs) + "; the exact methods at their "
        "nodes' defaults (EDICT's pair averaged by Latent Pair Mix 0.5). Rows: " + ", ".join(ROWS) + ". "
        "Structure distance: 1 - IoU of the edit's shape mask with the source's (colour and background edits); "
        "background PSNR outside the source mask (colour and shape edits); hit: the edited attribute read "
        "back, all three edits. Time: a controlled edit's seconds over the plain edit's (the same method "
        "and cfg). Source end: latent MSE of the source branch's end against the source latent. Record: "
        "the most one evaluation's selected layers held (KiB). The picture: the first scenes' colour edits at cfg "
        f"{cfgs[0]:g}.\n\n**Against DDIM + the same control**:\n\n"
        + "\n".join(verdict) + "\n\n"
        + report.table(["method", "cfg", "row", "hit", "structure distance", "background PSNR", "time / plain",
                        "source end MSE", "record KiB"], body)
        + "\n\n**Every edit**:\n\n"
        + report.table(["method", "cfg", "row", "edit", "hit", "kept", "structure distance", "background PSNR"],
                       [[r["method"], r["cfg"], r["row"], r["kind"], r["hit"], r["kept"], r["structure"], r["psnr"]]
                        for r in rows])
        + f"\n\nRun time {time.perf_counter() - started:.0f} s.")
    fig = figure(pictures, cfgs[0], "color", method_names)
    report.write_part(out_dir, "controls", "Attention control on the learned model, against ground truth", text, fig)
    return {"rows": rows, "averaged": avg}
