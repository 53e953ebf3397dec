"""The RAVDESS reader (erc.corpus.ravdess): the 16 kHz speech set from ../shared and small
trees of RAVDESS-named files in tmp_path (the reader goes by names; it opens no file)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from erc.corpus import CorpusError, detect_format, read_corpus
from erc.corpus.ravdess import LABELS, read_ravdess
from erc.errors import ConfigError
from tests.conftest import by_uid, checked, make_clip, shared_path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "tone.wav", seconds=0.3, video=False)


def tree(root: Path, clip: Path, names: list[str]) -> Path:
    for name in names:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, target)
    return root


# --- the real corpus -----------------------------------------------------------------


def test_real_ravdess():
    path = shared_path("assets", "speech", "ravdess16k")
    assert detect_format(path) == "ravdess"
    result = checked(read_corpus(path))
    t = result.utterances
    assert t.num_rows == 1080 and result.problems.num_rows == 0
    assert len(set(t.column("speaker").to_pylist())) == 18
    assert set(t.column("emotion").to_pylist()) == set(LABELS) and len(LABELS) == 8
    assert Counter(t.column("split").to_pylist()) == {"train": 840, "test": 240}
    for r in t.select(["speaker", "split", "dialogue_id", "media_path", "audio_path"]).to_pylist():
        actor = int(r["speaker"].removeprefix("Actor_"))
        assert r["split"] == ("train" if actor <= 14 else "test"), r
        assert r["dialogue_id"] == r["speaker"]
        assert r["audio_path"] == r["media_path"]  # 03-... = audio-only
    # Each actor is one "dialogue" of 60 turns 0..59.
    turns: dict[str, list[int]] = {}
    for d, turn in zip(t.column("dialogue_id").to_pylist(), t.column("turn").to_pylist()):
        turns.setdefault(d, []).append(turn)
    assert all(sorted(v) == list(range(60)) for v in turns.values()), turns


# --- names -----------------------------------------------------------------------------


def test_good_names(tmp_path, clip):
    tree(tmp_path, clip, ["Actor_01/03-01-05-02-01-02-01.wav",
                          "Actor_01/01-01-03-01-02-01-01.mp4",
                          "Actor_02/03-01-01-01-01-01-02.flac",
                          "Actor_02/._03-01-01-01-01-02-02.flac",   # macOS junk: ignored
                          "Actor_02/README.txt"])                   # not media: ignored
    assert detect_format(tmp_path) == "ravdess"
    result = checked(read_ravdess(tmp_path))
    assert result.n_input == 3 and result.problems.num_rows == 0
    rows = by_uid(result.utterances)
    angry = rows["ravdess/03-01-05-02-01-02-01"]
    assert (angry["emotion"], angry["speaker"], angry["dialogue_id"], angry["split"]) == (
        "angry", "Actor_01", "Actor_01", "train")
    assert angry["text"] == "Kids are talking by the door."
    assert angry["audio_path"] == angry["media_path"] == str(tmp_path / "Actor_01/03-01-05-02-01-02-01.wav")
    assert dict(angry["meta"]) == {"modality": "audio-only", "vocal_channel": "speech",
                                   "intensity": "strong", "repetition": "02", "gender": "male"}
    video = rows["ravdess/01-01-03-01-02-01-01"]
    assert video["emotion"] == "happy" and video["audio_path"] is None
    assert video["text"] == "Dogs are sitting by the door."
    assert sorted(r["turn"] for r in rows.values() if r["dialogue_id"] == "Actor_01") == [0, 1]
    assert dict(rows["ravdess/03-01-01-01-01-01-02"]["meta"])["gender"] == "female"


def test_bad_filename(tmp_path, clip):
    tree(tmp_path, clip, ["Actor_01/03-01-01-01-01-01-01.wav",
                          "Actor_01/take two.wav",
                          "Actor_01/03-01-01-01-03-01-01.wav"])   # statement 03 does not exist
    result = checked(read_ravdess(tmp_path))
    assert result.utterances.num_rows == 1
    problems = {Path(p["source"]).name: p for p in result.problems.to_pylist()}
    assert problems["take two.wav"]["reason"] == "bad_filename"
    assert "MM-VV-EE-II-SS-RR-AA" in problems["take two.wav"]["detail"]
    assert problems["03-01-01-01-03-01-01.wav"]["reason"] == "bad_filename"
    assert "03-01-01-01-03-01-01" in problems["03-01-01-01-03-01-01.wav"]["detail"]


def test_unknown_emotion_code(tmp_path, clip):
    tree(tmp_path, clip, ["Actor_03/03-01-09-01-01-01-03.wav", "Actor_03/03-01-08-01-01-01-03.wav"])
    result = checked(read_ravdess(tmp_path))
    assert result.utterances.column("emotion").to_pylist() == ["surprised"]
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "unknown_label"
    assert problem["utterance_id"] == "ravdess/03-01-09-01-01-01-03"
    assert "09" in problem["detail"]


def test_duplicate_stem(tmp_path, clip):
    tree(tmp_path, clip, ["Actor_01/03-01-02-01-01-01-01.wav", "Actor_01/03-01-02-01-01-01-01.flac",
                          "Actor_01/03-01-02-01-01-02-01.wav"])
    result = checked(read_ravdess(tmp_path))
    assert result.utterances.num_rows == 2
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "duplicate_id"
    assert problem["utterance_id"] == "ravdess/03-01-02-01-01-01-01"
    assert "first seen" in problem["detail"]
    # Sorted order: the .flac is met first and kept, the .wav is the duplicate.
    assert problem["source"].endswith(".wav")
    assert by_uid(result.utterances)["ravdess/03-01-02-01-01-01-01"]["media_path"].endswith(".flac")


def test_actor_splits(tmp_path, clip):
    tree(tmp_path, clip, [f"Actor_{a:02d}/03-01-04-01-01-01-{a:02d}.wav" for a in (1, 2, 3, 4, 24)])
    default = checked(read_ravdess(tmp_path))
    assert {r["speaker"]: r["split"] for r in default.utterances.to_pylist()} == {
        "Actor_01": "train", "Actor_02": "train", "Actor_03": "train", "Actor_04": "train",
        "Actor_24": "test"}
    result = checked(read_ravdess(tmp_path, actor_splits={"train": "1-2", "dev": "3", "test": "24"}))
    assert {r["speaker"]: r["split"] for r in result.utterances.to_pylist()} == {
        "Actor_01": "train", "Actor_02": "train", "Actor_03": "dev", "Actor_24": "test"}
    [problem] = result.problems.to_pylist()  # actor 4 is in no split
    assert problem["reason"] == "missing_field" and "actor 4" in problem["detail"]
    with pytest.raises(ConfigError, match="actor 2"):
        read_ravdess(tmp_path, actor_splits={"train": "1-2", "test": "2-24"})


def test_no_media(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    (tmp_path / "Actor_01" / "notes.txt").write_text("nothing here")
    with pytest.raises(CorpusError):
        read_ravdess(tmp_path)
    with pytest.raises(CorpusError):
        read_ravdess(tmp_path / "absent")
