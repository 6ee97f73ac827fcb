"""A tiny text-to-image model that has learned its prompts: ComfyUI's SD1.5 model, trained once.

The model is comfy.supported_models.SD15 (model_base.BaseModel, EPS, SD1.5 latent format)
over a small unet_config, built as harness/tiny_models.py builds its families, and wrapped in a
ModelPatcher, so every node of the pack and of ComfyUI runs it as it runs SD1.5. It is trained
on bench/scenes.py's procedural scenes, conditioned through the tiny checkpoint's real CLIP-L
and CLIPTextEncode (prompt-to-prompt aligns that encoder's tokens).

Its weights are committed: WEIGHTS (float16 safetensors) and MANIFEST (configuration, seed,
steps, training time, final loss, accuracy, the file's sha256) under bench/. `load` checks the
digest and the configuration against the manifest, so every machine measures the same model
and nothing is trained outside `python -m bench.learned_model --train`.

The latent is the scene itself: a 16 x 16 picture's RGB mapped to [-1, 1] plus its grey level
as the fourth channel, in model space; the LATENT holds that divided by the SD1.5 scale factor
(latent_format.process_out), as VAE Encode would hand it over. `decode` is the exact inverse,
so a latent is shown directly as a picture, and pixel MSE is latent MSE over the RGB channels
times (scale / 2)^2.

The UNet has SD1.5's layout at a fifth of its width (model_channels 64 against 320, channel_mult
[1, 1, 2]), on three levels (16 x 16, 8 x 8, 4 x 4) where SD1.5 has four,
a transformer (self-attention, then cross-attention to CLIP-L's 77 tokens) after every
ResBlock of every level and in the middle: 10 transformer blocks in call order (SD1.5: 16 at 4
resolutions), so attention control's layer windows (MasaCtrl's decoder layers, P2P's every
cross-attention) select what they select on SD1.5. Its first level has 64 channels so that the
output's GroupNorm (32 groups, as ComfyUI builds it) sees 2 channels per group: at 32 channels
it normalised each channel on its own, took every constant over the picture out of the
prediction, and the earlier model so predicted none of the noise's mean (`mean_error`) and drew
the mean colour of its starting noise whatever the caption said.

Training: the EPS objective at the model's own model_sampling noise levels (timesteps uniform
over its 1000 sigmas), AdamW with warm-up and cosine decay, the weights' moving average kept,
the prompt dropped to the empty caption 10% of the time (classifier-free guidance), all from
one seed, with min-SNR loss weighting. The random CLIP-L's caption-dependent part is a small
share of its output's energy, so the cross-attention key and value projections start on the
directions where the captions differ most (`initialise_cross_attention`); on the earlier, smaller
UNet that learned no faster over 800 steps (colour 0.33 against 0.34 with random projections), and
it stays because the committed model was trained so. Everything else starts as
tiny_models.initialise seeds it.

API, for the bench and the tests:
    learned = load(comfy)                                # Learned: model (MODEL), clip, info (the manifest)
    cond = conditioning(comfy, learned.clip, captions)   # CONDITIONING [B, 77, 768]
    latent = encode(images); images = decode(latent["samples"])
    figures = accuracy(comfy, learned)                   # colour / shape / background on held-out scenes
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import torch

from . import scenes

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.join(HERE, "learned_model.safetensors")
MANIFEST = os.path.join(HERE, "learned_model.json")
RETRAIN = "python -m bench.learned_model --train"
FORMAT = 2  # bump when the scenes, the latent or the training loop change: the manifest must match it

UNET = dict(
    image_size=scenes.SIZE, in_channels=4, out_channels=4, model_channels=64, num_res_blocks=[1, 1, 1],
    channel_mult=[1, 1, 2], num_heads=4, use_spatial_transformer=True, transformer_depth=[1, 1, 1],
    transformer_depth_middle=1, transformer_depth_output=[1, 1, 1, 1, 1, 1], context_dim=768, legacy=False,
    use_linear_in_transformer=False, adm_in_channels=None, use_checkpoint=False,
    use_temporal_resblock=False, use_temporal_attention=False)


@dataclass(frozen=True)
class Training:
    steps: int
    batch: int = 32
    lr: float = 2e-3
    warmup: int = 100
    dropout: float = 0.1  # how often the prompt is the empty caption
    seed: int = 0
    # The weights kept are an exponential moving average of the trained ones (decay
    # min(ema, (1 + step) / (10 + step))): a short, noisy training's samples are far cleaner so.
    ema: float = 0.999
    # Min-SNR weighting (Hang et al., ICCV 2023): each sample's EPS loss times min(1, gamma * sigma^2)
    # (min(SNR, gamma) / SNR with SNR = 1 / sigma^2), so the nearly clean levels, where the noise
    # is hardest to see and matters least, stop dominating the gradient.
    snr_gamma: float = 5.0


MODEL = Training(steps=1500)  # the committed model's training (its manifest holds what it took)
ACCURACY = dict(count=200, cfgs=(3.0, 7.5), steps=30)  # how the manifest's figures are measured


class LearnedModelError(RuntimeError):
    """The committed model cannot be loaded as it is: the message names the file and the fix."""


@dataclass
class Learned:
    model: object  # MODEL (ModelPatcher of the SD15 BaseModel)
    clip: object  # CLIP (the tiny checkpoint's CLIP-L)
    info: dict  # the manifest, plus path and parameters


# ---------------------------------------------------------------------------------------------
# latents and conditioning

def to_model_space(images):
    """Pictures [B, H, W, 3] in [0, 1] -> model-space latents [B, 4, H, W] in [-1, 1]."""
    rgb = images.permute(0, 3, 1, 2).to(torch.float32) * 2 - 1
    return torch.cat([rgb, rgb.mean(1, keepdim=True)], dim=1)


def encode(images):
    """A LATENT of pictures [B, H, W, 3]: the model-space latent over the SD1.5 scale factor."""
    from comfy.latent_formats import SD15

    return {"samples": SD15().process_out(to_model_space(images)).contiguous()}


def decode(samples):
    """LATENT samples [B, 4, H, W] -> pictures [B, H, W, 3] in [0, 1] (the RGB channels)."""
    from comfy.latent_formats import SD15

    x = SD15().process_in(samples.to(torch.float32))[:, :3]
    return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


_ENCODED = {}


def encode_caption(comfy, clip, text):
    """CLIPTextEncode's CONDITIONING of one caption (memoised per process and clip)."""
    key = (id(clip), text)
    if key not in _ENCODED:
        with torch.inference_mode():
            _ENCODED[key] = comfy.CLIPTextEncode().encode(clip, text)[0]
    return _ENCODED[key]


