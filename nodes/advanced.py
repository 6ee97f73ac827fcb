"""The advanced nodes: any GUIDER and any SIGMAS, as SamplerCustomAdvanced takes them, and
the method as an object of its own (EXACT_METHOD, one Method node per spec in
edict_core.spec.SPECS), as KSamplerSelect makes a SAMPLER.
They run the same code path as the simple nodes (comfy_adapter.operations)."""

from ..comfy_adapter import operations
from ..comfy_adapter.methods import METHOD_TYPE, Method
from ..comfy_adapter.sampler import ExactSampler
from ..edict_core.spec import SPECS
from .exact_inversion import CATEGORY, CONTROL_INPUT, SEARCH_ALIASES, setting_inputs

METHOD_INPUT = (METHOD_TYPE, {"tooltip": "The exact method and its settings: "
                              + ", ".join(f"{spec.title} Method" for spec in SPECS.values()) + "."})
GUIDER_INPUT = ("GUIDER", {"tooltip": "Any guider (CFGGuider, BasicGuider with FluxGuidance, DualCFGGuider, "
                           "PerpNegGuider). Invert and sample with the same model and patches; an edit is "
                           "simply another guider (other prompts)."})


def make_method_node(spec):
    """The advanced Method node of one method: its settings as an EXACT_METHOD."""
    def make(self, **settings):
        return (Method(spec.name, settings).validated(f"{spec.title} Method"),)

    return type(spec.node_id("Method"), (), {
        "DESCRIPTION": f"{spec.about} For the advanced exact-inversion nodes. {spec.advice}".strip(),
        "CATEGORY": CATEGORY + "/advanced", "SEARCH_ALIASES": SEARCH_ALIASES,
        "RETURN_TYPES": (METHOD_TYPE,), "FUNCTION": "make",
        "OUTPUT_TOOLTIPS": (f"{spec.title} with these settings." if spec.settings else
                            f"{spec.title} (it has no setting).",),
        "INPUT_TYPES": classmethod(lambda cls: {"required": setting_inputs(spec)}),
        "make": make,
    })


class ExactInvertAdvanced:
    DESCRIPTION = ("Invert a latent exactly along any SIGMAS with any GUIDER. The inverted latent "
                   "remembers the sigmas it used; Exact Sample (Advanced) follows them.")
    CATEGORY = CATEGORY + "/advanced"
    SEARCH_ALIASES = SEARCH_ALIASES
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
    SEARCH_ALIASES = SEARCH_ALIASES
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
            "attention_control": CONTROL_INPUT,
            "source_guider": ("GUIDER", {"tooltip": "With attention_control: the guider Exact Invert (Advanced) "
                                         "used (the photo's prompt and cfg), for the source branch."}),
        }}

    def sample(self, guider, latent_image, method, sigmas=None, noise=None, attention_control=None,
               source_guider=None):
        return (operations.sample("Exact Sample (Advanced)", guider, latent_image, method, sigmas, noise,
                                  control=attention_control, source_guider=source_guider),)


class ExactSamplerSelect:
    DESCRIPTION = ("An exact method's generation as a SAMPLER for SamplerCustom / SamplerCustomAdvanced "
                   "(text-to-image or img2img). BDIA with gamma 0.5 suits 10-step text-to-image.")
    CATEGORY = CATEGORY + "/advanced"
    SEARCH_ALIASES = SEARCH_ALIASES
    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("A SAMPLER that runs the method from noise down to the model's sigma_min.",)
    FUNCTION = "get_sampler"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"method": METHOD_INPUT}}

    def get_sampler(self, method):
        return (ExactSampler(method.validated("Exact Sampler")),)


NODE_CLASS_MAPPINGS = {spec.node_id("Method"): make_method_node(spec) for spec in SPECS.values()}
NODE_DISPLAY_NAME_MAPPINGS = {spec.node_id("Method"): f"{spec.title} Method" for spec in SPECS.values()}
NODE_CLASS_MAPPINGS.update({
    "ExactInvertAdvanced": ExactInvertAdvanced,
    "ExactSampleAdvanced": ExactSampleAdvanced,
    "ExactSamplerSelect": ExactSamplerSelect,
})
NODE_DISPLAY_NAME_MAPPINGS.update({
    "ExactInvertAdvanced": "Exact Invert (Advanced)",
    "ExactSampleAdvanced": "Exact Sample (Advanced)",
    "ExactSamplerSelect": "Exact Sampler",
})
