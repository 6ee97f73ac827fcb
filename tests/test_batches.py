"""Conditioning and image batches through the real nodes: each image inverts and regenerates
as it would alone, conditioning batches follow ComfyUI's own rule, and a batch costs the
same number of model calls as one image."""

import pytest
import torch

from harness.comfy import counting_model, drawn_images, pack_module, relative_error, run_node
from helpers import METHOD_WIDGETS, METHODS, common, invert, sample


def batched_conditioning(*conds):
    """Several one-prompt CONDITIONINGs as one CONDITIONING with a batch of prompts."""
    tensors = [cond[0][0] for cond in conds]
    options = dict(conds[0][0][1])
    if options.get("pooled_output") is not None:
        options["pooled_output"] = torch.cat([cond[0][1]["pooled_output"] for cond in conds])
    return [[torch.cat(tensors), options]]


def test_conditioning_batch_of_another_size_follows_comfyui(comfy, scene):
    """Two prompts for three images: ComfyUI repeats the conditioning to the batch (prompt
    1, 2, 1). Our nodes go through ComfyUI's own guider, so they do the same: one plain step
    from noise equals ComfyUI's euler step on the same inputs, and round trips stay exact."""
    from comfy import sample as comfy_sample, samplers

    operations = pack_module("comfy_adapter.operations")
    two_prompts = batched_conditioning(scene["positive"], scene["edit"])
    empty = run_node(comfy, "EmptyLatentImage", width=64, height=64, batch_size=3)
    inputs = common(comfy, scene, positive="positive", denoise=1.0, steps=1)
    inputs["positive"] = two_prompts
    # one EDICT step without mixing is the plain DDIM (euler) step
    ours = run_node(comfy, "EDICTSample", latent_image=empty, seed=5, mix_weight=1.0, leapfrog=True, **inputs)
    model = comfy.tiny["model"]
    sigmas = operations.prepare("test", model, operations.Schedule(1, "normal", 1.0).sigmas(model))
    noise = comfy_sample.prepare_noise(empty["samples"], 5)
    with torch.inference_mode():
        theirs = comfy_sample.sample_custom(comfy.tiny["model"], noise, 7.0, samplers.sampler_object("euler"),
                                            sigmas.to(torch.float32), two_prompts, scene["negative"],
                                            empty["samples"], seed=5)
    # not a round trip: ComfyUI's euler steps in float32, ours in float64 (measured 2.2e-6)
    assert relative_error(ours["samples"], theirs) <= 1e-5

    latent3 = comfy.VAEEncode().encode(comfy.tiny["vae"], drawn_images(batch=3))[0]
    inverted = run_node(comfy, "EDICTInvert", latent_image=latent3, **dict(common(comfy, scene), positive=two_prompts),
                        **METHOD_WIDGETS["EDICT"])
    back = run_node(comfy, "EDICTSample", latent_image=inverted, seed=0,
                    **dict(common(comfy, scene), positive=two_prompts), **METHOD_WIDGETS["EDICT"])
    assert torch.equal(back["samples"], latent3["samples"])  # measured: exact


@pytest.mark.parametrize("method", METHODS)
def test_batch_of_three_is_each_image_alone(comfy, scene, method):
    """Each image of a 3-batch inverts and regenerates (with the edit prompt) as it would
    alone, to batched-kernel rounding; the batch makes as many network calls as one image."""
    latent3 = comfy.VAEEncode().encode(comfy.tiny["vae"], drawn_images(batch=3))[0]
    model, batch_calls = counting_model(comfy.tiny["model"])
    batched = sample(comfy, scene, method, invert(comfy, scene, method, latent3, model=model),
                     positive="edit", model=model)
    for index in range(3):
        single_model, single_calls = counting_model(comfy.tiny["model"])
        one = run_node(comfy, "LatentFromBatch", samples=latent3, batch_index=index, length=1)
        assert one["batch_index"] == [index]
        alone = sample(comfy, scene, method, invert(comfy, scene, method, one, model=single_model),
                       positive="edit", model=single_model)
        assert alone["batch_index"] == [index]
        difference = relative_error(batched["samples"][index:index + 1], alone["samples"])
        print(f"\n[batch {method}] image {index}: batched vs alone {difference:.2e}")
        # not a round trip: batched kernels round differently (measured up to 2e-5); Rex's
        # inverted pair on the random tiny model is far larger than the latent, and its edit
        # carries the rounding further (measured up to 2.0e-4 with the midpoint tableau)
        assert difference <= (5e-4 if method == "Rex" else 1e-4)
    assert len(batch_calls) == len(single_calls)  # cost grows with the batch in each call only
    assert set(batch_calls) == {6} and set(single_calls) == {2}  # cond + uncond in one batch


def test_text_to_image_batch_follows_batch_index(comfy, scene):
    """From an empty 3-batch, image i equals the one-image run that Latent From Batch makes
    for it: the seeded noise follows batch_index, as in KSampler."""
    empty = run_node(comfy, "EmptyLatentImage", width=64, height=64, batch_size=3)
    inputs = common(comfy, scene, denoise=1.0)
    batched = run_node(comfy, "BDIASample", latent_image=empty, seed=42, gamma=0.5, **inputs)
    for index in range(3):
        one = run_node(comfy, "LatentFromBatch", samples=empty, batch_index=index, length=1)
        alone = run_node(comfy, "BDIASample", latent_image=one, seed=42, gamma=0.5, **inputs)
        # batched kernels round differently (measured up to 2e-5)
        assert relative_error(batched["samples"][index:index + 1], alone["samples"]) <= 1e-4
