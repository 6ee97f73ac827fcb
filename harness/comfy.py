"""Real ComfyUI for the tests: where it is, a private base directory, the tiny checkpoint,
the pack loaded through ComfyUI's own custom-node loader, and images to work on.

ComfyUI comes from COMFYUI_PATH, else the copy scripts/setup.sh unpacks into
.comfyui/ComfyUI. Tests never touch that checkout's own models or custom_nodes: each
session gets a base directory of its own with the pack linked into its custom_nodes.
"""

import asyncio
import math
import os
import sys

import torch

from .paths import REPO, comfyui_path, import_comfyui  # noqa: F401  (REPO, comfyui_path: re-exported)

PACK_NAME = "comfyui-exact-inversion"
CKPT_NAME = "tiny_sd15.safetensors"


def make_base_directory(base):
    """Lay out a ComfyUI base directory: the pack linked into custom_nodes, the tiny
    checkpoint in models/checkpoints. Returns the checkpoint's name."""
    from .tiny_checkpoint import build_tiny_checkpoint

    for sub in ("custom_nodes", "models/checkpoints", "input", "output", "temp", "user"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    link = os.path.join(base, "custom_nodes", PACK_NAME)
    if not os.path.islink(link):
        os.symlink(REPO, link)
    ckpt = os.path.join(base, "models", "checkpoints", CKPT_NAME)
    if not os.path.exists(ckpt):
        build_tiny_checkpoint(ckpt, seed=0)
    return CKPT_NAME


def start_comfy_in_process(base):
    """Import ComfyUI in this process (CPU), point it at `base`, load its built-in extra
    nodes and this pack through nodes.load_custom_node. Returns ComfyUI's `nodes` module."""
    import_comfyui()
    import folder_paths
    folder_paths.set_output_directory(os.path.join(base, "output"))
    folder_paths.set_input_directory(os.path.join(base, "input"))
    folder_paths.set_temp_directory(os.path.join(base, "temp"))
    folder_paths.add_model_folder_path("checkpoints", os.path.join(base, "models", "checkpoints"), is_default=True)
    import nodes
    asyncio.run(nodes.init_builtin_extra_nodes())
    loaded = asyncio.run(nodes.load_custom_node(os.path.join(base, "custom_nodes", PACK_NAME)))
    if not loaded:
        raise RuntimeError("ComfyUI's loader failed to import the pack; see the log above.")
    return nodes


def start_with_tiny_checkpoint(base):
    """start_comfy_in_process over a fresh base directory, with the tiny checkpoint loaded.
    Returns ComfyUI's `nodes` module; `nodes.tiny` = {model, clip, vae, base}."""
    ckpt_name = make_base_directory(base)
    nodes = start_comfy_in_process(base)
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt_name)[:3]
    nodes.tiny = {"model": model, "clip": clip, "vae": vae, "base": base}
    return nodes


def pack_module(name):
    """A submodule of the pack as ComfyUI loaded it (e.g. 'comfy_adapter.session')."""
    for module_name, module in sys.modules.items():
        if module_name.endswith(f"{PACK_NAME}.{name}"):
            return module
    raise KeyError(name)


def drawn_images(batch=2, size=64):
    """A batch of smooth test pictures [B, H, W, 3] in [0, 1]: gradients, discs and stripes
    that differ per image, drawn here so no file is needed."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for b in range(batch):
        cx, cy = 0.35 + 0.3 * b / max(batch - 1, 1), 0.5
        disc = ((xs - cx) ** 2 + (ys - cy) ** 2 < 0.05).float()
        stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * (3 + b) * (xs + ys) / 2)
        red = 0.6 * xs + 0.4 * disc
        green = 0.3 + 0.4 * ys * stripes
        blue = 0.8 - 0.5 * disc + 0.1 * b
        images.append(torch.stack([red, green, blue], dim=-1).clamp(0, 1))
    return torch.stack(images)


def run_node(comfy, name, **inputs):
    """Run one node the way ComfyUI's executor does (under inference mode); returns its
    first output."""
    node = comfy.NODE_CLASS_MAPPINGS[name]()
    with torch.inference_mode():
        return getattr(node, node.FUNCTION)(**inputs)[0]


def counting_model(model, after_call=None):
    """A clone of the MODEL `model` that records every network call (one batched cond/uncond
    evaluation): returns (clone, batches), `batches` growing by each call's batch size.

    after_call(n, output) -> output, if given, runs after the n-th call (n from 1) and may
    replace its output (to make the model diverge) or act (to press Cancel mid-run)."""
    batches = []
    counted = model.clone()

    def wrapper(apply_model, args):
        output = apply_model(args["input"], args["timestep"], **args["c"])
        batches.append(args["input"].shape[0])
        return after_call(len(batches), output) if after_call else output

    counted.set_model_unet_function_wrapper(wrapper)
    return counted, batches


def patched_model(comfy, model, node_name, **options):
    """`model` through one of ComfyUI's model patch nodes (ModelSamplingDiscrete, ...)."""
    node = comfy.NODE_CLASS_MAPPINGS[node_name]()
    return getattr(node, node.FUNCTION)(model, **options)[0]


def relative_error(actual, expected):
    """||actual - expected|| / ||expected|| in float64 (edict_core's, for any tensors)."""
    from edict_core.validation import relative_error as core_relative_error

    return core_relative_error(actual.detach(), expected.detach())
