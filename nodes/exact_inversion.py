"""The pack's simple nodes, made from the method specs (edict_core.spec.SPECS): an Invert and
a Sample node per method, whose widgets are KSampler's plus the method's settings, and
Latent Pair Mix. Each class only wires its inputs to comfy_adapter.operations."""

import comfy.samplers

from ..comfy_adapter import operations
from ..comfy_adapter.methods import MIXABLE, Method
from ..comfy_adapter.operations import Schedule
from ..edict_core.spec import SPECS

CATEGORY = "sampling/exact inversion"
# What users type into node search (ComfyUI 0.33 reads SEARCH_ALIASES; 0.3.75 ignores it):
# every node of the pack carries it.
SEARCH_ALIASES = ["inversion", "unsampler", "invert noise", "edict", "bdia", "belm", "reconstruct", "exact"]
CFG_DEFAULT = 3.0

INVERT_LATENT = ("The clean latent to invert (VAE Encode's output). A noise mask on it passes "
                 "through to the Sample node.")
SAMPLE_LATENT = ("An inverted latent (regenerate or edit it exactly, following its own schedule "
                 "and settings: this node's steps, scheduler, denoise and method settings are then "
                 "not used), or a plain latent (text-to-image from Empty Latent Image, or img2img), "
                 "like KSampler. With a noise mask, only the masked part changes: outside it the "
                 "output is the input latent exactly.")


CONTROL_INPUT = ("ATTENTION_CONTROL", {"tooltip": "Optional, for an inverted latent: Exact Attention Control "
                                      "(its source_positive is the prompt Invert used). The edit then keeps "
                                      "the photo's structure, at twice the model calls."})


def setting_inputs(spec):
    """The method's settings as ComfyUI widgets, in the spec's order."""
    inputs = {}
    for s in spec.settings:
        options = {"default": s.default, "tooltip": s.tooltip}
        if s.kind == "FLOAT":
            options.update(min=s.low, max=s.high, step=s.step)
        # A COMBO is declared by its list of options, as KSampler's sampler_name is.
        inputs[s.name] = (list(s.options) if s.kind == "COMBO" else s.kind, options)
    return inputs


def _common_inputs(spec, latent_tooltip, with_seed):
    inputs = {
        "model": ("MODEL", {"tooltip": "The diffusion model. Invert and sample with the same model, "
                            "LoRAs and patches, or the round trip is not exact (the Sample node says so)."}),
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
        "steps": ("INT", {"default": spec.steps, "min": spec.min_steps, "max": 10000,
                          "tooltip": "Steps, as in KSampler: with denoise < 1 the last `steps` of a "
                          "schedule of steps / denoise steps run (the EDICT and BDIA papers' code runs "
                          "int(steps * strength) instead: 50 steps at denoise 0.8 there are 40 here "
                          "at steps 40). Where a schedule's last step runs from the model's lowest noise "
                          "level (sigma_min) to 0, as normal and karras do, that step is not run (exact "
                          "methods end at sigma_min), so the progress bar shows one step fewer."}),
        "cfg": ("FLOAT", {"default": CFG_DEFAULT, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                          "tooltip": "Classifier-free guidance scale. About 3 for edits. Exact at any "
                          "value, as long as Invert and Sample use the same one for a round trip. "
                          "Guidance-distilled models (Flux dev, Flux Fill) want cfg 1 here, which skips "
                          "the negative prompt's call, and their guidance from FluxGuidance on the "
                          "positive conditioning (or the advanced nodes with BasicGuider: example "
                          "workflow flux_guidance_edit)."}),
        "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": spec.scheduler,
                      "tooltip": "Noise schedule. Any works for a round trip; the inverted latent "
                      f"remembers it. {spec.title}'s default, {spec.scheduler}, is one under which its "
                      "edits keep the photo."}),
        "denoise": ("FLOAT", {"default": spec.denoise, "min": 0.0, "max": 1.0, "step": 0.01,
                              "tooltip": "Strength: how far toward noise to invert (or how much of "
                              "the schedule to sample). 0.6 to 0.9 for edits; 1.0 for text-to-image."}),
    })
    inputs.update(setting_inputs(spec))
    return inputs


