"""Varied face pictures for assembled corpora: one actor's face frame changed by scale,
rotation, brightness, contrast, flip, blur and position, so that no two clips of an actor
show the same pixels (what the QC benchmark and the scale corpus put in their clips)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

BACKGROUND = (250, 250, 250)


def varied_face(base: Image.Image, rng: np.random.Generator) -> Image.Image:
    """``base`` (RGB) rescaled by 0.8-1.25, rotated by up to 10 degrees, brightness 0.7-1.3,
    contrast 0.8-1.2, mirrored half of the time, blurred 30 % of the time and moved by up to
    12 % / 8 % of the width / height, on a canvas of the original size; the draws come from
    ``rng`` in a fixed order (the same generator state gives the same picture)."""
    w, h = base.size
    scale = rng.uniform(0.8, 1.25)
    img = base.resize((int(w * scale), int(h * scale)), Image.BICUBIC)
    img = img.rotate(rng.uniform(-10, 10), resample=Image.BICUBIC, fillcolor=BACKGROUND)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    canvas = Image.new("RGB", (w, h), BACKGROUND)
    dx = int(rng.uniform(-0.12, 0.12) * w) - (img.width - w) // 2
    dy = int(rng.uniform(-0.08, 0.08) * h) - (img.height - h) // 2
    canvas.paste(img, (dx, dy))
    return canvas
