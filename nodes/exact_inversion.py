"""The pack's nodes: declarative classes that wire widgets to comfy_adapter.operations."""

import comfy.samplers

from .. import edict_core as core
from ..comfy_adapter import operations
from ..comfy_adapter.methods import SPECS, Method
from ..comfy_adapter.operations import Schedule

CATEGORY = "sampling/exact inversion"


def _common_inputs(latent_tooltip, with_seed, method):
    inputs = {
        "model": ("MODEL", {"tooltip": "The diffusion model. Invert and sample with the same model, "
                            "LoRAs and patches, or the round trip is not exact."}),
        "positive": ("CONDITIONING", {"tooltip": "Positive prompt. For an edit: the prompt that "
                                      "describes the image (Invert) or the edit (Sample)."}),
        "negative": ("CONDITIONING", {"tooltip": "Negative prompt (the unconditional branch of cfg)."}),
        "latent_image": ("LATENT", {"tooltip": latent_tooltip}),
    }
    if with_seed:
        inputs["seed"] = ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff,
                                  "control_after_generate": True,
                                  "tooltip": "Noise seed, used only for a plain latent (text-to-image "
                                  "or img2img). An inverted latent needs no noise."})
    inputs.update({
        "steps": ("INT", {"default": 50, "min": SPECS[method].min_steps, "max": 10000,
                          "tooltip": "Steps, as in KSampler: with denoise < 1 they cover the last "
                          "part of a schedule of steps / denoise steps. Where a schedule's last step "
                          "runs from the model's lowest noise level (sigma_min) to 0, as normal and "
                          "karras do, that step is not run (exact methods end at sigma_min), so the "
                          "progress bar shows one step fewer."}),
        "cfg": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                          "tooltip": "Classifier-free guidance scale. About 3 for edits. Exact at any "
                          "value, as long as Invert and Sample use the same one for a round trip."}),
        "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": "normal",
                      "tooltip": "Noise schedule. Any works; the inverted latent remembers it."}),
        "denoise": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 1.0, "step": 0.01,
                              "tooltip": "Strength: how far toward noise to invert (or how much of "
                              "the schedule to sample). 0.6 to 0.9 for edits; 1.0 for text-to-image."}),
    })
    return inputs


EDICT_INPUTS = {
    "mix_weight": ("FLOAT", {"default": core.DEFAULT_MIX_WEIGHT, "min": 0.01, "max": 1.0, "step": 0.01,
                             "tooltip": f"EDICT's mixing weight p in (0, 1]. {core.DEFAULT_MIX_WEIGHT} as in the paper; "
                             "lower couples the two branches more strongly."}),
    "leapfrog": ("BOOLEAN", {"default": True,
                             "tooltip": "Alternate which branch is updated first on each step, as in "
                             "the paper."}),
}
BDIA_INPUTS = {
    "gamma": ("FLOAT", {"default": core.DEFAULT_GAMMA, "min": 0.01, "max": 1.0, "step": 0.01,
                        "tooltip": f"BDIA's gamma in (0, 1]. 0.92 to 1.0 for edits ({core.DEFAULT_GAMMA} in the "
                        "authors' notebook); about 0.5 for 10-step text-to-image."}),
}

INVERT_LATENT = ("The clean latent to invert (VAE Encode's output). A noise mask on it passes "
                 "through to the Sample node.")
SAMPLE_LATENT = ("An inverted latent (regenerate or edit it exactly, following its own schedule "
                 "and settings), or a plain latent (text-to-image from Empty Latent Image, or "
                 "img2img), like KSampler. With a noise mask, only the masked part changes: "
                 "outside it the output is the input latent exactly.")


class EDICTInvert:
    DESCRIPTION = ("Invert a latent with EDICT: find the noisy pair from which EDICT Sample "
                   "regenerates it exactly, at any cfg. Two model calls per step.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The inverted latent: a LATENT whose samples are one noisy branch, carrying "
                       "its pair partner and settings for EDICT Sample.",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**_common_inputs(INVERT_LATENT, False, "edict"), **EDICT_INPUTS}}

    def invert(self, model, positive, negative, latent_image, steps, cfg, scheduler, denoise,
               mix_weight, leapfrog):
        method = Method("edict", {"mix_weight": mix_weight, "leapfrog": leapfrog})
        return (operations.invert_simple("EDICT Invert", model, positive, negative, latent_image, cfg,
                                         Schedule(steps, scheduler, denoise), method),)


