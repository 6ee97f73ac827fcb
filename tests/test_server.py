"""The pack in a real ComfyUI server: /object_info lists the nodes, and an API-format
workflow (load checkpoint -> encode -> EDICT Invert -> EDICT Sample -> Latent Pair Mix ->
decode -> save) runs to a saved image."""

import os

import pytest
from PIL import Image

from comfy_harness import drawn_images, make_base_directory
from server import ComfyServer

NODE_INPUTS = {
    "EDICTInvert": ["model", "positive", "negative", "latent_image", "steps", "cfg", "scheduler",
                    "denoise", "mix_weight", "leapfrog"],
    "EDICTSample": ["model", "positive", "negative", "latent_image", "seed", "steps", "cfg",
                    "scheduler", "denoise", "mix_weight", "leapfrog"],
    "BDIAInvert": ["model", "positive", "negative", "latent_image", "steps", "cfg", "scheduler",
                   "denoise", "gamma"],
    "BDIASample": ["model", "positive", "negative", "latent_image", "seed", "steps", "cfg",
                   "scheduler", "denoise", "gamma"],
    "LatentPairMix": ["latent", "weight"],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("server_base"))
    make_base_directory(base)
    image = (drawn_images(batch=1)[0].numpy() * 255).round().astype("uint8")
    Image.fromarray(image).save(os.path.join(base, "input", "beach.png"))
    server = ComfyServer(base).start()
    yield server
    server.stop()


def edit_prompt(steps=6):
    common = {"model": ["1", 0], "steps": steps, "cfg": 3.0, "scheduler": "normal", "denoise": 0.8,
              "mix_weight": 0.93, "leapfrog": True}
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a dog on the beach"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a cat on the beach"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "beach.png"}},
        "6": {"class_type": "VAEEncode", "inputs": {"pixels": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "EDICTInvert", "inputs": {**common, "positive": ["2", 0], "negative": ["4", 0],
                                                       "latent_image": ["6", 0]}},
        "8": {"class_type": "EDICTSample", "inputs": {**common, "positive": ["3", 0], "negative": ["4", 0],
                                                       "latent_image": ["7", 0], "seed": 0}},
        "9": {"class_type": "LatentPairMix", "inputs": {"latent": ["8", 0], "weight": 0.5}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "edict_edit"}},
    }


def test_object_info_lists_every_node_with_its_inputs(server):
    info = server.get("/object_info")
    for name, inputs in NODE_INPUTS.items():
        assert name in info, f"{name} missing from /object_info"
        node = info[name]
        assert node["category"] == "sampling/exact inversion"
        assert node["description"]
        assert node["output"] == ["LATENT"] and node["output_tooltips"][0]
        required = node["input"]["required"]
        assert list(required) == inputs
        for input_name, spec in required.items():
            assert spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    assert info["EDICTInvert"]["display_name"] == "EDICT Invert"
    assert info["EDICTSample"]["input"]["required"]["mix_weight"][1]["default"] == 0.93
    assert info["BDIASample"]["input"]["required"]["gamma"][1]["default"] == 0.94


def test_edit_workflow_runs_and_saves_an_image(server):
    entry = server.run_prompt(edit_prompt())
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = entry["outputs"]["11"]["images"]
    assert len(images) == 1
    path = os.path.join(server.base, "output", images[0]["subfolder"], images[0]["filename"])
    with Image.open(path) as saved:
        assert saved.size == (64, 64)
        assert len(saved.getcolors(64 * 64)) > 10  # a picture, not a flat fill


def test_node_error_reaches_the_client_and_the_server_keeps_serving(server):
    prompt = edit_prompt()
    prompt["9"]["inputs"]["latent"] = ["6", 0]  # a plain latent where a pair is required
    entry = server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "error"
    messages = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert "Latent Pair Mix: input 'latent'" in messages[0][1]["exception_message"]
    assert server.run_prompt(edit_prompt(steps=5))["status"]["status_str"] == "success"
