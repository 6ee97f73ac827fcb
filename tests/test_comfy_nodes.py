"""The nodes' behaviour on a real ComfyUI beyond the round trip: edits, text-to-image,
re-inversion, mixing, progress and Cancel. Bad inputs are in test_errors.py."""

import logging

import pytest
import torch

from harness.comfy import counting_model, pack_module, relative_error, run_node
from helpers import METHOD_WIDGETS, METHODS, SPEC_OF, common as common_inputs, invert, sample

STEPS = 6


def common(comfy, scene, positive="positive", **overrides):
    return common_inputs(comfy, scene, positive, **dict(dict(steps=STEPS), **overrides))


def edict(**overrides):
    return dict(METHOD_WIDGETS["EDICT"], **overrides)


def test_edit_changes_the_image_and_keeps_the_pair(comfy, scene):
    inverted = invert(comfy, scene, "EDICT", steps=STEPS)
    edited = sample(comfy, scene, "EDICT", inverted, positive="edit", steps=STEPS)
    change = relative_error(edited["samples"], scene["latent"]["samples"])
    print(f"\n[edit] relative change of the latent under the edit prompt: {change:.3f}")
    assert change > 1e-3 and torch.isfinite(edited["samples"]).all()
    record = edited["exact_inversion"]
    assert record["state"] == "clean" and record["partner"].shape == edited["samples"].shape
    mixed = run_node(comfy, "LatentPairMix", latent=edited, weight=0.25)
    expected = 0.25 * record["branch"] + 0.75 * record["partner"]
    assert torch.equal(mixed["samples"], expected.float())
    assert "exact_inversion" not in mixed


def test_latent_pair_mix_mixes_every_pair_of_one_level(comfy, scene):
    """Latent Pair Mix mixes the pairs whose two states sit at one noise level (the spec's
    mixable: EDICT's and Rex's), and refuses the others by name (test_errors)."""
    mixable = [m for m in METHODS if SPEC_OF[m].mixable]
    assert mixable == ["EDICT", "Rex"]
    for method in mixable:
        edited = sample(comfy, scene, method, invert(comfy, scene, method), positive="edit")
        record = edited["exact_inversion"]
        mixed = run_node(comfy, "LatentPairMix", latent=edited, weight=0.5)
        assert torch.equal(mixed["samples"], (0.5 * record["branch"] + 0.5 * record["partner"]).float()), method
        assert relative_error(mixed["samples"], record["branch"].float()) > 0, method


# Settings other than the defaults, which a Sample output's re-inversion must ignore.
OTHER_SETTINGS = {"EDICT": {"mix_weight": 0.5, "leapfrog": True}, "BDIA": {"gamma": 0.5}, "OBELM": {}}


@pytest.mark.parametrize("method", METHODS)
def test_sample_output_inverts_back_exactly(comfy, scene, caplog, method):
    """Every Sample node returns its clean pair, so its Invert node recovers the noisy pair
    it came from: it follows the pair's own schedule and settings, as Sample does, and says
    which widgets it therefore ignores."""
    inverted = invert(comfy, scene, method, steps=STEPS)
    edited = sample(comfy, scene, method, inverted, positive="edit", steps=STEPS)
    with caplog.at_level(logging.INFO, logger="exact_inversion"):
        back = run_node(comfy, f"{method}Invert", latent_image=edited,
                        **common(comfy, scene, positive="edit", steps=STEPS + 2, scheduler="karras"),
                        **OTHER_SETTINGS.get(method, METHOD_WIDGETS[method]))
    notes = [r.getMessage() for r in caplog.records if "following the latent's own settings" in r.getMessage()]
    title = SPEC_OF[method].title
    assert len(notes) == 1 and f"{title} Invert" in notes[0]
    assert "karras" in notes[0] and "'steps': 8" in notes[0]
    assert all(name in notes[0] for name in OTHER_SETTINGS.get(method, {}))
    record = back["exact_inversion"]
    assert record["scheduler"] == "normal" and record["steps"] == STEPS
    assert {k: record[k] for k in METHOD_WIDGETS[method]} == METHOD_WIDGETS[method]
    error = relative_error(record["branch"], inverted["exact_inversion"]["branch"])
    partner_error = relative_error(record["partner"], inverted["exact_inversion"]["partner"])
    print(f"\n[re-inversion] {title}: noisy pair recovered to {error:.2e} / {partner_error:.2e}")
    # measured: EDICT 8.5e-16
    assert error <= 1e-10 and partner_error <= 1e-10


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
    assert first["exact_inversion"]["state"] == "clean"  # its pair: the Invert node takes it back exactly