class EDICTSample:
    DESCRIPTION = ("Generate with EDICT. From an EDICT-inverted latent, regenerate it exactly (same "
                   "prompt) or edit it (new prompt); from a plain latent, sample like KSampler.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The result as a LATENT (decode it, or mix its pair with Latent Pair Mix); "
                       "EDICT Invert takes it back exactly.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**_common_inputs(SAMPLE_LATENT, True, "edict"), **EDICT_INPUTS}}

    def sample(self, model, positive, negative, latent_image, seed, steps, cfg, scheduler, denoise,
               mix_weight, leapfrog):
        method = Method("edict", {"mix_weight": mix_weight, "leapfrog": leapfrog})
        return (operations.sample_simple("EDICT Sample", model, positive, negative, latent_image, cfg, seed,
                                         Schedule(steps, scheduler, denoise), method),)


class BDIAInvert:
    DESCRIPTION = ("Invert a latent with BDIA: find the pair of noisy states from which BDIA Sample "
                   "regenerates it exactly, at any cfg. One model call per step.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The inverted latent: a LATENT whose samples are the noisiest state, carrying "
                       "the next state and settings for BDIA Sample.",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**_common_inputs(INVERT_LATENT, False, "bdia"), **BDIA_INPUTS}}

    def invert(self, model, positive, negative, latent_image, steps, cfg, scheduler, denoise, gamma):
        return (operations.invert_simple("BDIA Invert", model, positive, negative, latent_image, cfg,
                                         Schedule(steps, scheduler, denoise), Method("bdia", {"gamma": gamma})),)


class BDIASample:
    DESCRIPTION = ("Generate with BDIA. From a BDIA-inverted latent, regenerate it exactly (same "
                   "prompt) or edit it (new prompt); from a plain latent, sample like KSampler.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The result as a plain LATENT.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**_common_inputs(SAMPLE_LATENT, True, "bdia"), **BDIA_INPUTS}}

    def sample(self, model, positive, negative, latent_image, seed, steps, cfg, scheduler, denoise, gamma):
        return (operations.sample_simple("BDIA Sample", model, positive, negative, latent_image, cfg, seed,
                                         Schedule(steps, scheduler, denoise), Method("bdia", {"gamma": gamma})),)


class OBELMInvert:
    DESCRIPTION = ("Invert a latent with O-BELM (Wang et al., NeurIPS 2024): the second-order "
                   "bidirectional multistep sampler, exact like BDIA at one model call per step, "
                   "with no setting to tune. For edits use the karras or exponential scheduler: "
                   "along steps of about equal length (normal at denoise 0.7 or less) its edits "
                   "drift from the photo, and the node says so in the log.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The inverted latent: a LATENT whose samples are the noisiest state, carrying "
                       "the next state and settings for O-BELM Sample.",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _common_inputs(INVERT_LATENT, False, "obelm")}

    def invert(self, model, positive, negative, latent_image, steps, cfg, scheduler, denoise):
        return (operations.invert_simple("O-BELM Invert", model, positive, negative, latent_image, cfg,
                                         Schedule(steps, scheduler, denoise), Method("obelm")),)


class OBELMSample:
    DESCRIPTION = ("Generate with O-BELM. From an O-BELM-inverted latent, regenerate it exactly (same "
                   "prompt) or edit it (new prompt); from a plain latent, sample like KSampler.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The result as a plain LATENT.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _common_inputs(SAMPLE_LATENT, True, "obelm")}

    def sample(self, model, positive, negative, latent_image, seed, steps, cfg, scheduler, denoise):
        return (operations.sample_simple("O-BELM Sample", model, positive, negative, latent_image, cfg, seed,
                                         Schedule(steps, scheduler, denoise), Method("obelm")),)


class LatentPairMix:
    DESCRIPTION = "Mix the two branches of an EDICT pair: weight * x + (1 - weight) * y."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("A plain LATENT.",)
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT", {"tooltip": "An EDICT pair: the output of EDICT Sample (or EDICT Invert)."}),
            "weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                 "tooltip": "Weight of the first branch x; 0.5 averages x and y."}),
        }}

    def mix(self, latent, weight):
        return (operations.mix_pair("Latent Pair Mix", latent, weight),)


NODE_CLASS_MAPPINGS = {
    "EDICTInvert": EDICTInvert,
    "EDICTSample": EDICTSample,
    "BDIAInvert": BDIAInvert,
    "BDIASample": BDIASample,
    "OBELMInvert": OBELMInvert,
    "OBELMSample": OBELMSample,
    "LatentPairMix": LatentPairMix,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EDICTInvert": "EDICT Invert",
    "EDICTSample": "EDICT Sample",
    "BDIAInvert": "BDIA Invert",
    "BDIASample": "BDIA Sample",
    "OBELMInvert": "O-BELM Invert",
    "OBELMSample": "O-BELM Sample",
    "LatentPairMix": "Latent Pair Mix",
}
