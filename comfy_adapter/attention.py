"""Attention control on an inverted pair, in ComfyUI terms: one hook, one family table, and
the dual-branch run.

The hook is `transformer_options["optimized_attention_override"]`, called as
`override(func, q, k, v, *args, **kwargs)` for every attention call that receives the options
(UNet self- and cross-attention, Flux double and single blocks after RoPE, SD3's joint blocks,
Wan, Qwen-Image, AuraFlow; comfy/ldm/modules/attention.py `wrap_attn`, both 0.3.75 and 0.33.0).
It is installed on copies of the two guiders, each with its own copy of the model options, so
the MODEL the user connected is never changed; an override already there (another pack's,
ComfyUI's attention-backend node) is chained to, never replaced. Without a `container_function`
attribute, 0.33.0's wrapper hands the override plain tensors, as 0.3.75 always does, so
both versions run the same code.

The run: both branches start from the inverted pair and run the method's recurrence as one
state [source; edit] (edict_core.attention.lockstep). Each model evaluation evaluates the
source half with the source guider (the inversion's conditioning and cfg: it retraces the
source's trajectory) while the override records the keys and values of the selected layers,
then the edit half with the edit guider while the override replaces the edit's image-token
keys and/or values with the source's. The record is dropped after each evaluation: one
evaluation's selected layers, never a bank. With prompt-to-prompt (UNet families) the
source's cross-attention queries and keys are recorded too, and the edit's cross-attention
takes the source's maps on the tokens the two prompts share. The source branch ends at the
source latent; the error is reported on the node and kept in the result's record.
"""

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import torch

import comfy.model_patcher

from ..edict_core.attention import (Window, align_tokens, blend, blend_mask, grid, is_identity, lockstep,
                                    prompt_to_prompt, replace_rows, word_maps)
from ..edict_core.validation import relative_error
from .errors import NodeInputError
from .fingerprint import conditioning_digest, model_fingerprint
from .notices import Notices
from .session import run_in_session

CONTROL_TYPE = "ATTENTION_CONTROL"
CONTROL_NODE = "Exact Attention Control"
P2P_NODE = "Exact Prompt-to-Prompt"
KEYS_AND_VALUES, VALUES = "keys and values", "values"
# Exact Attention Control's custom inputs and their defaults (MasaCtrl's, on SD1.5's 50 steps
# and 16 self-attention layers): under preset auto they are not used.
CUSTOM_DEFAULTS = {"inject": KEYS_AND_VALUES, "step_start": 4 / 50, "step_end": 1.0, "layer_start": 10 / 16,
                   "layer_end": 1.0}
INJECTIONS = (KEYS_AND_VALUES, VALUES)


@dataclass(frozen=True)
class Family:
    """How a model family lays out its attention. layout "unet": self-attention is a call whose
    keys are as long as its queries, all of them image tokens; cross-attention (text keys) is
    never touched. layout "joint": one sequence of text tokens first, then the image tokens
    (patch `patch` of the latent); a call with keys as long as its queries covers them, and the
    last (image) rows are injected. The defaults: which keys/values, step and layer windows."""
    layout: str
    inject: str
    steps: Window
    layers: Window
    source: str  # where the defaults come from, for tooltips and the README
    patch: tuple = (2, 2)


# MasaCtrl (Cao et al., ICCV 2023): mutual self-attention from step 4 of 50 in layers 10 to 16
# of the UNet's 16 self-attention layers (its decoder). RF-Solver-Edit / Fluxtapoz RF-Edit: the
# source's values in Flux's single blocks 20 to 37 (of 19 double + 38 single) for the first
# steps. SD3: keys and values of the mid and late joint blocks.
_UNET = Family("unet", KEYS_AND_VALUES, Window(4 / 50, 1.0), Window(10 / 16, 1.0), "MasaCtrl")
FAMILIES = {
    "BaseModel": _UNET, "SDXL": _UNET, "SD20": _UNET, "SDXLRefiner": _UNET, "SD15_instructpix2pix": _UNET,
    "Flux": Family("joint", VALUES, Window(0.0, 0.2), Window((19 + 20) / 57, 1.0), "RF-Edit"),
    "SD3": Family("joint", KEYS_AND_VALUES, Window(0.0, 0.5), Window(0.5, 1.0), "mid and late joint blocks"),
    "QwenImage": Family("joint", KEYS_AND_VALUES, Window(4 / 50, 1.0), Window(0.5, 1.0), "MasaCtrl-like"),
    "AuraFlow": Family("joint", KEYS_AND_VALUES, Window(4 / 50, 1.0), Window(0.5, 1.0), "MasaCtrl-like"),
    "WAN21": Family("joint", KEYS_AND_VALUES, Window(4 / 50, 1.0), Window(0.5, 1.0), "MasaCtrl-like",
                    patch=(1, 2, 2)),
}


