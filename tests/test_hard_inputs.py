"""Hard inputs through the real nodes on the tiny checkpoint: every bad input gets an error
that names the node, the input and the fix, and a correct run right after it still
succeeds; masks, conditioning batches, image batches, weight precision and the float32
fallback behave as documented in README."""

import logging

import pytest
import torch

from comfy_harness import drawn_images, pack_module, relative_error, run_node

STEPS = 4


def common(comfy, scene, positive="positive", **overrides):
    inputs = dict(model=comfy.tiny["model"], positive=scene[positive], negative=scene["negative"],
                  steps=STEPS, cfg=7.0, scheduler="normal", denoise=0.8)
    inputs.update(overrides)
    return inputs


METHOD_WIDGETS = {"EDICT": {"mix_weight": 0.93, "leapfrog": True}, "BDIA": {"gamma": 0.94}}


def invert(comfy, scene, method, latent=None, **overrides):
    return run_node(comfy, f"{method}Invert", latent_image=latent or scene["latent"],
                    **common(comfy, scene, **overrides), **METHOD_WIDGETS[method])


def sample(comfy, scene, method, latent, positive="positive", **overrides):
    return run_node(comfy, f"{method}Sample", latent_image=latent, seed=0,
                    **common(comfy, scene, positive=positive, **overrides), **METHOD_WIDGETS[method])


def patched_model(comfy, node_name, **options):
    node = comfy.NODE_CLASS_MAPPINGS[node_name]()
    return getattr(node, node.FUNCTION)(comfy.tiny["model"], **options)[0]


def sdxl_format_model(comfy):
    """The tiny model as if it used SDXL's latent format (an object patch, as model
    patches do it), to stand for an SDXL checkpoint."""
    from comfy import latent_formats

    model = comfy.tiny["model"].clone()
    model.add_object_patch("latent_format", latent_formats.SDXL())
    return model


def diverging_model(comfy, after_calls):
    """The tiny model, made to return NaN from its `after_calls`+1-th network call on."""
    calls = []
    model = comfy.tiny["model"].clone()

    def wrapper(apply_model, args):
        calls.append(1)
        out = apply_model(args["input"], args["timestep"], **args["c"])
        return out * float("nan") if len(calls) > after_calls else out

    model.set_model_unet_function_wrapper(wrapper)
    return model


def with_nan(tensor):
    broken = tensor.clone()
    broken.view(-1)[5] = float("nan")
    return broken


def scaled_samples(latent, factor):
    """What a node that rescales only `samples` (and copies the other keys) hands on."""
    return dict(latent, samples=latent["samples"] * factor)


def with_inf_partner(inverted):
    record = dict(inverted["exact_inversion"])
    record["partner"] = record["partner"].clone()
    record["partner"].view(-1)[3] = float("inf")
    return dict(inverted, exact_inversion=record)


