"""Tiny models of the real ComfyUI architectures, one builder per family, for the family tests.

Each builder makes the family's own ComfyUI model class (comfy.model_base: SDXL, SD3, Flux,
QwenImage, AuraFlow, WAN21, BaseModel with an inpainting UNet) through the family's
comfy.supported_models config, with its real conditioning inputs, latent format and
model_sampling, but tiny widths and one or two blocks, weights drawn from a seeded
generator, in a second or so on a CPU. Nothing is downloaded or written to disk.

Where ComfyUI's loader can detect the family from a tiny state dict (SD3's MMDiT, Wan 2.1),
the weights go through comfy.sd.load_diffusion_model_state_dict, the code path of
UNETLoader, and the builder checks which config it detected. Where detection only matches
the full-size layout (SDXL's transformer_depth, Flux's hidden size and head count,
Qwen-Image's and AuraFlow's widths, SD1.5's model_channels 320), the config class is built
directly with a smaller unet_config, as the loader would build it after detection, and
wrapped in a ModelPatcher.

Text encoders of these families are billions of parameters, so the CONDITIONING is built
directly in the shapes each model expects: [[tensor[1, tokens, context_dim], {...}]], with
pooled_output and the other keys the family's model_base reads. The "edit" prompt is the
positive one with a few tokens (and the pooled vector) replaced, as an edited word would.
The SD1.5 inpainting family uses the tiny checkpoint's real CLIP and TAESD.

Every builder returns a TinyFamily; `build(comfy, name)` caches one per name and process.
"""

import dataclasses
import math
from dataclasses import dataclass, field

import torch

LATENT_HW = 8  # latent height and width of the image families (64 x 64 pixels)


@dataclass
class TinyFamily:
    name: str
    model: object  # MODEL (a ModelPatcher)
    positive: list  # CONDITIONING
    negative: list
    edit: list
    latent: dict  # a clean LATENT, {"samples": [B, C, H, W] or [B, C, T, H, W]}
    cfg: float
    built: str  # "loader" (detected by ComfyUI's loader) or "config" (config class built here)
    config: str  # the comfy.supported_models class
    sizes: str  # what was made small
    extra: dict = field(default_factory=dict)  # family-specific inputs (images, masks, vae)

    def describe(self):
        return {"built": self.built, "config": self.config, "model_class": type(self.model.model).__name__,
                "model_sampling": _session().model_sampling_kind(self.model.get_model_object("model_sampling")),
                "latent_format": _session().latent_format_name(self.model),
                "latent_shape": list(self.latent["samples"].shape), "cfg": self.cfg, "sizes": self.sizes}


def _session():
    """The pack's session module as ComfyUI loaded it: the one definition of a model's
    prediction type and latent format names, which the records use too."""
    from .comfy import pack_module

    return pack_module("comfy_adapter.session")


# ---------------------------------------------------------------------------------------------
# weights, loading, conditioning, latents