def conditioning(comfy, clip, captions):
    """CONDITIONING for a batch: CLIPTextEncode of each caption, stacked to [B, 77, 768] (a
    batch's conditioning must match its latent batch)."""
    encoded = [encode_caption(comfy, clip, c)[0] for c in captions]
    context = torch.cat([e[0] for e in encoded])
    extra = dict(encoded[0][1])
    if "pooled_output" in extra:
        extra["pooled_output"] = torch.cat([e[1]["pooled_output"] for e in encoded])
    return [[context, extra]]


class CaptionTable(dict):
    """{caption: context [77, 768]} through CLIPTextEncode, each caption encoded when first
    asked for (so a few training steps encode a few captions, not the grammar's 360)."""

    def __init__(self, comfy, clip):
        super().__init__()
        self.comfy, self.clip = comfy, clip

    def __missing__(self, caption):
        value = encode_caption(self.comfy, self.clip, caption)[0][0][0].clone()
        self[caption] = value
        return value


def caption_table(comfy, clip):
    """CaptionTable of every caption of the grammar and the empty one (about a minute of CLIP-L
    on 2 cores; computed where it is needed, never cached on disk)."""
    table = CaptionTable(comfy, clip)
    for c in scenes.all_captions() + [""]:
        table[c]
    return table


def clip_share(table):
    """The caption-dependent share of the conditioning's energy: the mean over captions of
    |context - mean context|^2 over the mean of |context|^2 (every caption but the empty one)."""
    flat = torch.stack([v.flatten().double() for c, v in table.items() if c])
    return float(((flat - flat.mean(0)) ** 2).sum(1).mean() / (flat ** 2).sum(1).mean())