# "simple" at denoise 0.5: normal's one step there would run from sigma_min to 0, which an
# exact method does not run (test_errors.py refuses that schedule by name)
@pytest.mark.parametrize("denoise,source,scheduler", [(1.0, "empty", "normal"), (0.5, "image", "simple")])
def test_one_plain_step_from_a_plain_latent_is_comfyuis_euler_step(comfy, scene, denoise, source, scheduler):
    """A sample from a plain latent starts as KSampler does. One EDICT step without mixing
    (mix_weight 1) moves x by plain DDIM, so it must match ComfyUI's own euler sampler given
    the same seed, noise scaling and schedule (ending at the floor, not at 0). BDIA's first
    step is the same DDIM step (test_core checks that)."""
    from comfy import sample as comfy_sample, samplers

    operations = pack_module("comfy_adapter.operations")
    model = comfy.tiny["model"]
    latent = (run_node(comfy, "EmptyLatentImage", width=64, height=64, batch_size=2)
              if source == "empty" else scene["latent"])
    ours = run_node(comfy, "EDICTSample", latent_image=latent, seed=11, **edict(mix_weight=1.0),
                    **common(comfy, scene, steps=1, denoise=denoise, scheduler=scheduler))
    sigmas = operations.prepare("test", model, operations.Schedule(1, scheduler, denoise).sigmas(model))
    noise = comfy_sample.prepare_noise(latent["samples"], 11)
    with torch.inference_mode():
        theirs = comfy_sample.sample_custom(model, noise, 7.0, samplers.sampler_object("euler"),
                                            sigmas.to(torch.float32), scene["positive"], scene["negative"],
                                            latent["samples"], seed=11)
    assert len(sigmas) == 2
    # not a round trip: ComfyUI's euler steps in float32, ours in float64 (measured 2.2e-6)
    assert relative_error(ours["samples"], theirs) <= 1e-5


def test_sample_follows_the_record_and_says_so(comfy, scene, caplog):
    inverted = invert(comfy, scene, "EDICT", steps=STEPS)
    with caplog.at_level(logging.INFO, logger="exact_inversion"):
        out = run_node(comfy, "EDICTSample", latent_image=inverted, seed=0,
                       **common(comfy, scene, steps=STEPS + 3, scheduler="karras"), **edict(mix_weight=0.5))
    notes = [r.getMessage() for r in caplog.records if "following the latent's own settings" in r.getMessage()]
    assert len(notes) == 1 and "karras" in notes[0] and "mix_weight" in notes[0]
    assert torch.equal(out["samples"], scene["latent"]["samples"])  # measured: exact


def test_sample_does_not_check_the_schedule_widgets_it_will_not_use(comfy, scene):
    """An inverted latent follows its own schedule: widgets that would be refused for a plain
    latent (0 steps, an unknown scheduler from an API prompt) do not stop its regeneration."""
    inverted = invert(comfy, scene, "BDIA", steps=STEPS)
    out = sample(comfy, scene, "BDIA", inverted, steps=0, scheduler="nope")
    assert torch.equal(out["samples"], scene["latent"]["samples"])  # measured: exact