def initialise(module, seed):
    """Seeded weights for a ComfyUI module (whose layers are left uninitialised): matrices and
    kernels normal with std 1/sqrt(fan_in), biases zero, other vectors (norm scales) one,
    embedding tables std 0.02; float buffers (which checkpoints carry) as _buffer_value.
    Returns the module."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            if buffer.is_floating_point():  # left uninitialised too (SD3's pos_embed)
                buffer.copy_(_buffer_value(name, buffer, generator).to(buffer.dtype))
        for sub in module.modules():
            for name, param in sub.named_parameters(recurse=False):
                if isinstance(sub, torch.nn.Embedding):
                    value = torch.randn(param.shape, generator=generator) * 0.02
                elif name.endswith("bias"):
                    value = torch.zeros(param.shape)
                elif param.ndim <= 1:
                    value = torch.ones(param.shape)
                else:
                    value = torch.randn(param.shape, generator=generator) / math.sqrt(math.prod(param.shape[1:]))
                param.copy_(value.to(param.dtype))
    return module


def _buffer_value(name, buffer, generator):
    """What a checkpoint would hold for a buffer: MMDiT's pos_embed [1, N, D] is the fixed
    2-D sin-cos table of a square grid; anything else a small seeded draw."""
    side = math.isqrt(buffer.shape[1]) if name.endswith("pos_embed") and buffer.ndim == 3 else 0
    if side and side * side == buffer.shape[1]:
        from comfy.ldm.modules.diffusionmodules.mmdit import get_2d_sincos_pos_embed

        return torch.as_tensor(get_2d_sincos_pos_embed(buffer.shape[2], side)).reshape(buffer.shape)
    return torch.randn(buffer.shape, generator=generator) * 0.02


def _config_model(config_class, unet_config, seed):
    """The family's ComfyUI model, as comfy.sd builds it from a detected config: the config
    class over `unet_config`, float32, get_model, seeded weights. Returns the BaseModel."""
    config = config_class(unet_config)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    initialise(model.diffusion_model, seed)
    return model


def _patcher(model):
    import comfy.model_management
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def config_built(config_class, unet_config, seed):
    """A MODEL of `config_class` with a smaller unet_config, built directly (for families whose
    loader detection only matches the full-size layout)."""
    return _patcher(_config_model(config_class, unet_config, seed))


def loader_detected(config_class, unet_config, seed):
    """A MODEL loaded by ComfyUI's own loader (comfy.sd.load_diffusion_model_state_dict, what
    UNETLoader calls) from the state dict of a tiny `config_class` model. Raises if the
    loader detects another config."""
    import comfy.sd

    state = {k: v.detach().clone() for k, v in
             _config_model(config_class, unet_config, seed).diffusion_model.state_dict().items()}
    model = comfy.sd.load_diffusion_model_state_dict(state, model_options={"dtype": torch.float32})
    if model is None or type(model.model.model_config) is not config_class:
        detected = None if model is None else type(model.model.model_config).__name__
        raise RuntimeError(f"ComfyUI's loader detected {detected}, not {config_class.__name__}")
    return model


def _randn(generator, *shape):
    return torch.randn(shape, generator=generator)


def text_conditionings(seed, tokens, context_dim, pooled_dim=None, **options):
    """positive, negative and edit CONDITIONING as a text encoder would hand them over:
    [[tensor[1, tokens, context_dim], {"pooled_output": [1, pooled_dim], **options}]]. The
    edit replaces a quarter of the positive's tokens and half its pooled vector."""
    generator = torch.Generator().manual_seed(seed)

    def cond(context, pooled):
        extra = dict(options)
        if pooled is not None:
            extra["pooled_output"] = pooled
        return [[context, extra]]

    def pooled():
        return _randn(generator, 1, pooled_dim) if pooled_dim else None

    positive_context, positive_pooled = _randn(generator, 1, tokens, context_dim), pooled()
    negative = cond(_randn(generator, 1, tokens, context_dim), pooled())
    edit_context = positive_context.clone()
    changed = slice(tokens // 4, tokens // 4 + max(1, tokens // 4))
    edit_context[:, changed] = _randn(generator, 1, edit_context[:, changed].shape[1], context_dim)
    edit_pooled = None
    if positive_pooled is not None:
        edit_pooled = positive_pooled.clone()
        edit_pooled[:, : pooled_dim // 2] = _randn(generator, 1, pooled_dim // 2)
    return cond(positive_context, positive_pooled), negative, cond(edit_context, edit_pooled)


def clean_latent(model, seed, shape):
    """A seeded, smooth clean LATENT of `shape` ([B, C, H, W] or [B, C, T, H, W]) in the model's
    latent space: unit-variance structure at a quarter of the resolution, upsampled, then
    taken out of the model's space (latent_format.process_out), as VAE Encode would give."""
    generator = torch.Generator().manual_seed(seed)
    coarse_shape = list(shape[:-2]) + [max(2, shape[-2] // 4), max(2, shape[-1] // 4)]
    coarse = torch.randn(coarse_shape, generator=generator)
    if len(shape) == 5:
        b, c, t, h, w = coarse.shape
        flat = coarse.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        up = torch.nn.functional.interpolate(flat, size=shape[-2:], mode="bilinear", align_corners=False)
        smooth = up.reshape(b, t, c, *shape[-2:]).permute(0, 2, 1, 3, 4)
    else:
        smooth = torch.nn.functional.interpolate(coarse, size=shape[-2:], mode="bilinear", align_corners=False)
    smooth = smooth / smooth.std() + 0.1 * torch.randn(shape, generator=generator)
    latent_format = model.get_model_object("latent_format")
    return {"samples": latent_format.process_out(smooth).to(torch.float32).contiguous()}


def _run_node(comfy, name, **inputs):
    from .comfy import run_node

    return run_node(comfy, name, **inputs)


def _supported(name):
    import comfy.supported_models

    return getattr(comfy.supported_models, name)


def _fields(cls):
    return {f.name for f in dataclasses.fields(cls)}


# ---------------------------------------------------------------------------------------------
# the families

def sdxl(comfy, seed=1):
    """SDXL: model_base.SDXL (a UNet with ADM: the pooled CLIP-G vector and the size/crop
    embeddings), EPS, SDXL latent format, cfg 7. SDXL's detection needs its
    transformer_depth [0, 0, 2, 2, 10, 10], so the config is built directly: one level,
    model_channels 64, one transformer block, context 2048 and ADM 2816 as in SDXL."""
    unet_config = dict(
        use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
        num_classes="sequential", adm_in_channels=2816, in_channels=4, out_channels=4,
        model_channels=64, num_res_blocks=[1], channel_mult=[1], transformer_depth=[1],
        transformer_depth_output=[1, 1], transformer_depth_middle=1, use_linear_in_transformer=True,
        context_dim=2048, use_temporal_resblock=False, use_temporal_attention=False)
    model = config_built(_supported("SDXL"), unet_config, seed)
    size = LATENT_HW * 8
    positive, negative, edit = text_conditionings(
        seed, 77, 2048, 1280, width=size, height=size, crop_w=0, crop_h=0, target_width=size, target_height=size)
    return TinyFamily("sdxl", model, positive, negative, edit, clean_latent(model, seed, (1, 4, LATENT_HW, LATENT_HW)),
                      cfg=7.0, built="config", config="SDXL",
                      sizes="UNet: 1 level, model_channels 64, 1 res block + 1 transformer (context 2048, ADM 2816)")


def sd3(comfy, seed=2):
    """SD3.5: model_base.SD3 (MMDiT with joint blocks, RMS qk-norm as SD3.5 Large), flow
    (CONST, shift 3), SD3 latent format (16 channels, shift and scale), cfg 4. Loaded by
    ComfyUI's loader, which reads the width from the block count (64 per block): 2 joint
    blocks, hidden 128, context 4096, pooled 2048 as in SD3."""
    unet_config = dict(
        in_channels=16, out_channels=16, patch_size=2, depth=2, input_size=None,
        adm_in_channels=2048, num_patches=1024, pos_embed_max_size=32, qk_norm="rms",
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
        pos_embed_scaling_factor=None, x_block_self_attn_layers=[])
    model = loader_detected(_supported("SD3"), unet_config, seed)
    positive, negative, edit = text_conditionings(seed, 16, 4096, 2048)
    return TinyFamily("sd3", model, positive, negative, edit, clean_latent(model, seed, (1, 16, LATENT_HW, LATENT_HW)),
                      cfg=4.0, built="loader", config="SD3", sizes="MMDiT: 2 joint blocks, hidden 128, 2 heads")


def _flux_config(in_channels):
    import comfy.ldm.flux.model

    config = dict(image_model="flux", in_channels=in_channels, out_channels=16, vec_in_dim=768,
                  context_in_dim=4096, hidden_size=64, mlp_ratio=4.0, num_heads=2, depth=1,
                  depth_single_blocks=1, axes_dim=[8, 12, 12], theta=10000, patch_size=2,
                  qkv_bias=True, guidance_embed=True)
    if "txt_ids_dims" in _fields(comfy.ldm.flux.model.FluxParams):  # newer ComfyUI
        config["txt_ids_dims"] = []
    return config


def _flux_guidance(comfy, conds, guidance=3.5):
    return [_run_node(comfy, "FluxGuidance", conditioning=c, guidance=guidance) for c in conds]


def flux(comfy, seed=3):
    """Flux.1 dev: model_base.Flux (double and single stream blocks, guidance embedding),
    FLUX model sampling, Flux latent format (16 channels), cfg 1 with FluxGuidance 3.5.
    Flux's detection fixes hidden 3072 and 24 heads, so the config is built directly:
    hidden 64, 2 heads, 1 double + 1 single block, context 4096 and pooled 768 as in Flux."""
    model = config_built(_supported("Flux"), _flux_config(16), seed)
    conds = _flux_guidance(comfy, text_conditionings(seed, 16, 4096, 768))
    return TinyFamily("flux", model, *conds, clean_latent(model, seed, (1, 16, LATENT_HW, LATENT_HW)),
                      cfg=1.0, built="config", config="Flux",
                      sizes="hidden 64, 2 heads, 1 double + 1 single block")


def flux_fill(comfy, seed=4):
    """Flux.1 Fill: the Flux model with 96 input channels (latent + masked-image latent + the
    8x8 pixel mask folded into 64 channels), which model_base.Flux.concat_cond assembles from
    the conditioning's concat_latent_image and concat_mask, as InpaintModelConditioning sets
    them. Config built directly (FluxInpaint), as flux()."""
    import node_helpers

    model = config_built(_supported("FluxInpaint"), _flux_config(96), seed)
    latent = clean_latent(model, seed, (1, 16, LATENT_HW, LATENT_HW))
    size = LATENT_HW * 8
    mask = torch.zeros(1, size, size)
    mask[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
    # the masked image's latent: here the clean latent with the masked region flattened to 0
    small = torch.nn.functional.interpolate(mask[:, None], size=(LATENT_HW, LATENT_HW), mode="nearest")
    concat_latent = latent["samples"] * (1 - small)
    values = {"concat_latent_image": concat_latent, "concat_mask": mask[:, None]}
    conds = [node_helpers.conditioning_set_values(c, values)
             for c in _flux_guidance(comfy, text_conditionings(seed, 16, 4096, 768))]
    return TinyFamily("flux_fill", model, *conds, latent, cfg=1.0, built="config", config="FluxInpaint",
                      sizes="as flux, img_in for 96 channels", extra={"mask": mask})


def qwen_image(comfy, seed=5):
    """Qwen-Image: model_base.QwenImage (MMDiT over Qwen2.5-VL hidden states), FLUX model
    sampling (shift 1.15), Wan 2.1 latent format (16 channels, per-channel mean/std), so its
    latents are 5-D [B, 16, 1, H, W] as the Wan VAE encodes a picture; cfg 4. Detection
    fixes the full width, so the config is built directly: 1 block, 2 heads of 32, text width
    3584 as in Qwen-Image."""
    unet_config = dict(image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16,
                       num_layers=1, attention_head_dim=32, num_attention_heads=2,
                       joint_attention_dim=3584, axes_dims_rope=(8, 12, 12))
    model = config_built(_supported("QwenImage"), unet_config, seed)
    positive, negative, edit = text_conditionings(seed, 16, 3584)
    return TinyFamily("qwen_image", model, positive, negative, edit,
                      clean_latent(model, seed, (1, 16, 1, LATENT_HW, LATENT_HW)), cfg=4.0, built="config",
                      config="QwenImage", sizes="1 block, 2 heads of 32 (inner 64)")


def auraflow(comfy, seed=6):
    """AuraFlow: model_base.AuraFlow (MMDiT with double and single layers and register
    tokens), flow (CONST, shift 1.73), SDXL latent format (4 channels), cfg 3.5. Detection
    reads only layer counts and keeps the 3072 width, so the config is built directly:
    width 64, 2 heads, 1 double + 1 single layer, cond width 2048 as in AuraFlow."""
    unet_config = dict(max_seq=256, cond_seq_dim=2048, n_double_layers=1, n_layers=2, dim=64,
                       n_heads=2, global_conddim=64, in_channels=4, out_channels=4, patch_size=2)
    model = config_built(_supported("AuraFlow"), unet_config, seed)
    positive, negative, edit = text_conditionings(seed, 16, 2048)
    return TinyFamily("auraflow", model, positive, negative, edit,
                      clean_latent(model, seed, (1, 4, LATENT_HW, LATENT_HW)), cfg=3.5, built="config",
                      config="AuraFlow", sizes="width 64, 2 heads, 1 double + 1 single layer")


def wan21(comfy, seed=7):
    """Wan 2.1 text-to-video: model_base.WAN21 (3-D patches, self/cross attention over
    [B, 16, T, H, W] latents), flow (CONST, shift 8), Wan 2.1 latent format, cfg 5.
    Loaded by ComfyUI's loader, which reads the width (heads of 128), FFN width and block
    count from the state dict: width 128, 1 head, FFN 256, 1 block, text width 4096."""
    unet_config = dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), in_dim=16, dim=128,
                       ffn_dim=256, freq_dim=256, text_dim=4096, out_dim=16, num_heads=1, num_layers=1,
                       window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)
    model = loader_detected(_supported("WAN21_T2V"), unet_config, seed)
    positive, negative, edit = text_conditionings(seed, 16, 4096)
    return TinyFamily("wan21", model, positive, negative, edit,
                      clean_latent(model, seed, (1, 16, 3, LATENT_HW, LATENT_HW)), cfg=5.0,
                      built="loader", config="WAN21_T2V", sizes="width 128, 1 head, FFN 256, 1 block; 3 frames")


def sd15_inpaint(comfy, seed=8):
    """SD1.5 inpainting: the tiny checkpoint's UNet layout with 9 input channels (latent +
    mask + masked-image latent, which BaseModel.concat_cond assembles), EPS, SD1.5 latent
    format, cfg 7; prompts from the tiny checkpoint's CLIP, pictures through its TAESD.
    ComfyUI's loader detects SD15 only at its full width (model_channels 320: the tiny
    checkpoint's UNet, 26M parameters, 3x slower here), so the SD15 config is built directly
    at model_channels 64; as after detection, get_model makes it an inpainting model
    (set_inpaint) because in_channels > 4."""
    from .comfy import drawn_images
    from .tiny_checkpoint import UNET_CONFIG

    unet_config = dict(UNET_CONFIG, in_channels=9, model_channels=64, use_checkpoint=False,
                       use_temporal_resblock=False, use_temporal_attention=False)
    model = config_built(_supported("SD15"), unet_config, seed)
    clip, vae = comfy.tiny["clip"], comfy.tiny["vae"]
    encode = comfy.CLIPTextEncode().encode
    with torch.inference_mode():
        positive = encode(clip, "a photo of a dog on the beach")[0]
        negative = encode(clip, "blurry, low quality")[0]
        edit = encode(clip, "a photo of a cat on the beach")[0]
        pixels = drawn_images(batch=1)
        latent = comfy.VAEEncode().encode(vae, pixels)[0]
    size = pixels.shape[1]
    mask = torch.zeros(1, size, size)
    mask[:, size // 4: 3 * size // 4, size // 2:] = 1.0  # the right half of the middle rows
    return TinyFamily("sd15_inpaint", model, positive, negative, edit, latent, cfg=7.0, built="config",
                      config="SD15 (inpaint)",
                      sizes="the tiny checkpoint's UNet layout at model_channels 64, in_channels 9",
                      extra={"pixels": pixels, "mask": mask, "vae": vae})


BUILDERS = {
    "sdxl": sdxl,
    "sd3": sd3,
    "flux": flux,
    "flux_fill": flux_fill,
    "qwen_image": qwen_image,
    "auraflow": auraflow,
    "wan21": wan21,
    "sd15_inpaint": sd15_inpaint,
}
_CACHE = {}


def build(comfy, name):
    """The family `name` (a key of BUILDERS), built once per process."""
    if name not in _CACHE:
        _CACHE[name] = BUILDERS[name](comfy)
    return _CACHE[name]
