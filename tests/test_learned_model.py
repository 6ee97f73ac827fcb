"""The learned model (bench/learned_model.py): ComfyUI's SD15 model over a small UNet, trained
on bench/scenes.py's scenes through the tiny checkpoint's CLIP-L, its weights committed
(bench/learned_model.safetensors) with a manifest. The tests load the committed file, digest
checked, and train nothing but a few steps of the loop itself.
"""

import json
import os
import shutil
from dataclasses import asdict

import pytest
import torch


@pytest.fixture(scope="session")
def learned(comfy):
    from bench import learned_model as lm

    return lm.load(comfy)


def test_the_judge_reads_the_renderer_exactly():
    """scenes.judge reads back every attribute and the exact mask of pictures the renderer drew."""
    from bench import scenes

    held = scenes.held_out(300)
    images, masks = scenes.render_batch(held)
    judged = scenes.judge(images)
    right = scenes.hits(judged, held)
    assert all(bool(v.all()) for v in right.values()), {k: float(v.double().mean()) for k, v in right.items()}
    assert torch.equal(torch.stack([j["mask"] for j in judged]), masks)
    assert {s.caption for s in held} <= set(scenes.all_captions())
    assert scenes.parse(held[0].caption) == scenes.Scene(held[0].color, held[0].shape, held[0].background,
                                                         held[0].bg_color, 0, 0, 0)


def test_the_latent_is_the_picture(comfy):
    """encode and decode are inverse up to float32 rounding, and the LATENT is in SD1.5's
    LATENT units (model space over 0.18215), as VAE Encode hands a latent over."""
    from bench import learned_model as lm
    from bench import scenes

    images, _ = scenes.render_batch(scenes.held_out(8))
    latent = lm.encode(images)
    assert latent["samples"].shape == (8, 4, scenes.SIZE, scenes.SIZE)
    assert torch.allclose(lm.decode(latent["samples"]), images, atol=1e-6)
    assert torch.allclose(latent["samples"] * 0.18215, lm.to_model_space(images), atol=1e-6)


def test_the_committed_model_is_sd15_with_attention_at_every_level(learned):
    """The committed file loads into ComfyUI's SD15 class, its manifest is complete, and the
    UNet has self- and cross-attention at 3 resolutions in 10 transformer blocks (attention
    control's layer windows need several)."""
    from bench import learned_model as lm

    assert type(learned.model.model).__name__ == "BaseModel"
    assert type(learned.model.model.model_config).__name__ == "SD15"
    info = learned.info
    assert info["sha256"] == lm.sha256(lm.WEIGHTS)
    assert info["format"] == lm.FORMAT and info["storage"] == "float16"
    assert os.path.getsize(lm.WEIGHTS) <= 25 * 2 ** 20
    for key in ("seconds", "loss", "training", "unet", "accuracy"):
        assert key in info, key
    blocks = [m for m in learned.model.model.diffusion_model.modules() if type(m).__name__ == "BasicTransformerBlock"]
    assert len(blocks) == lm.transformer_blocks() == 10


def test_the_learned_model_follows_its_prompts(comfy, learned):
    """Text to image through KSampler on 64 held-out captions at cfg 3, read back by
    scenes.judge: colour, shape and background as measured on the committed model (64 captions,
    30 steps, 0.3.75: MEASURED_*; the manifest's 200: 0.84, 0.62, 0.8; chance 1/6, 1/4, 1/15),
    within 3 to 4 scenes of 64. Issue 25's targets are 0.90, 0.80, 0.70: the background meets
    its target, colour and shape do not yet, and these bounds hold the model where it is."""
    from bench import learned_model as lm

    figures = lm.accuracy(comfy, learned, count=64, cfg=3.0, steps=30)
    measured = {k: figures[k] for k in ("color", "shape", "background")}
    print("64 held-out captions at cfg 3:", measured, "manifest (200):", learned.info["accuracy"]["cfg 3"])
    assert measured["color"] >= MEASURED_COLOR - 0.05
    assert measured["shape"] >= MEASURED_SHAPE - 0.07
    assert measured["background"] >= MEASURED_BACKGROUND - 0.05


# What test_the_learned_model_follows_its_prompts measured on the committed model (64 captions).
MEASURED_COLOR, MEASURED_SHAPE, MEASURED_BACKGROUND = 0.765625, 0.578125, 0.71875


