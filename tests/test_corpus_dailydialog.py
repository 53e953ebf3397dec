"""The DailyDialog reader (erc.corpus.dailydialog) on release-shaped folders built in
tmp_path: its split folders, the top-level files, and the release's quirks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from erc.corpus import CorpusError, detect_format, read_corpus
from tests.conftest import by_uid, checked

DIALOGUES = [  # (text line, emotion line, act line) as the release writes them
    ("Say , Jim , how about going for a few beers after dinner ? __eou__ You know that is "
     "tempting but is really not good for our fitness . __eou__ What do you mean ? __eou__",
     "0 0 0", "3 4 2"),
    ("Can you do push-ups ? __eou__ Of course I can . __eou__", "0 4", "2 1"),
    ("Oops . __eou__ The labels count one turn . __eou__", "1", "1 1"),  # counts differ
    ("I hate it ! __eou__", "1 ", "1"),
]


def write_split(folder: Path, name: str, rows, act: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = f"_{name}" if name else "_text"
    (folder / f"dialogues{suffix}.txt").write_text("".join(r[0] + "\n" for r in rows))
    label = f"_{name}" if name else ""
    (folder / f"dialogues_emotion{label}.txt").write_text("".join(r[1] + "\n" for r in rows))
    if act:
        (folder / f"dialogues_act{label}.txt").write_text("".join(r[2] + "\n" for r in rows))


def test_release_split_folders(tmp_path):
    write_split(tmp_path / "train", "train", DIALOGUES)
    write_split(tmp_path / "validation", "validation", DIALOGUES[:2], act=False)
    (tmp_path / "dialogues_text.txt").write_text("Not read : the split folders hold it . __eou__\n")
    assert detect_format(tmp_path) == "dailydialog"
    result = checked(read_corpus(tmp_path))
    rows = by_uid(result.utterances)
    assert Counter(r["split"] for r in rows.values()) == {"train": 6, "dev": 5}
    first = rows["dailydialog/train/0/0"]
    assert first["text"] == "Say , Jim , how about going for a few beers after dinner ?"
    assert first["emotion"] == "neutral" and first["dialogue_id"] == "0" and first["turn"] == 0
    assert dict(first["meta"]) == {"party": "A", "act": "directive"}
    second = rows["dailydialog/train/1/1"]
    assert second["emotion"] == "joy" and second["speaker"] == "train/1/B"
    assert rows["dailydialog/train/3/0"]["emotion"] == "anger"  # a trailing space is no label
    assert dict(rows["dailydialog/dev/0/0"]["meta"]) == {"party": "A"}  # no act file
    # the dialogue whose labels count 1 of its 2 turns: both turns set aside, not guessed
    problems = result.problems.to_pylist()
    assert [(p["utterance_id"], p["reason"]) for p in problems] == [
        ("dailydialog/train/2/0", "malformed_row"), ("dailydialog/train/2/1", "malformed_row")]
    assert "2 turns but 1 emotion labels" in problems[0]["detail"] and problems[0]["line"] == 3
    assert result.n_input == 13


def test_top_level_files_are_the_train_split(tmp_path):
    write_split(tmp_path, "", DIALOGUES[:2])
    result = checked(read_corpus(tmp_path, "dailydialog"))
    assert set(result.utterances.column("split").to_pylist()) == {"train"}
    assert result.utterances.num_rows == 5


def test_bad_label_lines_and_missing_files(tmp_path):
    write_split(tmp_path / "train", "train",
                [("A . __eou__ B . __eou__", "0 9", "1 1"), ("C . __eou__", "x", "1"),
                 ("D . __eou__ E . __eou__", "0 6", "1 1"), ("F . __eou__", "", "")])
    emotion = tmp_path / "train" / "dialogues_emotion_train.txt"
    emotion.write_text("0 9\nx\n0 6\n")  # one line short of the text file
    result = checked(read_corpus(tmp_path))
    assert result.utterances.num_rows == 2
    details = [p["detail"] for p in result.problems.to_pylist()]
    assert len(details) == 4
    assert "emotion line '0 9' is not ids 0-6" in details[0]
    assert "no line in the emotion file" in details[-1]
    emotion.unlink()
    with pytest.raises(CorpusError, match="dialogues_emotion_train.txt: missing"):
        read_corpus(tmp_path)
    with pytest.raises(CorpusError, match="no DailyDialog dialogues_text.txt"):
        read_corpus(tmp_path / "train", "dailydialog")
    with pytest.raises(CorpusError, match="splits: \\['validation'\\] are not DailyDialog splits"):
        read_corpus(tmp_path, "dailydialog", splits=["validation"])


def test_ingest_command_reads_dailydialog(tmp_path, capsys):
    from erc.cli import main

    write_split(tmp_path / "dd" / "train", "train", DIALOGUES)
    write_split(tmp_path / "dd" / "test", "test", DIALOGUES[:1])
    assert main(["corpus", "ingest", str(tmp_path / "dd"), "--out", str(tmp_path / "out"),
                 "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "3 input rows -> 3 utterances kept" in out and "(corpus: dailydialog)" in out


@pytest.mark.parametrize("name", ["test/dialogues_test.txt", "train/dialogues_emotion_train.txt",
                                  "train/dialogues_act_train.txt"])
def test_a_folder_by_a_file_s_name_is_an_error_naming_it(tmp_path, name):
    """A folder where a split's text (or label) file belongs was passed over as absent:
    that split's dialogues lost without a word, or its labels called missing."""
    write_split(tmp_path / "train", "train", DIALOGUES[:2], act=False)
    (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / name).mkdir(parents=True)
    with pytest.raises(CorpusError, match=f"{Path(name).name}: is a folder"):
        read_corpus(tmp_path, "dailydialog")


