"""The ingest fingerprint covers what its output depends on: the corpus files, the media
its rows name (found or not, by size and modification time: never hashed), the folders and
files the reader read besides the corpus (a mapping file, MELD's media root), and not
erc's own outputs inside the corpus folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

from erc.recipes import CorpusConfig
from erc.stages.base import execute, up_to_date
from erc.stages.ingest import IngestStage

MELD_HEADER = ("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,"
               "Episode,StartTime,EndTime\n")


def ingest(config: CorpusConfig, out: Path):
    return execute(IngestStage(), config, {}, out, say=lambda _m: None)


def current(config: CorpusConfig, out: Path) -> tuple[bool, str]:
    return up_to_date(IngestStage(), config, {}, out)


def touch_later(path: Path) -> None:
    """A new modification time, as an editor saving the file leaves."""
    later = time.time() + 5
    os.utime(path, (later, later))


def manifest_corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    (folder / "clips").mkdir(parents=True)
    (folder / "clips" / "a.mp4").write_bytes(b"clip a")
    (folder / "m.csv").write_text("dialogue_id,speaker,text,media\n"
                                  "d,Ann,Hi.,clips/a.mp4\nd,Bob,Ho.,clips/b.mp4\n")
    return folder / "m.csv"


def test_media_added_after_an_ingest_makes_it_stale(tmp_path):
    """The issue's case: a clip that was missing_media arrives; the ingest must rerun."""
    config = CorpusConfig(path=str(manifest_corpus(tmp_path)))
    out = tmp_path / "out"
    first = ingest(config, out)
    assert first.summary["problems_by_reason"] == {"missing_media": 1}
    assert current(config, out) == (True, "up to date")
    (tmp_path / "corpus" / "clips" / "b.mp4").write_bytes(b"clip b")
    stale, why = current(config, out)
    assert not stale and "corpus, media or weights" in why
    second = ingest(config, out)
    assert not second.skipped and second.summary["kept"] == 2 and second.summary["problems"] == 0


def test_changed_media_makes_it_stale_and_outside_media_are_covered(tmp_path):
    outside = tmp_path / "elsewhere" / "c.mp4"
    outside.parent.mkdir()
    outside.write_bytes(b"clip c")
    corpus = manifest_corpus(tmp_path)
    corpus.write_text(corpus.read_text() + f"d,Cy,Hey.,{outside}\n")
    config = CorpusConfig(path=str(corpus), options={"allow_outside_root": True})
    out = tmp_path / "out"
    ingest(config, out)
    assert current(config, out)[0]
    outside.write_bytes(b"clip c, re-encoded")  # outside the corpus folder: a named media file
    assert not current(config, out)[0]
    ingest(config, out)
    touch_later(outside)
    assert not current(config, out)[0]


def test_meld_media_root_is_covered(tmp_path):
    corpus = tmp_path / "meld"
    corpus.mkdir()
    (corpus / "train_sent_emo.csv").write_text(
        MELD_HEADER + '0,Hi.,Ross,neutral,neutral,0,0,1,1,"00:00:01,000","00:00:02,000"\n'
        '1,Ho.,Rachel,joy,positive,0,1,1,1,"00:00:02,000","00:00:03,000"\n')
    clips = tmp_path / "MELD.Raw" / "train_splits"
    clips.mkdir(parents=True)
    (clips / "dia0_utt0.mp4").write_bytes(b"clip")
    config = CorpusConfig(path=str(corpus), options={"media_root": str(tmp_path / "MELD.Raw"),
                                                     "keep_missing_media": True})
    out = tmp_path / "out"
    ingest(config, out)
    assert current(config, out)[0]
    (clips / "dia0_utt1.mp4").write_bytes(b"clip")  # the missing clip arrives
    assert not current(config, out)[0]
    second = ingest(config, out)
    assert second.summary["splits"]["train"]["with_media"] == 2
    (clips / "dia9_utt9.mp4").write_bytes(b"a clip no row names")  # still a new file there
    assert not current(config, out)[0]


def test_a_mapping_file_outside_the_corpus_is_covered(tmp_path):
    corpus = manifest_corpus(tmp_path)
    mapping = tmp_path / "friends.yaml"
    mapping.write_text("corpus: friends\nkeep_missing_media: true\n")
    config = CorpusConfig(path=str(corpus), options={"mapping": str(mapping)})
    out = tmp_path / "out"
    assert ingest(config, out).summary["corpora"] == ["friends"]
    assert current(config, out)[0]
    mapping.write_text("corpus: sitcom\nkeep_missing_media: true\n")
    assert not current(config, out)[0]
    assert ingest(config, out).summary["corpora"] == ["sitcom"]


def test_an_output_inside_the_corpus_folder_does_not_make_it_stale(tmp_path):
    corpus = manifest_corpus(tmp_path)
    config = CorpusConfig(path=str(corpus.parent), format="manifest",
                          options={"files": "m.csv", "keep_missing_media": True})
    out = corpus.parent / "runs" / "ingest"
    ingest(config, out)
    assert current(config, out) == (True, "up to date")
    (corpus.parent / "notes.txt").write_text("a new file of the corpus folder")
    assert not current(config, out)[0]


def test_media_are_not_hashed(tmp_path, monkeypatch):
    """Size and modification time only: a fingerprint of a video corpus costs a walk."""
    import erc.stages.base as base

    config = CorpusConfig(path=str(manifest_corpus(tmp_path)))
    out = tmp_path / "out"
    ingest(config, out)
    hashed = []
    real = base.file_sha256
    monkeypatch.setattr(base, "file_sha256", lambda p: hashed.append(Path(p).name) or real(p))
    assert current(config, out)[0]
    assert "a.mp4" not in hashed


def test_an_output_folder_that_is_the_corpus_folder_is_refused(tmp_path):
    """An ingest written into its own corpus folder (--out the corpus, --overwrite) read its
    outputs as manifests the next time (manifest.json: "a JSON document holding a
    mapping"), and its fingerprint left the whole folder out, so an edited manifest went
    unnoticed. It is refused, and the folder is left as it was."""
    import pytest

    from erc.errors import InputError

    folder = manifest_corpus(tmp_path).parent
    config = CorpusConfig(path=str(folder), format="manifest", options={"files": "m.csv"})
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(InputError, match="is ingest.s input corpus: its results would be written over what it reads"):
        execute(IngestStage(), config, {}, folder, overwrite=True, say=lambda _m: None)
    assert sorted(p.name for p in folder.iterdir()) == before
