"""The scale corpus (erc.samples.build_scale_corpus) on the real RAVDESS assets: every
recording once, in multi-speaker dialogues, the same plan from the same seed; a few clips
built and read back as erc reads a manifest."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from erc.artifacts import load_corpus
from erc.samples.build_ravdess_dialogues import index_recordings
from erc.samples.build_scale_corpus import actors_in, build, plan
from tests.conftest import shared_path


def test_every_recording_once_in_dialogues_of_two_or_more_speakers():
    assets = shared_path("assets")
    recordings = index_recordings(assets, actors_in(assets))
    rows = plan(recordings)
    assert len(rows) >= 1000
    assert sorted(r["source_file"] for r in rows) == sorted(
        rec.path.name for recs in recordings.values() for rec in recs)
    speakers = defaultdict(list)
    for row in rows:
        speakers[row["dialogue_id"]].append(row["speaker"])
    assert all(len(set(turns)) >= 2 for turns in speakers.values())
    assert all(a != b for turns in speakers.values() for a, b in zip(turns, turns[1:]))
    assert plan(recordings) == rows  # the same seed, the same plan
    assert plan(recordings, seed=1) != rows


def test_built_clips_are_read_back_with_a_picture_per_clip(tmp_path):
    from erc.media.decode import decode_utterance

    assets = shared_path("assets")
    rows = build(assets, tmp_path, limit=6, progress=None)
    dialogues = {r["dialogue_id"] for r in rows}
    assert len(dialogues) == 1 and len(rows) >= 6  # whole dialogues
    table = load_corpus(tmp_path / "manifest.csv", format="manifest")
    assert table.column("utterance_id").to_pylist() == [r["utterance_id"] for r in rows]
    decoded = [decode_utterance(str(tmp_path / r["media"])) for r in rows[:2]]
    assert all(d.ok and d.frames and d.audio.size for d in decoded)
    # the same actor's face differs from clip to clip (varied_face)
    same_actor = [r for r in rows if r["speaker"] == rows[0]["speaker"]][:2]
    first, second = (decode_utterance(str(tmp_path / r["media"])).frames[0] for r in same_actor)
    assert first.shape == second.shape and not np.array_equal(first, second)