# Prompt-to-prompt's settings as PIE-Bench runs it (Ju et al., ICLR 2024; PnPInversion's
# run_editing_p2p.py on SD1.4): cross-attention maps replaced in the first 0.4 of the steps,
# self-attention maps in the first 0.6, in the layers of at most 32 x 32 tokens; LocalBlend
# (google/prompt-to-prompt) from step 0.2 on, its mask thresholded at 0.3 and made from the
# cross-attention maps of the layers of at most 16 x 16 tokens, the only ones its attention
# store keeps at or under 32 x 32 that it reads.
P2P_DEFAULTS = {"step_start": 0.0, "step_end": 0.4, "self_replace_steps": 0.6, "blend_threshold": 0.3}
SELF_REPLACE_MAX_TOKENS = 32 ** 2
BLEND_STEPS = Window(0.2, 1.0)
BLEND_GRID_TOKENS = 16 ** 2  # the mask's layers: the largest grid at most this, else the smallest
BLEND_STORE_MAX_TOKENS = 32 ** 2  # the maps LocalBlend may read (P2P's AttentionStore keeps these)


@dataclass(frozen=True)
class LocalBlend:
    """Prompt-to-prompt's LocalBlend: outside a mask made from the blend words' cross-attention
    maps in both prompts, the edit's latent is the source branch's, in the steps `steps`.
    source_tokens [1 or B, T'] and edit_tokens [1 or B, T]: 1.0 on the blend words' tokens in
    each prompt; words: the words, for the report."""
    steps: Window
    threshold: float
    source_tokens: torch.Tensor = field(compare=False)
    edit_tokens: torch.Tensor = field(compare=False)
    words: tuple = ()


@dataclass(frozen=True)
class PromptToPrompt:
    """Prompt-to-prompt's part of a control (UNet families): in the step window `steps`, the
    edit's cross-attention takes the source's maps on aligned tokens and multiplies chosen
    tokens' maps by their weights; in `self_steps` its self-attention maps are the source's
    (in the layers of at most SELF_REPLACE_MAX_TOKENS tokens); `blend`, if given, keeps the
    edit's latent to the blend words' region. mapper [1 or B, T, T'], aligned and weights
    [1 or B, T] over the edit prompt's T tokens and the source's T' (align_tokens); words:
    {word: weight}, for the report; edit_digest: the conditioning_digest of the edit prompt the
    node encoded (None where the caller brought its own conditioning, as the bench does)."""
    steps: Window
    mapper: torch.Tensor = field(compare=False)
    aligned: torch.Tensor = field(compare=False)
    weights: torch.Tensor = field(compare=False)
    words: dict = field(default_factory=dict, compare=False)
    self_steps: Window = Window(0.0, 0.0)
    blend: LocalBlend = field(default=None, compare=False)
    edit_digest: str = field(default=None, compare=False)

    @property
    def whole(self):
        """Every token aligned to its own place and unweighted (a word swap of equal length, or
        equal prompts): the maps are the source's, so ComfyUI's attention computes the call
        (bit for bit the source's own where the prompts are equal)."""
        return is_identity(self.mapper, self.aligned) and bool(torch.all(self.weights == 1.0))


@dataclass(frozen=True)
class AttentionControl:
    """The ATTENTION_CONTROL value. preset "auto": the family's defaults (FAMILIES); "custom":
    `inject`, `steps` and `layers` as given (an empty step window: no self-attention control).
    p2p: prompt-to-prompt's cross-attention part, or None. source_positive: the conditioning
    Invert used (the simple Sample nodes build the source guider from it; None where a source
    GUIDER is connected instead)."""
    preset: str
    inject: str
    steps: Window
    layers: Window
    source_positive: list = field(default=None, compare=False)
    p2p: PromptToPrompt = field(default=None, compare=False)

    def resolved(self, node, model):
        """(Family, inject, steps, layers) for `model`, or a NodeInputError naming the family."""
        name = type(model.model).__name__
        family = FAMILIES.get(name)
        if family is None:
            raise NodeInputError(node, "attention_control",
                                 f"attention control is not supported for this model family ({name}); "
                                 f"it is for {', '.join(sorted(FAMILIES))}.",
                                 "Disconnect attention_control to edit without it.")
        if self.p2p is not None and family.layout != "unet":
            raise NodeInputError(node, "attention_control",
                                 f"prompt-to-prompt replaces UNet cross-attention maps, which {name} does not "
                                 "have (its text and image tokens share joint attention).",
                                 "Use Exact Attention Control alone (value injection) for this model.")
        if self.preset == "auto":
            return family, family.inject, family.steps, family.layers
        return family, self.inject, self.steps, self.layers


