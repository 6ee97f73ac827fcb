"""The attention control nodes: an ATTENTION_CONTROL for the Sample nodes (simple and
advanced), whose edit then reads the source branch's attention in lockstep
(comfy_adapter/attention.py): mutual self-attention / value injection, and prompt-to-prompt."""

from ..comfy_adapter.attention import (CONTROL_NODE, CONTROL_TYPE, CUSTOM_DEFAULTS, FAMILIES, INJECTIONS,
                                       P2P_DEFAULTS, P2P_NODE, make_control, make_p2p)
from .exact_inversion import CATEGORY, SEARCH_ALIASES

_DEFAULTS = "; ".join(
    f"{name}: {family.source}, {family.inject}, steps {family.steps.start:.2f}-{family.steps.end:.2f}, "
    f"layers {family.layers.start:.2f}-{family.layers.end:.2f}"
    for name, family in FAMILIES.items() if name in ("BaseModel", "Flux", "SD3", "WAN21"))


def _fraction(default, tooltip):
    return ("FLOAT", {"default": default, "min": 0.0, "max": 1.0, "step": 0.01, "round": 0.001, "tooltip": tooltip})


class ExactAttentionControl:
    DESCRIPTION = ("Keep the photo's structure in an exact edit: the Sample node runs the source branch "
                   "(the inversion's prompt and cfg, which retraces the photo exactly) in lockstep with the "
                   "edit, and the edit's image tokens read the source's keys and values (MasaCtrl's mutual "
                   "self-attention on SD1.x/SDXL, RF-Edit's value injection on Flux) in a window of steps "
                   "and layers. Costs one extra model call per call; nothing is stored between steps.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = SEARCH_ALIASES + ["masactrl", "mutual self-attention", "rf-edit", "attention injection",
                                       "structure"]
    RETURN_TYPES = (CONTROL_TYPE,)
    OUTPUT_TOOLTIPS = ("The control, for a Sample node's attention_control input (Exact Sample (Advanced) "
                       "also needs the source guider).",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "preset": (["auto", "custom"], {"default": "auto", "tooltip":
                       "auto: the model family's defaults from the papers (" + _DEFAULTS + "; step and layer "
                       "windows are fractions of the run's steps and of the self-attention layers in call "
                       "order). custom: the inject and window inputs below."}),
            "inject": (list(INJECTIONS), {"default": CUSTOM_DEFAULTS["inject"], "tooltip":
                       "custom only. keys and values: the edit's queries attend to the source's image tokens "
                       "(MasaCtrl). values: only the values are the source's (RF-Edit), a lighter hold."}),
            "step_start": _fraction(CUSTOM_DEFAULTS["step_start"], "custom only. First step of the window, as a fraction of the "
                                    "steps (MasaCtrl: step 4 of 50 = 0.08)."),
            "step_end": _fraction(CUSTOM_DEFAULTS["step_end"], "custom only. End of the step window (exclusive), as a fraction; "
                                  "equal to step_start: no control at all."),
            "layer_start": _fraction(CUSTOM_DEFAULTS["layer_start"], "custom only. First controlled layer, as a fraction of the "
                                     "self-attention layers in call order (MasaCtrl: layer 10 of 16, the "
                                     "UNet's decoder = 0.625)."),
            "layer_end": _fraction(CUSTOM_DEFAULTS["layer_end"], "custom only. End of the layer window (exclusive), as a fraction."),
        }, "optional": {
            "source_positive": ("CONDITIONING", {"tooltip":
                                "The prompt that describes the photo: the one Invert used. The simple Sample "
                                "nodes need it for the source branch (with their negative and the cfg Invert "
                                "recorded); Exact Sample (Advanced) takes a source GUIDER instead."}),
        }}

    def make(self, preset, inject, step_start, step_end, layer_start, layer_end, source_positive=None):
        return (make_control(preset, inject, step_start, step_end, layer_start, layer_end, source_positive),)


