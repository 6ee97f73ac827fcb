"""Bad inputs through the real nodes on the tiny checkpoint: every bad input gets an error
that names the node, the input and the fix, and a correct run right after it is still
exact. Also: denoise 0, and no node modifies its input."""

import pytest
import torch

from harness.comfy import counting_model, pack_module, patched_model, run_node
from helpers import METHOD_WIDGETS, METHODS, common, invert, sample


def sdxl_format_model(comfy):
    """The tiny model as if it used SDXL's latent format (an object patch, as model
    patches do it), to stand for an SDXL checkpoint."""
    from comfy import latent_formats

    model = comfy.tiny["model"].clone()
    model.add_object_patch("latent_format", latent_formats.SDXL())
    return model


def diverging_model(comfy, after_calls):
    """The tiny model, made to return NaN from its `after_calls`+1-th network call on."""
    return counting_model(comfy.tiny["model"],
                          after_call=lambda call, out: out * float("nan") if call > after_calls else out)[0]


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
     r"Latent Pair Mix: input 'latent': it is a plain latent with no pair to mix\. "
     r"Connect the output of a Sample or Invert node of EDICT or Rex\."),
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
    ("O-BELM pair into BDIA Sample",
     lambda c, s: sample(c, s, "BDIA", invert(c, s, "OBELM")),
     r"BDIA Sample: input 'latent_image': it was inverted with O-BELM Invert\. Connect it to O-BELM "
     r"Sample, or invert with BDIA Invert\."),
    ("O-BELM pair into Latent Pair Mix",
     lambda c, s: run_node(c, "LatentPairMix", latent=invert(c, s, "OBELM"), weight=0.5),
     r"Latent Pair Mix: input 'latent': it holds a O-BELM pair.*Connect O-BELM Sample's output to VAE Decode"),
    ("O-BELM with one step",
     lambda c, s: invert(c, s, "OBELM", steps=1),
     r"O-BELM Invert: input 'steps': steps must be a whole number of at least 2, got 1"),
    ("gamma as a string in an API prompt",
     lambda c, s: run_node(c, "BDIAInvert", latent_image=s["latent"], **common(c, s), gamma="0.5"),
     r"BDIA Invert: input 'gamma': expected a number, got '0\.5'\. Change the widget"),
    ("leapfrog as a number in an API prompt",
     lambda c, s: run_node(c, "EDICTSample", latent_image=s["latent"], seed=0, **common(c, s), mix_weight=0.93,
                           leapfrog=1),
     r"EDICT Sample: input 'leapfrog': expected true or false, got 1\. Change the widget"),
    ("inverting an inverted latent",
     lambda c, s: invert(c, s, "EDICT", invert(c, s, "BDIA")),
     r"EDICT Invert: input 'latent_image': it is already inverted \(by BDIA Invert\)\. Connect the clean latent"),
    ("SD1.5 (EPS) pair sampled with a flow model",
     lambda c, s: sample(c, s, "BDIA", invert(c, s, "BDIA"), model=patched_model(c, c.tiny["model"], "ModelSamplingSD3", shift=3.0)),
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
     r"2 of 3 \(sigma [0-9.]+\), so it was stopped and returns nothing\. Lower cfg"),
    ("a model that diverges while sampling",
     lambda c, s: sample(c, s, "EDICT", run_node(c, "EmptyLatentImage", width=64, height=64, batch_size=1),
                         denoise=1.0, model=diverging_model(c, after_calls=4)),
     r"EDICT Sample: input 'model': the run diverged: .* after step 3 of 3"),
    ("mix_weight 0",
     lambda c, s: run_node(c, "EDICTInvert", latent_image=s["latent"], **common(c, s), mix_weight=0.0,
                           leapfrog=True),
     r"EDICT Invert: input 'mix_weight': mix_weight must be in \(0, 1\], got 0\.0\..*Change the widget"),
    ("mix_weight 1.5",
     lambda c, s: run_node(c, "EDICTSample", latent_image=s["latent"], seed=0, **common(c, s),
                           mix_weight=1.5, leapfrog=True),
     r"EDICT Sample: input 'mix_weight': mix_weight must be in \(0, 1\]"),
    ("Rex tableau not one of its options",
     lambda c, s: run_node(c, "RexInvert", latent_image=s["latent"], **common(c, s), tableau="dopri5", zeta=0.999),
     r"Rex Invert: input 'tableau': expected one of 'euler', 'midpoint', 'rk4', got 'dopri5'\. Change the widget"),
    ("Rex zeta 0",
     lambda c, s: run_node(c, "RexSample", latent_image=s["latent"], seed=0, **common(c, s), tableau="rk4", zeta=0.0),
     r"Rex Sample: input 'zeta': zeta must be in \(0, 1\]"),
    ("gamma 0",
     lambda c, s: run_node(c, "BDIAInvert", latent_image=s["latent"], **common(c, s), gamma=0.0),
     r"BDIA Invert: input 'gamma': gamma must be in \(0, 1\]"),
    ("gamma -1",
     lambda c, s: run_node(c, "BDIASample", latent_image=s["latent"], seed=0, **common(c, s), gamma=-1.0),
     r"BDIA Sample: input 'gamma': gamma must be in \(0, 1\]"),
    ("steps 0",
     lambda c, s: invert(c, s, "EDICT", steps=0),
     r"EDICT Invert: input 'steps': steps must be a whole number of at least 1, got 0"),
    ("BDIA with one step",
     lambda c, s: invert(c, s, "BDIA", steps=1),
     r"BDIA Invert: input 'steps': steps must be a whole number of at least 2, got 1"),
    ("BDIA Sample with one step from a plain latent",
     lambda c, s: sample(c, s, "BDIA", s["latent"], steps=1),
     r"BDIA Sample: input 'steps': steps must be a whole number of at least 2, got 1"),
    # normal's last step runs from sigma_min to 0 and is not run: these schedules leave too few
    ("EDICT with only normal's last step (1 step at denoise 0.5)",
     lambda c, s: invert(c, s, "EDICT", steps=1, denoise=0.5),
     r"EDICT Invert: input 'steps': EDICT needs at least 1 steps, the schedule has 0 \(a last step to "
     r"the model's lowest noise level, sigma_min, is not run.*Use more steps, or a higher denoise"),
    ("BDIA with 2 steps of normal, the last to sigma = 0",
     lambda c, s: sample(c, s, "BDIA", s["latent"], steps=2, denoise=1.0),
     r"BDIA Sample: input 'steps': BDIA needs at least 2 steps, the schedule has 1 "),
    ("kl_optimal with one step (its formula divides by steps - 1)",
     lambda c, s: invert(c, s, "EDICT", steps=1, scheduler="kl_optimal", denoise=1.0),
     r"EDICT Invert: input 'steps': every sigma must be positive and finite; the schedule holds nan\. "
     r"The scheduler gave no usable schedule for these steps: use more steps or another scheduler"),
    ("unknown scheduler",
     lambda c, s: invert(c, s, "EDICT", scheduler="nope"),
     r"EDICT Invert: input 'scheduler': unknown scheduler 'nope'\. Use one of \w+(, \w+)*\.$"),
    ("denoise above 1",
     lambda c, s: sample(c, s, "BDIA", s["latent"], denoise=1.5),
     r"BDIA Sample: input 'denoise': denoise must be in \[0, 1\], got 1\.5"),
    ("a 3-D latent",
     lambda c, s: invert(c, s, "BDIA", {"samples": s["latent"]["samples"][0]}),
     r"BDIA Invert: input 'latent_image': expected an image latent \[batch, channels, height, width\] or a "
     r"video latent \[batch, channels, frames, height, width\], got shape \(4, 8, 8\)"),
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
    assert torch.equal(back["samples"], scene["latent"]["samples"])  # measured: exact


def test_denoise_zero_returns_the_input_unchanged(comfy, scene):
    for method in METHODS:
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
    from test_masks import half_mask

    latent = dict(scene["latent"], batch_index=[3, 4], noise_mask=half_mask())
    for method in METHODS:
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
