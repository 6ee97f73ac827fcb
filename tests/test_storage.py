"""Save Inverted Latent / Load Inverted Latent: a saved and reloaded inversion regenerates
bit for bit as the one never saved; damaged files, plain latents and wrong models are
refused with messages that say what to do."""

import glob
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.comfy import pack_module, patched_model, run_node
from helpers import invert, sample


def save_and_load(comfy, latent, prefix):
    """Save Inverted Latent into the output folder, move the file to the input folder as a
    user would, and Load Inverted Latent it. Returns (loaded LATENT, input-folder name)."""
    import folder_paths

    ui = comfy.NODE_CLASS_MAPPINGS["SaveInvertedLatent"]().save(latent, prefix)["ui"]["latents"][0]
    source = os.path.join(folder_paths.get_output_directory(), ui["subfolder"], ui["filename"])
    name = f"{prefix.replace('/', '_')}_{ui['filename']}"
    shutil.copy(source, os.path.join(folder_paths.get_input_directory(), name))
    return run_node(comfy, "LoadInvertedLatent", inverted_latent=name), name


def input_path(name):
    import folder_paths

    return os.path.join(folder_paths.get_input_directory(), name)


@pytest.mark.parametrize("method", ["EDICT", "BDIA"])
def test_saved_and_loaded_inversion_regenerates_bit_for_bit(comfy, scene, method):
    inverted = invert(comfy, scene, method)
    loaded, name = save_and_load(comfy, dict(inverted, batch_index=[4, 5]), f"storage/{method}")
    assert loaded["batch_index"] == [4, 5]
    for key, value in inverted["exact_inversion"].items():
        if torch.is_tensor(value):
            assert torch.equal(loaded["exact_inversion"][key], value) and loaded["exact_inversion"][key].dtype == value.dtype
        else:
            assert loaded["exact_inversion"][key] == value, key
    assert torch.equal(loaded["samples"], inverted["samples"])
    for positive in ("positive", "edit"):
        direct = sample(comfy, scene, method, inverted, positive=positive)
        reloaded = sample(comfy, scene, method, loaded, positive=positive)
        assert torch.equal(direct["samples"], reloaded["samples"])
    # ComfyUI's plain LoadLatent does not offer the file as a plain latent
    assert name not in comfy.LoadLatent.INPUT_TYPES()["required"]["latent"][0]
    assert name in comfy.NODE_CLASS_MAPPINGS["LoadInvertedLatent"].INPUT_TYPES()["required"]["inverted_latent"][0]


def test_a_masked_inversion_keeps_its_mask(comfy, scene):
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0
    masked = run_node(comfy, "SetLatentNoiseMask", samples=scene["latent"], mask=mask)
    inverted = invert(comfy, scene, "EDICT", masked)
    loaded, _ = save_and_load(comfy, inverted, "storage/masked")
    assert torch.equal(loaded["noise_mask"], inverted["noise_mask"])
    edited = sample(comfy, scene, "EDICT", loaded, positive="edit")
    assert torch.equal(edited["samples"], sample(comfy, scene, "EDICT", inverted, positive="edit")["samples"])


def rewrite(path, change):
    """Rewrite a saved file with change(tensors, metadata) applied."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        metadata = dict(f.metadata())
    tensors = load_file(path)
    change(tensors, metadata)
    save_file(tensors, path, metadata=metadata)


def edit_tensor(tensors, metadata):
    tensors["partner"] = tensors["partner"].clone()
    tensors["partner"].view(-1)[0] += 1e-9


def wrong_shape_metadata(tensors, metadata):
    record = json.loads(metadata["record"])
    record["shapes"]["partner"] = [9, 9]
    metadata["record"] = json.dumps(record)


def truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


@pytest.mark.parametrize("damage,message", [
    (truncate, r"it is not a readable safetensors file .* it may be truncated"),
    (lambda path: rewrite(path, edit_tensor), r"its tensors do not match the digest written with them: the "
                                              r"file was edited or damaged"),
    (lambda path: rewrite(path, wrong_shape_metadata), r"its tensor 'partner' \(\(2, 4, 8, 8\), torch.float64\) "
                                                       r"disagrees with its metadata \(\[9, 9\]"),
], ids=["truncated", "edited tensor", "metadata disagrees"])
def test_a_damaged_file_is_refused(comfy, scene, damage, message):
    NodeInputError = pack_module("comfy_adapter.errors").NodeInputError
    _, name = save_and_load(comfy, invert(comfy, scene, "BDIA"), "storage/damaged")
    damage(input_path(name))
    with pytest.raises(NodeInputError, match=r"Load Inverted Latent: input 'inverted_latent': .*" + message
                       + r".*Save it again with Save Inverted Latent"):
        run_node(comfy, "LoadInvertedLatent", inverted_latent=name)


def test_a_plain_latent_and_a_wrong_model_are_refused(comfy, scene):
    NodeInputError = pack_module("comfy_adapter.errors").NodeInputError
    with pytest.raises(NodeInputError, match=r"Save Inverted Latent: input 'latent': it is a plain latent"):
        comfy.NODE_CLASS_MAPPINGS["SaveInvertedLatent"]().save(scene["latent"], "storage/plain")
    loaded, _ = save_and_load(comfy, invert(comfy, scene, "EDICT"), "storage/model")
    flow = patched_model(comfy, comfy.tiny["model"], "ModelSamplingSD3", shift=3.0)
    with pytest.raises(NodeInputError, match=r"EDICT Sample: input 'model': latent_image was inverted with a "
                       r"EPS model, but this model is CONST"):
        sample(comfy, scene, "EDICT", loaded, model=flow)
    assert glob.glob(input_path("storage_model_*.inversion"))
