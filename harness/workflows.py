"""The example workflows (example_workflows/*.json, UI format) and their API-format copies
(example_workflows/api/), and the one rule that fits the SD1.5 ones to a smaller machine: the
tiny checkpoint, fewer steps, smaller images. Shared by the tests and the demo."""

import json
import os

from .comfy import CKPT_NAME, REPO

UI_DIR = os.path.join(REPO, "example_workflows")
API_DIR = os.path.join(UI_DIR, "api")
# The examples for an SD1.5 checkpoint: the tests run each of them on the tiny checkpoint
# (tests/test_browser.py from the UI, tests/test_server.py and the demo some by name).
NAMES = ["edict_edit", "bdia_edit", "obelm_edit", "rex_edit", "round_trip_check", "bdia_text_to_image", "advanced_edit",
         "attention_control_edit"]
# The examples for models the tests do not have (Flux dev, a guidance-distilled model): the
# tiny SD1.5 checkpoint cannot run them (other loaders, other latent format), so they are
# listed, opened and exported through the real frontend (tests/test_workflows.py), not run.
OTHER_MODEL_NAMES = ["flux_guidance_edit"]
ALL_NAMES = NAMES + OTHER_MODEL_NAMES
DEFAULT_CKPT = "v1-5-pruned-emaonly.safetensors"
# flux_guidance_edit's loaders: the files of ComfyUI's own Flux dev example, by loader and widget.
FLUX_MODELS = {("UNETLoader", "unet_name"): "flux1-dev.safetensors",
               ("DualCLIPLoader", "clip_name1"): "clip_l.safetensors",
               ("DualCLIPLoader", "clip_name2"): "t5xxl_fp16.safetensors",
               ("VAELoader", "vae_name"): "ae.safetensors"}
INPUT_IMAGE = "example.png"  # what Load Image names in the examples


def ui_text(name):
    with open(os.path.join(UI_DIR, f"{name}.json")) as f:
        return f.read()


def api_prompt(name):
    with open(os.path.join(API_DIR, f"{name}.json")) as f:
        return json.load(f)


def adapted(prompt, ckpt=None, image=None, steps=None, size=None):
    """A copy of an API-format prompt with the checkpoint, input image, steps and empty-latent
    size replaced where given. The same widget names are replaced in the browser test."""
    replacements = {"ckpt_name": ckpt, "image": image, "steps": steps, "width": size, "height": size}
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        for name, value in replacements.items():
            if value is not None and name in node["inputs"]:
                node["inputs"][name] = value
    return prompt


def nodes_of_type(prompt, class_type):
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def source_nodes():
    """API-format nodes "1" to "6" of the hand-built test prompts: the tiny checkpoint, the
    base ("2"), edit ("3") and negative ("4") prompts, the input image and its latent ("6")."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT_NAME}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a dog on the beach"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a cat on the beach"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": INPUT_IMAGE}},
        "6": {"class_type": "VAEEncode", "inputs": {"pixels": ["5", 0], "vae": ["1", 2]}},
    }


def run_again(prompt, run):
    """A copy of `prompt` that ComfyUI runs again in full, yet gives the same result.

    ComfyUI answers a repeated prompt from its cache without running anything. Adding `run`
    spaces to the end of each prompt text changes no token (the tokenizer drops them), so
    the conditioning is the same, but the cache sees new inputs and runs every node after.
    """
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        if node["class_type"] == "CLIPTextEncode":
            node["inputs"]["text"] += " " * run
    return prompt
