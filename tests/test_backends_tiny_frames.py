"""Frames too small to hold a face (a 1x1 or thumbnail video): MTCNN's image pyramid is
empty for them and facenet-pytorch raised ``torch.cat(): expected a non-empty list``, so
the clip failed as ``model_error``. They now have no face, and a batch mixing them with
real frames is detected as usual."""

from __future__ import annotations

import numpy as np

from erc.backends.face import MTCNNDetector
from erc.backends.registry import ModelSpec


def test_frames_smaller_than_the_minimum_face_have_no_face():
    detector = MTCNNDetector(ModelSpec("face_detect", "mtcnn", "mtcnn"), device="cpu")
    tiny = [np.zeros((1, 1, 3), np.uint8), np.full((19, 40, 3), 128, np.uint8),
            np.zeros((2, 2, 3), np.uint8)]
    fit = np.zeros((20, 20, 3), np.uint8)
    assert detector.detect(tiny + [fit]) == [[], [], [], []]
