"""A tiny text-to-image model that has learned its prompts: ComfyUI's SD1.5 model, trained here.

The model is comfy.supported_models.SD15 (model_base.BaseModel, EPS, SD1.5 latent format)
over a small unet_config, built as harness/tiny_models.py builds its families, and wrapped in a
ModelPatcher, so every node of the pack and of ComfyUI runs it as it runs SD1.5. It is trained
on bench/scenes.py's procedural scenes, conditioned through the tiny checkpoint's real CLIP-L
and CLIPTextEncode (`clip_separation` measures that the random encoder keeps the words apart).

The latent is the scene itself: a 16 x 16 picture's RGB mapped to [-1, 1] plus its grey level
as the fourth channel, in model space; the LATENT holds that divided by the SD1.5 scale factor
(latent_format.process_out), as VAE Encode would hand it over. `decode` is the exact inverse,
so a latent is shown directly as a picture, and pixel MSE is latent MSE over the RGB channels
times (scale / 2)^2.

Training: the EPS objective at the model's own model_sampling noise levels (timesteps uniform
over its 1000 sigmas), AdamW with warm-up and cosine decay, the weights' moving average kept,
the prompt dropped to the empty caption 10% of the time (classifier-free guidance), all from
one seed. The weights are cached
outside git in the cache directory (CACHE, keyed by a hash of the configuration and the seed)
and loaded on later runs; nothing is committed.

API, for the bench and the tests (and attention control to come):
    learned = load_or_train(comfy, FULL)        # Learned: model (MODEL), clip, info
    cond = conditioning(comfy, learned.clip, captions)   # CONDITIONING [B, 77, 768]
    latent = encode(images); images = decode(latent["samples"])
    figures = accuracy(comfy, learned)          # colour / shape / background on held-out scenes
"""

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch

from . import scenes

