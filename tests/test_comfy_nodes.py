"""The nodes' behaviour on a real ComfyUI beyond the round trip: edits, text-to-image,
re-inversion, mixing, progress, Cancel, and the errors a user sees."""

import logging

import pytest
import torch

from comfy_harness import pack_module, relative_error, run_node

STEPS = 6


def common(comfy, scene, positive="positive", **overrides):
    inputs = dict(model=comfy.tiny["model"], positive=scene[positive], negative=scene["negative"],
                  steps=STEPS, cfg=7.0, scheduler="normal", denoise=0.8)
    inputs.update(overrides)
    return inputs


def edict(**overrides):
    return dict(dict(mix_weight=0.93, leapfrog=True), **overrides)


def test_edit_changes_the_image_and_keeps_the_pair(comfy, scene):
    inverted = run_node(comfy, "EDICTInvert", latent_image=scene["latent"], **common(comfy, scene), **edict())
    edited = run_node(comfy, "EDICTSample", latent_image=inverted, seed=0,
                      **common(comfy, scene, positive="edit"), **edict())
    change = relative_error(edited["samples"], scene["latent"]["samples"])
    print(f"\n[edit] relative change of the latent under the edit prompt: {change:.3f}")
    assert change > 1e-3 and torch.isfinite(edited["samples"]).all()
    record = edited["exact_inversion"]
    assert record["state"] == "clean" and record["partner"].shape == edited["samples"].shape
    mixed = run_node(comfy, "LatentPairMix", latent=edited, weight=0.25)
    expected = 0.25 * record["branch"] + 0.75 * record["partner"]
    assert torch.equal(mixed["samples"], expected.float())
    assert "exact_inversion" not in mixed


def test_edict_sample_output_inverts_back_exactly(comfy, scene):
    """EDICT Sample returns its pair, so EDICT Invert recovers the noisy pair it came from."""
    inverted = run_node(comfy, "EDICTInvert", latent_image=scene["latent"], **common(comfy, scene), **edict())
    edited = run_node(comfy, "EDICTSample", latent_image=inverted, seed=0,
                      **common(comfy, scene, positive="edit"), **edict())
    back = run_node(comfy, "EDICTInvert", latent_image=edited, **common(comfy, scene, positive="edit"), **edict())
    error = relative_error(back["exact_inversion"]["branch"], inverted["exact_inversion"]["branch"])
    partner_error = relative_error(back["exact_inversion"]["partner"], inverted["exact_inversion"]["partner"])
    print(f"\n[re-inversion] noisy pair recovered to {error:.2e} / {partner_error:.2e}")
    assert error <= 1e-6 and partner_error <= 1e-6


@pytest.mark.parametrize("name,extra", [("EDICTSample", edict()), ("BDIASample", {"gamma": 0.5})])
def test_plain_latent_is_seeded_text_to_image(comfy, scene, name, extra):
    empty = run_node(comfy, "EmptyLatentImage", width=64, height=64, batch_size=2)
    inputs = common(comfy, scene, denoise=1.0, steps=8)
    first = run_node(comfy, name, latent_image=empty, seed=7, **inputs, **extra)
    again = run_node(comfy, name, latent_image=empty, seed=7, **inputs, **extra)
    other = run_node(comfy, name, latent_image=empty, seed=8, **inputs, **extra)
    assert first["samples"].shape == (2, 4, 8, 8) and torch.isfinite(first["samples"]).all()
    assert torch.equal(first["samples"], again["samples"])
    assert not torch.equal(first["samples"], other["samples"])
    assert "exact_inversion" in first if name == "EDICTSample" else "exact_inversion" not in first


@pytest.mark.parametrize("denoise,source", [(1.0, "empty"), (0.5, "image")])
def test_one_bdia_step_from_a_plain_latent_is_comfyuis_euler_step(comfy, scene, denoise, source):
    """BDIA's first step is plain DDIM, so one step must match ComfyUI's own euler sampler
    given the same seed, noise scaling and schedule (ending at the floor, not at 0)."""
    from comfy import sample as comfy_sample, samplers

    operations = pack_module("comfy_adapter.operations")
    model = comfy.tiny["model"]
    latent = (run_node(comfy, "EmptyLatentImage", width=64, height=64, batch_size=2)
              if source == "empty" else scene["latent"])
    ours = run_node(comfy, "BDIASample", latent_image=latent, seed=11, gamma=0.9,
                    **common(comfy, scene, steps=1, denoise=denoise))
    sigmas = operations._sigmas(model, operations.Settings("bdia", 1, "normal", denoise))
    noise = comfy_sample.prepare_noise(latent["samples"], 11)
    with torch.inference_mode():
        theirs = comfy_sample.sample_custom(model, noise, 7.0, samplers.sampler_object("euler"),
                                            sigmas.to(torch.float32), scene["positive"], scene["negative"],
                                            latent["samples"], seed=11)
    assert len(sigmas) == 2
    assert relative_error(ours["samples"], theirs) <= 1e-5


