"""Precision: fp16 / bf16 weights and compute keep the round trip exact (the pair stays
float64), and a device without float64 falls back to a float32 pair, close but not exact."""

import logging

import pytest
import torch

from harness.comfy import pack_module, relative_error
from helpers import METHODS, invert, sample


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


@pytest.mark.parametrize("method", METHODS)
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
    assert error <= 1e-6


def test_float32_fallback_without_float64(comfy, scene, monkeypatch, caplog):
    """A device without float64 (Apple MPS) keeps the pair in float32 and says so once."""
    session = pack_module("comfy_adapter.session")
    monkeypatch.setattr(session, "has_float64", lambda device: False)
    monkeypatch.setattr(session.state_dtype, "warned", False, raising=False)
    with caplog.at_level(logging.WARNING, logger="exact_inversion"):
        for method in METHODS:
            inverted = invert(comfy, scene, method)
            assert inverted["exact_inversion"]["partner"].dtype == torch.float32
            back = sample(comfy, scene, method, inverted)
            error = relative_error(back["samples"], scene["latent"]["samples"])
            print(f"\n[float32 pair] {method} round trip {error:.2e}")
            # float32 rounding, amplified by cfg 7 on a random model: 8.5e-4 measured here.
            assert error <= 5e-3
    warnings = [r for r in caplog.records if "no float64" in r.getMessage()]
    assert len(warnings) == 1
