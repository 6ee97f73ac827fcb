"""The model that inverted: the record keeps a fingerprint of its weights and patches, and a
Sample node given another model (another checkpoint of the same family, or the same one with
a LoRA) says so on the node, where the round trip is not exact, but still runs the edit."""

import logging
import os

import pytest
import torch

from harness.comfy import pack_module, relative_error
from harness.tiny_checkpoint import build_tiny_checkpoint
from helpers import METHODS, invert, sample

NOTICE = "this model is not the one that inverted latent_image"


@pytest.fixture(scope="module")
def other_checkpoint(comfy):
    """A second tiny SD1.5 checkpoint (seed 1): same class, kind and latent format."""
    import folder_paths

    path = os.path.join(folder_paths.get_folder_paths("checkpoints")[0], "tiny_sd15_seed1.safetensors")
    if not os.path.exists(path):
        build_tiny_checkpoint(path, seed=1)
    return comfy.CheckpointLoaderSimple().load_checkpoint(os.path.basename(path))[0]


def with_lora_like_patch(model, strength=0.5):
    """A clone of `model` with one weight patched as LoRA loaders patch it (add_patches)."""
    patched = model.clone()
    key = next(k for k in patched.model.state_dict() if k.endswith("out.2.weight"))
    delta = torch.full_like(patched.model.state_dict()[key], 0.05)
    patched.add_patches({key: (delta,)}, strength)
    return patched


def notices(caplog):
    return [r.getMessage() for r in caplog.records if NOTICE in r.getMessage()]


def test_fingerprint_tells_checkpoints_and_patches_apart(comfy, other_checkpoint):
    fingerprint = pack_module("comfy_adapter.fingerprint").model_fingerprint
    model = comfy.tiny["model"]
    base = fingerprint(model)
    assert fingerprint(model.clone()) == base  # a clone without patches is the same model
    assert fingerprint(other_checkpoint) != base
    assert fingerprint(with_lora_like_patch(model)) != base
    assert fingerprint(with_lora_like_patch(model, 0.25)) != fingerprint(with_lora_like_patch(model, 0.5))


def test_fingerprint_ignores_which_clone_was_loaded_last(comfy, scene):
    """ComfyUI patches weights in place while a patched clone is loaded; the base weights are
    read from the shared backup, so the unpatched model keeps its fingerprint."""
    fingerprint = pack_module("comfy_adapter.fingerprint").model_fingerprint
    model = comfy.tiny["model"]
    before = fingerprint(model)
    patched = with_lora_like_patch(model)
    import comfy.model_management as mm
    mm.load_models_gpu([patched])  # patches the shared weights in place, keeping a backup
    assert fingerprint(model) == before
    assert fingerprint(patched) == fingerprint(with_lora_like_patch(model))


@pytest.mark.parametrize("method", METHODS)
def test_sample_with_another_model_says_so_and_still_edits(comfy, scene, caplog, other_checkpoint, method):
    inverted = invert(comfy, scene, method)
    assert len(inverted["exact_inversion"]["model_fingerprint"]) == 16
    with caplog.at_level(logging.WARNING, logger="exact_inversion"):
        same = sample(comfy, scene, method, inverted)
        assert notices(caplog) == []
        other = sample(comfy, scene, method, inverted, model=other_checkpoint)
        other_notes = notices(caplog)
        caplog.clear()
        lora = sample(comfy, scene, method, inverted, model=with_lora_like_patch(comfy.tiny["model"]))
        lora_notes = notices(caplog)
    exact = relative_error(same["samples"], scene["latent"]["samples"])
    off = relative_error(other["samples"], scene["latent"]["samples"])
    lora_off = relative_error(lora["samples"], scene["latent"]["samples"])
    print(f"\n[model identity] {method}: same model {exact:.2e}, other checkpoint {off:.3g}, "
          f"LoRA-style patch {lora_off:.3g}")
    assert exact == 0.0  # measured: exact
    assert len(other_notes) == 1 and len(lora_notes) == 1
    assert other_notes[0].startswith(f"{method_title(method)} Sample: {NOTICE}")
    assert "round trip is not exact" in other_notes[0] and f"{method_title(method)} Invert used" in other_notes[0]
    assert off > 0.01 and lora_off > 1e-4  # not exact: the notice is true


def method_title(prefix):
    from helpers import SPEC_OF

    return SPEC_OF[prefix].title
