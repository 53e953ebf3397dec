"""The MELD reader (erc.corpus.meld): the real csvs from ../shared and small malformed
csvs written byte by byte into tmp_path, plus a fake MELD.Raw clip tree."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from erc.corpus import CorpusError, detect_format, read_corpus
from erc.corpus.meld import LABELS, read_meld
from tests.conftest import checked, make_clip, shared_path

HEADER = (b"Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,"
          b"Season,Episode,StartTime,EndTime\n")


def row(n: int, text: bytes, dia: int | str, utt: int | str, emotion: bytes = b"neutral",
        speaker: bytes = b"Chandler") -> bytes:
    """One MELD csv record; text is written as is (quote it yourself when needed)."""
    return (str(n).encode() + b"," + text + b"," + speaker + b"," + emotion + b",neutral,"
            + str(dia).encode() + b"," + str(utt).encode()
            + b',8,21,"00:16:16,059","00:16:21,731"\n')


def write_meld(folder: Path, rows: list[bytes], name: str = "train_sent_emo.csv",
               header: bytes = HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(header + b"".join(rows))
    return folder


def problems_by_uid(result) -> dict[str, dict]:
    return {p["utterance_id"]: p for p in result.problems.to_pylist()}


def rows_by_uid(result) -> dict[str, dict]:
    return {r["utterance_id"]: r for r in result.utterances.to_pylist()}


# --- the real corpus -----------------------------------------------------------------


def test_real_meld():
    path = shared_path("data", "meld")
    assert detect_format(path) == "meld"
    result = checked(read_corpus(path))
    t = result.utterances
    # Dialogue 369 is one turn, Ross's "!": no word, and no media without a media root.
    assert [(p["utterance_id"], p["reason"]) for p in result.problems.to_pylist()] == [
        ("meld/train/dia369_utt0", "missing_field")]
    splits = Counter(t.column("split").to_pylist())
    assert splits == {"train": 9988, "dev": 1109}
    dialogues = Counter(s for s, _ in set(zip(t.column("split").to_pylist(),
                                                t.column("dialogue_id").to_pylist())))
    assert dialogues == {"train": 1037, "dev": 114}
    assert set(t.column("emotion").to_pylist()) == set(LABELS)
    assert len(set(t.column("utterance_id").to_pylist())) == t.num_rows
    assert set(t.column("corpus").to_pylist()) == {"meld"}
    assert "Chandler" in set(t.column("speaker").to_pylist())
    first = t.slice(0, 1).to_pylist()[0]
    assert first["utterance_id"] == "meld/train/dia0_utt0"
    assert first["dialogue_id"] == "dia0" and first["turn"] == 0
    assert first["media_path"] is None  # no media_root given
    meta = dict(first["meta"])
    assert meta["season"] == "8" and meta["episode"] == "21"
    assert meta["expected_duration_s"] == "5.672"


# --- malformed csvs ------------------------------------------------------------------


def test_missing_column(tmp_path):
    header = b"Sr No.,Utterance,Speaker,Sentiment,Dialogue_ID,Utterance_ID\n"
    write_meld(tmp_path, [b"1,Hi,Ross,neutral,0,0\n"], header=header)
    with pytest.raises(CorpusError, match="Emotion"):
        read_meld(tmp_path)


def test_no_csv_at_all(tmp_path):
    with pytest.raises(CorpusError):
        read_meld(tmp_path)
    write_meld(tmp_path, [row(1, b"Hi.", 0, 0)])
    with pytest.raises(CorpusError):
        read_meld(tmp_path, splits=["dev"])


def test_one_split_file_given_alone_reads_as_meld(tmp_path):
    """`erc evaluate MODEL test_sent_emo.csv` (the held-out file, not its folder) read the
    file as a manifest: "missing column(s) dialogue_id, speaker" of a file that has
    Dialogue_ID and Speaker. One MELD csv given alone is MELD, its split alone."""
    write_meld(tmp_path, [row(1, b"Hi.", 0, 0)])
    write_meld(tmp_path, [row(1, b"Yo.", 3, 0), row(2, b"Oh.", 3, 1, emotion=b"blah")],
               name="test_sent_emo.csv")
    file = tmp_path / "test_sent_emo.csv"
    assert detect_format(file) == "meld"
    result = checked(read_corpus(file))
    assert list(rows_by_uid(result)) == ["meld/test/dia3_utt0"]
    assert [(p["split"], p["reason"]) for p in result.problems.to_pylist()] == [
        ("test", "unknown_label")]
    with pytest.raises(CorpusError, match="none of the requested splits"):
        read_corpus(file, options={"splits": ["train"]})  # the file is test's
    (tmp_path / "notes.csv").write_bytes(HEADER)
    assert detect_format(tmp_path / "notes.csv") != "meld"  # another name: not a MELD file


def test_unknown_label(tmp_path):
    write_meld(tmp_path, [row(1, b"Hi.", 0, 0), row(2, b"Yay!", 0, 1, emotion=b"happy"),
                          row(3, b"Oh.", 0, 2, emotion=b"Sadness")])
    result = checked(read_meld(tmp_path))
    assert result.utterances.num_rows == 2
    kept = rows_by_uid(result)
    assert kept["meld/train/dia0_utt2"]["emotion"] == "sadness"  # case folded
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "unknown_label"
    assert problem["utterance_id"] == "meld/train/dia0_utt1"
    assert "happy" in problem["detail"]
    assert problem["line"] == 3 and problem["split"] == "train"
    assert problem["source"].endswith("train_sent_emo.csv")


def test_duplicate_id(tmp_path):
    write_meld(tmp_path, [row(1, b"Hi.", 0, 0), row(2, b"Hey.", 0, 1), row(3, b"Hi again.", 0, 0)])
    result = checked(read_meld(tmp_path))
    assert result.n_input == 3 and result.utterances.num_rows == 2
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "duplicate_id"
    assert problem["utterance_id"] == "meld/train/dia0_utt0"
    assert problem["line"] == 4
    assert "first seen" in problem["detail"] and ":2" in problem["detail"]
    # The first occurrence is the one kept.
    assert rows_by_uid(result)["meld/train/dia0_utt0"]["text"] == "Hi."


def test_one_turn_written_two_ways_is_one_id(tmp_path):
    """"0", "0.0" and "+0" are one turn, "00" and "0" one dialogue: the second row is a
    duplicate, not a second utterance at the same place of the dialogue."""
    write_meld(tmp_path, [row(1, b"Hi.", 0, 0), row(2, b"Hi again.", 0, "0.0"),
                          row(3, b"Yo.", "00", "+1"), row(4, b"Yo again.", 0, "01")])
    result = checked(read_meld(tmp_path))
    assert sorted(rows_by_uid(result)) == ["meld/train/dia0_utt0", "meld/train/dia0_utt1"]
    assert [(p["line"], p["reason"]) for p in result.problems.to_pylist()] == [
        (3, "duplicate_id"), (5, "duplicate_id")]
    assert rows_by_uid(result)["meld/train/dia0_utt1"]["dialogue_id"] == "dia0"


def test_a_dialogue_number_written_as_a_decimal_is_that_number(tmp_path):
    """A MELD csv saved again by pandas writes Dialogue_ID 1 as "1.0" (a float column): its
    rows were all set aside as missing_field ('is not a number'), as was an id too large."""
    write_meld(tmp_path, [row(1, b"Hi.", "1.0", 0), row(2, b"Yo.", "+1", "1.0"),
                          row(3, b"So.", "9" * 12, 0), row(4, b"Hm.", "1.5", 0)])
    result = checked(read_meld(tmp_path))
    assert sorted(rows_by_uid(result)) == ["meld/train/dia1_utt0", "meld/train/dia1_utt1"]
    assert [(p["line"], p["reason"], p["detail"]) for p in result.problems.to_pylist()] == [
        (4, "missing_field", f"Dialogue_ID '{'9' * 12}' is not a whole number from 0 to 2147483647"),
        (5, "missing_field", "Dialogue_ID '1.5' is not a whole number from 0 to 2147483647")]


def test_missing_field(tmp_path):
    write_meld(tmp_path, [row(1, b"Hi.", 0, 0), row(2, b"Who?", 0, 1, speaker=b""),
                          row(3, b"What?", b"x", 2)])
    result = checked(read_meld(tmp_path))
    assert result.utterances.num_rows == 1
    reasons = Counter(result.problems.column("reason").to_pylist())
    assert reasons == {"missing_field": 2}


def test_encodings(tmp_path):
    rows = [
        row(1, b"Clean line.", 0, 0),                                   # line 2
        row(2, b'"First line\nsecond line, with a comma"', 0, 1),       # lines 3-4
        row(3, b"I\x92m fine.", 0, 2),                                  # line 5: cp1252
        row(4, b"Bad \x81\x8d bytes.", 0, 3),                           # line 6: undecodable
        row(5, "It\u00e2\u20ac\u2122s mojibake.".encode("utf-8"), 0, 4),  # line 7
        row(6, "Caf\u00e9 \u2019ok\u2019.".encode("utf-8"), 0, 5),      # line 8: clean UTF-8
    ]
    write_meld(tmp_path, rows)
    result = checked(read_meld(tmp_path))
    assert result.n_input == 6 and result.utterances.num_rows == 5
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "bad_encoding"
    assert problem["utterance_id"] == "meld/train/dia0_utt3"
    assert problem["line"] == 6
    assert "UTF-8" in problem["detail"] and "cp1252" in problem["detail"]
    kept = rows_by_uid(result)
    assert kept["meld/train/dia0_utt0"]["text"] == "Clean line."
    # The quoted field is read whole; its line break becomes a space (base.clean_text).
    assert kept["meld/train/dia0_utt1"]["text"] == "First line second line, with a comma"
    assert kept["meld/train/dia0_utt2"]["text"] == "I\u2019m fine."
    assert kept["meld/train/dia0_utt4"]["text"] == "It\u2019s mojibake."
    assert kept["meld/train/dia0_utt5"]["text"] == "Caf\u00e9 \u2019ok\u2019."
    # cp1252 row, mojibake row and line break are repairs; the clean rows are not.
    assert sum(result.repairs.values()) == 3


def test_c1_apostrophes(tmp_path):
    # MELD's cp1252 apostrophes once decoded as Latin-1 (U+0092, bytes C2 92 in a UTF-8
    # file) and that read once more as cp1252 ("\u00c2\u2019") are the training text's
    # "\u2019": left as they were, the tokenizer drops the control character ("dont").
    rows = [row(1, "I don\u0092t know.".encode("utf-8"), 0, 0),
            row(2, "I don\u00c2\u2019t know.".encode("utf-8"), 0, 1),
            row(3, "\u00c2\u00a35 for \u00c2me.".encode("utf-8"), 0, 2)]
    result = checked(read_meld(write_meld(tmp_path, rows)))
    kept = rows_by_uid(result)
    assert kept["meld/train/dia0_utt0"]["text"] == "I don\u2019t know."
    assert kept["meld/train/dia0_utt1"]["text"] == "I don\u2019t know."
    # "\u00c2" before a letter is no mojibake (no UTF-8 sequence): the text stays.
    assert kept["meld/train/dia0_utt2"]["text"] == "\u00c2\u00a35 for \u00c2me."
    assert sum(result.repairs.values()) == 2


def test_utf8_bom_and_crlf(tmp_path):
    data = b"\xef\xbb\xbf" + HEADER.replace(b"\n", b"\r\n") + row(1, b"Hi.", 3, 0).replace(b"\n", b"\r\n")
    (tmp_path / "dev_sent_emo.csv").write_bytes(data)
    result = checked(read_meld(tmp_path))
    [kept] = result.utterances.to_pylist()
    assert kept["utterance_id"] == "meld/dev/dia3_utt0" and kept["text"] == "Hi."


# --- media ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def meld_raw(tmp_path_factory) -> Path:
    """A fake MELD.Raw tree: train_splits/dia0_utt0.mp4 and a macOS ._dia0_utt1.mp4."""
    root = tmp_path_factory.mktemp("media") / "MELD.Raw"
    make_clip(root / "train_splits" / "dia0_utt0.mp4", seconds=0.4)
    (root / "train_splits" / "._dia0_utt1.mp4").write_bytes(b"\x00\x05\x16\x07 resource fork")
    return root


def test_missing_media(tmp_path, meld_raw):
    write_meld(tmp_path / "csv", [row(1, b"Hi.", 0, 0), row(2, b"Hey.", 0, 1)])
    result = checked(read_meld(tmp_path / "csv", media_root=meld_raw))
    [kept] = result.utterances.to_pylist()
    assert kept["utterance_id"] == "meld/train/dia0_utt0"
    assert kept["media_path"] == str(meld_raw / "train_splits" / "dia0_utt0.mp4")
    assert Path(kept["media_path"]).is_file()
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "missing_media"
    assert problem["utterance_id"] == "meld/train/dia0_utt1"
    assert "dia0_utt1.mp4" in problem["detail"]


def test_keep_missing_media(tmp_path, meld_raw):
    write_meld(tmp_path / "csv", [row(1, b"Hi.", 0, 0), row(2, b"Hey.", 0, 1)])
    result = checked(read_meld(tmp_path / "csv", media_root=meld_raw, keep_missing_media=True))
    assert result.problems.num_rows == 0
    kept = rows_by_uid(result)
    assert kept["meld/train/dia0_utt0"]["media_path"].endswith("dia0_utt0.mp4")
    assert kept["meld/train/dia0_utt1"]["media_path"] is None
    # the clip it lacks is named, for preprocessing to say so (not "no media")
    assert dict(kept["meld/train/dia0_utt1"]["meta"])["missing_media"] == "dia0_utt1.mp4 (the train clips)"
    assert "missing_media" not in dict(kept["meld/train/dia0_utt0"]["meta"])


def test_media_root_without_clip_folders(tmp_path):
    write_meld(tmp_path / "csv", [row(1, b"Hi.", 0, 0)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="clip folder"):
        read_meld(tmp_path / "csv", media_root=tmp_path / "empty")



def test_stray_byte_in_id_is_a_problem_row(tmp_path):
    """One bad byte spoils one record, not the file: a stray b"\xb2" in Utterance_ID
    decodes (cp1252) to "²", which str.isdigit accepts but int() rejects; the record is a
    bad_turn problem and the read goes on."""
    bad = row(2, b"Hey.", 0, 1).replace(b",0,1,8,21,", b",0,\xb2,8,21,")
    assert b"\xb2" in bad
    write_meld(tmp_path, [row(1, b"Hi.", 0, 0), bad, row(3, b"Ho.", 0, 2)])
    result = checked(read_meld(tmp_path))
    assert result.utterances.column("utterance_id").to_pylist() == [
        "meld/train/dia0_utt0", "meld/train/dia0_utt2"]
    assert [(p["line"], p["reason"]) for p in result.problems.to_pylist()] == [(3, "bad_turn")]


def test_a_folder_by_a_split_csv_s_name_is_an_error_not_a_missing_split(tmp_path):
    """A folder named train_sent_emo.csv was passed over as an absent split: the train
    rows were lost without a word while the dev csv was read."""
    write_meld(tmp_path, [row(1, b"Hi.", 0, 0)], name="dev_sent_emo.csv")
    (tmp_path / "train_sent_emo.csv").mkdir()
    with pytest.raises(CorpusError, match="train_sent_emo.csv: is a folder"):
        read_meld(tmp_path)