def test_an_empty_turn_is_a_problem_not_an_utterance_of_no_text(tmp_path):
    """``a __eou__ __eou__ b __eou__`` (and a line of a lone marker) kept a turn whose text
    was "" as an utterance: no words and no media, trained on as if it said something."""
    write_split(tmp_path, "", [("A . __eou__ __eou__ B . __eou__", "0 0 4", "1 1 1"),
                               ("__eou__", "0", "1")])
    result = checked(read_corpus(tmp_path, "dailydialog"))
    rows = by_uid(result.utterances)
    assert sorted(rows) == ["dailydialog/train/0/0", "dailydialog/train/0/2"]
    assert rows["dailydialog/train/0/2"]["emotion"] == "joy"  # labels stay with their turns
    assert [(p["utterance_id"], p["reason"]) for p in result.problems.to_pylist()] == [
        ("dailydialog/train/0/1", "missing_field"), ("dailydialog/train/1/0", "missing_field")]
    assert "turn 1 is empty" in result.problems.to_pylist()[0]["detail"]


def test_a_carriage_return_ends_no_dialogue(tmp_path):
    """A dialogue is a line ending at "\\n": a stray "\\r" inside one split it in two, and a
    file whose line ends were converted twice ("\\r\\r\\n") read a blank line after each
    dialogue, so every later dialogue took another line's labels (X and Y below read as
    joy) or was set aside, with the dialogue ids shifted."""
    (tmp_path / "dialogues_text.txt").write_bytes(
        b"A . __eou__ B\r b . __eou__\r\r\nX . __eou__ Y . __eou__\r\r\nP . __eou__ Q . __eou__\r\r\n")
    (tmp_path / "dialogues_emotion.txt").write_bytes(b"0 0\r\r\n1 1\r\r\n4 4\r\r\n")
    (tmp_path / "dialogues_act.txt").write_bytes(b"1 1\r\n1 2\r\n1 1\r\n")
    result = checked(read_corpus(tmp_path, "dailydialog"))
    rows = by_uid(result.utterances)
    assert result.problems.num_rows == 0 and result.n_input == 6
    assert {uid: r["emotion"] for uid, r in rows.items()} == {
        "dailydialog/train/0/0": "neutral", "dailydialog/train/0/1": "neutral",
        "dailydialog/train/1/0": "anger", "dailydialog/train/1/1": "anger",
        "dailydialog/train/2/0": "joy", "dailydialog/train/2/1": "joy"}
    assert rows["dailydialog/train/0/1"]["text"] == "B  b ."  # the "\r" is no part of the text
    assert dict(rows["dailydialog/train/1/1"]["meta"]) == {"party": "B", "act": "question"}


def test_act_lines_that_do_not_match_are_counted_and_extra_label_lines_noted(tmp_path):
    """An act line of another turn count, of a bad id or missing left the act out of a
    turn's meta without a word; it is now a counted repair (the turns and their emotions
    are kept). An emotion file longer than the text file was read without a word: a note
    says the two may not belong together."""
    write_split(tmp_path, "", [("A . __eou__ B . __eou__", "0 4", "1"),   # one act for two turns
                               ("C . __eou__", "0", "9"),                  # no act 9
                               ("D . __eou__", "1", "2"),
                               ("E . __eou__", "1", "")])
    (tmp_path / "dialogues_act.txt").write_text("1\n9\n2\n")  # no line for the last dialogue
    (tmp_path / "dialogues_emotion.txt").write_text("0 4\n0\n1\n1\n0 0\n")  # a line too many
    result = checked(read_corpus(tmp_path, "dailydialog"))
    rows = by_uid(result.utterances)
    assert len(rows) == 5 and result.problems.num_rows == 0
    assert dict(rows["dailydialog/train/2/0"]["meta"]) == {"party": "A", "act": "question"}
    assert "act" not in dict(rows["dailydialog/train/0/1"]["meta"])
    assert result.repairs == {"dailydialog act line does not match its dialogue's turns: act left out": 4}
    [note] = result.notes
    assert "dialogues_emotion.txt: 1 more line(s) than" in note and "dialogues_text.txt" in note
