"""The bench's ComfyUI: the harness's in-process ComfyUI (harness/comfy.py), the
tiny checkpoint, and the paths that runs share. Pack code is reached as ComfyUI loaded it.
"""

import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
# Appended, so the pack's nodes/ never shadows ComfyUI's nodes.py.
if REPO not in sys.path:
    sys.path.append(REPO)

from harness import comfy as comfy_harness  # noqa: E402  (needs the path above)

# The harness's helpers, re-exported so bench modules reach them as env.<name>.
drawn_images = comfy_harness.drawn_images
pack_module = comfy_harness.pack_module
relative_error = comfy_harness.relative_error
run_node = comfy_harness.run_node


def start(base=None):
    """Start ComfyUI in this process (CPU) with the pack and the tiny checkpoint. Returns
    ComfyUI's `nodes` module with `nodes.tiny` = {model, clip, vae, base}, as the tests'
    `comfy` fixture does. `base` defaults to bench/results/tmp (git-ignored)."""
    return comfy_harness.start_with_tiny_checkpoint(base or os.path.join(RESULTS, "tmp", "comfy_base"))


def load_checkpoint(comfy, path):
    """Load any checkpoint file through CheckpointLoaderSimple (linked into the base's
    models/checkpoints). Returns (model, clip, vae)."""
    name = os.path.basename(path)
    link = os.path.join(comfy.tiny["base"], "models", "checkpoints", name)
    if not os.path.exists(link):
        os.symlink(os.path.abspath(path), link)
    return comfy.CheckpointLoaderSimple().load_checkpoint(name)[:3]


def encode_text(comfy, clip, text):
    with torch.inference_mode():
        return comfy.CLIPTextEncode().encode(clip, text)[0]
