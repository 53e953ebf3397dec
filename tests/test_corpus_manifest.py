"""The generic manifest reader (erc.corpus.manifest): CSV, JSON Lines and Parquet forms,
malformed rows written into tmp_path, and the shipped sample manifest."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from erc.corpus import CorpusError, detect_format, read_corpus
from erc.corpus.manifest import read_manifest
from tests.conftest import by_uid, checked, make_clip


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=0.4)


@pytest.fixture
def corpus_dir(tmp_path, clip) -> Path:
    """tmp_path/corpus with clips/a.mp4, clips/b.mp4, audio/a.wav; tmp_path/outside.mp4."""
    root = tmp_path / "corpus"
    for name in ("clips/a.mp4", "clips/b.mp4", "audio/a.wav"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip, root / name)
    shutil.copy(clip, tmp_path / "outside.mp4")
    return root


# --- the shipped sample ----------------------------------------------------------------


def test_sample_manifest(sample_manifest):
    assert detect_format(sample_manifest) == "manifest"
    result = checked(read_corpus(sample_manifest))
    t = result.utterances
    assert result.problems.num_rows == 0 and t.num_rows == 84
    assert len(set(t.column("dialogue_id").to_pylist())) == 12
    assert set(t.column("split").to_pylist()) == {"train", "dev", "test"}
    assert all(Path(p).is_file() for p in t.column("media_path").to_pylist())
    first = by_uid(t)["sample_d01_t00"]
    assert first["corpus"] == "manifest"  # the manifest's stem
    assert first["media_path"] == str(sample_manifest.parent / "clips" / "sample_d01_t00.mp4")
    assert {"source_file", "intensity", "gender"} <= set(dict(first["meta"]))


# --- one table, three formats ------------------------------------------------------------

ROWS = [
    {"dialogue_id": "d1", "speaker": "Ann", "text": "Hello.", "emotion": "Happy",
     "media": "clips/a.mp4", "start": 0.5, "end": 1.5, "mood": "sunny"},
    {"dialogue_id": "d1", "speaker": "Bob", "text": "Hi, Ann.", "emotion": "neutral",
     "media": "clips/b.mp4", "start": None, "end": None, "mood": None},
    {"dialogue_id": "d2", "speaker": "Ann", "text": "Bye.", "emotion": None,
     "media": None, "start": None, "end": None, "mood": "rainy"},
    {"dialogue_id": "d1", "speaker": "Ann", "text": "Where?", "emotion": "sad",
     "media": None, "start": None, "end": None, "mood": None},
]


def _csv_rows(rows):
    return [{k: ("" if v is None else v) for k, v in r.items()} for r in rows]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_formats_agree(corpus_dir, suffix):
    reference = checked(read_manifest(write_csv(corpus_dir / "m.csv", _csv_rows(ROWS))))
    path = corpus_dir / f"m{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, ROWS)
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert detect_format(path) == "manifest"
    result = checked(read_corpus(path))
    assert result.problems.num_rows == 0
    assert result.utterances.equals(reference.utterances), (
        result.utterances.to_pylist(), reference.utterances.to_pylist())


def test_defaults_and_meta(corpus_dir):
    result = checked(read_manifest(write_csv(corpus_dir / "m.csv", _csv_rows(ROWS))))
    rows = result.utterances.to_pylist()
    # Default id <corpus>/<split>/<dialogue>/<turn>; turns by order of appearance per dialogue.
    assert [(r["utterance_id"], r["turn"]) for r in rows] == [
        ("m/train/d1/0", 0), ("m/train/d1/1", 1), ("m/train/d2/0", 0), ("m/train/d1/2", 2)]
    first = rows[0]
    assert first["corpus"] == "m" and first["split"] == "train" and first["emotion"] == "happy"
    assert first["media_path"] == str(corpus_dir / "clips" / "a.mp4")
    assert (first["start_s"], first["end_s"]) == (0.5, 1.5)
    assert dict(first["meta"]) == {"mood": "sunny"}
    assert rows[1]["meta"] == [] and rows[1]["start_s"] is None
    assert rows[2]["media_path"] is None and rows[2]["emotion"] is None
    # Reader options: corpus name and default split.
    named = checked(read_manifest(corpus_dir / "m.csv", corpus="mine", split="dev"))
    assert named.utterances.column("utterance_id").to_pylist()[0] == "mine/dev/d1/0"


def test_explicit_columns(corpus_dir):
    path = write_csv(corpus_dir / "m.csv", [
        {"utterance_id": "u-9", "split": "test", "dialogue_id": "d", "turn": "4", "speaker": "A",
         "text": "x", "audio": "audio/a.wav", "corpus": "other"},
        {"utterance_id": "", "split": "", "dialogue_id": "d", "turn": "", "speaker": "B",
         "text": "y", "audio": "", "corpus": ""},
    ])
    rows = checked(read_manifest(path)).utterances.to_pylist()
    assert rows[0]["utterance_id"] == "u-9" and rows[0]["split"] == "test" and rows[0]["turn"] == 4
    assert rows[0]["corpus"] == "other"
    assert rows[0]["audio_path"] == str(corpus_dir / "audio" / "a.wav")
    assert rows[1]["utterance_id"] == "m/train/d/0" and rows[1]["corpus"] == "m"


def test_erc_s_own_utterance_table_reads_back_as_the_same_rows(corpus_dir):
    """utterances.parquet read as a manifest kept its media_path, audio_path, start_s and
    end_s columns in meta (and its meta map as one JSON text in meta), its rows without
    media or times."""
    first = checked(read_manifest(write_csv(corpus_dir / "m.csv", _csv_rows(ROWS)), corpus="c"))
    assert first.utterances.column("media_path").to_pylist()[0] is not None
    pq.write_table(first.utterances, corpus_dir / "utterances.parquet")
    again = checked(read_manifest(corpus_dir / "utterances.parquet"))
    assert again.utterances.to_pylist() == first.utterances.to_pylist()
    # A column of the file's own keeps its field: a media column wins over media_path.
    table = pa.Table.from_pylist([{"dialogue_id": "d", "speaker": "A", "media": "clips/b.mp4",
                                   "media_path": "clips/a.mp4", "meta": [("k", "v")], "k": "own"}])
    pq.write_table(table, corpus_dir / "both.parquet")
    [row] = checked(read_manifest(corpus_dir / "both.parquet")).utterances.to_pylist()
    assert row["media_path"] == str(corpus_dir / "clips" / "b.mp4")
    assert dict(row["meta"]) == {"media_path": "clips/a.mp4", "k": "own"}


# --- malformed input ---------------------------------------------------------------------


def test_missing_column_csv(tmp_path):
    path = write_csv(tmp_path / "m.csv", [{"dialogue_id": "d", "text": "hi"}])
    with pytest.raises(CorpusError, match="speaker"):
        read_manifest(path)
    path = write_csv(tmp_path / "n.csv", [{"dialogue_id": "d", "speaker": "A", "emotion": "joy"}])
    with pytest.raises(CorpusError, match="text or a media"):
        read_manifest(path)


def test_missing_column_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"speaker": "A", "text": "hi"}])
    with pytest.raises(CorpusError, match="dialogue_id"):
        read_manifest(path)


def test_a_json_line_lacking_a_key_is_its_rows_problem_on_any_line(tmp_path):
    """JSON Lines have no header: the file's columns are the keys of all its lines, so a
    first line without a speaker is set aside like any other, not the whole file."""
    path = write_jsonl(tmp_path / "m.jsonl", [{"dialogue_id": "d", "text": "hi"},
                                              {"dialogue_id": "d", "speaker": "A", "text": "yo"}])
    result = checked(read_manifest(path))
    assert result.utterances.column("speaker").to_pylist() == ["A"]
    assert [(p["line"], p["reason"]) for p in result.problems.to_pylist()] == [(1, "missing_field")]


def test_empty_manifest(tmp_path):
    (tmp_path / "m.csv").write_text("dialogue_id,speaker,text\n")
    with pytest.raises(CorpusError):
        read_manifest(tmp_path / "m.csv")
    with pytest.raises(CorpusError):
        read_manifest(tmp_path / "absent.csv")


def test_labels_option(tmp_path):
    path = write_csv(tmp_path / "m.csv", [
        {"dialogue_id": "d", "speaker": "A", "text": "a", "emotion": "Joy"},
        {"dialogue_id": "d", "speaker": "B", "text": "b", "emotion": "rage"},
        {"dialogue_id": "d", "speaker": "A", "text": "c", "emotion": ""},
    ])
    assert checked(read_manifest(path)).problems.num_rows == 0
    result = checked(read_manifest(path, labels=["joy", "Sadness"]))
    assert result.utterances.column("emotion").to_pylist() == ["joy", None]
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "unknown_label" and "rage" in problem["detail"]
    assert problem["line"] == 3


def test_numbered_labels(tmp_path):
    """Labels given as numbers (``labels: [0, 1]`` in YAML) were refused as no strings; a
    corpus labelled 0..6 names its label set as it writes it."""
    path = write_csv(tmp_path / "m.csv", [
        {"dialogue_id": "d", "speaker": "A", "text": "a", "emotion": "0"},
        {"dialogue_id": "d", "speaker": "B", "text": "b", "emotion": "7"},
    ])
    result = checked(read_manifest(path, labels=[0, 1]))
    assert result.utterances.column("emotion").to_pylist() == ["0"]
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "unknown_label" and "'7' not in ['0', '1']" in problem["detail"]


def test_duplicate_id(tmp_path):
    path = write_csv(tmp_path / "m.csv", [
        {"utterance_id": "x", "dialogue_id": "d", "speaker": "A", "text": "a"},
        {"utterance_id": "y", "dialogue_id": "d", "speaker": "B", "text": "b"},
        {"utterance_id": "x", "dialogue_id": "e", "speaker": "C", "text": "c"},
    ])
    result = checked(read_manifest(path))
    assert result.utterances.column("utterance_id").to_pylist() == ["x", "y"]
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "duplicate_id" and problem["utterance_id"] == "x"
    assert problem["line"] == 4 and "first seen" in problem["detail"]


def test_bad_time_and_missing_field(tmp_path):
    path = write_csv(tmp_path / "m.csv", [
        {"dialogue_id": "d", "speaker": "A", "text": "ok", "media": "", "start": "1", "end": "2"},
        {"dialogue_id": "d", "speaker": "A", "text": "same", "media": "", "start": "2", "end": "2"},
        {"dialogue_id": "d", "speaker": "A", "text": "inverted", "media": "", "start": "3", "end": "1"},
        {"dialogue_id": "d", "speaker": "A", "text": "garbled", "media": "", "start": "1s", "end": "2"},
        {"dialogue_id": "d", "speaker": "A", "text": "", "media": "", "start": "", "end": ""},
        {"dialogue_id": "", "speaker": "A", "text": "no dialogue", "media": "", "start": "", "end": ""},
        {"dialogue_id": "d", "speaker": " ", "text": "no speaker", "media": "", "start": "", "end": ""},
        {"dialogue_id": "d", "speaker": "A", "text": "bad turn", "media": "", "start": "", "end": "",
         "turn": "-1"},
        # ids of nothing visible (a control character, a zero-width space): no one, nowhere
        {"dialogue_id": "d", "speaker": "\x01", "text": "invisible speaker", "media": ""},
        {"dialogue_id": "\u200b", "speaker": "A", "text": "invisible dialogue", "media": ""},
    ], columns=["dialogue_id", "speaker", "text", "media", "start", "end", "turn"])
    result = checked(read_manifest(path))
    assert result.utterances.column("text").to_pylist() == ["ok"]
    got = [(p["line"], p["reason"]) for p in result.problems.to_pylist()]
    assert got == [(3, "bad_time"), (4, "bad_time"), (5, "bad_time"), (6, "missing_field"),
                   (7, "missing_field"), (8, "missing_field"), (9, "bad_turn"),
                   (10, "missing_field"), (11, "missing_field")]
    details = [p["detail"] for p in result.problems.to_pylist()]
    assert "[2.0, 2.0]" in details[0] and "[3.0, 1.0]" in details[1] and "1s" in details[2]
    assert "neither text nor media" in details[3]


def test_invalid_json_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"dialogue_id": "d", "speaker": "A", "text": "a"}\n'
                    '{"dialogue_id": "d", "speaker": "B", "text": \n'
                    '\n'
                    '["not", "an", "object"]\n'
                    '{"dialogue_id": "d", "speaker": "A", "text": "c"}\n')
    result = checked(read_manifest(path))
    assert result.utterances.column("utterance_id").to_pylist() == ["m/train/d/0", "m/train/d/1"]
    got = [(p["line"], p["reason"]) for p in result.problems.to_pylist()]
    assert got == [(2, "malformed_row"), (4, "malformed_row")]
    details = [p["detail"] for p in result.problems.to_pylist()]
    assert "invalid JSON" in details[0] and "must be an object" in details[1]


def test_media_paths(corpus_dir):
    rows = [
        {"dialogue_id": "d", "speaker": "A", "text": "in", "media": "clips/a.mp4"},
        {"dialogue_id": "d", "speaker": "B", "text": "gone", "media": "clips/gone.mp4"},
        {"dialogue_id": "d", "speaker": "A", "text": "out", "media": "../outside.mp4"},
        {"dialogue_id": "d", "speaker": "B", "text": "abs", "media": str(corpus_dir / "clips" / "b.mp4")},
    ]
    path = write_csv(corpus_dir / "m.csv", rows)
    result = checked(read_manifest(path))
    assert result.utterances.column("text").to_pylist() == ["in", "abs"]
    problems = {p["line"]: p for p in result.problems.to_pylist()}
    assert problems[3]["reason"] == "missing_media" and "gone.mp4" in problems[3]["detail"]
    assert problems[4]["reason"] == "path_outside_root" and "../outside.mp4" in problems[4]["detail"]

    allowed = checked(read_manifest(path, allow_outside_root=True))
    assert allowed.utterances.column("text").to_pylist() == ["in", "out", "abs"]
    out = by_uid(allowed.utterances)["m/train/d/2"]  # its row's place, "gone" set aside or not
    assert out["media_path"] == str(corpus_dir.parent / "outside.mp4")
    assert Path(out["media_path"]).is_file()
    assert [p["reason"] for p in allowed.problems.to_pylist()] == ["missing_media"]

    kept = checked(read_manifest(path, keep_missing_media=True))
    gone = [r for r in kept.utterances.to_pylist() if r["text"] == "gone"]
    assert len(gone) == 1 and gone[0]["media_path"] is None
    assert [p["reason"] for p in kept.problems.to_pylist()] == ["path_outside_root"]


def test_a_manifest_in_a_subfolder_names_media_anywhere_in_the_corpus_folder(corpus_dir):
    """Media paths of a manifest the mapping's files: found in a subfolder were held to
    that subfolder: clips beside it in the corpus folder were path_outside_root."""
    (corpus_dir / "splits").mkdir()
    write_csv(corpus_dir / "splits" / "train.csv", [
        {"dialogue_id": "d", "speaker": "A", "text": "up", "media": "../clips/a.mp4"},
        {"dialogue_id": "d", "speaker": "B", "text": "out", "media": "../../outside.mp4"}])
    result = checked(read_manifest(corpus_dir, files="splits/{split}.csv"))
    assert result.utterances.column("media_path").to_pylist() == [str(corpus_dir / "clips" / "a.mp4")]
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "path_outside_root" and f"escapes {corpus_dir} " in problem["detail"]


def test_absolute_and_symlinked_paths_cannot_escape_the_root(corpus_dir):
    """An absolute path elsewhere, a symlink inside the root that points outside it, and
    an escaping audio column are set aside as path_outside_root (symlinks are resolved
    before the check); allow_outside_root=True lets them in."""
    outside = corpus_dir.parent / "outside.mp4"
    (corpus_dir / "clips" / "link.mp4").symlink_to(outside)
    rows = [
        {"dialogue_id": "d", "speaker": "A", "text": "abs", "media": str(outside), "audio": ""},
        {"dialogue_id": "d", "speaker": "B", "text": "link", "media": "clips/link.mp4", "audio": ""},
        {"dialogue_id": "d", "speaker": "A", "text": "audio", "media": "clips/a.mp4",
         "audio": "audio/../../outside.mp4"},
        {"dialogue_id": "d", "speaker": "B", "text": "in", "media": "clips/a.mp4", "audio": "audio/a.wav"},
    ]
    path = write_csv(corpus_dir / "m.csv", rows)
    result = checked(read_manifest(path))
    assert result.utterances.column("text").to_pylist() == ["in"]
    problems = result.problems.to_pylist()
    assert [p["reason"] for p in problems] == ["path_outside_root"] * 3
    assert [p["line"] for p in problems] == [2, 3, 4]

    allowed = checked(read_manifest(path, allow_outside_root=True))
    assert allowed.utterances.column("text").to_pylist() == ["abs", "link", "audio", "in"]
    assert allowed.problems.num_rows == 0


def test_media_only_row_needs_existing_media(corpus_dir):
    path = write_csv(corpus_dir / "m.csv", [
        {"dialogue_id": "d", "speaker": "A", "text": "", "media": "clips/a.mp4"},
        {"dialogue_id": "d", "speaker": "B", "text": "", "media": "clips/gone.mp4"},
    ])
    result = checked(read_manifest(path, keep_missing_media=True))
    assert result.utterances.column("media_path").to_pylist() == [str(corpus_dir / "clips" / "a.mp4")]
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "missing_field" and "neither text nor media" in problem["detail"]


def test_encodings_csv(tmp_path):
    data = (b"dialogue_id,speaker,text\n"
            b"d,A,Clean.\n"                       # line 2
            b'd,B,"Two\nlines, quoted"\n'         # lines 3-4
            b"d,A,I\x92m fine.\n"                 # line 5: cp1252
            b"d,B,Bad \x81\x8d bytes.\n"          # line 6: undecodable
            b"d,A,After.\n")                      # line 7
    (tmp_path / "m.csv").write_bytes(data)
    result = checked(read_manifest(tmp_path / "m.csv"))
    assert result.utterances.column("text").to_pylist() == [
        "Clean.", "Two lines, quoted", "I\u2019m fine.", "After."]
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "bad_encoding" and problem["line"] == 6
    assert "cp1252" in problem["detail"]
    assert sum(result.repairs.values()) == 2  # cp1252 and the line break


def test_encodings_jsonl(tmp_path):
    data = (b'{"dialogue_id": "d", "speaker": "A", "text": "I\x92m fine."}\n'
            b'{"dialogue_id": "d", "speaker": "B", "text": "Bad \x81\x8d."}\n'
            b'{"dialogue_id": "d", "speaker": "A", "text": "ok"}\n')
    (tmp_path / "m.jsonl").write_bytes(data)
    result = checked(read_manifest(tmp_path / "m.jsonl"))
    assert result.utterances.column("text").to_pylist() == ["I\u2019m fine.", "ok"]
    assert [(p["line"], p["reason"]) for p in result.problems.to_pylist()] == [(2, "bad_encoding")]
    assert sum(result.repairs.values()) == 1


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_numeric_dialogue_ids(tmp_path, suffix):
    """JSON and Parquet keep numbers as numbers: dialogue 0 is a dialogue like dialogue 1
    (as "0" is in a CSV manifest)."""
    rows = [{"dialogue_id": 0, "speaker": "A", "text": "first"},
            {"dialogue_id": 0, "speaker": "B", "text": "second"},
            {"dialogue_id": 1, "speaker": "A", "text": "third"}]
    path = tmp_path / f"m{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    result = checked(read_manifest(path))
    assert [(p["line"], p["reason"], p["detail"]) for p in result.problems.to_pylist()] == []
    assert result.utterances.column("utterance_id").to_pylist() == [
        "m/train/0/0", "m/train/0/1", "m/train/1/0"]
    assert result.utterances.column("dialogue_id").to_pylist() == ["0", "0", "1"]




def test_infinite_turn_is_a_problem_row(tmp_path):
    """A malformed turn is a bad_turn problem (as "-1" or "two" are); it must not abort
    the whole read."""
    path = tmp_path / "m.csv"
    path.write_text("dialogue_id,speaker,text,turn\n"
                    "d,A,ok,0\n"
                    "d,B,word turn,two\n"
                    "d,A,infinite turn,inf\n")
    result = checked(read_manifest(path))
    assert result.utterances.column("text").to_pylist() == ["ok"]
    assert [(p["line"], p["reason"]) for p in result.problems.to_pylist()] == [
        (3, "bad_turn"), (4, "bad_turn")]


def test_a_bad_turn_keeps_the_rows_own_id(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("utterance_id,dialogue_id,speaker,text,turn\n"
                    "u0,d,A,ok,0\nu1,d,B,bad turn,-1\n")
    result = checked(read_manifest(path))
    assert [(p["utterance_id"], p["reason"]) for p in result.problems.to_pylist()] == [
        ("u1", "bad_turn")]


def test_nan_time_is_bad_time(tmp_path):
    """"nan" is no time: the row is a bad_time problem, not kept with a NaN start."""
    path = tmp_path / "m.csv"
    path.write_text("dialogue_id,speaker,text,start,end\n"
                    "d,A,ok,1,2\n"
                    "d,A,nan start,nan,2\n")
    result = checked(read_manifest(path))
    assert result.utterances.column("text").to_pylist() == ["ok"], result.utterances.to_pylist()
    assert [(p["line"], p["reason"]) for p in result.problems.to_pylist()] == [(3, "bad_time")]


def test_an_ingest_flag_a_format_does_not_take_names_the_flag(tmp_path, capsys):
    """`--split train` on a manifest said "unknown key 'splits' (did you mean 'split'?)":
    an option the user never wrote, and a suggestion that does something else (a
    manifest's split is the split of its rows, not a filter)."""
    from erc.cli import main

    (tmp_path / "m.csv").write_text("dialogue_id,speaker,text\nd,Ann,Hi.\n")
    for flag in (["--split", "train"], ["--media-root", str(tmp_path)]):
        assert main(["corpus", "ingest", str(tmp_path / "m.csv"), *flag,
                     "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert f"{flag[0]} (option" in err and "does not apply to the manifest format" in err
        assert "did you mean" not in err


def test_default_ids_of_names_holding_a_slash_do_not_collide(tmp_path):
    """The default id joins corpus, split, dialogue and turn with "/": a dialogue "a/b" in
    split "train" and dialogue "b" in split "train/a" were one id, the second row set
    aside as a duplicate."""
    path = tmp_path / "m.csv"
    path.write_text("split,dialogue_id,speaker,text\ntrain,a/b,Ann,Hi.\ntrain/a,b,Bob,Yo.\n"
                    "train,50%,Cy,Ok.\n")
    result = read_corpus(path, format="manifest", corpus="c")
    assert result.problems.num_rows == 0
    assert sorted(result.utterances.column("utterance_id").to_pylist()) == [
        "c/train%2Fa/b/0", "c/train/50%25/0", "c/train/a%2Fb/0"]


def test_a_manifest_path_that_is_a_pipe_is_an_error_not_its_folder(tmp_path):
    """A manifest named by a path that is a pipe (or a device) was read as its folder:
    the other manifests beside it were ingested under its name."""
    import os

    (tmp_path / "other.csv").write_text("dialogue_id,speaker,text\nd,Ann,Hi.\n")
    os.mkfifo(tmp_path / "m.csv")
    with pytest.raises(CorpusError, match="not a regular file or a folder"):
        read_corpus(tmp_path / "m.csv", format="manifest")


def test_a_second_utterance_at_the_same_turn_is_a_duplicate_turn(tmp_path):
    """Two rows at one turn of one dialogue under ids of their own (MELD's Utterance_ID
    mapped to turn, another column to utterance_id) were both kept: the dialogue's order
    was whatever the file's was. The second is a problem row; another dialogue or split
    may use the turn."""
    path = tmp_path / "m.csv"
    path.write_text("utterance_id,split,dialogue_id,turn,speaker,text\n"
                    "a,train,d,0,Ann,Hi.\nb,train,d,1,Bob,Yo.\nc,train,d,1,Cy,Me too.\n"
                    "e,train,e,1,Cy,Other dialogue.\nf,dev,d,1,Cy,Other split.\n")
    result = checked(read_manifest(path))
    assert result.utterances.column("utterance_id").to_pylist() == ["a", "b", "e", "f"]
    [problem] = result.problems.to_pylist()
    assert (problem["line"], problem["utterance_id"], problem["reason"]) == (4, "c", "duplicate_turn")
    assert "turn 1 of dialogue 'd' first seen at" in problem["detail"] and "m.csv:3" in problem["detail"]


def test_a_row_set_aside_is_not_named_by_the_id_of_the_row_kept_after_it(tmp_path):
    """Without turns, a default id names the row's place in its dialogue: a row set aside
    holds its place (its problem names the id it has once fixed), so no kept row takes
    its id."""
    path = tmp_path / "m.csv"
    path.write_text("dialogue_id,speaker,text,start,end\n"
                    "d,Ann,Hi.,,\nd,Bob,Bad time.,5,4\nd,,No speaker.,,\nd,Cy,Yo.,,\n")
    result = checked(read_manifest(path, corpus="c"))
    assert result.utterances.column("utterance_id").to_pylist() == ["c/train/d/0", "c/train/d/3"]
    assert [(p["line"], p["utterance_id"]) for p in result.problems.to_pylist()] == [
        (3, "c/train/d/1"), (4, "c/train/d/2")]


def test_fixing_a_row_set_aside_renames_no_other_row(tmp_path):
    """Default ids counted the kept rows of a dialogue: fixing (or losing) one row renamed
    every later row of its dialogue, so a second ingest of the same utterances gave them
    other ids. The turns by order count every row of the dialogue."""
    rows = ["d,Ann,Hi.,,", "e,Eve,Other dialogue.,,", "d,Bob,Bad time.,5,4", "d,,No speaker.,,",
            "d,Cy,Yo.,,", "e,Eve,Again.,,"]
    header = "dialogue_id,speaker,text,start,end\n"
    path = tmp_path / "m.csv"
    path.write_text(header + "\n".join(rows) + "\n")
    before = {r["text"]: (r["utterance_id"], r["turn"])
              for r in checked(read_manifest(path, corpus="c")).utterances.to_pylist()}
    rows[2:4] = ["d,Bob,Good time.,4,5", "d,Dan,A speaker.,,"]
    path.write_text(header + "\n".join(rows) + "\n")
    fixed = checked(read_manifest(path, corpus="c"))
    after = {r["text"]: (r["utterance_id"], r["turn"]) for r in fixed.utterances.to_pylist()}
    assert fixed.problems.num_rows == 0
    assert before == {t: after[t] for t in before} == {
        "Hi.": ("c/train/d/0", 0), "Other dialogue.": ("c/train/e/0", 0),
        "Yo.": ("c/train/d/3", 3), "Again.": ("c/train/e/1", 1)}
    assert after["Good time."] == ("c/train/d/1", 1) and after["A speaker."] == ("c/train/d/2", 2)


@pytest.mark.parametrize("files", [None, "*.csv"])
def test_a_folder_by_a_manifest_s_name_is_an_error_not_passed_over(tmp_path, files):
    """A folder named dev.csv among a folder's manifests was passed over: its split lost
    without a word while the other files were read."""
    write_csv(tmp_path / "train.csv", [{"dialogue_id": "d", "speaker": "A", "text": "Hi."}])
    (tmp_path / "dev.csv").mkdir()
    with pytest.raises(CorpusError, match="dev.csv: is a folder"):
        read_manifest(tmp_path, **({"files": files} if files else {}))


def test_a_missing_label_written_as_a_word_is_no_label(tmp_path):
    """'nan' (pandas' NaN as text) and 'None' (Python's) were kept as emotion classes of
    their own, trained on beside the real labels; they are unknown_label problems unless
    labels or label_map name them."""
    path = write_csv(tmp_path / "m.csv", [
        {"dialogue_id": "d", "speaker": "A", "text": t, "emotion": e}
        for t, e in [("a", "joy"), ("b", "nan"), ("c", "None"), ("d", " NULL "), ("e", "")]])
    result = checked(read_manifest(path))
    assert result.utterances.column("emotion").to_pylist() == ["joy", None]
    problems = result.problems.to_pylist()
    assert [(p["line"], p["reason"]) for p in problems] == [(3, "unknown_label"), (4, "unknown_label"),
                                                            (5, "unknown_label")]
    assert "missing value written as a word" in problems[0]["detail"]
    named = checked(read_manifest(path, labels=["joy", "none"]))
    assert named.utterances.column("emotion").to_pylist() == ["joy", "none", None]
    mapped = checked(read_manifest(path, label_map={"joy": "joy", "nan": "neutral"}))
    assert mapped.utterances.column("emotion").to_pylist() == ["joy", "neutral", None]


def test_a_tsv_manifest_reads_as_tab_separated(tmp_path, capsys):
    """A .tsv manifest was refused ('manifest must be .csv, ...'), and inspect refused it
    too, though tab-separated values are a CSV of another delimiter."""
    from erc.cli import main

    path = tmp_path / "calls.tsv"
    path.write_text("dialogue_id\tspeaker\ttext\temotion\n007\t01\tHi, you.\tJoy\n")
    assert detect_format(path) == "manifest"
    rows = checked(read_manifest(path)).utterances.to_pylist()
    assert [(r["dialogue_id"], r["speaker"], r["text"], r["emotion"]) for r in rows] == [
        ("007", "01", "Hi, you.", "joy")]
    assert main(["corpus", "inspect", str(path)]) == 0
    assert '"dialogue_id"' in capsys.readouterr().out


def test_media_paths_written_on_windows_find_their_files(tmp_path):
    """A manifest made on Windows names its clips with backslashes (clips\\a.wav): every
    row's media was a missing_media problem though the files were there."""
    (tmp_path / "clips" / "sub").mkdir(parents=True)
    for name in ("a.wav", "sub/b.wav"):
        (tmp_path / "clips" / name).write_bytes(b"RIFF")
    (tmp_path / "m.csv").write_text("dialogue_id,speaker,text,media,audio\n"
                                    "d,Ann,Hi,clips\\a.wav,\n"
                                    "d,Bob,Yo,,clips\\sub\\b.wav\n"
                                    "d,Cy,Hey,clips\\none.wav,\n")
    result = checked(read_manifest(tmp_path / "m.csv"))
    rows = by_uid(result.utterances)
    assert rows["m/train/d/0"]["media_path"] == str(tmp_path / "clips" / "a.wav")
    assert rows["m/train/d/1"]["audio_path"] == str(tmp_path / "clips" / "sub" / "b.wav")
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "missing_media" and problem["detail"].endswith("clips/none.wav does not exist")


def test_a_row_after_the_largest_turn_is_a_bad_turn_row(tmp_path):
    """A row without a turn after one at turn 2**31 - 1 took turn 2**31, which the
    utterance table's int32 cannot hold: the ingest stopped with an internal error."""
    path = tmp_path / "m.csv"
    path.write_text("dialogue_id,speaker,text,turn\nd,A,last,2147483647\nd,B,after,\ne,C,other,\n")
    result = checked(read_manifest(path))
    assert result.utterances.column("text").to_pylist() == ["last", "other"]
    assert [(p["line"], p["reason"]) for p in result.problems.to_pylist()] == [(3, "bad_turn")]


def test_a_parquet_date_python_cannot_hold_is_an_error_naming_the_file(tmp_path):
    """A Parquet timestamp beyond year 9999 stopped the ingest with an internal error
    (OverflowError), not an error naming the file."""
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"dialogue_id": ["d"], "speaker": ["A"], "text": ["Hi."],
                             "when": pa.array([2**60], pa.timestamp("ms"))}), path)
    with pytest.raises(CorpusError, match="m.parquet: a date, time or duration"):
        read_manifest(path)
