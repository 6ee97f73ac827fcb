"""Attention control on an exact pair, the pure parts: step and layer windows, the key/value
row injection, prompt-to-prompt's token alignment and maps, and the lockstep model of two
branches.

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
    """Prompt-to-prompt's token alignment, as EDICT's code makes it: a sequence matcher over the
    two prompts' token ids; an edit token is aligned where its run is equal to the source's or
    replaces a run of the same length (a word swap: "dog" -> "cat"). Returns (indices, aligned),
    both [len(edit_tokens)]: the source token each edit token reads (long) and 1.0 where aligned."""
    indices = torch.arange(len(edit_tokens))
    aligned = torch.zeros(len(edit_tokens))
    matcher = difflib.SequenceMatcher(None, list(source_tokens), list(edit_tokens), autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal" or (op == "replace" and a1 - a0 == b1 - b0):
            indices[b0:b1] = torch.arange(a0, a1)
            aligned[b0:b1] = 1.0
    return indices, aligned


def _heads(t, heads):
    """[B, N, H * d] -> [B, H, N, d], float32."""
    b, n, width = t.shape
    return t.float().reshape(b, n, heads, width // heads).transpose(1, 2)


def attention_maps(q, k, heads):
    """softmax(q k^T / sqrt(d)) per head, float32: q [B, N, H * d], k [B, M, H * d] -> [B, H, N, M]."""
    q, k = _heads(q, heads), _heads(k, heads)
    return torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)


def prompt_to_prompt(q, k, v, heads, source_q, source_k, indices, aligned, weights):
    """Cross-attention of the edit with prompt-to-prompt's maps (Hertz et al., ICLR 2023): on
    the edit's aligned tokens the source's maps (its image queries over its text keys), on the
    others the edit's own, then each token's column times its weight (reweighting; not
    renormalised, as in P2P). q [B, N, H * d] the edit's image queries, k and v [B, M, H * d]
    its text keys and values; source_q, source_k the source's in the same layer; indices,
    aligned, weights [T] or [B, T] (one prompt pair per batch row) over the edit's first T
    tokens (align_tokens; 1.0 = unweighted). Returns [B, N, H * d] in v's dtype."""
    maps = attention_maps(q, k, heads)
    b, h, n, _ = maps.shape
    t = min(indices.shape[-1], maps.shape[-1], source_k.shape[1])
    rows = lambda x: x.reshape(-1, x.shape[-1])[:, :t].expand(b, t).to(maps.device)  # noqa: E731
    index = rows(indices)[:, None, None, :].expand(b, h, n, t)
    source = torch.gather(attention_maps(source_q, source_k, heads), -1, index)
    a, w = rows(aligned).to(maps)[:, None, None, :], rows(weights).to(maps)[:, None, None, :]
    maps = torch.cat([(maps[..., :t] * (1 - a) + source * a) * w, maps[..., t:]], dim=-1)
    out = maps @ _heads(v, heads)
    return out.transpose(1, 2).reshape(b, n, -1).to(v.dtype)