# Each case: (id, a function running the bad graph, the message it must raise as a regex).
BAD_INPUTS = [
    ("plain latent into Latent Pair Mix",
     lambda c, s: run_node(c, "LatentPairMix", latent=s["latent"], weight=0.5),
     r"Latent Pair Mix: input 'latent': it is a plain latent with no EDICT pair\. "
     r"Connect the output of EDICT Sample or EDICT Invert\."),
    ("BDIA pair into Latent Pair Mix",
     lambda c, s: run_node(c, "LatentPairMix", latent=invert(c, s, "BDIA"), weight=0.5),
     r"Latent Pair Mix: input 'latent': it holds a BDIA pair.*Connect BDIA Sample's output to VAE Decode"),
    ("partner shape differs after an upscale",
     lambda c, s: sample(c, s, "EDICT", run_node(c, "LatentUpscaleBy", samples=invert(c, s, "EDICT"),
                                                 upscale_method="nearest-exact", scale_by=2.0)),
     r"EDICT Sample: input 'latent_image': its samples have shape \(2, 4, 16, 16\) but its EDICT pair "
     r"partner has \(2, 4, 8, 8\).*Connect EDICT Invert's output directly"),
    ("samples changed after inversion",
     lambda c, s: sample(c, s, "BDIA", scaled_samples(invert(c, s, "BDIA"), 1.1)),
     r"BDIA Sample: input 'latent_image': its samples were changed after BDIA Invert"),
    ("EDICT pair into BDIA Sample",
     lambda c, s: sample(c, s, "BDIA", invert(c, s, "EDICT")),
     r"BDIA Sample: input 'latent_image': it was inverted with EDICT Invert\. Connect it to EDICT "
     r"Sample, or invert with BDIA Invert\."),
    ("BDIA pair into EDICT Sample",
     lambda c, s: sample(c, s, "EDICT", invert(c, s, "BDIA")),
     r"EDICT Sample: input 'latent_image': it was inverted with BDIA Invert\. Connect it to BDIA Sample"),
    ("inverting an inverted latent",
     lambda c, s: invert(c, s, "EDICT", invert(c, s, "BDIA")),
     r"EDICT Invert: input 'latent_image': it is already inverted \(by BDIA Invert\)\. Connect the clean latent"),
    ("SD1.5 (EPS) pair sampled with a flow model",
     lambda c, s: sample(c, s, "BDIA", invert(c, s, "BDIA"), model=patched_model(c, "ModelSamplingSD3", shift=3.0)),
     r"BDIA Sample: input 'model': latent_image was inverted with a EPS model, but this model is CONST\. "
     r"Connect the same model"),
    ("SD1.5 pair sampled with an SDXL-format model",
     lambda c, s: sample(c, s, "EDICT", invert(c, s, "EDICT"), model=sdxl_format_model(c)),
     r"EDICT Sample: input 'model': latent_image was inverted in the SD15 latent format, but this model "
     r"uses SDXL\. Connect the model that EDICT Invert used\."),
    ("NaN in the latent",
     lambda c, s: invert(c, s, "EDICT", {"samples": with_nan(s["latent"]["samples"])}),
     r"EDICT Invert: input 'latent_image': it holds NaN or infinite values\. Check the nodes before it"),
    ("inf in the pair partner",
     lambda c, s: sample(c, s, "EDICT", with_inf_partner(invert(c, s, "EDICT"))),
     r"EDICT Sample: input 'latent_image': its pair partner holds NaN or infinite values\. Invert again"),
    ("NaN in the noise mask",
     lambda c, s: invert(c, s, "BDIA", dict(s["latent"], noise_mask=with_nan(torch.ones(1, 64, 64)))),
     r"BDIA Invert: input 'latent_image': its noise mask holds NaN or infinite values"),
    ("a model that diverges in its second step",
     lambda c, s: invert(c, s, "BDIA", model=diverging_model(c, after_calls=1)),
     r"BDIA Invert: input 'model': the run diverged: the latent holds NaN or infinite values after step "
     r"2 of 4 \(sigma [0-9.]+\), so it was stopped and returns nothing\. Lower cfg"),
    ("a model that diverges while sampling",
     lambda c, s: sample(c, s, "EDICT", run_node(c, "EmptyLatentImage", width=64, height=64, batch_size=1),
                         denoise=1.0, model=diverging_model(c, after_calls=4)),
     r"EDICT Sample: input 'model': the run diverged: .* after step 3 of 4"),
    ("mix_weight 0",
     lambda c, s: run_node(c, "EDICTInvert", latent_image=s["latent"], **common(c, s), mix_weight=0.0,
                           leapfrog=True),
     r"EDICT Invert: input 'mix_weight': mix_weight must be in \(0, 1\], got 0\.0\..*Change the widget"),
    ("mix_weight 1.5",
     lambda c, s: run_node(c, "EDICTSample", latent_image=s["latent"], seed=0, **common(c, s),
                           mix_weight=1.5, leapfrog=True),
     r"EDICT Sample: input 'mix_weight': mix_weight must be in \(0, 1\]"),
    ("gamma 0",
     lambda c, s: run_node(c, "BDIAInvert", latent_image=s["latent"], **common(c, s), gamma=0.0),
     r"BDIA Invert: input 'gamma': gamma must be in \(0, 1\]"),
    ("gamma -1",
     lambda c, s: run_node(c, "BDIASample", latent_image=s["latent"], seed=0, **common(c, s), gamma=-1.0),
     r"BDIA Sample: input 'gamma': gamma must be in \(0, 1\]"),
    ("steps 0",
     lambda c, s: invert(c, s, "BDIA", steps=0),
     r"BDIA Invert: input 'steps': steps must be a whole number of at least 1"),
    ("unknown scheduler",
     lambda c, s: invert(c, s, "EDICT", scheduler="nope"),
     r"EDICT Invert: input 'scheduler': unknown scheduler 'nope'\. Use one of simple|normal"),
    ("denoise above 1",
     lambda c, s: sample(c, s, "BDIA", s["latent"], denoise=1.5),
     r"BDIA Sample: input 'denoise': denoise must be in \[0, 1\], got 1\.5"),
    ("a 5-D (video) latent",
     lambda c, s: invert(c, s, "BDIA", {"samples": s["latent"]["samples"][:, :, None]}),
     r"BDIA Invert: input 'latent_image': expected an image latent \[batch, channels, height, width\]"),
]


