"""Part: edits on a model that has learned (bench/learned_model.py), judged against ground truth.

Held-out scenes (bench/scenes.py) are rendered and encoded (the latent is the picture), then
inverted with the source caption by every exact method of edict_core.spec.SPECS and by DDIM
inversion, through the pack's real nodes in this process (bench/methods.py), and each inversion
regenerated four ways: with the source caption (the round trip) and with three edited
captions (colour swap, shape swap, background change). SDEdit (ComfyUI's KSampler from seeded
noise at the same denoise) is the baseline that keeps nothing. All scenes run as one latent
batch, each with its own caption (the CONDITIONING batch matches the latent batch).

Measures, all from the renderer's ground truth (scenes.judge):
- reconstruction: latent MSE of the round trip (and pixel MSE of its decoded picture, which
  with this identity decoder is latent MSE over RGB times (0.18215 / 2)^2);
- structure distance: 1 - IoU of the edit's shape mask against the source's (colour and
  background edits: the shape should stay where it was; shape edits change the mask by design);
- background PSNR outside the source's mask (colour and shape edits);
- hit: the edited attribute read back as the target; kept: the other attributes read back as
  the source's.
"""

import math
import time

import torch

from . import learned_model as lm
from . import methods, report, scenes
from .methods import Run

KINDS = ("color", "shape", "background")
METHODS = methods.METHODS + ("SDEdit",)
PICTURE = dict(cfg=3.0, denoise=0.8, round_trip_denoise=1.0, scenes=4)


def _decode(samples):
    return lm.decode(samples.to(torch.float32))


def _judge_edit(kind, source, targets, edited, source_masks, source_images):
    """Scores of one batch of edits of `kind`: {hit, kept, structure, psnr} (means)."""
    judged = scenes.judge(edited)
    right = scenes.hits(judged, targets)
    others = [k for k in KINDS if k != kind]
    kept = torch.stack([right[k] for k in others]).all(0)
    masks = torch.stack([j["mask"] for j in judged])
    structure = 1 - scenes.iou(masks, source_masks)
    row = {"hit": float(right[kind].double().mean()), "kept": float(kept.double().mean()),
           "structure": float(structure.mean())}
    if kind != "background":
        psnr = scenes.psnr_outside(edited, source_images, source_masks)
        row["psnr"] = float(psnr.clamp(max=100).mean())  # exact agreement counts as 100 dB
    else:
        row["psnr"] = float("nan")
    return row


def method_steps(method, steps):
    """The steps `method` runs at: `steps`, or fewer where its nodes default to fewer (Rex: 20, its
    RK4 step costs 8 model calls)."""
    spec = methods.SPEC.get(method)
    return min(steps, spec.steps) if spec is not None else steps


def steps_text(steps):
    """"50 steps (Rex 20, its nodes' default)"."""
    fewer = [f"{m} {method_steps(m, steps)}" for m in methods.EXACT if method_steps(m, steps) != steps]
    return f"{steps} steps" + (f" ({', '.join(fewer)}, its nodes' default)" if fewer else "")


def measure(comfy, learned, count, cfgs, denoises, steps, round_trip_denoises=None, log=print):
    """Every method at every (cfg, denoise). Returns (rows, trips, pictures): rows {method,
    cfg, denoise, kind, hit, kept, structure, psnr, seconds}, trips {method, cfg, denoise,
    latent_mse, pixel_mse} (round trips at round_trip_denoises, default all), pictures
    {(method, cfg, denoise, kind): decoded [B, 16, 16, 3]} with kind "round trip" too."""
    held = scenes.held_out(count)
    images, masks = scenes.render_batch(held)
    latent = lm.encode(images)
    targets = {kind: [scenes.edits(s)[kind] for s in held] for kind in KINDS}
    source = lm.conditioning(comfy, learned.clip, [s.caption for s in held])
    negative = lm.conditioning(comfy, learned.clip, [""] * count)
    edit_conds = {kind: lm.conditioning(comfy, learned.clip, [t.caption for t in targets[kind]]) for kind in KINDS}
    round_trip_denoises = denoises if round_trip_denoises is None else round_trip_denoises
    rows, trips, pictures = [], [], {}
    for cfg in cfgs:
        for denoise in denoises:
            for method in METHODS:
                run = Run(learned.model, source, negative, cfg, method_steps(method, steps), denoise=denoise)
                started = time.perf_counter()
                results = {}
                if method == "SDEdit":
                    for kind in KINDS:
                        results[kind] = methods.sdedit(comfy, run, latent, edit_conds[kind])
                else:
                    inverted = methods.invert(comfy, method, run, latent)
                    if denoise in round_trip_denoises:
                        results["round trip"] = methods.regenerate(comfy, method, run, inverted)
                    for kind in KINDS:
                        results[kind] = methods.regenerate(comfy, method, run, inverted, positive=edit_conds[kind])
                seconds = time.perf_counter() - started
                if "round trip" in results:
                    back = results["round trip"].double()
                    trips.append({"method": method, "cfg": cfg, "denoise": denoise,
                                  "latent_mse": float(((back - latent["samples"].double()) ** 2).mean()),
                                  "pixel_mse": float(((_decode(back) - images) ** 2).double().mean())})
                for kind, samples in results.items():
                    decoded = _decode(samples)
                    pictures[(method, cfg, denoise, kind)] = decoded[:PICTURE["scenes"]]
                    if kind in KINDS:
                        rows.append({"method": method, "cfg": cfg, "denoise": denoise, "kind": kind,
                                     "seconds": seconds, **_judge_edit(kind, held, targets[kind], decoded, masks, images)})
                if log:
                    mine = [r for r in rows if (r["method"], r["cfg"], r["denoise"]) == (method, cfg, denoise)]
                    log(f"  {method} cfg {cfg:g} denoise {denoise:g}: {seconds:.1f} s, hit "
                        + ", ".join(f"{r['kind']} {r['hit']:.2f}" for r in mine))
    pictures["source"] = images[:PICTURE["scenes"]]
    pictures["scenes"] = held[:PICTURE["scenes"]]
    pictures["targets"] = {kind: targets[kind][:PICTURE["scenes"]] for kind in KINDS}
    return rows, trips, pictures