CACHE = os.environ.get("EXACT_INVERSION_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "comfyui-exact-inversion")
FORMAT = 1  # bump when the scenes, the latent or the training loop change: old caches stop matching

# Two levels (16 x 16 and 8 x 8); the transformers (self- and cross-attention over the 77 CLIP
# tokens) only at 8 x 8, where attention costs a sixteenth: 0.30 s per batch-32 training step
# on one loaded core against 0.93 s with a transformer at 16 x 16 (1.4 s at model_channels 64).
UNET = dict(
    image_size=scenes.SIZE, in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[1, 1],
    channel_mult=[1, 2], num_heads=4, use_spatial_transformer=True, transformer_depth=[0, 1],
    transformer_depth_middle=1, transformer_depth_output=[0, 0, 1, 1], context_dim=768, legacy=False,
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


# The bench's model: about 13 minutes on 2 idle cores (0.19 s per step). 1600 steps (760 s on
# one loaded core, loss 0.0207) learned colour 0.35, shape 0.22, background 0.09: its pictures
# still carried noise left by weak denoising at low noise levels.
FULL = Training(steps=4000)
TEST = Training(steps=300)  # the tests' fixture: learns colour in about a minute
QUICK = Training(steps=4, warmup=1)  # the bench's --quick: the code path, nothing learned


@dataclass
class Learned:
    model: object  # MODEL (ModelPatcher of the SD15 BaseModel)
    clip: object  # CLIP (the tiny checkpoint's CLIP-L)
    info: dict  # training: config, seconds, loss, cache path, loaded or trained


def cache_key(training):
    blob = json.dumps({"unet": UNET, "training": asdict(training), "format": FORMAT,
                       "captions": scenes.all_captions(), "size": scenes.SIZE}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


def caption_table(comfy, clip):
    """{caption: [77, 768]} for every caption of the grammar and the empty one, through
    CLIPTextEncode; cached in CACHE (a minute of CLIP-L on a CPU), keyed by the captions and
    a hash of the tiny checkpoint file the CLIP came from."""
    from safetensors.torch import load_file, save_file

    captions = scenes.all_captions() + [""]
    digest = hashlib.sha256(json.dumps(captions).encode())
    with open(_checkpoint_path(comfy), "rb") as f:  # the seeded tiny checkpoint: same seed, same file
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    path = os.path.join(CACHE, f"captions-{digest.hexdigest()[:16]}.safetensors")
    if os.path.exists(path):
        stacked = load_file(path)["context"]
    else:
        stacked = torch.cat([encode_caption(comfy, clip, c)[0][0] for c in captions]).contiguous()
        os.makedirs(CACHE, exist_ok=True)
        save_file({"context": stacked}, path + ".part")
        os.replace(path + ".part", path)
    return dict(zip(captions, stacked))


def _checkpoint_path(comfy):
    from harness.comfy import CKPT_NAME

    return os.path.join(comfy.tiny["base"], "models", "checkpoints", CKPT_NAME)


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
    centred = flat - flat.mean(0)
    total = float((centred ** 2).sum())
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
# the model, its training and its cache

def build_model(seed=0):
    """A fresh SD15 BaseModel over UNET with seeded weights (tiny_models.initialise)."""
    from harness import tiny_models

    model = tiny_models._config_model(tiny_models._supported("SD15"), UNET, seed)
    with torch.no_grad():  # a quiet output layer: the first predictions are small
        model.diffusion_model.out[-1].weight.mul_(0.1)
    return model


def train(model, table, training, log=print):
    """Train `model` (BaseModel) in place, leaving it at the averaged weights. Returns {seconds,
    loss (of the trained weights, mean of the last 10%), seconds_per_step}."""
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
        loss = torch.nn.functional.mse_loss(out, noise)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        optimiser.step()
        decay = min(training.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for mean, p in zip(averaged, network.parameters()):
                mean.lerp_(p.detach(), 1 - decay)
        losses.append(float(loss.detach()))
        if log and (step + 1) % max(1, training.steps // 16) == 0:
            log(f"  step {step + 1}/{training.steps}: loss {sum(losses[-50:]) / len(losses[-50:]):.4f}, "
                f"{time.perf_counter() - start:.0f} s")
    network.eval()
    with torch.no_grad():
        for mean, p in zip(averaged, network.parameters()):
            p.copy_(mean)
    for p in network.parameters():
        p.requires_grad_(False)
    seconds = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10):]
    return {"seconds": seconds, "loss": sum(tail) / len(tail), "seconds_per_step": seconds / max(training.steps, 1)}


def load_or_train(comfy, training=FULL, log=print):
    """The trained model: from CACHE if this configuration and seed were trained before, else
    trained now (its time printed) and cached. Returns Learned."""
    from safetensors.torch import load_file, save_file

    from harness import tiny_models

    clip = comfy.tiny["clip"]
    key = cache_key(training)
    path = os.path.join(CACHE, f"learned-{key}.safetensors")
    meta_path = path[: -len(".safetensors")] + ".json"
    model = build_model(training.seed)
    if os.path.exists(path) and os.path.exists(meta_path):
        model.diffusion_model.load_state_dict(load_file(path))
        for p in model.diffusion_model.parameters():
            p.requires_grad_(False)
        with open(meta_path) as f:
            info = dict(json.load(f), loaded=True)
    else:
        started = time.perf_counter()
        table = caption_table(comfy, clip)
        table_seconds = time.perf_counter() - started
        if log:
            log(f"training the learned model ({training}), caption table in {table_seconds:.0f} s")
        info = train(model, table, training, log)
        info.update(training=asdict(training), unet=UNET, caption_table_seconds=table_seconds,
                    threads=torch.get_num_threads(), key=key, trained_on=time.strftime("%Y-%m-%d %H:%M"))
        if log:
            log(f"trained in {info['seconds']:.0f} s ({info['seconds_per_step']:.3f} s per step, "
                f"{torch.get_num_threads()} threads), final loss {info['loss']:.4f}")
        os.makedirs(CACHE, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in model.diffusion_model.state_dict().items()}, path + ".part")
        os.replace(path + ".part", path)
        with open(meta_path, "w") as f:
            json.dump(info, f, indent=1)
        info = dict(info, loaded=False)
    info["path"] = path
    info["parameters"] = sum(p.numel() for p in model.diffusion_model.parameters())
    return Learned(tiny_models._patcher(model), clip, info)


def cached(training):
    """Whether `training`'s weights are in CACHE."""
    path = os.path.join(CACHE, f"learned-{cache_key(training)}")
    return os.path.exists(path + ".safetensors") and os.path.exists(path + ".json")


def best_cached(*trainings):
    """The first of `trainings` whose weights are cached, else the last (which is then trained):
    the bench's --quick takes the full model where it exists and trains only a few steps where not."""
    return next((t for t in trainings if cached(t)), trainings[-1])


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


def accuracy(comfy, learned, count=100, cfg=3.0, steps=30, seed=0):
    """Text-to-image on `count` held-out scenes' captions at `cfg`, read back by scenes.judge:
    {"color", "shape", "background": fraction right, "count", "cfg", "steps", "samples"}."""
    held = scenes.held_out(count)
    samples = generate(comfy, learned, [s.caption for s in held], cfg, steps, seed)
    right = scenes.hits(scenes.judge(decode(samples)), held)
    return {**{k: float(v.double().mean()) for k, v in right.items()}, "count": count, "cfg": cfg,
            "steps": steps, "samples": samples, "scenes": held}