class ExactPromptToPrompt:
    DESCRIPTION = ("Prompt-to-prompt on an exact edit (UNet models: SD1.x, SDXL), as PIE-Bench runs it: type the "
                   "photo's prompt and the edit's here once; the node encodes both (connect source_conditioning "
                   "to Invert's positive, edit_conditioning to Sample's). In the first steps the edit keeps the "
                   "source's cross-attention maps on the words the prompts share or swap (\"dog\" -> \"cat\": "
                   "the new word lands where the old one was) and its self-attention maps (the layout); with "
                   "blend words, everything outside those words' region stays the photo itself. The source branch "
                   "runs exactly in lockstep, as with Exact Attention Control, which it can be combined with.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = SEARCH_ALIASES + ["prompt to prompt", "p2p", "cross-attention", "word swap", "reweight",
                                       "local blend", "localblend"]
    RETURN_TYPES = (CONTROL_TYPE, "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("attention_control", "source_conditioning", "edit_conditioning")
    OUTPUT_TOOLTIPS = ("The control, for a Sample node's attention_control input.",
                       "source_text encoded as CLIP Text Encode does: connect it to Invert's positive (and, on "
                       "the advanced nodes, to the source guider).",
                       "edit_text encoded: connect it to Sample's positive (or the edit guider's). Sample refuses "
                       "another edit prompt, whose words the maps are not aligned with.")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip": ("CLIP", {"tooltip": "The checkpoint's CLIP: it encodes both prompts and its tokenizer aligns "
                              "their words."}),
            "source_text": ("STRING", {"multiline": True, "default": "", "tooltip":
                            "The prompt that describes the photo (Invert's positive: connect "
                            "source_conditioning to it). Prompts of several 77-token chunks are aligned across "
                            "all of them."}),
            "edit_text": ("STRING", {"multiline": True, "default": "", "tooltip":
                          "The edit prompt: the same words with some swapped (\"dog\" -> \"cat\"), added "
                          "(\"a cat wearing a hat\") or reweighted. A swapped word of another token count spreads "
                          "the old word's map over its tokens, as prompt-to-prompt does."}),
            "step_start": _fraction(P2P_DEFAULTS["step_start"], "First step in which the edit takes the source's "
                                    "cross-attention maps, as a fraction of the steps."),
            "step_end": _fraction(P2P_DEFAULTS["step_end"], "End of the cross-attention window (exclusive), as a "
                                  "fraction; PIE-Bench's 0.4 (prompt-to-prompt's cross_replace_steps) leaves the "
                                  "later steps free to render the new word."),
            "reweight": ("STRING", {"default": "", "tooltip":
                         "Optional: words of edit_text with weights that scale their attention maps, as "
                         "\"cat:2, beach:0.5\" (prompt-to-prompt's reweighting, in the cross-attention window)."}),
            "self_replace_steps": _fraction(P2P_DEFAULTS["self_replace_steps"],
                                            "The first fraction of the steps in which the edit's self-attention "
                                            "maps are the source's (softmax of the source's queries and keys over "
                                            "the edit's values), in the layers of at most 32 x 32 tokens: what "
                                            "holds the layout. PIE-Bench: 0.6; 0 leaves self-attention alone."),
            "blend_words": ("STRING", {"default": "", "tooltip":
                            "Optional LocalBlend: the words whose region the edit may change, from either prompt, "
                            "comma-separated (\"dog, cat\"). Outside the mask their cross-attention maps make, "
                            "the edit's latent is the source branch's from step 0.2 on, so there the result is "
                            "the photo itself. Empty: no blend."}),
            "blend_threshold": ("FLOAT", {"default": P2P_DEFAULTS["blend_threshold"], "min": 0.0, "max": 0.99,
                                          "step": 0.01, "tooltip":
                                          "LocalBlend's threshold on the normalised word maps: lower grows the "
                                          "region the edit may change. Prompt-to-prompt's: 0.3."}),
        }, "optional": {
            "attention_control": (CONTROL_TYPE, {"tooltip": "Optional: an Exact Attention Control to combine "
                                  "with (mutual self-attention plus prompt-to-prompt)."}),
        }}

    def make(self, clip, source_text, edit_text, step_start, step_end, reweight, self_replace_steps, blend_words,
             blend_threshold, attention_control=None):
        return make_p2p(clip, source_text, edit_text, step_start, step_end, reweight, self_replace_steps,
                        blend_words, blend_threshold, attention_control)


NODE_CLASS_MAPPINGS = {"ExactAttentionControl": ExactAttentionControl, "ExactPromptToPrompt": ExactPromptToPrompt}
NODE_DISPLAY_NAME_MAPPINGS = {"ExactAttentionControl": CONTROL_NODE, "ExactPromptToPrompt": P2P_NODE}