def averaged(rows):
    """{(method, cfg, denoise): {hit (the three edits), structure (colour and background
    edits), psnr (colour and shape edits), kept}}."""
    out = {}
    for key in dict.fromkeys((r["method"], r["cfg"], r["denoise"]) for r in rows):
        mine = {r["kind"]: r for r in rows if (r["method"], r["cfg"], r["denoise"]) == key}
        out[key] = {"hit": sum(r["hit"] for r in mine.values()) / len(mine),
                    "kept": sum(r["kept"] for r in mine.values()) / len(mine),
                    "structure": (mine["color"]["structure"] + mine["background"]["structure"]) / 2,
                    "psnr": (mine["color"]["psnr"] + mine["shape"]["psnr"]) / 2}
    return out


def at_hit(points, level):
    """Linear interpolation of (hit, structure, psnr) points (one per denoise) at hit rate
    `level`: (structure, psnr), or None where the method's hits never bracket the level."""
    points = sorted(points)
    for (h0, s0, p0), (h1, s1, p1) in zip(points, points[1:]):
        if h0 <= level <= h1:
            w = 0.0 if h1 == h0 else (level - h0) / (h1 - h0)
            return s0 + w * (s1 - s0), p0 + w * (p1 - p0)
    for h, s, p in points:
        if abs(h - level) < 1e-9:
            return s, p
    return None


def matched(avg, cfgs, denoises):
    """Per cfg and exact method, against DDIM at equal hit rate: {cfg: {method: (level, (structure,
    psnr), (DDIM's structure, psnr))}}, level the highest hit rate both reach along denoise (the top
    of the overlap of their hit ranges), each interpolated there; None where the ranges do not
    overlap. Pairwise, so that one method's low hits do not set everybody's level."""
    out = {}
    for cfg in cfgs:
        points = {m: [(avg[(m, cfg, d)]["hit"], avg[(m, cfg, d)]["structure"], avg[(m, cfg, d)]["psnr"])
                      for d in denoises] for m in methods.METHODS}
        ddim = points["DDIM"]
        out[cfg] = {}
        for m in methods.EXACT:
            low = max(min(h for h, _, _ in pts) for pts in (points[m], ddim))
            level = min(max(h for h, _, _ in pts) for pts in (points[m], ddim))
            out[cfg][m] = (level, at_hit(points[m], level), at_hit(ddim, level)) if low <= level else None
    return out


def ratios(trips, cfg, denoise=1.0):
    """DDIM's round-trip latent MSE over each exact method's at (cfg, denoise): {method: ratio}."""
    pick = {t["method"]: t["latent_mse"] for t in trips if t["cfg"] == cfg and t["denoise"] == denoise}
    if "DDIM" not in pick:
        return {}
    return {m: (math.inf if pick[m] == 0 else pick["DDIM"] / pick[m]) for m in methods.EXACT if m in pick}