def make_control(preset, inject, step_start, step_end, layer_start, layer_end, source_positive=None):
    """The control node's value, after refusing windows out of range by input name."""
    if preset not in ("auto", "custom"):
        raise NodeInputError(CONTROL_NODE, "preset", f"unknown preset {preset!r}.", "Use auto or custom.")
    if inject not in INJECTIONS:
        raise NodeInputError(CONTROL_NODE, "inject", f"unknown injection {inject!r}.",
                             f"Use one of {', '.join(INJECTIONS)}.")
    control = AttentionControl(preset, inject, _window(CONTROL_NODE, "step", step_start, step_end),
                               _window(CONTROL_NODE, "layer", layer_start, layer_end), source_positive)
    given = dict(inject=inject, step_start=step_start, step_end=step_end, layer_start=layer_start, layer_end=layer_end)
    changed = [name for name, value in given.items() if value != CUSTOM_DEFAULTS[name]
               and not (isinstance(value, float) and abs(value - CUSTOM_DEFAULTS[name]) < 5e-4)]
    if preset == "auto" and changed:
        Notices(CONTROL_NODE).info(f"preset auto uses the model family's own inject and windows, so "
                                   f"{', '.join(changed)} (changed from the defaults) are not used. Choose "
                                   "preset custom to use them.")
    return control


def _window(node, what, start, end):
    """Window(start, end), or a NodeInputError naming {what}_start or {what}_end."""
    try:
        return Window(start, end).check(what)
    except ValueError as error:
        bad = f"{what}_end" if isinstance(start, (int, float)) and 0 <= start <= 1 else f"{what}_start"
        raise NodeInputError(node, bad, str(error), f"Use 0 <= {what}_start <= {what}_end <= 1 (fractions of the "
                             f"{what}s; equal values make an empty window).") from None


def _clip_tokens(clip, text):
    """The token ids of `text`, every 77-token chunk in order (CLIP-L's where the CLIP has
    several, as SDXL's: its positions are the cross-attention's), start, end and padding
    included: position i is the conditioning's token i, as CLIPTextEncode makes it."""
    tokens = clip.tokenize(text)
    chunks = tokens["l" if "l" in tokens else next(iter(tokens))]
    return [t[0] if isinstance(t[0], int) else -1 for chunk in chunks for t in chunk]  # -1: an embedding's vector


def _word_ids(clip, word):
    """The token ids of one word or phrase, without start, end and padding."""
    ids = _clip_tokens(clip, word)[1:]
    end = _clip_tokens(clip, "")[1]
    return ids[:ids.index(end)] if end in ids else ids


def _find(tokens, ids):
    """The positions of every occurrence of the run `ids` in `tokens`."""
    return [i for i in range(len(tokens) - len(ids) + 1) if ids and tokens[i:i + len(ids)] == ids]


def _weights(clip, edit_tokens, reweight):
    """[T] weights over the edit's tokens from "word:weight, ..." (every occurrence of the
    word's tokens), and {word: weight}."""
    weights, words = torch.ones(len(edit_tokens)), {}
    for part in filter(None, (p.strip() for p in reweight.split(","))):
        word, _, value = part.rpartition(":")
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if not word.strip() or weight is None or not -10.0 <= weight <= 10.0:
            raise NodeInputError(P2P_NODE, "reweight", f"{part!r} is not word:weight with a weight in [-10, 10].",
                                 "Write words of edit_text with their weights, comma-separated, as "
                                 "\"cat:2, beach:0.5\" (1 leaves a word as it is).")
        ids = _word_ids(clip, word.strip())
        found = _find(edit_tokens, ids)
        if not found:
            raise NodeInputError(P2P_NODE, "reweight", f"{word.strip()!r} is not a word of edit_text.",
                                 "Reweight only words that edit_text contains, spelled as there.")
        for i in found:
            weights[i:i + len(ids)] = weight
        words[word.strip()] = weight
    return weights, words


