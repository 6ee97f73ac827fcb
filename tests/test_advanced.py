"""The advanced nodes (any GUIDER, any SIGMAS, a method object) through a real server, and
the exact methods as a SAMPLER for SamplerCustom in process.

Each round trip below is one branch of one API prompt: VAE Encode -> Exact Invert (Advanced)
-> Exact Sample (Advanced) with the same guider -> Save Latent, beside Save Latent of the
input. The saved float32 latents must be equal: every case measures 0."""

import glob
import os

import pytest
import torch
from safetensors.torch import load_file

from edict_core.spec import SPECS
from harness.comfy import pack_module, relative_error, run_node
from harness.workflows import source_nodes

def advanced_round_trips(steps=5):
    """An API prompt with one round trip per case: {case: save-node prefix}, prompt."""
    prompt = {
        **source_nodes(),
        "flow": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 3.0}},
        "flux_guided": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["2", 0], "guidance": 3.5}},
        "edict": {"class_type": "EDICTMethod", "inputs": {"mix_weight": 0.93, "leapfrog": True}},
        "bdia": {"class_type": "BDIAMethod", "inputs": {"gamma": 0.94}},
        "obelm": {"class_type": "OBELMMethod", "inputs": {}},
        "cfg_guider": {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["2", 0],
                                                             "negative": ["4", 0], "cfg": 5.0}},
        "basic_flow": {"class_type": "BasicGuider", "inputs": {"model": ["flow", 0], "conditioning": ["flux_guided", 0]}},
        "dual": {"class_type": "DualCFGGuider", "inputs": {"model": ["1", 0], "cond1": ["2", 0], "cond2": ["3", 0],
                                                          "negative": ["4", 0], "cfg_conds": 5.0,
                                                          "cfg_cond2_negative": 2.0, "style": "regular"}},
        "normal_flow": {"class_type": "BasicScheduler", "inputs": {"model": ["flow", 0], "scheduler": "normal",
                                                                   "steps": steps, "denoise": 0.8}},
        "normal": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal",
                                                              "steps": steps, "denoise": 1.0}},
        "karras": {"class_type": "KarrasScheduler", "inputs": {"steps": steps, "sigma_max": 14.614642,
                                                              "sigma_min": 0.0291675, "rho": 7.0}},
        "ays": {"class_type": "AlignYourStepsScheduler", "inputs": {"model_type": "SD1", "steps": steps,
                                                                   "denoise": 0.8}},
        "split": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["normal", 0], "step": 2}},
        "input_saved": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "adv/input"}},
    }
    cases = {  # case: (guider, sigmas, method)
        "basic_flux_guidance_flow": ("basic_flow", "normal_flow", "bdia"),
        "dual_cfg": ("dual", "normal", "edict"),
        "karras": ("cfg_guider", "karras", "bdia"),
        "align_your_steps": ("cfg_guider", "ays", "edict"),
        "split_sigmas_tail": ("cfg_guider", ["split", 1], "bdia"),
        "karras_obelm": ("cfg_guider", "karras", "obelm"),
        "flow_obelm": ("basic_flow", "normal_flow", "obelm"),
    }
    for case, (guider, sigmas, method) in cases.items():
        sigmas = sigmas if isinstance(sigmas, list) else [sigmas, 0]
        prompt[f"{case}_invert"] = {"class_type": "ExactInvertAdvanced", "inputs": {
            "guider": [guider, 0], "sigmas": sigmas, "latent_image": ["6", 0], "method": [method, 0]}}
        prompt[f"{case}_sample"] = {"class_type": "ExactSampleAdvanced", "inputs": {
            "guider": [guider, 0], "latent_image": [f"{case}_invert", 0], "method": [method, 0]}}
        prompt[f"{case}_save"] = {"class_type": "SaveLatent", "inputs": {
            "samples": [f"{case}_sample", 0], "filename_prefix": f"adv/{case}"}}
    return list(cases), prompt


def saved_latent(server, prefix):
    paths = sorted(glob.glob(os.path.join(server.base, "output", f"{prefix}_*.latent")), key=os.path.getmtime)
    assert paths, f"no latent saved under {prefix}"
    return load_file(paths[-1])["latent_tensor"]


def test_advanced_round_trips_are_exact_through_the_server(server):
    cases, prompt = advanced_round_trips()
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1]
    original = saved_latent(server, "adv/input")
    for case in cases:
        error = relative_error(saved_latent(server, f"adv/{case}"), original)
        print(f"\n[advanced round trip] {case}: {error:.2e}")
        assert error == 0.0, case


