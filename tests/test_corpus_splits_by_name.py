"""A manifest folder without a mapping: a file (or folder) named as a split gives its rows
that split, a split column wins over the name, other names take the split option; and a
row set aside at the CSV level still takes its place in its dialogue."""

from __future__ import annotations

from pathlib import Path

from erc.cli import main
from erc.corpus import read_corpus
from erc.corpus.inspect import format_inspection, inspect_corpus
from erc.summary import format_summary, summarise

HEADER = "dialogue_id,speaker,text"


def write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_file_or_folder_named_as_a_split_gives_its_rows_that_split(tmp_path):
    write(tmp_path / "train.csv", HEADER, "1,Ann,hi", "1,Bob,yo")
    write(tmp_path / "valid.csv", HEADER, "1,Ann,dev hi")
    write(tmp_path / "test.csv", HEADER + ",split", "1,Ann,t,test", "2,Bob,x,train")
    write(tmp_path / "extra.csv", HEADER, "3,Ann,more")
    write(tmp_path / "Dev" / "part-0.csv", HEADER, "5,Cy,in a folder")
    result = read_corpus(tmp_path, format="manifest")
    by_split = {}
    for r in result.utterances.to_pylist():
        by_split.setdefault(r["split"], []).append((r["dialogue_id"], r["turn"], r["text"]))
    assert sorted(by_split["dev"]) == [("1", 0, "dev hi"), ("5", 0, "in a folder")]
    assert sorted(by_split["test"]) == [("1", 0, "t")]
    assert sorted(by_split["train"]) == [("1", 0, "hi"), ("1", 1, "yo"), ("2", 0, "x"),
                                         ("3", 0, "more")]
    summary = summarise(result)
    assert summary["split_sources"]["dev"] == {"Dev/part-0.csv: its name": 1,
                                               "valid.csv: its name": 1}
    assert summary["split_sources"]["train"] == {"train.csv: its name": 2,
                                                 "test.csv: its split column": 1,
                                                 "extra.csv: the split option": 1}
    # dialogue 1 is in train, dev and test files: told, not merged
    assert any("appear in files of different splits" in note for note in summary["notes"])
    text = format_summary(summary)
    assert "splits from:" in text and "valid.csv: its name (1 rows)" in text


def test_the_mapping_s_files_split_wins_over_the_column_the_name_does_not(tmp_path):
    write(tmp_path / "dev.csv", HEADER + ",split", "1,Ann,a,test", "2,Ann,b,")
    named = read_corpus(tmp_path, format="manifest").utterances.to_pylist()
    assert sorted((r["dialogue_id"], r["split"]) for r in named) == [("1", "test"), ("2", "dev")]
    mapped = read_corpus(tmp_path, format="manifest", options={"files": {"train": "dev.csv"}})
    assert set(mapped.utterances.column("split").to_pylist()) == {"train"}


def test_inspect_shows_the_split_the_ingest_gives_by_the_name(tmp_path):
    write(tmp_path / "train.csv", HEADER, "1,Ann,hi")
    write(tmp_path / "validation.csv", HEADER, "1,Ann,hi")
    inspection = inspect_corpus(tmp_path)
    assert "files" not in inspection.mapping  # the names say it already
    assert [split for _, _, split in inspection.files] == ["train", "dev"]
    assert "validation.csv: 1 rows (split dev, from its name" in format_inspection(inspection)


def test_a_row_set_aside_at_the_csv_level_keeps_its_place_in_its_dialogue(tmp_path, capsys):
    big = "x" * 200
    write(tmp_path / "m.csv", HEADER + ",emotion",
          f"1,Ann,{big},joy", "1,Bob,second,joy",  # field_too_large
          "2,Ann,a,b,c,joy", "2,Bob,second,joy",  # bad_field_count: commas in the text
          '3,Ann,"never closed,joy', "3,Bob,second,joy",  # unterminated_quote
          "4,Ann,first,joy", "4,Bob,second,joy")
    result = read_corpus(tmp_path / "m.csv", options={"max_field_bytes": 100})
    kept = {r["dialogue_id"]: r["utterance_id"] for r in result.utterances.to_pylist()
            if r["text"] == "second"}
    assert kept == {"1": "m/train/1/1", "2": "m/train/2/1", "3": "m/train/3/1",
                    "4": "m/train/4/1"}
    problems = {p["reason"]: p["utterance_id"] for p in result.problems.to_pylist()}
    assert problems == {"field_too_large": "m/train/1/0", "bad_field_count": "m/train/2/0",
                        "unterminated_quote": "m/train/3/0"}


def test_a_shifted_value_counts_in_no_wrong_dialogue(tmp_path):
    """A cut row: the columns after the text cannot be told, so the row counts nowhere
    rather than in the dialogue a shifted value names; commas in the text before the
    dialogue column leave it readable from the right."""
    write(tmp_path / "m.csv", "text,speaker,dialogue_id", "a,1", "x,Bob,1",
          "b,c,Ann,2", "y,Bob,2")
    rows = read_corpus(tmp_path / "m.csv").utterances.to_pylist()
    assert [r["utterance_id"] for r in rows] == ["m/train/1/0", "m/train/2/1"]


def test_ingest_prints_where_each_split_came_from(tmp_path, capsys):
    write(tmp_path / "c" / "test.csv", HEADER, "1,Ann,hi")
    assert main(["corpus", "ingest", str(tmp_path / "c"), "--format", "manifest",
                 "--out", str(tmp_path / "out")]) == 0
    assert "test: test.csv: its name (1 rows)" in capsys.readouterr().out