@pytest.mark.parametrize("run_bad,message", [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gets_a_clear_error_and_the_next_run_works(comfy, scene, run_bad, message):
    NodeInputError = pack_module("comfy_adapter.errors").NodeInputError
    with pytest.raises(NodeInputError, match=message) as raised:
        run_bad(comfy, scene)
    print(f"\n[message] {raised.value}")
    inverted = invert(comfy, scene, "BDIA")
    back = sample(comfy, scene, "BDIA", inverted)
    assert relative_error(back["samples"], scene["latent"]["samples"]) <= 1e-4


def test_denoise_zero_returns_the_input_unchanged(comfy, scene):
    for method in ("EDICT", "BDIA"):
        for node, extra in (("Invert", {}), ("Sample", {"seed": 0})):
            out = run_node(comfy, method + node, latent_image=scene["latent"],
                           **common(comfy, scene, denoise=0.0), **METHOD_WIDGETS[method], **extra)
            assert torch.equal(out["samples"], scene["latent"]["samples"]) and "exact_inversion" not in out


def snapshot(latent):
    """A deep copy of a LATENT dict and of the record inside it, for later comparison."""
    def copy(value):
        if torch.is_tensor(value):
            return value.clone()
        if isinstance(value, dict):
            return {k: copy(v) for k, v in value.items()}
        return list(value) if isinstance(value, list) else value
    return copy(latent)


def assert_same(latent, before):
    assert set(latent) == set(before)
    for key, value in before.items():
        if torch.is_tensor(value):
            assert torch.equal(latent[key], value) and latent[key].dtype == value.dtype, key
        elif isinstance(value, dict):
            assert_same(latent[key], value)
        else:
            assert latent[key] == value, key


def test_no_node_modifies_its_input(comfy, scene):
    """ComfyUI caches node outputs and hands the same objects to later nodes and runs."""
    latent = dict(scene["latent"], batch_index=[3, 4], noise_mask=half_mask())
    for method in ("EDICT", "BDIA"):
        before = snapshot(latent)
        inverted = invert(comfy, scene, method, latent)
        assert_same(latent, before)
        assert inverted["batch_index"] == [3, 4]
        before = snapshot(inverted)
        sampled = sample(comfy, scene, method, inverted, positive="edit")
        assert_same(inverted, before)
    sampled = sample(comfy, scene, "EDICT", invert(comfy, scene, "EDICT"))
    before = snapshot(sampled)
    run_node(comfy, "LatentPairMix", latent=sampled, weight=0.3)
    run_node(comfy, "EDICTInvert", latent_image=sampled, **common(comfy, scene), **METHOD_WIDGETS["EDICT"])
    assert_same(sampled, before)


# ------------------------------------------------------------------------- masked editing

def half_mask(batch=1):
    """1 on the left half of a 64x64 image (edit there), 0 on the right (keep)."""
    mask = torch.zeros(batch, 64, 64)
    mask[:, :, :32] = 1.0
    return mask


@pytest.mark.parametrize("method", ["EDICT", "BDIA"])
def test_masked_edit_keeps_the_outside_bit_for_bit(comfy, scene, method):
    """With Set Latent Noise Mask before the Invert node, the edit changes only the masked
    left half; the right half of the result is the input latent exactly."""
    masked = run_node(comfy, "SetLatentNoiseMask", samples=scene["latent"], mask=half_mask())
    inverted = invert(comfy, scene, method, masked)
    assert "noise_mask" in inverted
    edited = sample(comfy, scene, method, inverted, positive="edit")
    source = scene["latent"]["samples"]
    # 64 px -> 8 latent columns: columns 0-3 are inside the mask, 4-7 outside.
    assert torch.equal(edited["samples"][..., 4:], source[..., 4:])
    inside_change = relative_error(edited["samples"][..., :4], source[..., :4])
    print(f"\n[mask {method}] inside change {inside_change:.3f}, outside change 0 (bit-identical)")
    assert inside_change > 1e-2
    unmasked = sample(comfy, scene, method, dict((k, v) for k, v in inverted.items() if k != "noise_mask"),
                      positive="edit")
    assert torch.equal(edited["samples"][..., :4], unmasked["samples"][..., :4].float())


def test_mask_set_after_inversion_and_soft_masks(comfy, scene):
    """The mask may also be set on the inverted latent; a soft mask blends input and edit."""
    inverted = invert(comfy, scene, "EDICT")
    full = sample(comfy, scene, "EDICT", inverted, positive="edit")
    soft = run_node(comfy, "SetLatentNoiseMask", samples=inverted, mask=torch.full((1, 64, 64), 0.25))
    edited = sample(comfy, scene, "EDICT", soft, positive="edit")
    source = scene["latent"]["samples"].double()
    expected = source + 0.25 * (full["exact_inversion"]["branch"] - source)
    assert relative_error(edited["samples"], expected) <= 1e-6
    # the masked pair is still a pair: Latent Pair Mix and re-inversion take it
    run_node(comfy, "LatentPairMix", latent=edited, weight=0.5)


def test_masked_text_to_image_keeps_the_unmasked_latent(comfy, scene):
    masked = run_node(comfy, "SetLatentNoiseMask", samples=scene["latent"], mask=half_mask())
    out = run_node(comfy, "BDIASample", latent_image=masked, seed=3, gamma=0.5,
                   **common(comfy, scene, denoise=1.0))
    assert torch.equal(out["samples"][..., 4:], scene["latent"]["samples"][..., 4:])
    assert not torch.equal(out["samples"][..., :4], scene["latent"]["samples"][..., :4])


# ---------------------------------------------------------------- conditioning and batches

def batched_conditioning(*conds):
    """Several one-prompt CONDITIONINGs as one CONDITIONING with a batch of prompts."""
    tensors = [cond[0][0] for cond in conds]
    options = dict(conds[0][0][1])
    if options.get("pooled_output") is not None:
        options["pooled_output"] = torch.cat([cond[0][1]["pooled_output"] for cond in conds])
    return [[torch.cat(tensors), options]]


def test_conditioning_batch_of_another_size_follows_comfyui(comfy, scene):
    """Two prompts for three images: ComfyUI repeats the conditioning to the batch (prompt
    1, 2, 1). Our nodes go through ComfyUI's own guider, so they do the same: one BDIA step
    from noise equals ComfyUI's euler step on the same inputs, and round trips stay exact."""
    from comfy import sample as comfy_sample, samplers

    operations = pack_module("comfy_adapter.operations")
    two_prompts = batched_conditioning(scene["positive"], scene["edit"])
    empty = run_node(comfy, "EmptyLatentImage", width=64, height=64, batch_size=3)
    inputs = common(comfy, scene, positive="positive", denoise=1.0, steps=1)
    inputs["positive"] = two_prompts
    ours = run_node(comfy, "BDIASample", latent_image=empty, seed=5, gamma=0.9, **inputs)
    sigmas = operations._sigmas(comfy.tiny["model"], operations.Settings("bdia", 1, "normal", 1.0))
    noise = comfy_sample.prepare_noise(empty["samples"], 5)
    with torch.inference_mode():
        theirs = comfy_sample.sample_custom(comfy.tiny["model"], noise, 7.0, samplers.sampler_object("euler"),
                                            sigmas.to(torch.float32), two_prompts, scene["negative"],
                                            empty["samples"], seed=5)
    assert relative_error(ours["samples"], theirs) <= 1e-5

    latent3 = comfy.VAEEncode().encode(comfy.tiny["vae"], drawn_images(batch=3))[0]
    inverted = run_node(comfy, "EDICTInvert", latent_image=latent3, **dict(common(comfy, scene), positive=two_prompts),
                        **METHOD_WIDGETS["EDICT"])
    back = run_node(comfy, "EDICTSample", latent_image=inverted, seed=0,
                    **dict(common(comfy, scene), positive=two_prompts), **METHOD_WIDGETS["EDICT"])
    assert relative_error(back["samples"], latent3["samples"]) <= 1e-4


def counting(model):
    """A clone of `model` that records the batch size of every network call."""
    batches = []
    counted = model.clone()

    def wrapper(apply_model, args):
        batches.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    counted.set_model_unet_function_wrapper(wrapper)
    return counted, batches


@pytest.mark.parametrize("method", ["EDICT", "BDIA"])
def test_batch_of_three_is_each_image_alone(comfy, scene, method):
    """Each image of a 3-batch inverts and regenerates (with the edit prompt) as it would
    alone, to batched-kernel rounding; the batch makes as many network calls as one image."""
    latent3 = comfy.VAEEncode().encode(comfy.tiny["vae"], drawn_images(batch=3))[0]
    model, batch_calls = counting(comfy.tiny["model"])
    batched = sample(comfy, scene, method, invert(comfy, scene, method, latent3, model=model),
                     positive="edit", model=model)
    for index in range(3):
        single_model, single_calls = counting(comfy.tiny["model"])
        one = run_node(comfy, "LatentFromBatch", samples=latent3, batch_index=index, length=1)
        assert one["batch_index"] == [index]
        alone = sample(comfy, scene, method, invert(comfy, scene, method, one, model=single_model),
                       positive="edit", model=single_model)
        assert alone["batch_index"] == [index]
        difference = relative_error(batched["samples"][index:index + 1], alone["samples"])
        print(f"\n[batch {method}] image {index}: batched vs alone {difference:.2e}")
        assert difference <= 1e-4
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
        assert relative_error(batched["samples"][index:index + 1], alone["samples"]) <= 1e-4


# ------------------------------------------------------------------------ precision

@pytest.fixture(scope="module", params=["fp16", "bf16", "fp16-compute", "bf16-compute"])
def low_precision_model(request, comfy):
    """The tiny checkpoint loaded again with its UNet weights in fp16 or bf16 (ComfyUI's
    weight dtype option, as UNETLoader's weight_dtype sets it). On a CPU ComfyUI computes
    such weights in float32; the "-compute" variants turn that manual cast off, so the
    network really runs in half precision, as it does on a GPU."""
    import comfy.model_management
    import comfy.sd
    import folder_paths

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[request.param.split("-")[0]]
    path = folder_paths.get_full_path_or_raise("checkpoints", "tiny_sd15.safetensors")
    with pytest.MonkeyPatch.context() as patch:
        if request.param.endswith("-compute"):
            patch.setattr(comfy.model_management, "unet_manual_cast", lambda *args, **kwargs: None)
        model = comfy.sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=False,
                                                      model_options={"dtype": dtype})[0]
    return model, request.param


@pytest.mark.parametrize("method", ["EDICT", "BDIA"])
def test_low_precision_model_round_trip(comfy, scene, low_precision_model, method):
    """The pair stays float64 whatever the network computes in, so the round trip holds."""
    model, precision = low_precision_model
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision.split("-")[0]]
    compute_dtype = model.model.manual_cast_dtype or model.model.get_dtype()
    assert model.model.get_dtype() == weight_dtype
    assert compute_dtype == (weight_dtype if precision.endswith("-compute") else torch.float32)
    inverted = invert(comfy, scene, method, model=model)
    record = inverted["exact_inversion"]
    assert record["branch"].dtype == torch.float64 and record["partner"].dtype == torch.float64
    back = sample(comfy, scene, method, inverted, model=model)
    error = relative_error(back["samples"], scene["latent"]["samples"])
    print(f"\n[{precision}] {method} round trip {error:.2e}, network computes in {compute_dtype}")
    assert error <= 1e-3


def test_float32_fallback_without_float64(comfy, scene, monkeypatch, caplog):
    """A device without float64 (Apple MPS) keeps the pair in float32 and says so once."""
    session = pack_module("comfy_adapter.session")
    monkeypatch.setattr(session, "has_float64", lambda device: False)
    monkeypatch.setattr(session.state_dtype, "warned", False, raising=False)
    with caplog.at_level(logging.WARNING, logger="exact_inversion"):
        for method in ("EDICT", "BDIA"):
            inverted = invert(comfy, scene, method)
            assert inverted["exact_inversion"]["partner"].dtype == torch.float32
            back = sample(comfy, scene, method, inverted)
            error = relative_error(back["samples"], scene["latent"]["samples"])
            print(f"\n[float32 pair] {method} round trip {error:.2e}")
            # float32 rounding, amplified by cfg 7 on a random model: 8.5e-4 measured here.
            assert error <= 5e-3
    warnings = [r for r in caplog.records if "no float64" in r.getMessage()]
    assert len(warnings) == 1
