"""Reference photos as cameras and tools write them: a phone photo stored sideways with an
EXIF orientation, a 16-bit greyscale PNG. ``load_photo`` hands the face detector the
upright, visible picture (before: the sideways pixels, and a white 16-bit photo)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from erc.qc.faces import load_photo


def _photo() -> Image.Image:
    """A 60x40 (wide) picture with a dark left half."""
    pixels = np.full((40, 60, 3), 200, np.uint8)
    pixels[:, :30] = 20
    return Image.fromarray(pixels)


def test_exif_orientation_is_applied(tmp_path):
    upright = _photo()
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    frame = load_photo(tmp_path / "phone.jpg")
    assert frame.shape == (40, 60, 3)
    assert frame[:, :25].mean() < 60 and frame[:, 35:].mean() > 150


def test_sixteen_bit_greyscale_png_keeps_its_picture(tmp_path):
    grey = np.asarray(_photo().convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode.startswith("I")
    frame = load_photo(tmp_path / "scan.png")
    assert frame.shape == (40, 60, 3) and frame.dtype == np.uint8
    assert frame[:, :25].mean() < 60 and frame[:, 35:].mean() > 150


def test_uniform_sixteen_bit_png_is_a_black_frame(tmp_path):
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(tmp_path / "flat.png")
    frame = load_photo(tmp_path / "flat.png")
    assert frame.shape == (8, 8, 3) and not frame.any()
