"""The registry's Icon and Banner (pyproject's [tool.comfy] Icon / Banner point at them on
GitHub): docs/images/registry_icon.png (400 x 400, square, the registry's largest icon) and
docs/images/registry_banner.png (1344 x 576, 21:9). Drawn here, deterministically, so they
can be made again: `python scripts/registry_images.py` (any Python with numpy and Pillow).

The picture: seeded noise on the left, a smooth "photo" on the right, and the two coupled
paths of an exact inversion between them, one going each way."""

import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ICON = os.path.join(REPO, "docs", "images", "registry_icon.png")
BANNER = os.path.join(REPO, "docs", "images", "registry_banner.png")
ICON_SIZE = (400, 400)
BANNER_SIZE = (1344, 576)
BACKGROUND, FORWARD, BACKWARD, TEXT = (22, 24, 38), (255, 170, 60), (90, 170, 255), (235, 236, 245)


def _scene(width, height, cell=8, seed=0):
    """[height, width, 3] uint8: noise (in cells of `cell` px) fading left to right into a
    smooth gradient picture."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width] / np.array([height, width]).reshape(2, 1, 1)
    photo = np.stack([0.55 + 0.35 * xs, 0.35 + 0.4 * ys, 0.75 - 0.35 * xs * ys], axis=-1)
    disc = ((xs - 0.78) ** 2 * (width / height) ** 2 + (ys - 0.42) ** 2) < 0.03
    photo[disc] = (0.98, 0.85, 0.45)
    # coarse noise in few colours: a small PNG
    cells = rng.random((height // cell + 1, width // cell + 1, 3))
    noise = np.kron(cells, np.ones((cell, cell, 1)))[:height, :width]
    fade = np.clip((xs - 0.15) / 0.6, 0, 1)[..., None]  # 0: noise, 1: photo
    mixed = (1 - fade) * noise + fade * photo
    darkened = 0.25 * mixed + 0.75 * np.array(BACKGROUND) / 255  # the paths stay readable on it
    return (np.clip(darkened, 0, 1) * 255).round().astype(np.uint8)


def _paths(draw, box, width):
    """Two coupled sine paths across `box` (x0, y0, x1, y1) with arrow heads: one toward the
    photo (sampling), one back toward the noise (inversion)."""
    x0, y0, x1, y1 = box
    xs = np.linspace(x0, x1, 200)
    phase = (xs - x0) / (x1 - x0) * 2 * np.pi
    middle, amplitude = (y0 + y1) / 2, (y1 - y0) / 4
    for sign, colour in ((1, FORWARD), (-1, BACKWARD)):
        ys = middle + sign * amplitude * np.sin(phase)
        draw.line(list(zip(xs, ys)), fill=colour, width=width, joint="curve")
    head = 3 * width
    # sampling ends at the photo (right), inversion at the noise (left)
    draw.polygon([(x1 + head, middle), (x1 - head, middle - head), (x1 - head, middle + head)], fill=FORWARD)
    draw.polygon([(x0 - head, middle), (x0 + head, middle - head), (x0 + head, middle + head)], fill=BACKWARD)


SCALE = 4  # drawn at 4x and scaled down: smooth paths and text


def icon():
    width, height = ICON_SIZE
    image = Image.fromarray(_scene(width * SCALE, height * SCALE, cell=8 * SCALE))
    _paths(ImageDraw.Draw(image), tuple(SCALE * v for v in (60, 110, 340, 290)), width=10 * SCALE)
    return image.resize(ICON_SIZE, Image.Resampling.LANCZOS)


def banner():
    width, height = BANNER_SIZE
    image = Image.fromarray(_scene(width * SCALE, height * SCALE, cell=8 * SCALE))
    draw = ImageDraw.Draw(image)
    _paths(draw, tuple(SCALE * v for v in (80, 300, width - 80, 520)), width=12 * SCALE)
    draw.text((80 * SCALE, 70 * SCALE), "Exact Inversion", fill=TEXT, font=ImageFont.load_default(size=96 * SCALE))
    draw.text((84 * SCALE, 190 * SCALE), "EDICT · BDIA · O-BELM  for ComfyUI", fill=TEXT,
              font=ImageFont.load_default(size=44 * SCALE))
    return image.resize(BANNER_SIZE, Image.Resampling.LANCZOS)


def main():
    for path, image in ((ICON, icon()), (BANNER, banner())):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image.quantize(colors=64, dither=Image.Dither.NONE).save(path, optimize=True)
        print(f"wrote {os.path.relpath(path, REPO)} ({image.width} x {image.height}, "
              f"{os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    sys.exit(main())