def test_the_committed_model_predicts_part_of_the_noises_mean(comfy, learned):
    """What the committed model makes of the noise's mean over the picture (lm.mean_error on
    64 held-out scenes): the clean picture its EPS prediction implies is off, in each channel's
    mean, by a share of the noise's own channel mean (MEASURED_MEAN_SHARE per level, sigma 14.6
    down to 0.3; bound 0.03 either side): below 1, so it predicts the rest. The earlier model,
    whose output GroupNorm had one channel per group, measured 0.99 at every level and drew the
    mean colour of its starting noise. At sigma 0.3 the remaining error is 0.0243 rms per pixel,
    against the noise's 0.3. At the top level the noise's channel mean (0.85) is 3.4 times the
    spread of the pictures' own (0.25)."""
    from bench import learned_model as lm

    levels = lm.mean_error(comfy, learned)
    shares = [round(m["mean"] / m["noise_mean"], 3) for m in levels]
    print(levels, "shares", shares)
    assert [m["sigma"] for m in levels] == list(lm.MEAN_SIGMAS)
    for share, measured in zip(shares, MEASURED_MEAN_SHARE):
        assert abs(share - measured) <= 0.03, (shares, MEASURED_MEAN_SHARE)
    clean = levels[-1]
    assert clean["rest"] <= 0.0243 * 1.2, clean
    assert levels[0]["noise_mean"] > 3 * levels[0]["spread"], levels[0]


# The channel-mean error over the noise's channel mean at each of lm.MEAN_SIGMAS (64 scenes).
MEASURED_MEAN_SHARE = [0.587, 0.556, 0.564, 0.695, 0.808]


def test_a_damaged_file_or_manifest_is_refused_by_name(comfy, tmp_path):
    """A changed byte in the weights, a manifest that is not JSON, misses a field or describes
    another UNet: each refused with the file's name and the command that fixes it."""
    from bench import learned_model as lm

    weights, manifest = str(tmp_path / "learned_model.safetensors"), str(tmp_path / "learned_model.json")
    shutil.copy(lm.WEIGHTS, weights)
    shutil.copy(lm.MANIFEST, manifest)
    assert lm.load(comfy, weights, manifest).info["sha256"] == lm.sha256(lm.WEIGHTS)
    with open(weights, "r+b") as f:
        f.seek(os.path.getsize(weights) - 1)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(lm.LearnedModelError, match="does not match its manifest.*damaged.*git checkout"):
        lm.load(comfy, weights, manifest)
    original = json.load(open(lm.MANIFEST))
    cases = [("{ not json", "not readable JSON"),
             (json.dumps({k: v for k, v in original.items() if k != "sha256"}), "has no sha256"),
             (json.dumps(dict(original, unet=dict(original["unet"], model_channels=8))), "another UNet.*--train --replace")]
    for text, message in cases:
        with open(manifest, "w") as f:
            f.write(text)
        with pytest.raises(lm.LearnedModelError, match=message):
            lm.load(comfy, lm.WEIGHTS, manifest)
    with pytest.raises(lm.LearnedModelError, match="missing"):
        lm.load(comfy, lm.WEIGHTS, str(tmp_path / "nothing.json"))


def test_the_training_loop_learns_and_its_file_round_trips(comfy, tmp_path):
    """A few steps of the training loop at batch 4 (the committed model's loop, from its seed,
    cross-attention initialised from the captions drawn): the loss falls; the saved float16
    file and its manifest load back to the same weights through load()."""
    from bench import learned_model as lm

    table = lm.CaptionTable(comfy, comfy.tiny["clip"])
    training = lm.Training(steps=30, batch=4, warmup=5)
    model = lm.build_model(training.seed)
    for caption in [lm.scenes.draw(s).caption for s in range(8)]:
        table[caption]
    lm.initialise_cross_attention(model, table, training.seed)
    info = lm.train(model, table, training, log=None)
    print("loss first/last tenth:", info["first_loss"], info["loss"])
    assert info["loss"] < 0.5 * info["first_loss"]
    info.update(format=lm.FORMAT, unet=lm.UNET, training=asdict(training), accuracy={})
    weights, manifest = str(tmp_path / "w.safetensors"), str(tmp_path / "w.json")
    saved = lm.save(model, weights, manifest, info)
    assert saved["sha256"] == lm.sha256(weights)
    loaded = lm.load(comfy, weights, manifest)
    for (name, a), b in zip(model.diffusion_model.state_dict().items(),
                            loaded.model.model.diffusion_model.state_dict().values()):
        assert torch.equal(a.to(torch.float16).to(torch.float32), b), name