def clip_separation(table):
    """How well the random CLIP-L's outputs keep the grammar's words apart. For each attribute
    (shape colour, shape, background colour, background kind): the fraction of the
    conditioning's variance (all 77 x 768 numbers) that the attribute explains, and the
    leave-one-out nearest-centroid accuracy of telling the attribute from the conditioning.
    Returns {attribute: (explained variance fraction, accuracy)}."""
    rows = [(c, scenes.parse(c)) for c in table if c]
    flat = torch.stack([table[c].flatten().double() for c, _ in rows])
    total = float(((flat - flat.mean(0)) ** 2).sum())
    out = {}
    for attribute in ("color", "shape", "bg_color", "background"):
        labels = [getattr(s, attribute) for _, s in rows]
        names = sorted(set(labels))
        index = torch.tensor([names.index(x) for x in labels])
        sums = torch.zeros(len(names), flat.shape[1], dtype=torch.float64).index_add_(0, index, flat)
        counts = torch.bincount(index, minlength=len(names)).double()[:, None]
        means = sums / counts
        between = float((counts * (means - flat.mean(0)) ** 2).sum())
        # leave one out: each row's own class centroid without it
        own = (sums[index] - flat) / (counts[index] - 1)
        distances = torch.cdist(flat, means) ** 2
        distances[torch.arange(len(rows)), index] = ((flat - own) ** 2).sum(1)
        accuracy = float((distances.argmin(1) == index).double().mean())
        out[attribute] = (between / total, accuracy)
    return out


# ---------------------------------------------------------------------------------------------
# the model and its training

def build_model(seed=0):
    """A fresh SD15 BaseModel over UNET with seeded weights (tiny_models.initialise)."""
    from harness import tiny_models

    model = tiny_models._config_model(tiny_models._supported("SD15"), UNET, seed)
    with torch.no_grad():  # a quiet output layer: the first predictions are small
        model.diffusion_model.out[-1].weight.mul_(0.1)
    return model


def caption_directions(table, ridge=1e-3):
    """The token directions along which the captions differ most, relative to all a token
    carries: [768, 768] rows v (best first) solving S_caption v = lambda S_total v, scaled so
    that v^T S_total v = 1, and the lambdas (the caption-dependent share along each). S_total is
    the second moment of every token of every caption, S_caption that of the tokens less their
    position's mean over the captions (what a per-token linear layer cannot tell from a constant
    is the position's mean)."""
    tokens = torch.stack([v for c, v in table.items() if c]).double()  # [C, 77, 768]
    varying = (tokens - tokens.mean(0, keepdim=True)).flatten(0, 1)
    tokens = tokens.flatten(0, 1)
    total = tokens.T @ tokens / len(tokens)
    total += ridge * total.diagonal().mean() * torch.eye(len(total), dtype=total.dtype)
    caption = varying.T @ varying / len(varying)
    inverse = torch.linalg.inv(torch.linalg.cholesky(total))
    shares, vectors = torch.linalg.eigh(inverse @ caption @ inverse.T)
    order = shares.argsort(descending=True)
    return (inverse.T @ vectors)[:, order].T.float(), shares[order].float()


def initialise_cross_attention(model, table, seed=0):
    """Start every cross-attention's key and value projection [inner, 768] on the first
    `inner` caption_directions, turned by a seeded random rotation: each key and value channel
    then starts with unit second moment, nearly all of it caption-dependent, where random
    weights would read the few percent of CLIP-L's output that depends on the caption."""
    directions, _ = caption_directions(table)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.diffusion_model.named_modules():
            if name.endswith("attn2"):
                for linear in (module.to_k, module.to_v):
                    inner = linear.weight.shape[0]
                    rotation = torch.linalg.qr(torch.randn(inner, inner, generator=generator))[0]
                    linear.weight.copy_(rotation @ directions[:inner])


