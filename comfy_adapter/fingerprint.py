"""A cheap fingerprint of what a MODEL computes with: its weights and its patches (LoRA).

The record names the model's class, prediction type and latent format, which another SD1.5
checkpoint or the same one with a LoRA shares. Sampling an inverted pair with another model
is a legitimate edit but not an exact round trip, so the Sample nodes compare fingerprints
and say so (never refuse). Hashing every weight would cost seconds on large models; a few
values at fixed places in every tensor tell two checkpoints (or a patch) apart.

ComfyUI patches weights in place while a model is loaded and keeps the originals in the
ModelPatcher's `backup`, which every clone of a model shares; the base weights are read
from there where a backup exists, so the fingerprint does not depend on which clone was
loaded last. Patches are hashed from the patcher's own `patches` (keys, strengths, values).
"""

import hashlib

import torch

SAMPLES_PER_TENSOR = 8


def _tensor_sample(tensor):
    """A few float64 values of `tensor` at fixed places, as bytes (b"" if unreadable: a
    quantized weight class whose elements cannot be indexed is fingerprinted by its shape)."""
    try:
        flat = tensor.detach().reshape(-1)
        n = flat.numel()
        if n == 0:
            return b""
        places = torch.tensor([(i * (n - 1)) // (SAMPLES_PER_TENSOR - 1) for i in range(SAMPLES_PER_TENSOR)],
                              device=flat.device)
        return flat[places].to("cpu", torch.float64).numpy().tobytes()
    except Exception:  # noqa: BLE001  (any tensor subclass may refuse; the shape still counts)
        return b""


def _update(digest, name, value):
    digest.update(name.encode())
    if torch.is_tensor(value):
        digest.update(f"|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(_tensor_sample(value))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _update(digest, f"[{i}]", item)
    elif isinstance(value, (int, float, str, bool)) or value is None:
        digest.update(f"={value!r}".encode())
    else:  # a weight adapter object (LoRAAdapter, ...): its tensors are in its `weights`
        digest.update(type(value).__name__.encode())
        _update(digest, ".weights", getattr(value, "weights", None))


def model_fingerprint(model):
    """16 hex digits over the diffusion model's weights (before patching) and the patcher's
    patches. model: a ComfyUI ModelPatcher."""
    digest = hashlib.sha256()
    backup = getattr(model, "backup", {}) or {}
    state = model.model.diffusion_model.state_dict() if hasattr(model.model, "diffusion_model") \
        else model.model.state_dict()
    prefix = "diffusion_model." if hasattr(model.model, "diffusion_model") else ""
    for name in sorted(state):
        saved = backup.get(prefix + name)
        weight = getattr(saved, "weight", None) if saved is not None else None
        _update(digest, name, weight if torch.is_tensor(weight) else state[name])
    for key in sorted(model.patches):
        _update(digest, f"patch:{key}", model.patches[key])
    return digest.hexdigest()[:16]


def _cond_update(digest, value):
    """Every byte of a conditioning's tensors, and its plain values, into `digest`."""
    if torch.is_tensor(value):
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            if key != "uuid":  # convert_cond draws a new one for every guider
                digest.update(f"{key}:".encode())
                _cond_update(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}]".encode())
        for item in value:
            _cond_update(digest, item)
    elif isinstance(value, (int, float, str, bool)) or value is None:
        digest.update(f"={value!r}".encode())
    elif torch.is_tensor(getattr(value, "cond", None)):  # a model cond (CONDRegular, CONDCrossAttn, ...)
        digest.update(type(value).__name__.encode())
        _cond_update(digest, value.cond)
    else:  # a control net, hooks, ...: named by type, not read
        digest.update(type(value).__name__.encode())


def conditioning_digest(conditioning):
    """16 hex digits over a CONDITIONING as a guider keeps it (comfy.sampler_helpers.convert_cond,
    as set_conds converts it): what conds_digests gives for a guider built from it."""
    import comfy.sampler_helpers

    return _cond_digest(comfy.sampler_helpers.convert_cond(conditioning))


def _cond_digest(conds):
    digest = hashlib.sha256()
    _cond_update(digest, conds)
    return digest.hexdigest()[:16]


def conds_digests(guider):
    """{"positive": 16 hex digits, "negative": ...} over the conditioning a GUIDER samples
    with (its `original_conds`, as set_conds left them), for each of the two it has: what
    Invert records, so that a controlled Sample can tell whether its source branch gets the
    same prompts. {} for a guider that keeps no `original_conds`."""
    conds = getattr(guider, "original_conds", None) or {}
    out = {}
    for name in ("positive", "negative"):
        if name in conds:
            out[name] = _cond_digest(conds[name])
    return out