def test_an_edit_is_another_guider(server):
    """Sampling the inverted latent with a guider of another prompt changes the result."""
    cases, prompt = advanced_round_trips()  # the same prompt: ComfyUI runs only the edit branch anew
    prompt["edit_guider"] = {"class_type": "CFGGuider", "inputs": {"model": ["1", 0], "positive": ["3", 0],
                                                                   "negative": ["4", 0], "cfg": 5.0}}
    prompt["karras_sample"]["inputs"]["guider"] = ["edit_guider", 0]
    prompt["karras_save"]["inputs"]["filename_prefix"] = "adv/karras_edit"
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"][-1]
    change = relative_error(saved_latent(server, "adv/karras_edit"), saved_latent(server, "adv/input"))
    print(f"\n[advanced edit] change {change:.3f}")
    assert change > 1e-2


@pytest.mark.parametrize("method", [spec.node_id("Method") for spec in SPECS.values()])
def test_exact_sampler_in_sampler_custom(comfy, scene, method):
    """Exact Sampler as the SAMPLER of SamplerCustom's path (comfy.sample.sample_custom):
    seeded text-to-image, finite and seed-dependent. One EDICT step without mixing is the
    DDIM step, so it equals ComfyUI's euler run to the same floor."""
    from comfy import sample as comfy_sample, samplers

    widgets = {"EDICTMethod": {"mix_weight": 1.0, "leapfrog": True}, "BDIAMethod": {"gamma": 0.5}}.get(method, {})
    exact = run_node(comfy, "ExactSamplerSelect", method=run_node(comfy, method, **widgets))
    empty = run_node(comfy, "EmptyLatentImage", width=64, height=64, batch_size=1)["samples"]
    model = comfy.tiny["model"]
    model_sampling = model.get_model_object("model_sampling")

    def run(sampler, sigmas, seed):
        with torch.inference_mode():
            return comfy_sample.sample_custom(model, comfy_sample.prepare_noise(empty, seed), 5.0, sampler,
                                              sigmas, scene["positive"], scene["negative"], empty, seed=seed)

    ten = samplers.calculate_sigmas(model_sampling, "normal", 10)
    first, again, other = run(exact, ten, 1), run(exact, ten, 1), run(exact, ten, 2)
    assert first.shape == (1, 4, 8, 8) and torch.isfinite(first).all()
    assert torch.equal(first, again) and not torch.equal(first, other)
    if method == "EDICTMethod":
        one = samplers.calculate_sigmas(model_sampling, "normal", 1)  # [sigma_max, 0]
        to_floor = torch.tensor([float(one[0]), float(model_sampling.sigma_min)])
        # not a round trip: ComfyUI's euler steps in float32, ours in float64
        assert relative_error(run(exact, one, 3), run(samplers.sampler_object("euler"), to_floor, 3)) <= 1e-5


def test_advanced_nodes_need_sigmas_and_noise_for_a_plain_latent(comfy, scene):
    NodeInputError = pack_module("comfy_adapter.errors").NodeInputError
    guider = pack_module("comfy_adapter.operations").simple_guider(comfy.tiny["model"], scene["positive"],
                                                                   scene["negative"], 5.0)
    bdia = run_node(comfy, "BDIAMethod", gamma=0.94)
    with pytest.raises(NodeInputError, match=r"Exact Sample \(Advanced\): input 'latent_image': it is a "
                       r"plain latent.*Connect the SIGMAS and NOISE inputs"):
        run_node(comfy, "ExactSampleAdvanced", guider=guider, latent_image=scene["latent"], method=bdia)
    with pytest.raises(NodeInputError, match=r"BDIA Method: input 'gamma': gamma must be in \(0, 1\]"):
        run_node(comfy, "BDIAMethod", gamma=1.5)
    one_step = torch.tensor([1.0, 0.0])
    with pytest.raises(NodeInputError, match=r"Exact Invert \(Advanced\): input 'sigmas': BDIA needs at "
                       r"least 2 steps, the schedule has 1 "):
        run_node(comfy, "ExactInvertAdvanced", guider=guider, sigmas=one_step, latent_image=scene["latent"],
                 method=bdia)
    with pytest.raises(NodeInputError, match=r"Exact Invert \(Advanced\): input 'sigmas': the schedule must "
                       r"strictly decrease"):
        run_node(comfy, "ExactInvertAdvanced", guider=guider, sigmas=torch.tensor([1.0, 2.0, 0.0]),
                 latent_image=scene["latent"], method=bdia)