def grid_figure(pictures, cfg, denoise, round_trip_denoise, steps):
    """The picture: per scene a block, rows = methods (SDEdit last), columns = source (first
    row only), round trip at round_trip_denoise, then the colour, shape and background edits
    at (cfg, denoise)."""
    import matplotlib.pyplot as plt

    shown = [m for m in METHODS]
    n_scenes = len(pictures["scenes"])
    cols = 5
    fig, axes = plt.subplots(len(shown), cols * n_scenes, figsize=(1.25 * cols * n_scenes, 1.35 * len(shown) + 0.6),
                             squeeze=False)
    titles = ["source", f"round trip\n(denoise {round_trip_denoise:g})", "colour edit", "shape edit",
              "background edit"]
    for s in range(n_scenes):
        for r, method in enumerate(shown):
            cells = [pictures["source"][s] if r == 0 else None,
                     pictures.get((method, cfg, round_trip_denoise, "round trip"), [None] * n_scenes)[s]
                     if method != "SDEdit" else None]
            cells += [pictures[(method, cfg, denoise, kind)][s] for kind in KINDS]
            for c, image in enumerate(cells):
                ax = axes[r][s * cols + c]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(image is not None)
                if image is not None:
                    ax.imshow(image.numpy(), interpolation="nearest")
                if r == 0:
                    ax.set_title(titles[c], fontsize=7)
                if c == 1 and s == 0 or (c == 0 and r == 0 and s == 0):
                    pass
                if s * cols + c == 0 or (c == 1 and s == 0 and r > 0):
                    ax.set_ylabel(method, fontsize=8) if c == 1 or r == 0 else None
        scene = pictures["scenes"][s]
        target = pictures["targets"]
        axes[-1][s * cols + 2].set_xlabel(target["color"][s].color, fontsize=7)
        axes[-1][s * cols + 3].set_xlabel(target["shape"][s].shape, fontsize=7)
        bg = target["background"][s]
        axes[-1][s * cols + 4].set_xlabel(f"{bg.bg_color} {bg.background}", fontsize=7)
        axes[-1][s * cols].set_xlabel(scene.caption.replace(" on ", "\non "), fontsize=6)
    fig.suptitle(f"Learned 16x16 model: each method's round trip and edits (cfg {cfg:g}, {steps_text(steps)}, edits at "
                 f"denoise {denoise:g}; target attribute under each column)", fontsize=9)
    return fig


