"""The advanced nodes: any GUIDER and any SIGMAS, as SamplerCustomAdvanced takes them, and
the method as an object of its own (EXACT_METHOD), as KSamplerSelect makes a SAMPLER.
They run the same code path as the simple nodes (comfy_adapter.operations)."""

from ..comfy_adapter import operations
from ..comfy_adapter.methods import METHOD_TYPE, Method
from ..comfy_adapter.sampler import ExactSampler
from .exact_inversion import BDIA_INPUTS, CATEGORY, EDICT_INPUTS

METHOD_INPUT = (METHOD_TYPE, {"tooltip": "The exact method and its settings: EDICT Method, BDIA Method or "
                                         "O-BELM Method."})
GUIDER_INPUT = ("GUIDER", {"tooltip": "Any guider (CFGGuider, BasicGuider with FluxGuidance, DualCFGGuider, "
                           "PerpNegGuider). Invert and sample with the same model and patches; an edit is "
                           "simply another guider (other prompts)."})


class EDICTMethod:
    DESCRIPTION = "EDICT (two coupled latents, two model calls per step) for the advanced exact-inversion nodes."
    CATEGORY = CATEGORY + "/advanced"
    RETURN_TYPES = (METHOD_TYPE,)
    OUTPUT_TOOLTIPS = ("EDICT with these settings.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(EDICT_INPUTS)}

    def make(self, mix_weight, leapfrog):
        return (Method("edict", {"mix_weight": mix_weight, "leapfrog": leapfrog}).validated("EDICT Method"),)


class BDIAMethod:
    DESCRIPTION = "BDIA (time-reversible DDIM, one model call per step) for the advanced exact-inversion nodes."
    CATEGORY = CATEGORY + "/advanced"
    RETURN_TYPES = (METHOD_TYPE,)
    OUTPUT_TOOLTIPS = ("BDIA with this gamma.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(BDIA_INPUTS)}

    def make(self, gamma):
        return (Method("bdia", {"gamma": gamma}).validated("BDIA Method"),)


class OBELMMethod:
    DESCRIPTION = "O-BELM (second order, one model call per step) for the advanced exact-inversion nodes."
    CATEGORY = CATEGORY + "/advanced"
    RETURN_TYPES = (METHOD_TYPE,)
    OUTPUT_TOOLTIPS = ("O-BELM (it has no setting).",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def make(self):
        return (Method("obelm").validated("O-BELM Method"),)


class ExactInvertAdvanced:
    DESCRIPTION = ("Invert a latent exactly along any SIGMAS with any GUIDER. The inverted latent "
                   "remembers the sigmas it used; Exact Sample (Advanced) follows them.")
    CATEGORY = CATEGORY + "/advanced"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The inverted latent, carrying its pair, sigmas and method settings.",)
    FUNCTION = "invert"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "guider": GUIDER_INPUT,
            "sigmas": ("SIGMAS", {"tooltip": "Any schedule (BasicScheduler, KarrasScheduler, "
                                  "AlignYourStepsScheduler, a SplitSigmas tail). Inversion goes from its "
                                  "clean end up to its first sigma; a final 0 becomes the model's sigma_min."}),
            "latent_image": ("LATENT", {"tooltip": "The clean latent to invert (VAE Encode's output)."}),
            "method": METHOD_INPUT,
        }}

    def invert(self, guider, sigmas, latent_image, method):
        return (operations.invert("Exact Invert (Advanced)", guider, latent_image, sigmas, method),)


class ExactSampleAdvanced:
    DESCRIPTION = ("Generate exactly with any GUIDER. From an inverted latent: regenerate it (same "
                   "guider) or edit it (another guider), along its own sigmas. From a plain latent: "
                   "sample from NOISE along SIGMAS, like SamplerCustomAdvanced.")
    CATEGORY = CATEGORY + "/advanced"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The result as a LATENT; for EDICT it carries the pair (Latent Pair Mix, or "
                       "invert it back exactly).",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "guider": GUIDER_INPUT,
            "latent_image": ("LATENT", {"tooltip": "An inverted latent, or a plain latent (then sigmas "
                                        "and noise are needed)."}),
            "method": METHOD_INPUT,
        }, "optional": {
            "sigmas": ("SIGMAS", {"tooltip": "Only for a plain latent: the schedule to sample. An "
                                  "inverted latent follows its own."}),
            "noise": ("NOISE", {"tooltip": "Only for a plain latent: RandomNoise (or DisableNoise)."}),
        }}

    def sample(self, guider, latent_image, method, sigmas=None, noise=None):
        return (operations.sample("Exact Sample (Advanced)", guider, latent_image, method, sigmas, noise),)


class ExactSamplerSelect:
    DESCRIPTION = ("An exact method's generation as a SAMPLER for SamplerCustom / SamplerCustomAdvanced "
                   "(text-to-image or img2img). BDIA with gamma 0.5 suits 10-step text-to-image.")
    CATEGORY = CATEGORY + "/advanced"
    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("A SAMPLER that runs the method from noise down to the model's sigma_min.",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"method": METHOD_INPUT}}

    def get_sampler(self, method):
        return (ExactSampler(method.validated("Exact Sampler")),)


NODE_CLASS_MAPPINGS = {
    "EDICTMethod": EDICTMethod,
    "BDIAMethod": BDIAMethod,
    "OBELMMethod": OBELMMethod,
    "ExactInvertAdvanced": ExactInvertAdvanced,
    "ExactSampleAdvanced": ExactSampleAdvanced,
    "ExactSamplerSelect": ExactSamplerSelect,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "EDICTMethod": "EDICT Method",
    "BDIAMethod": "BDIA Method",
    "OBELMMethod": "O-BELM Method",
    "ExactInvertAdvanced": "Exact Invert (Advanced)",
    "ExactSampleAdvanced": "Exact Sample (Advanced)",
    "ExactSamplerSelect": "Exact Sampler",
}