@pytest.mark.parametrize("method", METHODS)
def test_progress_advances_per_step_with_previews(comfy, scene, monkeypatch, method):
    """The progress bar moves once per step that runs, ending at its total, and each step
    sends a live preview of the latent (ComfyUI's latent2rgb, as with --preview-method
    latent2rgb), while inverting and sampling."""
    import latent_preview
    from comfy import utils as comfy_utils
    from comfy.cli_args import LatentPreviewMethod

    monkeypatch.setattr(latent_preview.args, "preview_method", LatentPreviewMethod.Latent2RGB)
    updates = []
    comfy_utils.set_progress_bar_global_hook(
        lambda value, total, preview, node_id=None: updates.append((value, total, preview)))
    try:
        inverted = invert(comfy, scene, method, steps=STEPS)
        sample(comfy, scene, method, inverted, positive="edit", steps=STEPS)
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
    # normal's last step, sigma_min to 0, is not run: the bar counts the steps that are; a
    # two-level method's Sample starts from a pair that already holds its first step
    run = STEPS - 1
    sampled = SPEC_OF[method].reports(run, started=False)
    assert len(inverted["exact_inversion"]["sigmas"]) == run + 1
    assert [(v, t) for v, t, _ in updates] == ([(i, run) for i in range(1, run + 1)]
                                               + [(i, sampled) for i in range(1, sampled + 1)])
    pictures = [preview[1].tobytes() for _, _, preview in updates]
    assert len(set(pictures)) > sampled  # every step shows the latent as it is then


def test_cancel_stops_within_one_step(comfy, scene):
    from comfy import model_management

    def press_cancel(call, output):
        if call == 3:  # the user presses Cancel during the second step
            model_management.interrupt_current_processing(True)
        return output

    model, calls = counting_model(comfy.tiny["model"], after_call=press_cancel)
    with pytest.raises(model_management.InterruptProcessingException):
        run_node(comfy, "EDICTInvert", latent_image=scene["latent"], **common(comfy, scene, model=model, steps=50), **edict())
    assert len(calls) <= 4  # the rest of that step at most, out of 100 calls
    # nothing left behind: the next run works
    run_node(comfy, "BDIAInvert", latent_image=scene["latent"], gamma=0.94, **common(comfy, scene))


@pytest.mark.parametrize("method,widgets,limit", [("EDICT", {"mix_weight": 0.5, "leapfrog": True}, 16),
                                                  ("BDIA", {"gamma": 0.3}, 19)])
def test_inverting_past_the_exact_range_warns_and_names_the_limit(comfy, scene, caplog, method, widgets, limit):
    """Inversion grows rounding by 1/p^2 (EDICT) or 1/gamma (BDIA) per step; past the step
    count where float64 rounding reaches float32's, the Invert node says so (and still runs)."""
    def run(steps):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="exact_inversion"):
            inverted = invert(comfy, scene, method, widgets=widgets, steps=steps)
        # the steps that ran: the schedule's last sigma is sigma_min, the floor itself
        ran = len(inverted["exact_inversion"]["sigmas"]) - 1
        return ran, [r.getMessage() for r in caplog.records if "exact range" in r.getMessage()]

    ran, messages = run(limit + 1)
    assert ran == limit and messages == []
    ran, (message,) = run(limit + 2)
    assert ran == limit + 1
    assert f"{method} Invert: {limit + 1} steps is past {method}'s exact range" in message
    assert f"beyond about {limit} steps" in message and "O-BELM" in message


@pytest.mark.parametrize("scheduler,denoise,warns", [("normal", 0.5, True), ("karras", 0.5, False),
                                                     ("normal", 1.0, False)])
def test_obelm_names_a_schedule_along_which_edits_drift(comfy, scene, caplog, scheduler, denoise, warns):
    """O-BELM's second mode is damped by (last step / first step)^2 over a run; normal's tail
    (denoise 0.5) barely damps it, and O-BELM Invert says so, naming the fix; karras, or a
    whole schedule, does not warn. Either way the inversion runs."""
    with caplog.at_level(logging.WARNING, logger="exact_inversion"):
        inverted = invert(comfy, scene, "OBELM", steps=8, scheduler=scheduler, denoise=denoise)
    messages = [r.getMessage() for r in caplog.records if "barely shrink" in r.getMessage()]
    assert inverted["exact_inversion"]["method"] == "obelm"
    if warns:
        (message,) = messages
        assert message.startswith("O-BELM Invert: this schedule's steps barely shrink")
        assert "karras or exponential scheduler" in message
    else:
        assert messages == []