def _blend_tokens(clip, source_tokens, edit_tokens, blend_words):
    """([T'], [T]) 1.0 on the blend words' tokens in the source and the edit prompt (a word
    counts in each prompt that contains it), and the words; None where blend_words is empty."""
    words = tuple(filter(None, (w.strip() for w in blend_words.split(","))))
    if not words:
        return None
    selected = (torch.zeros(len(source_tokens)), torch.zeros(len(edit_tokens)))
    for word in words:
        ids = _word_ids(clip, word)
        hits = [_find(tokens, ids) for tokens in (source_tokens, edit_tokens)]
        if not any(hits):
            raise NodeInputError(P2P_NODE, "blend_words", f"{word!r} is a word of neither prompt.",
                                 "Name the words whose region the edit may change, as spelled in source_text "
                                 "or edit_text, comma-separated (\"dog, cat\").")
        for chosen, found in zip(selected, hits):
            for i in found:
                chosen[i:i + len(ids)] = 1.0
    return selected + (words,)


def _texts(name, text):
    """One text per batch row: `text` itself, or (the bench) a list of them; refused if empty."""
    texts = list(text) if isinstance(text, (list, tuple)) else [text]
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise NodeInputError(P2P_NODE, name, "the prompt is empty; its words are aligned with the other's.",
                             f"Type the text of the {name.split('_')[0]} prompt.")
    return texts


def p2p_control(clip, source_text, edit_text, step_start, step_end, reweight="", control=None, source_positive=None,
                self_replace_steps=0.0, blend_words="", blend_threshold=P2P_DEFAULTS["blend_threshold"],
                edit_digest=None):
    """`control` (or a control with no self-attention part) with prompt-to-prompt added, over
    conditioning the caller encoded: source_positive (default: the control's) is the source
    prompt's. source_text and edit_text: one text each, or (the bench) lists of one per batch
    row, as are blend_words."""
    sources, edits = _texts("source_text", source_text), _texts("edit_text", edit_text)
    if len(sources) != len(edits):
        raise NodeInputError(P2P_NODE, "edit_text", f"{len(edits)} edit texts for {len(sources)} source texts.",
                             "Give one edit text per source text.")
    steps = _window(P2P_NODE, "step", step_start, step_end)
    if isinstance(self_replace_steps, bool) or not isinstance(self_replace_steps, (int, float)) or \
            not 0.0 <= self_replace_steps <= 1.0:
        raise NodeInputError(P2P_NODE, "self_replace_steps", f"must be a fraction in [0, 1], got "
                             f"{self_replace_steps!r}.", f"Use {P2P_DEFAULTS['self_replace_steps']} (PIE-Bench's), "
                             "or 0 to leave self-attention alone.")
    self_steps = Window(0.0, float(self_replace_steps))
    if isinstance(blend_threshold, bool) or not isinstance(blend_threshold, (int, float)) or \
            not 0.0 <= blend_threshold < 1.0:
        raise NodeInputError(P2P_NODE, "blend_threshold", f"must be a fraction in [0, 1), got {blend_threshold!r}.",
                             f"Use {P2P_DEFAULTS['blend_threshold']} (prompt-to-prompt's), lower for a larger region.")
    blends = list(blend_words) if isinstance(blend_words, (list, tuple)) else [blend_words] * len(sources)
    rows, blended = [], []
    for source, edit, words in zip(sources, edits, blends, strict=True):
        source_tokens, edit_tokens = _clip_tokens(clip, source), _clip_tokens(clip, edit)
        rows.append(align_tokens(source_tokens, edit_tokens) + _weights(clip, edit_tokens, reweight or ""))
        blended.append(_blend_tokens(clip, source_tokens, edit_tokens, words or ""))
    if len({tuple(r[0].shape) for r in rows}) > 1:
        raise NodeInputError(P2P_NODE, "edit_text", "the batch's prompts span different numbers of 77-token chunks.",
                             "Keep every prompt of one batch within the same number of chunks.")
    mapper, aligned, weights = (torch.stack([r[i] for r in rows]) for i in range(3))
    blend_part = None
    if any(b is not None for b in blended):
        if not all(b is not None for b in blended):
            raise NodeInputError(P2P_NODE, "blend_words", "some rows of the batch have blend words, others none.",
                                 "Give every row blend words, or none.")
        blend_part = LocalBlend(BLEND_STEPS, float(blend_threshold), torch.stack([b[0] for b in blended]),
                                torch.stack([b[1] for b in blended]), blended[0][2])
    p2p = PromptToPrompt(steps, mapper, aligned, weights, rows[0][3], self_steps, blend_part, edit_digest)
    if control is None:
        control = AttentionControl("custom", KEYS_AND_VALUES, Window(0.0, 0.0), Window(0.0, 1.0))
    return dataclasses.replace(control, p2p=p2p, source_positive=source_positive if source_positive is not None
                               else control.source_positive)


