"""Procedural scenes with ground truth: one bright shape on a dark background, a caption, its mask.

A scene is drawn from a seed, never stored: a shape (circle, square, triangle, diamond) in a
bright colour at an integer centre and one of a few sizes, on a background of another colour
(plain, a vertical gradient, or diagonal stripes), at SIZE x SIZE pixels. Its caption comes from
one grammar: "a red circle on a blue striped background".

Backgrounds are drawn dark (at most 0.5 in every channel) and shapes bright (at least 0.85 in
their largest channel), so the judge that reads a picture back needs no model: the shape mask
is where the largest channel exceeds 0.675, the shape's colour is the nearest palette colour of
the mean inside the mask, its class the best-IoU template over every shape, centre and size the
renderer can draw, and the background the nearest of the renderer's 18 backgrounds outside the
mask. `judge` is the one place these measures live; the learned-model check and the edits bench
both use it.

Pure torch; pictures are [B, SIZE, SIZE, 3] float32 in [0, 1] (ComfyUI's IMAGE layout), masks
[B, SIZE, SIZE] bool.
"""

import itertools
import math
import zlib
from dataclasses import dataclass, replace

import torch

SIZE = 16
COLORS = {  # bright: the shape's colour; the background uses the same hue, darkened
    "red": (0.95, 0.15, 0.10),
    "green": (0.15, 0.85, 0.20),
    "blue": (0.20, 0.35, 1.00),
    "yellow": (0.95, 0.90, 0.15),
    "purple": (0.70, 0.20, 0.95),
    "cyan": (0.10, 0.90, 0.90),
}
SHAPES = ("circle", "square", "triangle", "diamond")
BACKGROUNDS = ("plain", "gradient", "striped")
SIZES = (6, 8, 10)  # the shape's bounding box side in pixels
BRIGHT = 0.675  # mask threshold on the largest channel: backgrounds stay at or below 0.5
SUPERSAMPLE = 4  # a pixel is inside where over half of its 4 x 4 sample grid is
HELD_OUT_SEED = 10 ** 6  # training draws scenes from seeds below this, held-out scenes above


@dataclass(frozen=True)
class Scene:
    color: str
    shape: str
    background: str  # BACKGROUNDS
    bg_color: str
    size: int
    cx: int  # the shape's centre in pixel-corner coordinates (0..SIZE)
    cy: int

    @property
    def caption(self):
        return caption(self.color, self.shape, self.bg_color, self.background)


def caption(color, shape, bg_color, background):
    """The grammar: "a red circle on a blue striped background"."""
    kind = "" if background == "plain" else f" {background}"
    return f"a {color} {shape} on a {bg_color}{kind} background"


def parse(text):
    """The attributes of a caption of the grammar: a Scene with size and centre 0."""
    words = text.split()
    kind = words[6] if len(words) == 8 else "plain"
    return Scene(color=words[1], shape=words[2], background=kind, bg_color=words[5], size=0, cx=0, cy=0)


def all_captions():
    """Every caption of the grammar (shape and background colours differ): 6 * 4 * 5 * 3 = 360."""
    return [caption(c, s, b, k) for c, s, b, k in itertools.product(COLORS, SHAPES, COLORS, BACKGROUNDS) if b != c]


def _centres(size):
    half = size // 2
    return range(half, SIZE - half + 1)


def draw(seed):
    """The scene of `seed`: every attribute uniform over the grammar and the canvas."""
    g = torch.Generator().manual_seed(int(seed))

    def pick(options):
        options = list(options)
        return options[int(torch.randint(len(options), (1,), generator=g))]

    color = pick(COLORS)
    size = pick(SIZES)
    return Scene(color=color, shape=pick(SHAPES), background=pick(BACKGROUNDS),
                 bg_color=pick(c for c in COLORS if c != color), size=size,
                 cx=pick(_centres(size)), cy=pick(_centres(size)))


def held_out(count, start=0):
    """`count` scenes no training run draws (seeds from HELD_OUT_SEED)."""
    return [draw(HELD_OUT_SEED + start + i) for i in range(count)]


def edits(scene, seed=0):
    """The three edits of a scene: {"color": Scene, "shape": Scene, "background": Scene}, each
    one attribute changed (the background edit changes colour and kind), picked from `seed`."""
    g = torch.Generator().manual_seed(zlib.crc32(repr((scene, seed)).encode()))  # stable across processes

    def pick(options):
        options = list(options)
        return options[int(torch.randint(len(options), (1,), generator=g))]

    color = pick(c for c in COLORS if c not in (scene.color, scene.bg_color))
    shape = pick(s for s in SHAPES if s != scene.shape)
    bg_color = pick(c for c in COLORS if c not in (scene.color, scene.bg_color))
    background = pick(BACKGROUNDS)
    return {"color": replace(scene, color=color), "shape": replace(scene, shape=shape),
            "background": replace(scene, bg_color=bg_color, background=background)}


def _grid(n):
    """Sample coordinates (pixel-corner units) of an n-per-pixel supersampling grid: [SIZE * n]."""
    return (torch.arange(SIZE * n, dtype=torch.float32) + 0.5) / n