def test_denoise_zero_returns_the_input(comfy, scene):
    out = run_node(comfy, "BDIAInvert", latent_image=scene["latent"], gamma=0.94,
                   **common(comfy, scene, denoise=0.0))
    assert torch.equal(out["samples"], scene["latent"]["samples"])
    assert "exact_inversion" not in out


def test_inputs_are_not_modified(comfy, scene):
    latent = {"samples": scene["latent"]["samples"].clone(), "batch_index": [3, 4]}
    before = latent["samples"].clone()
    inverted = run_node(comfy, "BDIAInvert", latent_image=latent, gamma=0.94, **common(comfy, scene))
    snapshot = {k: v.clone() for k, v in inverted["exact_inversion"].items() if torch.is_tensor(v)}
    run_node(comfy, "BDIASample", latent_image=inverted, seed=0, gamma=0.94, **common(comfy, scene))
    assert torch.equal(latent["samples"], before) and set(latent) == {"samples", "batch_index"}
    assert inverted["batch_index"] == [3, 4]
    for key, value in snapshot.items():
        assert torch.equal(inverted["exact_inversion"][key], value)


def test_sample_follows_the_record_and_says_so(comfy, scene, caplog):
    inverted = run_node(comfy, "EDICTInvert", latent_image=scene["latent"], **common(comfy, scene), **edict())
    with caplog.at_level(logging.INFO, logger="exact_inversion"):
        out = run_node(comfy, "EDICTSample", latent_image=inverted, seed=0,
                       **common(comfy, scene, steps=STEPS + 3, scheduler="karras"), **edict(mix_weight=0.5))
    notes = [r.getMessage() for r in caplog.records if "following the inverted latent" in r.getMessage()]
    assert len(notes) == 1 and "karras" in notes[0] and "mix_weight" in notes[0]
    assert relative_error(out["samples"], scene["latent"]["samples"]) <= 1e-4


def test_progress_advances_per_step_with_previews(comfy, scene):
    from comfy import utils as comfy_utils

    updates = []
    comfy_utils.set_progress_bar_global_hook(
        lambda value, total, preview, node_id=None: updates.append((value, total, preview is not None)))
    try:
        run_node(comfy, "EDICTInvert", latent_image=scene["latent"], **common(comfy, scene), **edict())
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
    assert [(v, t) for v, t, _ in updates] == [(i, STEPS) for i in range(1, STEPS + 1)]


def test_cancel_stops_within_one_step(comfy, scene):
    from comfy import model_management

    calls = []
    model = comfy.tiny["model"].clone()

    def counting_wrapper(apply_model, args):
        calls.append(1)
        if len(calls) == 3:  # the user presses Cancel during the second step
            model_management.interrupt_current_processing(True)
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(counting_wrapper)
    with pytest.raises(model_management.InterruptProcessingException):
        run_node(comfy, "EDICTInvert", latent_image=scene["latent"], **common(comfy, scene, model=model, steps=50), **edict())
    assert len(calls) <= 4  # the rest of that step at most, out of 100 calls
    # nothing left behind: the next run works
    run_node(comfy, "BDIAInvert", latent_image=scene["latent"], gamma=0.94, **common(comfy, scene))


# ---------------------------------------------------------------- errors a user reads

def patched(comfy, node_name, **options):
    node = comfy.NODE_CLASS_MAPPINGS[node_name]()
    return getattr(node, node.FUNCTION)(comfy.tiny["model"], **options)[0]


def test_plain_latent_where_a_pair_is_required(comfy, scene):
    with pytest.raises(ValueError, match=r"Latent Pair Mix: input 'latent': it is a plain latent .* "
                                         r"Connect the output of EDICT Sample"):
        run_node(comfy, "LatentPairMix", latent=scene["latent"], weight=0.5)