def make_p2p(clip, source_text, edit_text, step_start, step_end, reweight, self_replace_steps, blend_words,
             blend_threshold, control=None):
    """The prompt-to-prompt node's values: (control, source conditioning, edit conditioning).
    The node encodes both texts as CLIPTextEncode does, so each prompt is typed once: the source
    conditioning goes to Invert (and is the control's source prompt), the edit conditioning to
    Sample, which refuses another (PromptToPrompt.edit_digest)."""
    if clip is None:
        raise NodeInputError(P2P_NODE, "clip", "no CLIP is connected (a checkpoint without a text encoder?).",
                             "Connect the CLIP output of the checkpoint loader.")
    conditioning = {}
    for name, text in (("source_text", source_text), ("edit_text", edit_text)):
        if not isinstance(text, str):
            raise NodeInputError(P2P_NODE, name, f"expected text, got {type(text).__name__}.", "Type the prompt.")
        _texts(name, text)
        conditioning[name] = clip.encode_from_tokens_scheduled(clip.tokenize(text))
    control = p2p_control(clip, source_text, edit_text, step_start, step_end, reweight, control,
                          conditioning["source_text"], self_replace_steps, blend_words, blend_threshold,
                          edit_digest=conditioning_digest(conditioning["edit_text"]))
    return control, conditioning["source_text"], conditioning["edit_text"]


