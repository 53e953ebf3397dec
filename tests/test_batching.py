"""The preprocessing stages call each model once per batch of utterances (on a GPU every
sampled frame of every clip through the face detector; on a CPU each clip's frames on their
own, see ``FaceStage``; every face through the embedder, every clip through the speaker and
text models); the bench's sequential loop calls them once per utterance. Both must give the
same features, to a stated tolerance:

| what                     | tolerance                                                  |
|--------------------------|------------------------------------------------------------|
| face boxes (MTCNN)       | 1e-3 pixel; scores 1e-5; same number of faces per frame    |
| face embeddings (dlib)   | 1e-5 per component                                         |
| speaker (Resemblyzer)    | 1e-5 per component (the LSTM runs the partials together)   |
| text (MiniLM)            | 1e-5 per component (padding is masked)                     |
| transcripts              | tests/test_backends_asr.py: equal texts and words          |

On real clips of the shipped sample corpus and the offline profile's real weights.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from erc.backends.registry import load_backend, profile_specs
from erc.media.decode import decode_utterance
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SAMPLE = REPO / "erc" / "samples" / "ravdess_dialogues"


@pytest.fixture(scope="module")
def utterances():
    with open(SAMPLE / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:12]
    decoded = [decode_utterance(str(SAMPLE / row["media"])) for row in rows]
    assert all(d.ok and d.frames for d in decoded)
    return rows, decoded


@pytest.fixture(scope="module")
def models():
    specs = profile_specs("offline")
    return {role: load_backend(specs[role], device="cpu")
            for role in ("face_detect", "face_embed", "speaker", "text")}


def test_faces_of_many_clips_at_once_equal_clip_by_clip(utterances, models):
    _, decoded = utterances
    frames = [frame for d in decoded for frame in d.frames]
    detected = models["face_detect"].detect(frames)
    embedded = models["face_embed"].embed(frames, [[f.box for f in fs] for fs in detected])
    at = 0
    for d in decoded:
        alone = models["face_detect"].detect(d.frames)
        rows = models["face_embed"].embed(d.frames, [[f.box for f in fs] for fs in alone])
        for k, (found, vectors) in enumerate(zip(alone, rows)):
            together = detected[at + k]
            assert len(found) == len(together) >= 1
            for a, b in zip(found, together):
                assert np.allclose(a.box, b.box, atol=1e-3) and abs(a.score - b.score) <= 1e-5
            assert np.allclose(vectors, embedded[at + k], atol=1e-5)
        at += len(d.frames)


def test_speaker_and_text_of_many_clips_at_once_equal_clip_by_clip(utterances, models):
    rows, decoded = utterances
    speakers = models["speaker"].embed([d.audio for d in decoded])
    for k, d in enumerate(decoded):
        assert np.allclose(models["speaker"].embed([d.audio])[0], speakers[k], atol=1e-5)
    lines = [row["text"] for row in rows] + [  # lengths that need padding in a batch
        "Okay.", "I can't believe you did that to me, after all these years of being friends!"]
    texts = models["text"].embed(lines)
    for k, line in enumerate(lines):
        assert np.allclose(models["text"].embed([line])[0], texts[k], atol=1e-5)