def coverage(shape, size, cx, cy, n=SUPERSAMPLE):
    """The shape's pixel coverage [SIZE, SIZE] in [0, 1]."""
    ys, xs = torch.meshgrid(_grid(n), _grid(n), indexing="ij")
    u, v = (xs - cx) / (size / 2), (ys - cy) / (size / 2)  # [-1, 1] over the bounding box; v down
    if shape == "circle":
        inside = u ** 2 + v ** 2 <= 1
    elif shape == "square":
        inside = (u.abs() <= 1) & (v.abs() <= 1)
    elif shape == "triangle":  # apex up, base at the bottom of the box
        inside = (v <= 1) & (u.abs() <= (v + 1) / 2)
    elif shape == "diamond":
        inside = u.abs() + v.abs() <= 1
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return inside.float().reshape(SIZE, n, SIZE, n).mean(dim=(1, 3))


def background(kind, color):
    """The background [SIZE, SIZE, 3]: the colour darkened to 0.5, plain, a vertical gradient
    (0.5 at the top to 0.15 at the bottom) or diagonal stripes of period 4 (0.5 and 0.2)."""
    base = torch.tensor(COLORS[color]) * 0.5
    ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                            indexing="ij")
    if kind == "plain":
        level = torch.ones(SIZE, SIZE)
    elif kind == "gradient":
        level = 1.0 - 0.7 * ys / (SIZE - 1)
    elif kind == "striped":
        level = torch.where(((xs + ys) % 4) < 2, 1.0, 0.4)
    else:
        raise ValueError(f"unknown background {kind!r}")
    return level[..., None] * base


def render(scene):
    """(image [SIZE, SIZE, 3] in [0, 1], mask [SIZE, SIZE] bool: coverage above one half)."""
    cover = (coverage(scene.shape, scene.size, scene.cx, scene.cy) > 0.5).float()  # hard edges: the judge reads them exactly
    image = background(scene.background, scene.bg_color) * (1 - cover[..., None]) \
        + cover[..., None] * torch.tensor(COLORS[scene.color])
    return image, cover > 0.5


def render_batch(scenes):
    """(images [B, SIZE, SIZE, 3], masks [B, SIZE, SIZE]) of a list of scenes."""
    images, masks = zip(*(render(s) for s in scenes))
    return torch.stack(images), torch.stack(masks)


# ---------------------------------------------------------------------------------------------
# the judge: attributes read back from a picture, against the renderer's own drawing

_TEMPLATES = None


def _templates():
    """Every mask the renderer can draw: (masks [T, SIZE*SIZE] float, [(shape, size, cx, cy)])."""
    global _TEMPLATES
    if _TEMPLATES is None:
        keys = [(shape, size, cx, cy) for shape in SHAPES for size in SIZES
                for cx in _centres(size) for cy in _centres(size)]
        masks = torch.stack([coverage(*k) > 0.5 for k in keys]).flatten(1).float()
        backgrounds = [(kind, color) for color in COLORS for kind in BACKGROUNDS]
        pictures = torch.stack([background(kind, color) for kind, color in backgrounds])
        _TEMPLATES = (masks, keys, pictures, backgrounds)
    return _TEMPLATES


def shape_mask(images):
    """[B, SIZE, SIZE] bool: the bright pixels (largest channel above BRIGHT)."""
    return images.amax(dim=-1) > BRIGHT


def iou(a, b):
    """Intersection over union of bool masks [B, H, W] -> [B] (1 where both are empty)."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def judge(images):
    """Read each picture [B, SIZE, SIZE, 3] back: a list of dicts {color, shape, shape_iou,
    background, bg_color, mask [SIZE, SIZE] bool}; color/shape None where no pixel is bright."""
    images = images.to(torch.float32).clamp(0, 1)
    masks = shape_mask(images)
    templates, keys, pictures, backgrounds = _templates()
    palette = torch.tensor(list(COLORS.values()))
    names = list(COLORS)
    flat = masks.flatten(1).float()
    inter = flat @ templates.T
    union = flat.sum(1, keepdim=True) + templates.sum(1)[None] - inter
    ious = inter / union.clamp(min=1)
    out = []
    for b in range(images.shape[0]):
        mask = masks[b]
        result = {"mask": mask, "color": None, "shape": None, "shape_iou": 0.0}
        if mask.any():
            mean = images[b][mask].mean(0)
            result["color"] = names[int(((palette - mean) ** 2).sum(1).argmin())]
            best = int(ious[b].argmax())
            result["shape"], result["shape_iou"] = keys[best][0], float(ious[b, best])
        outside = ~mask
        if outside.any():
            errors = ((pictures[:, outside] - images[b][outside][None]) ** 2).mean(dim=(1, 2))
            result["background"], result["bg_color"] = backgrounds[int(errors.argmin())]
        else:
            result["background"], result["bg_color"] = None, None
        out.append(result)
    return out


def hits(judged, scenes):
    """Per-attribute agreement of judge() results with the scenes meant: {"color": [B] bool,
    "shape": ..., "background": ... (colour and kind both right)}."""
    return {
        "color": torch.tensor([j["color"] == s.color for j, s in zip(judged, scenes)]),
        "shape": torch.tensor([j["shape"] == s.shape for j, s in zip(judged, scenes)]),
        "background": torch.tensor([(j["background"], j["bg_color"]) == (s.background, s.bg_color)
                                    for j, s in zip(judged, scenes)]),
    }


def psnr_outside(a, b, mask):
    """PSNR (dB, peak 1) of pictures a against b [B, H, W, 3] over the pixels where `mask`
    [B, H, W] is False; inf where they agree exactly."""
    keep = (~mask)[..., None].to(a.dtype)
    mse = (((a - b) ** 2) * keep).flatten(1).sum(1) / (keep.flatten(1).sum(1) * 3).clamp(min=1)
    return torch.where(mse > 0, -10 * torch.log10(mse.clamp(min=1e-30)), torch.full_like(mse, math.inf))