class Recorder:
    """The override: records what the selected layers of the source evaluation computed, hands
    it to the edit evaluation, and forgets it.

    Self-attention (and the joint attention of DiTs): the source's keys and values, which the
    edit's image tokens then read (MasaCtrl, RF-Edit); with prompt-to-prompt's self replacement
    also the source's queries and keys, whose maps the edit's cond chunk then uses over its own
    values. UNet cross-attention, with prompt-to-prompt: the source's image queries and text
    keys, from which the edit's maps are made, and, with LocalBlend, both branches' maps of the
    blend words, summed over the run (the one record kept between evaluations: [B, N] per layer
    size). A layer is identified by its place among the calls of its kind in one forward pass,
    per cond/uncond chunk (transformer_options["cond_or_uncond"]): the edit's cond chunk reads
    the source's cond chunk in the same layer, its uncond the source's uncond (prompt-to-prompt:
    the cond chunk only, as in its code; the negative prompt is the same in both branches).
    """

    def __init__(self, family, inject, steps, layers, total_steps, calls_per_step, previous, p2p=None):
        self.family, self.inject_keys = family, inject == KEYS_AND_VALUES
        self.steps, self.layers, self.p2p = steps, layers, p2p
        self.total_steps, self.calls_per_step = total_steps, calls_per_step
        self.previous = previous  # the override already installed (another pack's), or None
        self.role, self.active, self.cross_active, self.self_maps_active, self.evaluation = None, False, False, False, 0
        self.blending = p2p is not None and p2p.blend is not None
        self.image_tokens, self.latent_size = 0, None
        self.store, self.counters, self.layer_count = {}, {}, None
        self.word_maps = {"record": {}, "inject": {}}  # LocalBlend: {role: {tokens: [B, tokens]}}
        self.injected = 0  # self-attention calls whose keys/values were replaced, for the report
        self.replaced = 0  # cross-attention calls with prompt-to-prompt's maps
        self.self_replaced = 0  # self-attention calls with the source's maps
        self.blended, self.blend_mask, self.blend_coverage = 0, None, None  # LocalBlend's steps, last mask
        self.peak_bytes = 0  # the most one evaluation's record held

    # ----------------------------------------------------------------- the lockstep phases
    def begin_source(self, x):
        step = self.evaluation // self.calls_per_step
        self.active = self.steps.holds(step, self.total_steps)
        self.cross_active = self.p2p is not None and self.p2p.steps.holds(step, self.total_steps)
        self.self_maps_active = self.p2p is not None and self.p2p.self_steps.holds(step, self.total_steps)
        self.role, self.counters, self.store = "record", {}, {}
        self.image_tokens, self.latent_size = self._tokens(x), tuple(x.shape[-2:])

    def begin_edit(self):
        held = sum(t.numel() * t.element_size() for pair in self.store.values() for t in pair)
        self.peak_bytes = max(self.peak_bytes, held)
        counts = [n for (kind, _), n in self.counters.items() if kind == "self"]
        if counts and self.active:
            self.layer_count = max(counts)
        self.role, self.counters = "inject", {}

    def end(self):
        self.role, self.store, self.counters = None, {}, {}
        self.evaluation += 1

    def after_step(self, state, batch):
        """LocalBlend after a step of the lockstep state `state` (the routine's live tensors,
        each [2B, C, H, W]): outside the blend words' mask the edit's rows become the source's."""
        blend_part = self.p2p.blend if self.p2p is not None else None
        step = self.evaluation // self.calls_per_step - 1
        if blend_part is None or state is None or not blend_part.steps.holds(step, self.total_steps):
            return
        source, edit = self.word_maps["record"], self.word_maps["inject"]
        sizes = set(source) & set(edit)
        if not sizes:
            return
        small = [n for n in sizes if n <= BLEND_GRID_TOKENS]
        tokens = max(small) if small else min(sizes)
        try:
            h, w = grid(tokens, self.latent_size)
        except ValueError:
            return
        mask = blend_mask(source[tokens].reshape(-1, h, w), edit[tokens].reshape(-1, h, w), self.latent_size,
                          blend_part.threshold)
        for tensor in state:
            blend(tensor, batch, mask)
        self.blended += 1
        self.blend_mask, self.blend_coverage = mask, float(mask.float().mean())

    def _tokens(self, x):
        spatial = x.shape[2:]
        patch = self.family.patch[-len(spatial):] if len(self.family.patch) >= len(spatial) else \
            (1,) * (len(spatial) - len(self.family.patch)) + tuple(self.family.patch)
        return math.prod(math.ceil(s / p) for s, p in zip(spatial, patch))

    # ------------------------------------------------------------------------ the override
    def _rows(self, q, k, seq):
        """The image-token rows of k to replace, or None for a call that is not
        self-attention (UNet, Wan cross-attention: text keys)."""
        if k.shape[seq] != q.shape[seq]:
            return None
        if self.family.layout == "unet":
            return slice(None)
        if k.shape[seq] < self.image_tokens:
            return None
        return slice(k.shape[seq] - self.image_tokens, None)

    def __call__(self, func, *args, **kwargs):
        return self.chained(self.previous, func, *args, **kwargs)

    def chained(self, previous, func, *args, **kwargs):
        """The control on this call, then `previous` (an override already installed) or func."""
        if self.role is not None and len(args) >= 3 and \
                (self.active or self.cross_active or self.self_maps_active or self.blending):
            func, args = self._control(func, args, kwargs)
        if previous is not None:
            return previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def _control(self, func, args, kwargs):
        q, k, v = args[:3]
        seq = 2 if kwargs.get("skip_reshape", False) else 1
        rows = self._rows(q, k, seq)
        kind = "self" if rows is not None else "cross"
        # Prompt-to-prompt's parts read the maps of ComfyUI's plain UNet calls: [B, N, H * d],
        # heads as the fourth argument, no mask.
        plain = (self.family.layout == "unet" and seq == 1 and len(args) >= 4 and kwargs.get("mask") is None
                 and not kwargs.get("skip_output_reshape"))
        self_maps = kind == "self" and self.self_maps_active and plain and q.shape[1] <= SELF_REPLACE_MAX_TOKENS
        if kind == "self" and not (self.active or self_maps):
            return func, args
        if kind == "cross" and not ((self.cross_active or self.blending) and plain):
            return func, args
        labels = tuple((kwargs.get("transformer_options") or {}).get("cond_or_uncond") or (0,))
        index = self.counters.get((kind, labels), 0)
        self.counters[(kind, labels)] = index + 1
        if q.shape[0] % len(labels):
            return func, args
        chunk = q.shape[0] // len(labels)
        keys = _chunk_keys(labels, index)
        if kind == "cross":
            return self._cross(func, args, keys, chunk, labels)
        part = lambda j: slice(j * chunk, (j + 1) * chunk)  # noqa: E731
        conds = [j for j, label in enumerate(labels) if label == 0]
        masa = self.active and (self.layer_count is None or self.layers.holds(index, self.layer_count))
        if self.role == "record":
            for j, key in enumerate(keys):
                if masa:
                    self.store[key] = (k[part(j)], v[part(j)])
                if self_maps and j in conds:
                    self.store[("self maps",) + key] = (q[part(j)], k[part(j)])
            return func, args
        if masa and self.layer_count is not None:
            recorded = [self.store.get(key) or self.store.get((0, 0, index)) for key in keys]
            if all(r is not None for r in recorded):
                source_k = torch.cat([r[0] for r in recorded])
                source_v = torch.cat([r[1] for r in recorded])
                if source_k.shape == k.shape and source_v.shape == v.shape:
                    self.injected += 1
                    v = replace_rows(v, source_v, rows, seq)
                    if self.inject_keys:
                        k = replace_rows(k, source_k, rows, seq)
        if self_maps:
            recorded = {j: self.store.get(("self maps",) + keys[j]) for j in conds}
            if conds and all(r is not None and r[0].shape == q[part(j)].shape for j, r in recorded.items()):
                # softmax(q_src k_src^T) v_edit by ComfyUI's own attention on the whole batch:
                # equal prompts give the plain call's output bit for bit.
                self.self_replaced += 1
                q, k = q.clone(), k.clone()
                for j, (source_q, source_k) in recorded.items():
                    q[part(j)], k[part(j)] = source_q, source_k
        return func, (q, k, v) + tuple(args[3:])

    def _cross(self, func, args, keys, chunk, labels):
        """Prompt-to-prompt on a UNet cross-attention call: record the source's cond chunk
        (queries, keys), or give the edit's cond chunk the maps made from them; with
        LocalBlend, add each branch's blend-word maps to its sum."""
        conds = [j for j, label in enumerate(labels) if label == 0]
        q, k, _, heads = args[:4]
        if self.blending and q.shape[1] <= BLEND_STORE_MAX_TOKENS:
            blend_part = self.p2p.blend
            selected = blend_part.source_tokens if self.role == "record" else blend_part.edit_tokens
            sums = self.word_maps[self.role]
            for j in conds:
                maps = word_maps(q[j * chunk:(j + 1) * chunk], k[j * chunk:(j + 1) * chunk], heads, selected)
                sums[q.shape[1]] = sums[q.shape[1]] + maps if q.shape[1] in sums else maps
        if not self.cross_active:
            return func, args
        if self.role == "record":
            for j in conds:
                self.store[("cross",) + keys[j]] = (q[j * chunk:(j + 1) * chunk], k[j * chunk:(j + 1) * chunk])
            return func, args
        recorded = {j: self.store.get(("cross",) + keys[j]) for j in conds}
        if not conds or any(r is None or r[0].shape != args[0][j * chunk:(j + 1) * chunk].shape
                            for j, r in recorded.items()):
            return func, args
        self.replaced += 1
        p2p = self.p2p

        def attention(q, k, v, heads, *rest, **options):
            parts = {j: slice(j * chunk, (j + 1) * chunk) for j in recorded}
            if p2p.whole and all(recorded[j][1].shape == k[part].shape for j, part in parts.items()):
                # The source's maps over the edit's values, by ComfyUI's own attention on the
                # call's whole batch: the same kernel on the same shapes as a call without P2P, so
                # equal prompts give its output bit for bit on every CPU (a kernel run on one
                # chunk may round otherwise than on the batch).
                q, k = q.clone(), k.clone()
                for j, part in parts.items():
                    q[part], k[part] = recorded[j]
                return func(q, k, v, heads, *rest, **options)
            out = func(q, k, v, heads, *rest, **options).clone()
            for j, part in parts.items():
                source_q, source_k = recorded[j]
                out[part] = prompt_to_prompt(q[part], k[part], v[part], heads, source_q, source_k,
                                             p2p.mapper, p2p.aligned, p2p.weights).to(out.dtype)
            return out

        return attention, args


