"""Attention control on an exact pair, the pure parts: step and layer windows, the key/value
row injection, prompt-to-prompt's token alignment (seq_aligner's mapper), its maps and
LocalBlend's mask and blend, and the lockstep model of two branches.

Two branches (source and edit) run one method's recurrence together as one state, the
concatenation [source; edit] along the batch dimension: every recurrence is elementwise apart
from its model calls, so each half is computed exactly as it would be alone. The model of that
state evaluates the source half first (with the inversion's guider: it retraces the source's
trajectory, so the attention it computes is the source's own) and then the edit half, which
reads what the source computed in this evaluation; then it is dropped.
"""

import difflib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    """A half-open window [start, end) over fractions of a run (steps or layers). start == end
    is empty; (0, 1) is full."""
    start: float
    end: float

    def check(self, what):
        """ValueError naming `what` unless 0 <= start <= end <= 1."""
        for name, value in (("start", self.start), ("end", self.end)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{what} {name} must be a fraction in [0, 1], got {value!r}.")
        if self.start > self.end:
            raise ValueError(f"{what} start {self.start} is after its end {self.end}.")
        return self

    def holds(self, index, count):
        """Whether item `index` of `count` (0-based), which spans [index, index + 1) / count,
        overlaps the window: (0, 1) holds every item, an empty window none, and the papers'
        indices come back (MasaCtrl's layers 10 to 15 of 16 from 10/16; Flux's single blocks 20
        to 37, blocks 39 to 56 of 57, from 39/57), while a tiny model of two blocks still gets
        its last one."""
        return not self.empty and index < self.end * count and index + 1 > self.start * count

    @property
    def empty(self):
        return self.start >= self.end


def lockstep(source_model, edit_model, batch, between=None):
    """The model of the state [source; edit] ([2B, C, ...]): `source_model` on the first
    `batch` rows, then `edit_model` on the rest, each called exactly as in a run alone.
    between(), if given, runs after the source call (the recorded attention becomes the
    edit's to read). Returns the two results concatenated, [2B, C, ...]."""
    def model(x, sigma):
        source = source_model(x[:batch], sigma)
        if between is not None:
            between()
        edit = edit_model(x[batch:], sigma)
        return torch.cat([source, edit.to(source.dtype)])
    return model


def replace_rows(edit, source, rows, seq_dim):
    """`edit` with its token rows `rows` (a slice along `seq_dim`) taken from `source`; both
    [batch, ...] with the same shape. A new tensor; neither input is modified."""
    out = edit.clone()
    index = [slice(None)] * edit.ndim
    index[seq_dim] = rows
    out[tuple(index)] = source[tuple(index)].to(out.dtype)
    return out


def align_tokens(source_tokens, edit_tokens):
    """Prompt-to-prompt's token alignment (seq_aligner): a sequence matcher over the two
    prompts' token ids. An edit token in a run equal to the source's reads its source token; a
    run that replaces a source run reads it one for one where the two are as long (a word swap:
    "dog" -> "cat"), and otherwise every source token of the run, each map divided by the edit
    run's length (get_replacement_mapper_: "cat" -> "tiger cub"); an inserted token keeps its
    own map (the refinement: "a cat" -> "a cat wearing a hat"). Returns (mapper, aligned):
    mapper [len(edit_tokens), len(source_tokens)], the source maps each edit token's map is made
    of; aligned [len(edit_tokens)], 1.0 where the edit token takes the source's map."""
    mapper = torch.zeros(len(edit_tokens), len(source_tokens))
    aligned = torch.zeros(len(edit_tokens))
    matcher = difflib.SequenceMatcher(None, list(source_tokens), list(edit_tokens), autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal" or (op == "replace" and a1 - a0 == b1 - b0):
            mapper[torch.arange(b0, b1), torch.arange(a0, a1)] = 1.0
            aligned[b0:b1] = 1.0
        elif op == "replace":
            mapper[b0:b1, a0:a1] = 1.0 / (b1 - b0)
            aligned[b0:b1] = 1.0
    return mapper, aligned


def is_identity(mapper, aligned):
    """Whether every edit token reads its own place's source token alone ([T, T] mapper):
    equal prompts, or a swap of words as long as the ones they replace."""
    n = mapper.shape[-1]
    return bool(mapper.shape[-2] == n and aligned.all() and torch.equal(mapper, torch.eye(n).expand_as(mapper)))


def _heads(t, heads):
    """[B, N, H * d] -> [B, H, N, d], float32."""
    b, n, width = t.shape
    return t.float().reshape(b, n, heads, width // heads).transpose(1, 2)


def attention_maps(q, k, heads):
    """softmax(q k^T / sqrt(d)) per head, float32: q [B, N, H * d], k [B, M, H * d] -> [B, H, N, M]."""
    q, k = _heads(q, heads), _heads(k, heads)
    return torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)


def prompt_to_prompt(q, k, v, heads, source_q, source_k, mapper, aligned, weights):
    """Cross-attention of the edit with prompt-to-prompt's maps (Hertz et al., ICLR 2023): on
    the edit's aligned tokens the source's maps (its image queries over its text keys) as the
    mapper combines them, on the others the edit's own, then each token's column times its
    weight (reweighting; not renormalised, as in P2P). q [B, N, H * d] the edit's image
    queries, k and v [B, M, H * d] its text keys and values; source_q [B, N, H * d], source_k
    [B, M', H * d] the source's in the same layer; mapper [T, T'] or [B, T, T'], aligned and
    weights [T] or [B, T] (one prompt pair per batch row) over the edit's first T tokens and the
    source's first T' (align_tokens; weight 1.0 = unweighted). Returns [B, N, H * d] in v's dtype."""
    maps = attention_maps(q, k, heads)
    b, h, n, _ = maps.shape
    t = min(mapper.shape[-2], maps.shape[-1])
    s = min(mapper.shape[-1], source_k.shape[1])
    mapper = mapper.reshape(-1, *mapper.shape[-2:])[:, :t, :s].expand(b, t, s).to(maps)
    rows = lambda x: x.reshape(-1, x.shape[-1])[:, :t].expand(b, t).to(maps)  # noqa: E731
    source = attention_maps(source_q, source_k, heads)[..., :s] @ mapper.transpose(-1, -2)[:, None]
    a, w = rows(aligned)[:, None, None, :], rows(weights)[:, None, None, :]
    maps = torch.cat([(maps[..., :t] * (1 - a) + source * a) * w, maps[..., t:]], dim=-1)
    out = maps @ _heads(v, heads)
    return out.transpose(1, 2).reshape(b, n, -1).to(v.dtype)


def word_maps(q, k, heads, selected):
    """The summed cross-attention maps of chosen tokens, averaged over heads, as LocalBlend
    reads them: q [B, N, H * d] image queries, k [B, M, H * d] text keys, selected [T] or [B, T]
    1.0 on the chosen tokens (T <= M). Returns [B, N] float32."""
    maps = attention_maps(q, k, heads)
    t = min(selected.shape[-1], maps.shape[-1])
    chosen = selected.reshape(-1, selected.shape[-1])[:, :t].to(maps)[:, None, None, :]
    return (maps[..., :t] * chosen).sum(-1).mean(1)


def grid(tokens, size):
    """The (h, w) of a UNet layer with `tokens` image tokens over a latent of spatial `size`
    (H, W): each level halves the sides, rounding up as a stride-2 convolution does."""
    h, w = size
    while h * w > tokens and (h > 1 or w > 1):
        h, w = -(-h // 2), -(-w // 2)
    if h * w != tokens:
        raise ValueError(f"{tokens} tokens are no level of a {size[0]} x {size[1]} latent.")
    return h, w


def blend_mask(source_maps, edit_maps, size, threshold):
    """LocalBlend's mask (prompt-to-prompt): each branch's word maps ([B, h, w], summed over the
    steps so far) dilated by a 3 x 3 max pool, upsampled to the latent's `size` (H, W), divided
    by their maximum and thresholded; the union of the source's and the edit's. Returns
    [B, 1, H, W] bool: True where the edit keeps its own latent."""
    masks = []
    for maps in (source_maps, edit_maps):
        m = torch.nn.functional.max_pool2d(maps[:, None].float(), 3, stride=1, padding=1)
        m = torch.nn.functional.interpolate(m, size=tuple(size))
        peak = m.amax(dim=(2, 3), keepdim=True)
        masks.append(m / torch.where(peak > 0, peak, torch.ones_like(peak)) > threshold)
    return masks[0] | masks[1]


def blend(state, batch, mask):
    """LocalBlend on the lockstep state [source; edit] ([2B, C, ...], changed in place): outside
    `mask` ([B, 1, ...] bool) the edit's rows become the source's, bit for bit."""
    edit = state[batch:]
    edit.copy_(torch.where(mask.to(state.device), edit, state[:batch]))