def test_pair_from_the_other_method(comfy, scene):
    inverted = run_node(comfy, "EDICTInvert", latent_image=scene["latent"], **common(comfy, scene), **edict())
    with pytest.raises(ValueError, match=r"BDIA Sample: input 'latent_image': it was inverted with "
                                         r"EDICT Invert\. Connect it to EDICT Sample"):
        run_node(comfy, "BDIASample", latent_image=inverted, seed=0, gamma=0.94, **common(comfy, scene))


def test_pair_from_another_model_kind(comfy, scene):
    inverted = run_node(comfy, "BDIAInvert", latent_image=scene["latent"], gamma=0.94, **common(comfy, scene))
    flow = patched(comfy, "ModelSamplingSD3", shift=3.0)
    with pytest.raises(ValueError, match=r"BDIA Sample: input 'model': latent_image was inverted with "
                                         r"a EPS model, but this model is CONST"):
        run_node(comfy, "BDIASample", latent_image=inverted, seed=0, gamma=0.94, **common(comfy, scene, model=flow))


def test_samples_changed_after_inversion(comfy, scene):
    inverted = run_node(comfy, "EDICTInvert", latent_image=scene["latent"], **common(comfy, scene), **edict())
    upscaled = dict(inverted, samples=torch.nn.functional.interpolate(inverted["samples"], scale_factor=2))
    with pytest.raises(ValueError, match=r"EDICT Sample: input 'latent_image': its samples have shape "
                                         r"\(2, 4, 16, 16\) but its EDICT pair partner has \(2, 4, 8, 8\)"):
        run_node(comfy, "EDICTSample", latent_image=upscaled, seed=0, **common(comfy, scene), **edict())
    scaled = dict(inverted, samples=inverted["samples"] * 1.1)
    with pytest.raises(ValueError, match="its samples were changed after EDICT Invert"):
        run_node(comfy, "EDICTSample", latent_image=scaled, seed=0, **common(comfy, scene), **edict())


def test_inverting_twice_is_refused(comfy, scene):
    inverted = run_node(comfy, "BDIAInvert", latent_image=scene["latent"], gamma=0.94, **common(comfy, scene))
    with pytest.raises(ValueError, match=r"EDICT Invert: input 'latent_image': it is already inverted"):
        run_node(comfy, "EDICTInvert", latent_image=inverted, **common(comfy, scene), **edict())


@pytest.mark.parametrize("name,bad,match", [
    ("EDICTInvert", {"mix_weight": 0.0}, r"EDICT Invert: input 'mix_weight': mix_weight must be in \(0, 1\]"),
    ("EDICTSample", {"mix_weight": 1.5}, r"EDICT Sample: input 'mix_weight'"),
    ("BDIAInvert", {"gamma": 0.0}, r"BDIA Invert: input 'gamma': gamma must be in \(0, 1\]"),
    ("BDIASample", {"gamma": -1.0}, r"BDIA Sample: input 'gamma'"),
    ("BDIAInvert", {"steps": 0}, r"BDIA Invert: input 'steps': steps must be a whole number of at least 1"),
    ("EDICTInvert", {"scheduler": "nope"}, r"EDICT Invert: input 'scheduler': unknown scheduler 'nope'"),
    ("BDIASample", {"denoise": 1.5}, r"BDIA Sample: input 'denoise'"),
])
def test_parameters_outside_their_range(comfy, scene, name, bad, match):
    """Widgets clamp these, but API-format prompts reach the node unchecked."""
    inputs = common(comfy, scene, **{k: v for k, v in bad.items() if k in ("steps", "scheduler", "denoise")})
    extra = edict() if name.startswith("EDICT") else {"gamma": 0.94}
    extra.update({k: v for k, v in bad.items() if k in ("mix_weight", "gamma")})
    if name.endswith("Sample"):
        extra["seed"] = 0
    with pytest.raises(ValueError, match=match):
        run_node(comfy, name, latent_image=scene["latent"], **inputs, **extra)


def test_non_finite_latent_is_refused(comfy, scene):
    broken = {"samples": scene["latent"]["samples"].clone()}
    broken["samples"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"EDICT Invert: input 'latent_image': it holds NaN"):
        run_node(comfy, "EDICTInvert", latent_image=broken, **common(comfy, scene), **edict())