def _chunk_keys(labels, index):
    """(label, occurrence of the label in this forward, layer index) per chunk."""
    seen, keys = {}, []
    for label in labels:
        keys.append((label, seen.get(label, 0), index))
        seen[label] = seen.get(label, 0) + 1
    return keys


def controlled(guider, recorder):
    """A copy of `guider` whose model options (a copy) carry `recorder` as the attention
    override, chained to the one already there. The guider and its MODEL are unchanged."""
    out = copy.copy(guider)
    options = comfy.model_patcher.create_model_options_clone(guider.model_options)
    options.setdefault("transformer_options", {})["optimized_attention_override"] = recorder
    out.model_options = options
    return out


def check_source_guider(node, guider, source_guider):
    if source_guider is None:
        raise NodeInputError(node, "source_guider", "attention control needs the source branch's guider.",
                             "Connect the GUIDER that Exact Invert (Advanced) used (its prompt and cfg).")
    same = source_guider.model_patcher.model is guider.model_patcher.model and \
        model_fingerprint(source_guider.model_patcher) == model_fingerprint(guider.model_patcher)
    if not same:
        raise NodeInputError(node, "source_guider", "its model is not the edit guider's model (another "
                             "checkpoint, LoRA or patch), so the source branch would not retrace the source.",
                             "Build both guiders from the same MODEL, the one that inverted latent_image.")


