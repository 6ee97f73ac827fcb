"""Inverted latents as ordinary ComfyUI LATENT dicts.

An inverted (or sampled) latent stays a LATENT: `samples` holds one branch in the
usual latent space, float32, so it can be previewed, decoded or saved. The key RECORD_KEY
holds the rest: both states in float64 (the float32 `samples` alone would lose the digits
that make the round trip exact) and how they were made. A node that rebuilds the dict
from `samples` alone drops the key and so turns it back into a plain latent, which is the
intended way out. Other keys (batch_index, noise_mask) pass through, as KSampler passes them.
On a device with no float64 (MPS) the pair is float32.

record = {
    "method": a key of edict_core.spec.SPECS ("edict" | "bdia" | "obelm" | "rex"),
    "state": "noisy" (made by an Invert node: the pair sits at the noisy end) |
             "clean" (made by a Sample node: the pair sits at the clean end),
    "branch":  float64 [B, C, ...] ([B, C, H, W] or video [B, C, T, H, W]), latent space:
               `samples` before its float32 cast,
    "partner": float64, the same shape: EDICT's y; Rex's x_hat; BDIA's and O-BELM's X_1 at
               sigmas[1] (noisy) or X_{N-1} at sigmas[-2] (clean), see edict_core/spec.py,
    "source": the same shape, latent space: the clean latent the pair was made from (Invert's
              input, or the plain latent a Sample node started from); both directions hand it
              to the guider (concat-conditioned models read it), and a noise_mask keeps it
              outside the mask,
    "sigmas": float64 [N + 1], the prepared schedule (descending) that was actually run,
    "mix_weight", "leapfrog" (EDICT) | "gamma" (BDIA) | "tableau" (a string), "zeta" (Rex):
              the method's settings (its spec's; a COMBO setting is the option's string),
    "steps", "scheduler", "denoise", "cfg": the simple nodes' widget values (absent when an
              advanced node took a SIGMAS input),
    "model_class": "BaseModel" | "SDXL" | "SD3" | "Flux" | "WAN21" | ...: ComfyUI's model class,
    "model_sampling": "EPS" | "V_PREDICTION" | "EDM" | "CONST" | ...,
    "latent_format": "SD15" | "SDXL" | "SD3" | "Flux" | ...,
    "model_fingerprint": 16 hex digits over the weights and patches (fingerprint.py); a Sample
              node whose model differs says so (absent in records older than it),
    "positive_digest", "negative_digest": 16 hex digits over the inversion guider's
              conditioning (fingerprint.conds_digests; Invert's output only): a Sample with
              attention control refuses a source branch given other prompts (absent in older
              records, and for a guider without them),
}
"""

import torch

from .errors import NodeInputError
from .methods import METHOD_TITLES

RECORD_KEY = "exact_inversion"


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


def check_pair(node, record, samples, identity):
    """Refuse a pair that cannot regenerate exactly with this model and latent. identity:
    {"model_class", "model_sampling", "latent_format"} of the model at hand."""
    title = METHOD_TITLES[record["method"]]
    model_kind, latent_format = identity["model_sampling"], identity["latent_format"]
    if record.get("model_class", identity["model_class"]) != identity["model_class"]:
        raise NodeInputError(
            node, "model",
            f"latent_image was inverted with a {record['model_class']} model, but this model is a "
            f"{identity['model_class']}.", f"Connect the model that {title} Invert used.")
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
