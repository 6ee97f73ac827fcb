"""Round trips through the real nodes on a real ComfyUI, for every model family.

The tiny seeded SD1.x checkpoint is loaded through CheckpointLoaderSimple; the other
families come from ComfyUI's own patch nodes. At cfg 7 with a 2-image batch, inverting and
then sampling with the same conditioning must return the latent to 1e-4 relative, for
EDICT and BDIA; DDIM inversion (the Euler step alone) on the same input is printed beside
them, so the contrast stays visible.
"""

import pytest
import torch

from comfy_harness import pack_module, relative_error, run_node

CFG = 7.0
STEPS, DENOISE = 15, 0.8  # an odd count on a partial schedule, the case naive code breaks
FAMILIES = {
    "eps": ("ModelSamplingDiscrete", {"sampling": "eps", "zsnr": False}, "EPS"),
    "v_prediction": ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": False}, "V_PREDICTION"),
    "flow": ("ModelSamplingSD3", {"shift": 3.0}, "CONST"),
    "edm": ("ModelSamplingContinuousEDM", {"sampling": "edm", "sigma_max": 120.0, "sigma_min": 0.002}, "EDM"),
}


def patched_model(comfy, family):
    node_name, options, _ = FAMILIES[family]
    node = comfy.NODE_CLASS_MAPPINGS[node_name]()
    return getattr(node, node.FUNCTION)(comfy.tiny["model"], **options)[0]


@torch.inference_mode()
def ddim_round_trip(model, scene):
    """DDIM inversion then DDIM sampling through the same session machinery as the pack."""
    operations = pack_module("comfy_adapter.operations")
    settings = operations.Settings("edict", STEPS, "normal", DENOISE)
    conditioning = (model, scene["positive"], scene["negative"], CFG)
    noisy = operations.ddim_baseline(*conditioning, scene["latent"]["samples"], settings, invert=True)
    return operations.ddim_baseline(*conditioning, noisy, settings, invert=False)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_round_trip_is_exact_for_every_family(comfy, scene, family):
    model = patched_model(comfy, family)
    common = dict(model=model, positive=scene["positive"], negative=scene["negative"],
                  steps=STEPS, cfg=CFG, scheduler="normal", denoise=DENOISE)
    original = scene["latent"]["samples"]
    assert original.shape[0] == 2

    inverted = run_node(comfy, "EDICTInvert", latent_image=scene["latent"], mix_weight=0.93,
                        leapfrog=True, **common)
    record = inverted["exact_inversion"]
    assert record["model_sampling"] == FAMILIES[family][2]
    assert record["method"] == "edict"
    # STEPS steps, or one fewer where the schedule's last sigma is the floor itself (EDM)
    assert len(record["sigmas"]) - 1 in (STEPS, STEPS - 1)
    regenerated = run_node(comfy, "EDICTSample", latent_image=inverted, seed=0, mix_weight=0.93,
                           leapfrog=True, **common)
    edict_error = relative_error(regenerated["samples"], original)
    # the float64 branch, before its float32 cast into `samples`
    edict_error64 = relative_error(regenerated["exact_inversion"]["branch"], original)

    inverted = run_node(comfy, "BDIAInvert", latent_image=scene["latent"], gamma=0.94, **common)
    regenerated = run_node(comfy, "BDIASample", latent_image=inverted, seed=0, gamma=0.94, **common)
    bdia_error = relative_error(regenerated["samples"], original)

    ddim_error = relative_error(ddim_round_trip(model, scene), original)
    print(f"\n[round trip] family={family} cfg={CFG} steps={STEPS} denoise={DENOISE} batch=2: "
          f"EDICT {edict_error:.2e} (float64 {edict_error64:.2e})  BDIA {bdia_error:.2e}  DDIM {ddim_error:.2e}")
    assert edict_error <= 1e-4 and edict_error64 <= 1e-4
    assert bdia_error <= 1e-4
    # The inverted latent is genuinely noisy, not the input handed back.
    assert relative_error(inverted["samples"], original) > 0.1
