"""Build a tiny SD1.x-format checkpoint with seeded random weights.

ComfyUI's CheckpointLoaderSimple detects it as SD1.5 (UNet with model_channels 320 and
context_dim 768), but the UNet has one level with one res block, so 64x64 images sample
fast on a CPU. The text encoder is a full-size CLIP-L, the VAE a TAESD. Nothing is
downloaded; the same seed gives the same file. Weights are written only where asked
(a temp dir in tests) and never committed.

    python -m harness.tiny_checkpoint OUT.safetensors   (from the repository root)
"""

import math
import os
import sys

from .paths import import_comfyui

UNET_CONFIG = dict(
    image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[1],
    channel_mult=[1], num_heads=8, use_spatial_transformer=True, transformer_depth=[1],
    transformer_depth_middle=1, transformer_depth_output=[1, 1], context_dim=768, legacy=False,
    use_linear_in_transformer=False, adm_in_channels=None,
)


def _import_comfy():
    if "comfy.cli_args" not in sys.modules:
        import_comfyui()


def _initialise(module, generator, out_scale=1.0):
    """Fill every parameter (ComfyUI's modules leave them uninitialised): weights normal with
    std 1/sqrt(fan_in), biases zero, norm scales one."""
    import torch

    for name, param in module.named_parameters():
        with torch.no_grad():
            if name.endswith("bias"):
                param.zero_()
            elif param.ndim == 1:  # norm scales
                param.fill_(1.0)
            elif "embedding" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
            else:
                fan_in = math.prod(param.shape[1:])
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(fan_in))
    return module


def build_state_dict(seed=0):
    _import_comfy()
    import torch
    import comfy.ops
    import comfy.sd1_clip
    import comfy.taesd.taesd
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    generator = torch.Generator().manual_seed(seed)
    state = {}
    unet = _initialise(UNetModel(**UNET_CONFIG, operations=comfy.ops.disable_weight_init), generator)
    with torch.no_grad():  # a gentler output layer keeps eps O(1)
        unet.out[-1].weight.mul_(0.5)
    state.update({"model.diffusion_model." + k: v for k, v in unet.state_dict().items()})
    clip = _initialise(comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32), generator)
    state.update({"cond_stage_model.transformer." + k: v
                  for k, v in clip.transformer.state_dict().items()})
    vae = _initialise(comfy.taesd.taesd.TAESD(), generator)
    state.update({"first_stage_model." + k: v for k, v in vae.state_dict().items()})
    return {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}


def build_tiny_checkpoint(path, seed=0):
    """Write the checkpoint to `path` (safetensors, fp16) and return the path."""
    from safetensors.torch import save_file

    state = build_state_dict(seed)
    tmp = path + ".part"
    save_file(state, tmp)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    print(build_tiny_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "tiny_sd15.safetensors"))