def run(comfy, out_dir, scenes_count=100, cfgs=(1.0, 3.0, 7.0), denoises=(0.6, 0.8, 1.0), steps=50,
        accuracy_count=100, round_trip_denoises=None, reduction=""):
    """Load the committed learned model, prove it learned (accuracy on held-out captions at
    cfg 3), run the edit grid and write edits.md / edits.png. Returns a dict of figures."""
    started = time.perf_counter()
    learned = lm.load(comfy)
    acc = lm.accuracy(comfy, learned, count=accuracy_count, cfg=3.0)
    learned_seconds = time.perf_counter() - started
    rows, trips, pictures = measure(comfy, learned, scenes_count, cfgs, denoises, steps, round_trip_denoises)
    avg = averaged(rows)
    match = matched(avg, cfgs, denoises)
    picture_cfg = PICTURE["cfg"] if PICTURE["cfg"] in cfgs else cfgs[-1]
    picture_denoise = PICTURE["denoise"] if PICTURE["denoise"] in denoises else denoises[-1]
    trip_denoise = max(d for d in denoises if round_trip_denoises is None or d in round_trip_denoises)
    fig = grid_figure(pictures, picture_cfg, picture_denoise, trip_denoise, steps)
    info = learned.info
    separation, share = info["clip_separation"], info["clip_share"]
    trip_body = [[t["method"], t["cfg"], t["denoise"], t["latent_mse"], t["pixel_mse"]] for t in trips]
    ratio_rows = []
    for cfg in cfgs:
        for d in sorted({t["denoise"] for t in trips}):
            r = ratios(trips, cfg, d)
            if r:
                ratio_rows.append([cfg, d] + [("inf" if math.isinf(v) else v) for v in r.values()])
    edit_body = [[r["method"], r["cfg"], r["denoise"], r["kind"], r["hit"], r["kept"], r["structure"], r["psnr"]]
                 for r in rows]
    avg_body = [[m, c, d, v["hit"], v["kept"], v["structure"], v["psnr"]] for (m, c, d), v in avg.items()]
    match_body = []
    for cfg, by_method in match.items():
        for m, value in by_method.items():
            if value:
                level, (structure, psnr), (d_structure, d_psnr) = value
                match_body.append([cfg, m, level, structure, d_structure, psnr, d_psnr])
            else:
                match_body.append([cfg, m, "ranges apart", "n/a", "n/a", "n/a", "n/a"])
    model_text = (
        f"**The model**: the committed learned model (`{info['path']}`, {info['parameters'] / 1e6:.2f}M parameters, "
        f"sha256 {info['sha256'][:12]}...; [learned_model.md](learned_model.md) describes it and shows what it "
        "draws): ComfyUI's SD15 model class over a small UNet, conditioned through the tiny checkpoint's random "
        "CLIP-L and CLIPTextEncode. The latent is the 16 x 16 picture itself (RGB in [-1, 1] and grey as the 4th "
        "channel, over the SD1.5 scale factor), so a latent is a picture and the decoder is exact.\n\n"
        "**The random CLIP-L keeps the words apart** (from the manifest, measured over the grammar's 360 captions "
        "when it was trained: the fraction of the conditioning's variance an attribute explains, and "
        "leave-one-out nearest-centroid accuracy of telling it from the conditioning): "
        + ", ".join(f"{k} {v[0]:.3f} / {v[1]:.3f}" for k, v in separation.items())
        + f"; the caption-dependent part is {share:.1%} of its energy (the rest is the same for every "
        "caption). So the CONDITIONING is CLIPTextEncode's, not a table of our own.\n\n"
        f"**What it learned** (text to image on {acc['count']} held-out scenes' captions, KSampler euler "
        f"{acc['steps']} steps, cfg {acc['cfg']:g}, read back by scenes.judge): colour inside the shape "
        f"{acc['color']:.2f} (target 0.90), shape class by template IoU {acc['shape']:.2f} (target 0.80), "
        f"background (colour and kind) {acc['background']:.2f} (target 0.70).")
    verdict = []
    for cfg in cfgs:
        r = ratios(trips, cfg, trip_denoise)
        if r:
            verdict.append(f"- cfg {cfg:g}, denoise {trip_denoise:g}: DDIM's round-trip latent MSE over each exact "
                           "method's: " + ", ".join(f"DDIM/{m} {_ratio(v)}" for m, v in r.items()))
    for cfg, by_method in match.items():
        parts = [f"{m} structure {v[1][0]:.3f} vs DDIM {v[2][0]:.3f}, background PSNR {v[1][1]:.1f} vs "
                 f"{v[2][1]:.1f} dB (hit {v[0]:.2f})" if v else f"{m}: hit ranges do not overlap DDIM's"
                 for m, v in by_method.items()]
        verdict.append(f"- cfg {cfg:g}, at equal hit rate with DDIM: " + "; ".join(parts))
    text = (
        model_text + "\n\n"
        + (f"**Size of this run**: {reduction}\n\n" if reduction else "")
        + f"{scenes_count} held-out scenes as one latent batch, {steps_text(steps)}, normal scheduler, cfg "
        + ", ".join(f"{c:g}" for c in cfgs) + ", denoise " + ", ".join(f"{d:g}" for d in denoises)
        + "; " + ", ".join(methods.settings_text(m) for m in methods.EXACT)
        + "; EDICT's pair averaged by Latent Pair Mix (0.5). One inversion per method and setting serves "
        "its round trip and its three edits. The picture: the first scenes, "
        f"cfg {picture_cfg:g}, edits at denoise {picture_denoise:g}, round trips at {trip_denoise:g}.\n\n"
        "**Headline**:\n\n" + "\n".join(verdict) + "\n\n"
        "**Round trips** (latent MSE in LATENT units; pixel MSE in [0, 1] of the decoded picture):\n\n"
        + report.table(["method", "cfg", "denoise", "latent MSE", "pixel MSE"], trip_body)
        + "\n\n**Reconstruction ratio** DDIM / exact method (latent MSE):\n\n"
        + report.table(["cfg", "denoise"] + [f"DDIM / {m}" for m in methods.EXACT], ratio_rows)
        + "\n\n**Edits, averaged over the three kinds** (hit: the target attribute read back; kept: "
        "the other attributes kept; structure: 1 - IoU with the source mask, colour and background "
        "edits; PSNR outside the source mask, colour and shape edits, dB):\n\n"
        + report.table(["method", "cfg", "denoise", "hit", "kept", "structure distance", "background PSNR"],
                       avg_body)
        + "\n\n**At equal hit rate with DDIM** (per cfg, each exact method and DDIM interpolated along "
        "denoise at the highest hit rate both reach):\n\n"
        + report.table(["cfg", "method", "hit rate", "structure distance", "DDIM's", "background PSNR", "DDIM's"],
                       match_body)
        + "\n\n**Every edit**:\n\n"
        + report.table(["method", "cfg", "denoise", "edit", "hit", "kept", "structure distance",
                        "background PSNR"], edit_body)
        + f"\n\nLearned-model check and caption encoding {learned_seconds:.0f} s; grid "
        f"{time.perf_counter() - started - learned_seconds:.0f} s.")
    report.write_part(out_dir, "edits", "Edits on a learned model, against ground truth", text, fig)
    return {"accuracy": {k: acc[k] for k in ("color", "shape", "background")}, "rows": rows, "trips": trips,
            "averaged": avg, "matched": match, "info": info, "separation": separation}


def _ratio(value):
    return "inf (exact to the last float32 bit)" if math.isinf(value) else f"{value:.3g}"