def make_invert_node(spec):
    """The simple Invert node of one method."""
    def invert(self, model, positive, negative, latent_image, steps, cfg, scheduler, denoise, **settings):
        return (operations.invert_simple(f"{spec.title} Invert", model, positive, negative, latent_image, cfg,
                                         Schedule(steps, scheduler, denoise), Method(spec.name, settings)),)

    return type(spec.node_id("Invert"), (), {
        "DESCRIPTION": (f"Invert a latent with {spec.title}: find the noisy pair from which {spec.title} "
                        f"Sample regenerates it exactly, at any cfg. {spec.about} {spec.advice}").strip(),
        "CATEGORY": CATEGORY, "SEARCH_ALIASES": SEARCH_ALIASES, "RETURN_TYPES": ("LATENT",), "FUNCTION": "invert",
        "OUTPUT_TOOLTIPS": (f"The inverted latent: a LATENT whose samples are {spec.pair} and the "
                            f"settings, for {spec.title} Sample.",),
        "INPUT_TYPES": classmethod(lambda cls: {"required": _common_inputs(spec, INVERT_LATENT, False)}),
        "invert": invert,
    })


def make_sample_node(spec):
    """The simple Sample node of one method."""
    def sample(self, model, positive, negative, latent_image, seed, steps, cfg, scheduler, denoise,
               attention_control=None, **settings):
        return (operations.sample_simple(f"{spec.title} Sample", model, positive, negative, latent_image, cfg,
                                         seed, Schedule(steps, scheduler, denoise), Method(spec.name, settings),
                                         control=attention_control),)

    return type(spec.node_id("Sample"), (), {
        "DESCRIPTION": (f"Generate with {spec.title}. From a {spec.title}-inverted latent, regenerate it "
                        "exactly (same prompt) or edit it (new prompt); from a plain latent, sample like "
                        f"KSampler. {spec.advice}").strip(),
        "CATEGORY": CATEGORY, "SEARCH_ALIASES": SEARCH_ALIASES, "RETURN_TYPES": ("LATENT",), "FUNCTION": "sample",
        "OUTPUT_TOOLTIPS": (f"The result as a LATENT, carrying its clean pair: {spec.title} Invert takes it "
                            "back to the noise it came from exactly"
                            + (", and Latent Pair Mix mixes its two states." if spec.mixable else
                               "; VAE Decode and other nodes see an ordinary latent."),),
        "INPUT_TYPES": classmethod(lambda cls: {"required": _common_inputs(spec, SAMPLE_LATENT, True),
                                                "optional": {"attention_control": CONTROL_INPUT}}),
        "sample": sample,
    })


class LatentPairMix:
    DESCRIPTION = (f"Mix the two states of a pair that sit at one noise level ({MIXABLE}): "
                   "weight * x + (1 - weight) * its partner.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = SEARCH_ALIASES
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("A plain LATENT.",)
    FUNCTION = "mix"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT", {"tooltip": f"The output of a Sample (or Invert) node of {MIXABLE}, whose "
                                             "pair's two states sit at one noise level."}),
            "weight": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                 "tooltip": "Weight of the first state x; 0.5 averages x and its partner."}),
        }}

    def mix(self, latent, weight):
        return (operations.mix_pair("Latent Pair Mix", latent, weight),)


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
for _spec in SPECS.values():
    for _role, _make in (("Invert", make_invert_node), ("Sample", make_sample_node)):
        NODE_CLASS_MAPPINGS[_spec.node_id(_role)] = _make(_spec)
        NODE_DISPLAY_NAME_MAPPINGS[_spec.node_id(_role)] = f"{_spec.title} {_role}"
NODE_CLASS_MAPPINGS["LatentPairMix"] = LatentPairMix
NODE_DISPLAY_NAME_MAPPINGS["LatentPairMix"] = "Latent Pair Mix"