def train(model, table, training, log=print, checkpoint=None, every=500):
    """Train `model` (BaseModel) in place, leaving it at the averaged weights. table: the
    contexts by caption (CaptionTable); checkpoint(step, averaged parameters) is called every
    `every` steps, so a long run interrupted keeps its last average. Returns {seconds, loss (the
    weighted loss of the trained weights, mean of the last 10%), first_loss (mean of the first
    10%), seconds_per_step}."""
    torch.manual_seed(training.seed)
    generator = torch.Generator().manual_seed(training.seed)
    network = model.diffusion_model
    sampling = model.model_sampling
    network.train()
    for p in network.parameters():
        p.requires_grad_(True)
    optimiser = torch.optim.AdamW(network.parameters(), lr=training.lr, weight_decay=0.0)
    averaged = [p.detach().clone() for p in network.parameters()]
    uncond = table[""]
    start, losses = time.perf_counter(), []
    sigmas = sampling.sigmas.to(torch.float32)
    for step in range(training.steps):
        lr = training.lr * min(1.0, (step + 1) / training.warmup) * (
            0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / max(training.steps, 1))))
        for group in optimiser.param_groups:
            group["lr"] = lr
        seeds = torch.randint(scenes.HELD_OUT_SEED, (training.batch,), generator=generator)
        batch = [scenes.draw(int(s)) for s in seeds]
        x0 = to_model_space(scenes.render_batch(batch)[0])
        drop = torch.rand(training.batch, generator=generator) < training.dropout
        context = torch.stack([uncond if d else table[s.caption] for s, d in zip(batch, drop)])
        sigma = sigmas[torch.randint(len(sigmas), (training.batch,), generator=generator)]
        noise = torch.randn(x0.shape, generator=generator)
        x = x0 + sigma[:, None, None, None] * noise  # EPS noise_scaling
        out = network(sampling.calculate_input(sigma, x), sampling.timestep(sigma).float(), context=context)
        weight = torch.clamp(training.snr_gamma * sigma ** 2, max=1.0)
        loss = (weight * ((out - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimiser.step()
        decay = min(training.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for mean, p in zip(averaged, network.parameters()):
                mean.lerp_(p.detach(), 1 - decay)
        losses.append(float(loss.detach()))
        if checkpoint and (step + 1) % every == 0:
            checkpoint(step + 1, averaged)
        if log and (step + 1) % max(1, training.steps // 20) == 0:
            log(f"  step {step + 1}/{training.steps}: loss {sum(losses[-50:]) / len(losses[-50:]):.4f}, "
                f"{time.perf_counter() - start:.0f} s")
    network.eval()
    with torch.no_grad():
        for mean, p in zip(averaged, network.parameters()):
            p.copy_(mean)
    for p in network.parameters():
        p.requires_grad_(False)
    seconds = time.perf_counter() - start
    tenth = max(1, len(losses) // 10)
    return {"seconds": seconds, "loss": sum(losses[-tenth:]) / tenth, "first_loss": sum(losses[:tenth]) / tenth,
            "seconds_per_step": seconds / max(training.steps, 1)}


# ---------------------------------------------------------------------------------------------
# the committed file and its manifest

def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def save(model, weights, manifest_path, info):
    """Write the UNet's weights as float16 safetensors and the manifest (info plus the file's
    name and sha256) beside them, each atomically. Returns the manifest dict."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.diffusion_model.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(weights)), exist_ok=True)
    save_file(state, weights + ".part")
    os.replace(weights + ".part", weights)
    manifest = dict(info, file=os.path.basename(weights), storage="float16", sha256=sha256(weights))
    with open(manifest_path + ".part", "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    os.replace(manifest_path + ".part", manifest_path)
    return manifest


def _rel(path):
    return os.path.relpath(path, os.path.dirname(HERE)) if path.startswith(os.path.dirname(HERE)) else path


def read_manifest(manifest_path=MANIFEST):
    """The manifest as a dict, or LearnedModelError naming what is wrong with it and the fix."""
    fix = f"Restore it with `git checkout -- {_rel(manifest_path)}`, or retrain with `{RETRAIN} --replace`."
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise LearnedModelError(f"the learned model's manifest {_rel(manifest_path)} is missing. {fix}") from None
    except (OSError, ValueError) as e:
        raise LearnedModelError(f"the learned model's manifest {_rel(manifest_path)} is not readable JSON "
                                f"({e}). {fix}") from None
    if not isinstance(manifest, dict):
        raise LearnedModelError(f"the learned model's manifest {_rel(manifest_path)} is not a JSON object. {fix}")
    missing = [k for k in ("format", "unet", "training", "sha256", "accuracy") if k not in manifest]
    if missing:
        raise LearnedModelError(f"the learned model's manifest {_rel(manifest_path)} has no "
                                f"{', '.join(missing)}. {fix}")
    if manifest["format"] != FORMAT or manifest["unet"] != json.loads(json.dumps(UNET)):
        raise LearnedModelError(
            f"{_rel(manifest_path)} describes a model of format {manifest['format']} and another UNet than "
            f"bench/learned_model.py builds (format {FORMAT}): the code changed since it was trained. "
            f"Retrain it with `{RETRAIN} --replace` and commit both files.")
    return manifest


def load(comfy, weights=WEIGHTS, manifest_path=MANIFEST):
    """The committed model, after checking the file's sha256 and the configuration against the
    manifest. Returns Learned (info: the manifest, plus path and parameters)."""
    from safetensors.torch import load_file

    from harness import tiny_models

    manifest = read_manifest(manifest_path)
    if not os.path.exists(weights):
        raise LearnedModelError(f"the learned model's weights {_rel(weights)} are missing. Restore them with "
                                f"`git checkout -- {_rel(weights)}`, or retrain with `{RETRAIN} --replace`.")
    digest = sha256(weights)
    if digest != manifest["sha256"]:
        raise LearnedModelError(
            f"{_rel(weights)} does not match its manifest (sha256 {digest[:12]}..., the manifest says "
            f"{str(manifest['sha256'])[:12]}...): the file is damaged or was replaced. Restore it with "
            f"`git checkout -- {_rel(weights)}`, or retrain with `{RETRAIN} --replace`.")
    model = build_model(manifest["training"]["seed"])
    state = load_file(weights)
    expected = model.diffusion_model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise LearnedModelError(f"{_rel(weights)} holds other tensors than the UNet of its manifest. Retrain "
                                f"with `{RETRAIN} --replace`.")
    model.diffusion_model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    for p in model.diffusion_model.parameters():
        p.requires_grad_(False)
    return Learned(tiny_models._patcher(model), comfy.tiny["clip"], _info(manifest, weights, model))


def _info(manifest, weights, model):
    """A Learned's info: the manifest, plus the weights' path and the UNet's parameter count."""
    return dict(manifest, path=_rel(weights), parameters=sum(p.numel() for p in model.diffusion_model.parameters()))


# ---------------------------------------------------------------------------------------------
# did it learn?

def generate(comfy, learned, captions, cfg=3.0, steps=30, seed=0):
    """Text to image through ComfyUI's KSampler (euler, normal) from seeded noise: LATENT
    samples [B, 4, 16, 16] for `captions`."""
    positive = conditioning(comfy, learned.clip, captions)
    negative = conditioning(comfy, learned.clip, [""] * len(captions))
    empty = {"samples": torch.zeros(len(captions), 4, scenes.SIZE, scenes.SIZE)}
    with torch.inference_mode():
        return comfy.KSampler().sample(learned.model, seed, steps, cfg, "euler", "normal", positive, negative,
                                       empty, denoise=1.0)[0]["samples"]


def accuracy(comfy, learned, count=ACCURACY["count"], cfg=3.0, steps=ACCURACY["steps"], seed=0):
    """Text-to-image on `count` held-out scenes' captions at `cfg`, read back by scenes.judge:
    {"color", "shape", "background": fraction right, "count", "cfg", "steps", "samples", "scenes",
    "right" (per-scene hits)}."""
    held = scenes.held_out(count)
    samples = generate(comfy, learned, [s.caption for s in held], cfg, steps, seed)
    right = scenes.hits(scenes.judge(decode(samples)), held)
    return {**{k: float(v.double().mean()) for k, v in right.items()}, "count": count, "cfg": cfg,
            "steps": steps, "samples": samples, "scenes": held, "right": right}


def figures(acc):
    """The three accuracy figures of an accuracy() result, for the manifest."""
    return {k: round(acc[k], 4) for k in ("color", "shape", "background")}


def manifest_accuracy(results, count):
    """The manifest's "accuracy": {"count", "steps", "cfg 3": figures, "cfg 7.5": ...} of
    measure()'s results."""
    return {"count": count, "steps": ACCURACY["steps"], **{f"cfg {cfg:g}": figures(acc) for cfg, acc in results.items()}}


def committed_figures(accuracy, count=None):
    """{cfg: figures} of a manifest's "accuracy"; empty where `count` is given and is not the
    number of captions those figures were measured on (they would not compare)."""
    if count is not None and accuracy.get("count") != count:
        return {}
    return {float(k[len("cfg "):]): v for k, v in accuracy.items() if k.startswith("cfg ")}


MEAN_SIGMAS = (14.6, 8.0, 3.0, 1.0, 0.3)  # the model's highest level (14.61) down to nearly clean


def mean_error(comfy, learned, count=64, sigmas=MEAN_SIGMAS, seed=1):
    """How well the UNet sees the noise's mean over the picture, per noise level: held-out
    scenes x0 (model space [count, 4, 16, 16]) noised to x0 + sigma n, and the error of the
    x0 that its EPS prediction implies, split into each channel's mean over the picture (what
    decides the background's colour) and the rest. At 16 x 16 the noise's mean is sigma / 16
    per channel, so at the top level it is larger than the spread of the pictures' own means.
    Returns [{"sigma", "mean" (rms x0 error of the channel means), "rest" (rms of the
    remainder), "noise_mean" (rms of sigma times the noise's channel means), "spread" (std of the
    pictures' channel means)}]."""
    network, sampling = learned.model.model.diffusion_model, learned.model.model.model_sampling
    held = scenes.held_out(count)
    x0 = to_model_space(scenes.render_batch(held)[0])
    context = conditioning(comfy, learned.clip, [s.caption for s in held])[0][0]
    generator = torch.Generator().manual_seed(seed)
    out = []
    for level in sigmas:
        sigma = torch.full((count,), float(level))
        noise = torch.randn(x0.shape, generator=generator)
        with torch.no_grad():
            eps = network(sampling.calculate_input(sigma, x0 + level * noise), sampling.timestep(sigma).float(),
                          context=context.to(x0.dtype))
        error = (eps - noise) * level  # the implied x0's error
        means = error.mean(dim=(2, 3), keepdim=True)
        out.append({"sigma": level, "mean": float(means.pow(2).mean().sqrt()),
                    "rest": float((error - means).pow(2).mean().sqrt()),
                    "noise_mean": float((noise.mean(dim=(2, 3)) * level).pow(2).mean().sqrt()),
                    "spread": float(x0.mean(dim=(2, 3)).std())})
    return out


def samples_figure(acc, count=24, columns=8):
    """The first `count` held-out captions and what the model drew for them, each judged."""
    from . import report

    count = min(count, len(acc["samples"]))
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    fig, axes = report.plt.subplots(rows, columns, figsize=(1.5 * columns, 1.75 * rows), squeeze=False)
    images = decode(acc["samples"][:count])
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if i >= count:
            ax.axis("off")
            continue
        ax.imshow(images[i].numpy(), interpolation="nearest")
        scene = acc["scenes"][i]
        wrong = [k for k in ("color", "shape", "background") if not bool(acc["right"][k][i])]
        ax.set_xlabel(scene.caption.replace("a ", "", 1).replace(" on a ", "\non ").replace(" background", ""),
                      fontsize=6.5, color="black" if not wrong else "firebrick")
        if wrong:
            ax.set_title("wrong: " + ", ".join(wrong), fontsize=6, color="firebrick")
    fig.suptitle(f"The learned model's text to image on held-out captions (KSampler euler, {acc['steps']} steps, "
                 f"cfg {acc['cfg']:g}); red: an attribute scenes.judge reads back otherwise", fontsize=8)
    return fig


def measure(comfy, learned, count=ACCURACY["count"], cfgs=ACCURACY["cfgs"], steps=ACCURACY["steps"]):
    """accuracy() at each cfg: {cfg: result}."""
    return {cfg: accuracy(comfy, learned, count=count, cfg=cfg, steps=steps) for cfg in cfgs}


def run(comfy, out_dir, count=ACCURACY["count"], cfgs=ACCURACY["cfgs"], steps=ACCURACY["steps"], learned=None,
        results=None, title="The learned model: what it draws for held-out captions"):
    """The bench part `model`: load the committed model (digest checked), measure its accuracy at
    each cfg (or take `results`, measure()'s, from the training command) and write
    <out>/learned_model.md and .png. Returns {"accuracy": {cfg: figures}, "manifest": {cfg:
    figures}, "info"}."""
    from . import report

    learned = learned or load(comfy)
    started = time.perf_counter()
    measured_here = results is None
    results = results or measure(comfy, learned, count, cfgs, steps)
    seconds = time.perf_counter() - started
    info = learned.info
    committed = info["accuracy"]
    theirs = committed_figures(committed, count)
    body = []
    for cfg, acc in results.items():
        mine = theirs.get(cfg, {})
        body.append([f"{cfg:g}", acc["color"], mine.get("color", "n/a"), acc["shape"], mine.get("shape", "n/a"),
                     acc["background"], mine.get("background", "n/a")])
    training = info["training"]
    text = (
        f"**The model**: ComfyUI's SD15 model class (model_base.BaseModel, EPS, SD1.5 latent format) over a "
        f"UNet of {info['parameters'] / 1e6:.2f}M parameters (model_channels {UNET['model_channels']}, channel_mult "
        f"{UNET['channel_mult']}: 16 x 16, 8 x 8 and 4 x 4; self- and cross-attention to CLIP-L's 77 tokens at every "
        f"level, {transformer_blocks()} transformer blocks), conditioned through the tiny checkpoint's random "
        f"CLIP-L and CLIPTextEncode. Weights: `{info['path']}` ({info['storage']}, sha256 {info['sha256'][:12]}..., "
        f"checked at load), trained by `{RETRAIN}` in {info['seconds'] / 60:.1f} minutes "
        f"({training['steps']} steps of batch {training['batch']}, seed {training['seed']}, {info['threads']} "
        f"threads, {info['seconds_per_step']:.3f} s per step; caption table {info['caption_table_seconds']:.0f} s), "
        f"final loss {info['loss']:.4f}.\n\n"
        f"**What it learned**: text to image on {count} held-out scenes' captions (KSampler euler {steps} steps, "
        "normal scheduler, seed 0), every picture read back by scenes.judge against the renderer (colour inside "
        "the shape; shape class by template IoU; background colour and kind). Targets at cfg 3: colour 0.90, "
        "shape 0.80, background 0.70. \"manifest\": the figures the training command measured and committed "
        f"({committed.get('count', '?')} captions).\n\n"
        + report.table(["cfg", "colour", "manifest", "shape", "manifest", "background", "manifest"], body)
        + (f"\n\nMeasured in {seconds:.0f} s." if measured_here else "\n\nMeasured by the training command."))
    means = mean_error(comfy, learned, count=min(count, 64))
    text += (
        "\n\n**The noise's mean**: the error of the clean picture its EPS prediction implies, per noise level, "
        f"on {min(count, 64)} held-out scenes (`mean_error`): each channel's mean over the picture, and the rest. "
        "At 16 x 16 the noise's mean over the picture is sigma / 16 per channel; a model that cannot "
        "tell it from the picture's own mean keeps, in sampling, the mean colour of the noise it starts from, "
        "whatever the caption says (the earlier model, whose output GroupNorm had one channel per group, did: "
        "its channel-mean error equalled the noise's at every level).\n\n"
        + report.table(["sigma", "channel-mean error", "rest", "noise's channel mean", "pictures' channel-mean spread"],
                       [[m["sigma"], m["mean"], m["rest"], m["noise_mean"], m["spread"]] for m in means]))
    shown = results[cfgs[0]]
    report.write_part(out_dir, "learned_model", title, text, samples_figure(shown))
    return {"accuracy": {cfg: figures(acc) for cfg, acc in results.items()}, "info": info,
            "manifest": {cfg: theirs.get(cfg) for cfg in cfgs}, "mean_error": means}


def transformer_blocks():
    """How many transformer blocks UNET has (SpatialTransformers of depth 1), in call order."""
    return sum(UNET["transformer_depth"]) + UNET["transformer_depth_middle"] + sum(UNET["transformer_depth_output"])


# ---------------------------------------------------------------------------------------------
# the one command that trains it

def retrain(comfy, training=MODEL, weights=None, manifest_path=None, log=print, count=ACCURACY["count"]):
    """Train the model from its seed, measure it as the manifest does and save it (float16)
    with its manifest. Returns (Learned, manifest, {cfg: accuracy() result})."""
    from harness import tiny_models

    clip = comfy.tiny["clip"]
    started = time.perf_counter()
    table = caption_table(comfy, clip)
    table_seconds = time.perf_counter() - started
    log(f"caption table of {len(table)} captions in {table_seconds:.0f} s; training {training} on "
        f"{torch.get_num_threads()} threads")
    model = build_model(training.seed)
    initialise_cross_attention(model, table, training.seed)
    partial = (weights or WEIGHTS) + ".checkpoint"

    def checkpoint(step, averaged):
        from safetensors.torch import save_file

        save_file({n: p.detach().to(torch.float16).contiguous() for n, p in
                   zip([n for n, _ in model.diffusion_model.named_parameters()], averaged)},
                  partial, metadata={"step": str(step)})
        log(f"  averaged weights of step {step} kept in {_rel(partial)}")

    info = train(model, table, training, log, checkpoint=checkpoint)
    log(f"trained in {info['seconds']:.0f} s ({info['seconds_per_step']:.3f} s per step), final loss {info['loss']:.4f}")
    separation = clip_separation(table)
    info.update(format=FORMAT, unet=UNET, training=asdict(training), caption_table_seconds=table_seconds,
                threads=torch.get_num_threads(), trained_on=time.strftime("%Y-%m-%d %H:%M"),
                clip_share=clip_share(table), clip_separation={k: list(v) for k, v in separation.items()})
    # Measured on the float16 weights that are saved, as every later load sees them.
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_(p.to(torch.float16).to(torch.float32))
    learned = Learned(tiny_models._patcher(model), clip, info)
    results = measure(comfy, learned, count=count)
    info["accuracy"] = manifest_accuracy(results, count)
    manifest = save(model, weights or WEIGHTS, manifest_path or MANIFEST, info)
    if os.path.exists(partial):
        os.remove(partial)
    learned.info = _info(manifest, weights or WEIGHTS, model)
    return learned, manifest, results


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.learned_model",
        description="The bench's learned model: retrain it from its seed, or check the committed one.")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--train", action="store_true",
                      help="train from the seed (as the committed model was), measure, and compare with the manifest")
    what.add_argument("--check", action="store_true",
                      help="load the committed model (digest checked) and measure it against its manifest")
    parser.add_argument("--replace", action="store_true",
                        help="with --train: write over bench/learned_model.safetensors and .json (else --out)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "tmp", "retrained"),
                        help="with --train: where the retrained files go (default bench/results/tmp/retrained)")
    parser.add_argument("--steps", type=int, help="with --train: train this many steps instead (a trial)")
    parser.add_argument("--count", type=int, help="held-out captions to measure (default: the manifest's 200)")
    parser.add_argument("--results", default=os.path.join(HERE, "results"),
                        help="where learned_model.md and .png are written")
    args = parser.parse_args(argv)
    if args.train and KEEP_FREED_MEMORY[0] not in os.environ and argv is None:
        # glibc hands every freed block above its mmap threshold back to the kernel, and a
        # training step frees and asks again for tens of MB (batch 32's 16 x 16 attention maps
        # alone are 34 MB): measured 2.0 s per step so on 2 cores, 1.15 to 1.5 s with freed
        # memory kept. Those settings are read when the process starts, so the command starts
        # again with them.
        os.execve(sys.executable, [sys.executable, "-m", "bench.learned_model", *sys.argv[1:]],
                  dict(os.environ, **dict([KEEP_FREED_MEMORY, ("MALLOC_TRIM_THRESHOLD_", KEEP_FREED_MEMORY[1])])))
    from . import env

    comfy = env.start()
    if args.check:
        result = run(comfy, args.results, count=args.count or ACCURACY["count"])
        ok = _compare(result["accuracy"], result["manifest"])
        raise SystemExit(0 if ok else 1)
    try:  # the figures to compare with; a manifest of another configuration has none that compare
        committed = read_manifest()
    except LearnedModelError as error:
        committed = None
        print(f"not compared with the committed figures: {error}")
    training = MODEL if not args.steps else Training(**dict(asdict(MODEL), steps=args.steps))
    if args.replace:
        weights, manifest_path = WEIGHTS, MANIFEST
    else:
        os.makedirs(args.out, exist_ok=True)
        weights = os.path.join(args.out, os.path.basename(WEIGHTS))
        manifest_path = os.path.join(args.out, os.path.basename(MANIFEST))
    learned, manifest, results = retrain(comfy, training, weights, manifest_path, count=args.count or ACCURACY["count"])
    print(f"wrote {weights} and {manifest_path}")
    ok = True
    if committed:
        ok = _compare(committed_figures(manifest["accuracy"]),
                      committed_figures(committed["accuracy"], manifest["accuracy"]["count"]))
    if args.replace:
        run(comfy, args.results, count=manifest["accuracy"]["count"], learned=learned, results=results)
    raise SystemExit(0 if ok else 1)


KEEP_FREED_MEMORY = ("MALLOC_MMAP_THRESHOLD_", str(4 << 30))


def _compare(measured, committed, tolerance=0.03):
    """Print measured against committed accuracy; True where every figure is within `tolerance`."""
    ok = True
    for cfg, mine in measured.items():
        theirs = committed.get(cfg) or {}
        for k, v in mine.items():
            ref = theirs.get(k)
            close = ref is not None and abs(v - ref) <= tolerance
            ok &= close
            print(f"cfg {cfg:g} {k:10s} measured {v:.3f}  committed {ref if ref is None else f'{ref:.3f}'}  "
                  f"{'ok' if close else f'differs by more than {tolerance}'}")
    print(f"within {tolerance} of the manifest" if ok else f"NOT within {tolerance} of the manifest")
    return ok


if __name__ == "__main__":
    main()
