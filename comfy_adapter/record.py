"""Inverted latents as ordinary ComfyUI LATENT dicts.

An inverted (or EDICT-sampled) latent stays a LATENT: `samples` holds one branch in the
usual latent space, float32, so it can be previewed, decoded or saved. The key RECORD_KEY
holds the rest: both states in float64 (the float32 `samples` alone would lose the digits
that make the round trip exact) and how they were made. A node that rebuilds the dict
from `samples` alone drops the key and so turns it back into a plain latent, which is the
intended way out. Other keys (batch_index, noise_mask) pass through, as KSampler passes them.
On a device with no float64 (MPS) the pair is float32.

record = {
    "method": "edict" | "bdia",
    "state": "noisy" (made by an Invert node: the pair sits at sigmas[0]) |
             "clean" (made by EDICT Sample: the pair sits at sigmas[-1]),
    "branch":  float64 [B, C, H, W], latent space: `samples` before its float32 cast,
    "partner": float64 [B, C, H, W], latent space: EDICT's y, or BDIA's X_1 at sigmas[1],
    "source": [B, C, H, W], latent space: the clean latent the pair was made from (Invert's
              input, or the plain latent EDICT Sample started from); a noise_mask keeps it
              outside the mask,
    "sigmas": float64 [N + 1], the prepared schedule (descending),
    "steps", "scheduler", "denoise": the widget values it was made with,
    "mix_weight", "leapfrog" (EDICT) | "gamma" (BDIA),
    "model_sampling": "EPS" | "V_PREDICTION" | "EDM" | "CONST" | ...,
    "latent_format": "SD15" | "SDXL" | "SD3" | "Flux" | ...,
}
"""

import torch

from .errors import NodeInputError

RECORD_KEY = "exact_inversion"
METHOD_TITLES = {"edict": "EDICT", "bdia": "BDIA"}


def read_record(latent):
    return latent.get(RECORD_KEY)


def with_record(latent, branch, partner, **fields):
    """A new LATENT dict: the input's extra keys (batch_index, ...) kept, `samples` and the
    record replaced. The input dict and its tensors are never modified."""
    out = {k: v for k, v in latent.items() if k not in ("samples", RECORD_KEY)}
    out["samples"] = branch.to(torch.float32)
    out[RECORD_KEY] = dict(fields, branch=branch, partner=partner)
    return out


def plain_latent(latent, samples):
    out = {k: v for k, v in latent.items() if k not in ("samples", RECORD_KEY)}
    out["samples"] = samples.to(torch.float32)
    return out


def check_pair(node, record, samples, model_kind, latent_format):
    """Refuse a pair that cannot regenerate exactly with this model and latent."""
    title = METHOD_TITLES[record["method"]]
    if record["model_sampling"] != model_kind:
        raise NodeInputError(
            node, "model",
            f"latent_image was inverted with a {record['model_sampling']} model, but this model "
            f"is {model_kind}.",
            "Connect the same model (and the same model-sampling patches) that "
            f"{title} Invert used.")
    if record["latent_format"] != latent_format:
        raise NodeInputError(
            node, "model",
            f"latent_image was inverted in the {record['latent_format']} latent format, but this "
            f"model uses {latent_format}.",
            f"Connect the model that {title} Invert used.")
    partner = record["partner"]
    if tuple(partner.shape) != tuple(samples.shape):
        raise NodeInputError(
            node, "latent_image",
            f"its samples have shape {tuple(samples.shape)} but its {title} pair partner has "
            f"{tuple(partner.shape)}: a node between them (an upscale, crop or batch node?) "
            "changed only `samples`.",
            f"Connect {title} Invert's output directly, and resize the image before inverting.")
    if not torch.equal(samples.to(torch.float32).cpu(), record["branch"].to(torch.float32)):
        raise NodeInputError(
            node, "latent_image",
            f"its samples were changed after {title} Invert, but its pair partner was not, so "
            "the pair no longer belongs together.",
            f"Connect {title} Invert's output directly; change the image before inverting.")