def run_lockstep(node, source_guider, guider, control, source, sigmas, total_steps, per_step, routine, reports=1,
                 seed=0, denoise_mask=None):
    """Two branches in lockstep (module docstring) under one session per guider, both on copies
    carrying one Recorder. routine(model, session) runs a sampler over the lockstep `model` of
    the state [source; edit] ([2B, C, ...], sampler space) and returns a list of such states;
    `session` is the edit's (model-space conversions, progress). source: [B, C, ...] the source
    latent (latent space); sigmas the schedule; total_steps the steps of `sigmas` the routine
    walks, per_step its model evaluations per step. Returns (the routine's list, report)."""
    family, inject, steps, layers = control.resolved(node, guider.model_patcher)
    previous = guider.model_options.get("transformer_options", {}).get("optimized_attention_override")
    recorder = Recorder(family, inject, steps, layers, max(total_steps, 1), per_step, previous, control.p2p)
    source_previous = source_guider.model_options.get("transformer_options", {}).get(
        "optimized_attention_override")
    source_recorder = recorder if source_previous is previous else _SharedRecorder(recorder, source_previous)
    source_run, edit_run = controlled(source_guider, source_recorder), controlled(guider, recorder)
    batch = source.shape[0]

    def outer(source_session):
        def inner(edit_session):
            def source_model(x, sigma):
                recorder.begin_source(x)
                return source_session.denoise(x, sigma)

            def edit_model(x, sigma):
                try:
                    return edit_session.denoise(x, sigma)
                finally:
                    recorder.end()

            def report(info):
                recorder.after_step(info.get("state"), batch)  # LocalBlend, before the preview shows x
                edit_session.report(dict(info, x=info["x"][batch:], denoised=info["denoised"][batch:], state=None))

            model = lockstep(source_model, edit_model, batch, between=recorder.begin_edit)
            return routine(model, edit_session, report)

        return run_in_session(node, edit_run, source, sigmas, reports, inner, seed=seed, denoise_mask=denoise_mask)

    result = run_in_session(node, source_run, source, sigmas, reports, outer, seed=seed, denoise_mask=denoise_mask)
    report = {"injected_calls": recorder.injected, "inject": inject, "steps": [steps.start, steps.end],
              "layers": [layers.start, layers.end], "family": type(guider.model_patcher.model).__name__,
              "p2p_calls": recorder.replaced, "peak_record_bytes": recorder.peak_bytes}
    p2p = control.p2p
    if p2p is not None:
        report.update(p2p_steps=[p2p.steps.start, p2p.steps.end], p2p_words=dict(p2p.words),
                      p2p_aligned=int(p2p.aligned[0].sum()), self_replace_steps=[p2p.self_steps.start, p2p.self_steps.end],
                      self_replaced_calls=recorder.self_replaced)
        if p2p.blend is not None:
            report.update(blend_words=list(p2p.blend.words), blend_steps=recorder.blended,
                          blend_coverage=recorder.blend_coverage, blend_mask=recorder.blend_mask,
                          blend_window=[p2p.blend.steps.start, p2p.blend.steps.end])
    return result, report


def sample_controlled(node, source_guider, guider, latent, start, control, seed=0):
    """Run the inverted pair `start.pair` as two branches in lockstep (module docstring).
    Returns (edit pair, source pair, report): pairs in latent space, state dtype, as
    operations._run returns them; report {"source_end_error", "injected_calls", ...}."""
    spec, settings = start.method.spec, start.method.params
    prepared, clean_level = start.prepared, float(start.prepared[-1])
    per_step = spec.step_calls(settings)
    calls = spec.calls(start.steps, started=False, settings=settings)
    batch = start.pair[0].shape[0]

    def routine(model, session, report):
        pair = [torch.cat([session.to_model_space(t)] * 2) for t in start.pair]
        out = spec.sample(model, pair, prepared, session.input_scale, callback=report, **settings)
        halves = [session.to_latent_space(session.leave_clean(t, clean_level)) for t in out]
        return [h[batch:] for h in halves] + [h[:batch] for h in halves]

    result, report = run_lockstep(node, source_guider, guider, control, start.source, prepared, calls // per_step,
                                  per_step, routine, start.reports, seed=seed, denoise_mask=latent.get("noise_mask"))
    edit, source = result[:2], result[2:]
    report.update(source_end_error=relative_error(source[0], start.source.to(source[0])),
                  source_end_bit_equal=bool(torch.equal(source[0].to(torch.float32),
                                                        start.source.to(torch.float32))))
    return edit, source, report


class _SharedRecorder:
    """The recorder seen through a source guider whose own previous override differs from the
    edit guider's: the same state, its own chain."""

    def __init__(self, recorder, previous):
        self.recorder, self.previous = recorder, previous

    def __call__(self, func, *args, **kwargs):
        return self.recorder.chained(self.previous, func, *args, **kwargs)
