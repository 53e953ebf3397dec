"""Corpora in the wild read without code: a mapping (erc.corpus.mapping) as reader options
or a YAML file beside the data, and `erc corpus inspect` suggesting one. The corpus here is
shaped like the Friends scenes of EmoryNLP: one CSV per split, the dialogue a scene named
by season, episode and scene number, speakers as list literals, clock times, seven
emotions named otherwise than erc's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from erc.cli import main
from erc.corpus import CorpusError, detect_format
from erc.corpus.inspect import format_inspection, inspect_corpus, mapping_yaml
from erc.corpus.manifest import read_manifest
from erc.corpus.mapping import MAPPING_FILE, load_mapping, speaker_names
from erc.corpus.values import parse_time
from erc.errors import ErcError
from erc.summary import summarise

COLUMNS = ["Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode",
           "Start_Time", "End_Time"]
EMOTIONS = ["Joyful", "Mad", "Neutral", "Peaceful", "Powerful", "Sad", "Scared"]
PEOPLE = ["Rachel Green", "Ross Geller", "Monica Geller", "Chandler Bing"]
# What a person writes for this corpus (README, "A corpus in the wild").
MAPPING = {
    "corpus": "friends",
    "files": "friends_{split}.csv",
    "columns": {"dialogue_id": "{Season}-{Episode}-{Scene_ID}", "text": "Utterance",
                "speaker": "Speaker", "emotion": "Emotion", "start": "Start_Time",
                "end": "End_Time"},
    "label_map": {"Joyful": "joy", "Mad": "anger", "Neutral": "neutral", "Peaceful": "calm",
                  "Powerful": "confident", "Sad": "sadness", "Scared": "fear"},
}
# (split, season, episodes); every episode has scenes 1-3 (scene numbers repeat across
# episodes, so the scene alone is no dialogue id), 4 utterances each.
SPLITS = [("train", 1, (1, 2, 3)), ("dev", 2, (1,)), ("test", 3, (1,))]


def _clock(seconds: float, mark: str = ".") -> str:
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}:{seconds % 60:06.3f}".replace(".", mark)


def _good_rows(season: int, episodes) -> list[dict]:
    rows = []
    for episode in episodes:
        for scene in (1, 2, 3):
            for u in range(4):
                k = len(rows)
                start = 60.0 * scene + 4 * u + 0.25
                rows.append({
                    "Utterance": f"Line {u} of scene {scene}, episode {episode}.",
                    "Speaker": repr([PEOPLE[(scene + u) % 4]]),
                    "Emotion": EMOTIONS[k % 7], "Scene_ID": scene, "Utterance_ID": u,
                    "Season": season, "Episode": episode,
                    "Start_Time": _clock(start, "," if u % 2 else "."),
                    "End_Time": _clock(start + 3.5)})
    return rows


# Rows every reader must account for, each set aside for one reason (added to train).
BAD_ROWS = {
    "several_speakers": {"Speaker": "['Ross Geller', 'Chandler Bing']"},
    "missing_template_field": {"Season": ""},
    "bad_time": {"Start_Time": "00:61:00.000"},
    "unknown_label": {"Emotion": "Confused"},
    "missing_field": {"Speaker": "[]"},
}


def write_friends(folder: Path) -> dict[str, int]:
    """Writes friends_{train,dev,test}.csv into ``folder``; returns rows per split."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, season, episodes in SPLITS:
        rows = _good_rows(season, episodes)
        if split == "train":
            for change in BAD_ROWS.values():
                rows.append({**rows[0], "Utterance": "a row set aside", "Scene_ID": 9, **change})
        with open(folder / f"friends_{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        counts[split] = len(rows)
    return counts


@pytest.fixture
def friends(tmp_path) -> tuple[Path, dict[str, int]]:
    folder = tmp_path / "friends"
    return folder, write_friends(folder)


def checked(result):
    assert result.n_input == result.utterances.num_rows + result.problems.num_rows
    return result


# --- the acceptance: a mapping file, no code ---------------------------------------------


def test_friends_shaped_corpus_with_a_mapping_file(friends, tmp_path):
    folder, counts = friends
    (folder / MAPPING_FILE).write_text(yaml.safe_dump(MAPPING), encoding="utf-8")
    assert detect_format(folder) == "manifest"  # the mapping beside the data says so

    out = tmp_path / "out"
    assert main(["corpus", "ingest", str(folder), "--out", str(out), "--json"]) == 0
    result = checked(read_manifest(folder))
    t = result.utterances
    assert result.n_input == sum(counts.values())
    per_split = {s: t.column("split").to_pylist().count(s) for s in counts}
    assert per_split == {"train": counts["train"] - len(BAD_ROWS), "dev": counts["dev"],
                         "test": counts["test"]}
    problems = result.problems.to_pylist()
    assert sorted(p["reason"] for p in problems) == sorted(BAD_ROWS)
    assert all(p["split"] == "train" and p["source"].endswith("friends_train.csv") for p in problems)
    assert all(p["line"] > 1 and p["detail"] for p in problems)

    rows = t.to_pylist()
    first = next(r for r in rows if r["split"] == "train")
    assert first["dialogue_id"] == "1-1-1" and first["speaker"] == "Ross Geller"
    assert first["utterance_id"] == "friends/train/1-1-1/0" and first["corpus"] == "friends"
    assert (first["start_s"], first["end_s"]) == (60.25, 63.75)
    second = rows[rows.index(first) + 1]
    assert second["start_s"] == 64.25  # "00:01:04,250": a comma as the decimal mark
    assert dict(first["meta"]) == {"Scene_ID": "1", "Utterance_ID": "0", "Season": "1",
                                   "Episode": "1"}
    assert set(t.column("emotion").to_pylist()) == set(MAPPING["label_map"].values())
    # Three episodes of three scenes in train, 4 utterances each: scene numbers repeat,
    # the composed ids do not.
    train_dialogues = {r["dialogue_id"] for r in rows if r["split"] == "train"}
    assert len(train_dialogues) == 9
    assert all(len([r for r in rows if r["dialogue_id"] == d]) == 4 for d in train_dialogues)

    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert summary["kept"] + summary["problems"] == summary["input_rows"] == sum(counts.values())
    assert summary["problems_by_reason"] == {reason: 1 for reason in BAD_ROWS}


def test_the_same_mapping_as_reader_options(friends):
    folder, _ = friends
    from_options = checked(read_manifest(folder, **MAPPING))
    mapping_file = folder.parent / "elsewhere.yaml"
    mapping_file.write_text(yaml.safe_dump(MAPPING))
    from_file = checked(read_manifest(folder, mapping=mapping_file))
    assert from_options.utterances.equals(from_file.utterances)
    # Options override the file's keys: joined speaker lists keep the row.
    joined = checked(read_manifest(folder, mapping=mapping_file, several_speakers="join"))
    assert "Ross Geller & Chandler Bing" in joined.utterances.column("speaker").to_pylist()
    assert joined.problems.num_rows == len(BAD_ROWS) - 1


def test_inspect_suggests_a_mapping_that_works_after_renaming_labels(friends, tmp_path, capsys):
    folder, counts = friends
    suggested = tmp_path / "suggested.yaml"
    assert main(["corpus", "inspect", str(folder), "--write", str(suggested)]) == 0
    printed = capsys.readouterr().out
    assert "Start_Time" in printed and "['Ross Geller']" in printed  # columns with examples
    assert suggested.read_text() in printed

    mapping = yaml.safe_load(suggested.read_text())
    assert mapping["files"] == "friends_{split}.csv"
    assert mapping["columns"]["dialogue_id"] == "{Season}-{Episode}-{Scene_ID}"
    assert {k: mapping["columns"][k] for k in ("text", "speaker", "emotion", "start", "end")} == {
        "text": "Utterance", "speaker": "Speaker", "emotion": "Emotion", "start": "Start_Time",
        "end": "End_Time"}
    assert sorted(mapping["label_map"]) == sorted(EMOTIONS + ["Confused"])
    assert mapping["several_speakers"] == "problem"

    # The user renames labels in the label map, nothing else.
    renamed = {label: MAPPING["label_map"].get(label, name)
               for label, name in mapping["label_map"].items()}
    renamed_changes = {k for k in renamed if renamed[k] != mapping["label_map"][k]}
    assert renamed_changes <= {"Peaceful", "Powerful"}  # the others were suggested as wanted
    del renamed["Confused"]  # a label the user does not want: its row becomes a problem
    suggested.write_text(suggested.read_text().split("label_map:")[0]
                         + yaml.safe_dump({"label_map": renamed}))
    out = tmp_path / "out"
    assert main(["corpus", "ingest", str(folder), "--mapping", str(suggested),
                 "--out", str(out)]) == 0
    by_suggestion = pq.read_table(out / "utterances.parquet")
    # Its Utterance_ID (0, 1, ... in each scene) is suggested as the turn, not kept in meta.
    assert mapping["columns"]["turn"] == "Utterance_ID"
    by_hand = checked(read_manifest(folder, **{**MAPPING, "columns": {
        **MAPPING["columns"], "turn": "Utterance_ID"}})).utterances
    assert by_suggestion.equals(by_hand)
    assert pq.read_table(out / "problems.parquet").num_rows == sum(counts.values()) - by_hand.num_rows


def test_inspect_a_single_jsonl_file_with_list_speakers(tmp_path):
    rows = [{"conv": "c1", "who": ["Ann"], "line": "Hello there, how are you today?",
             "feeling": "Happy"},
            {"conv": "c1", "who": ["Bob"], "line": "Fine, thanks, and you?", "feeling": "Neutral"}]
    path = tmp_path / "talk.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    inspection = inspect_corpus(path)
    assert inspection.mapping["columns"] == {"dialogue_id": "conv", "text": "line"}
    assert any("speaker" in note for note in inspection.notes)  # "who" is not a known name
    text = mapping_yaml(inspection)
    edited = yaml.safe_load(text)
    edited["columns"]["speaker"] = "who"
    edited["columns"]["emotion"] = "feeling"
    result = checked(read_manifest(path, **edited))
    assert result.utterances.column("speaker").to_pylist() == ["Ann", "Bob"]
    assert result.utterances.column("emotion").to_pylist() == ["happy", "neutral"]


def test_inspect_reads_values_the_ingest_sets_aside(tmp_path, capsys):
    """A speaker that is a mapping and an integer of 400 digits are odd values, not a
    crash of erc corpus inspect: the suggestion comes, the ingest sets the row aside."""
    rows = [{"dialogue_id": "d", "speaker": {"name": "Ann"}, "text": "Hi.", "n": 1},
            {"dialogue_id": "d", "speaker": "Bob", "text": "Ho.", "n": int("9" * 400)}]
    path = tmp_path / "talk.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["corpus", "inspect", str(path), "--write", str(tmp_path / "map.yaml")]) == 0
    assert "Traceback" not in capsys.readouterr().err
    result = checked(read_manifest(path, mapping=tmp_path / "map.yaml"))
    assert [p["reason"] for p in result.problems.to_pylist()] == ["bad_type"]
    # Lines that are all {}: rows without a column are one line, not a traceback.
    (tmp_path / "empty.jsonl").write_text("{}\n{}\n")
    assert main(["corpus", "inspect", str(tmp_path / "empty.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == (f"erc: error: {tmp_path / 'empty.jsonl'}: no "
                                               f"columns to inspect (every row is empty)")


# --- the pieces --------------------------------------------------------------------------


def test_inspect_prints_names_from_the_input_on_their_line(tmp_path):
    """A file name holding a newline ended the suggested mapping's comment line: the rest of
    the name was read as YAML; a column name holding an escape drove the terminal."""
    folder = tmp_path / "corpus\nfiles: x"
    folder.mkdir()
    (folder / "train\nnote.csv").write_text("dialogue_id,speaker,text,mood\x1b[2J\nd,Ann,Hi there.,ok\n")
    (folder / "dev.csv").write_text("dialogue_id,speaker,text,mood\x1b[2J\nd,Bob,Yo there.,ok\n")
    inspection = inspect_corpus(folder)
    shown = format_inspection(inspection)
    assert "\x1b" not in shown and "\\x1b[2J" in shown and "train\\nnote.csv" in shown
    text = mapping_yaml(inspection)
    assert yaml.safe_load(text) == {k: v for k, v in inspection.mapping.items()}
    assert all(line.startswith(("#", " ")) or ":" in line for line in text.splitlines())


def test_inspect_never_writes_its_mapping_over_a_file_it_inspects(tmp_path, capsys):
    """--write naming the manifest itself (with --overwrite) replaced the corpus with the
    suggested mapping."""
    path = tmp_path / "m.csv"
    path.write_text("dialogue_id,speaker,text\nd,Ann,Hi.\n")
    for name in (str(path), str(tmp_path / "." / "m.csv")):
        assert main(["corpus", "inspect", str(tmp_path), "--write", name, "--overwrite"]) == 2
        assert "is a manifest file inspected" in capsys.readouterr().err
    assert path.read_text() == "dialogue_id,speaker,text\nd,Ann,Hi.\n"


def test_inspect_write_naming_a_folder_is_an_error_naming_it(tmp_path, capsys):
    """--write naming a folder (with --overwrite) failed on a temporary file's name."""
    (tmp_path / "m.csv").write_text("dialogue_id,speaker,text\nd,Ann,Hi.\n")
    (tmp_path / "out").mkdir()
    assert main(["corpus", "inspect", str(tmp_path / "m.csv"), "--write", str(tmp_path / "out"),
                 "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'out'}: is a folder" in err and ".tmp" not in err


def test_inspect_shows_erc_s_own_columns_as_the_fields_they_read_back_as(tmp_path):
    """Inspecting erc's utterances.parquet showed audio_path and the meta map as meta,
    which the ingest reads as the audio field and the row's meta."""
    from erc.schema import utterance_table

    pq.write_table(utterance_table([{"utterance_id": "u", "corpus": "c", "split": "train",
                                     "dialogue_id": "d", "turn": 0, "speaker": "Ann",
                                     "text": "Hi there.", "meta": {"mood": "ok"}}]),
                   tmp_path / "utterances.parquet")
    shown = {line.split()[0]: line for line in
             format_inspection(inspect_corpus(tmp_path / "utterances.parquet")).splitlines()[4:]}
    assert shown["audio_path"].endswith("-> audio") and shown["end_s"].endswith("-> end")
    assert shown["meta"].endswith("-> meta")


def test_inspect_reads_each_file_once(tmp_path, monkeypatch):
    """inspect read a CSV whole for its delimiter and a JSON document whole for where its
    utterances are, then each again for its rows."""
    (tmp_path / "a.csv").write_text("dialogue;speaker;text\nd;Ann;Hi there, you.\n")
    (tmp_path / "b.json").write_text(json.dumps(
        {"scenes": [{"utterances": [{"dialogue": "e", "speaker": "Bob", "text": "Yo."}]}]}))
    reads = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or read_bytes(self))
    inspection = inspect_corpus(tmp_path)
    assert sorted(reads) == ["a.csv", "b.json"]
    assert [n for _, n, _ in inspection.files] == [1, 1]
    assert inspection.mapping["delimiter"] == ";"
    assert inspection.mapping["records"] == "scenes.utterances"


@pytest.mark.parametrize("text, seconds", [
    ("12.5", 12.5), (3, 3.0), ("00:01:02.500", 62.5), ("00:01:02,500", 62.5),
    ("01:02.5", 62.5), ("1:00:00", 3600.0), (" 00:00:07 ", 7.0), ("", None), (None, None),
    ("1257,256", 1257.256)])
def test_parse_time(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["1s", "00:61:00", "00:00:60.0", "nan", "inf", "1:2:3:4",
                                  "1,234,567", "1,5.2"])
def test_parse_time_rejects(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_a_comma_in_milliseconds_is_no_decimal_comma():
    """"2,150" in seconds is 2.15 (a decimal comma); in milliseconds it may be 2,150 with a
    thousands separator: bad_time there, not 2.15 ms read silently."""
    assert parse_time("2,150") == 2.15
    with pytest.raises(ValueError, match="time"):
        parse_time("2,150", per_second=1000)


@pytest.mark.parametrize("value, names", [
    ("['Rachel Green']", ["Rachel Green"]), ('["A", "B"]', ["A", "B"]), (["A"], ["A"]),
    ("[]", []), ("Ann", ["Ann"]), ("[Narrator]", ["[Narrator]"]), ("", []), (None, []),
    (7, ["7"]), ("['A', '']", ["A"])])
def test_speaker_names(value, names):
    assert speaker_names(value) == names


@pytest.mark.parametrize("mapping, message", [
    ({"columns": {"txt": "Utterance"}}, r"columns\.txt: not a field"),
    ({"columns": {"dialogue_id": "{Season:02d}"}}, r"columns\.dialogue_id: bad template"),
    ({"columns": {"text": ""}}, r"columns\.text: expected a column name"),
    ({"label_map": {"Joyful": ["joy"]}}, r"label_map\.Joyful: Input should be a valid string"),
    ({"several_speakers": "first"}, r"several_speakers: expected one of problem, join"),
    ({"files": {"train": "a_{split}.csv"}}, r"files\.train: \{split\} may appear once"),
    ({"colums": {}}, r"unknown key 'colums' \(did you mean 'columns'\?\)"),
    ({"labels": "joy"}, r"labels: Input should be a valid array \(got 'joy'\)"),
    # An empty label set checked no label at all; a blank one is no label.
    ({"labels": []}, r"labels: an empty list admits no label"),
    ({"labels": ["joy", " "]}, r"labels: expected label names, got ' '"),
    # Keys that match the same label, mapped differently: one would be silently unused.
    ({"label_map": {"Joy": "joy", "joy ": "anger"}}, r"label_map: 'Joy' and 'joy ' are the same"),
    # An empty split would make ids like "m//d/0" and a split no role finds.
    ({"split": " "}, r"split: expected a split name"),
    ({"corpus": "   "}, r"corpus: expected a corpus name"),
    ({"files": {"": "a.csv"}}, r"files: '' is no split name"),
    ({"delimiter": ";;"}, r"delimiter: expected one character"),
    ({"delimiter": '"'}, r"delimiter: expected one character other than a quote"),
    ({"time_unit": "sec"}, r"time_unit: expected one of s, ms, got 'sec'"),
    ({"records": "episodes..utterances"}, r"records: expected keys joined by dots"),
])
def test_bad_mappings_are_one_line_errors_naming_the_key(tmp_path, mapping, message):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(mapping))
    with pytest.raises(ErcError, match=message) as error:  # CorpusError or ConfigError
        load_mapping(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_a_mapping_path_that_is_no_file_says_what_it_is(tmp_path):
    """A mapping path naming a folder or /dev/null was "no such mapping file"."""
    with pytest.raises(CorpusError, match="is a folder, not a mapping file"):
        load_mapping(tmp_path)
    with pytest.raises(CorpusError, match="is a special file, not a mapping file"):
        load_mapping("/dev/null")
    with pytest.raises(CorpusError, match="no such mapping file"):
        load_mapping(tmp_path / "none.yaml")


def test_files_may_not_leave_the_corpus_folder(tmp_path):
    """files: '/etc/*' (or '../*.csv') in a corpus's mapping read files anywhere on the
    machine into the utterance table; like media, they stay in the corpus folder unless
    allow_outside_root is set."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "m.csv").write_text("dialogue_id,speaker,text\nd,Ann,Hi.\n")
    (tmp_path / "private.csv").write_text("dialogue_id,speaker,text\nd,Bob,Secret.\n")
    for files in ("../*.csv", str(tmp_path / "*.csv"), {"train": "m.csv", "dev": "../private.csv"}):
        with pytest.raises(CorpusError, match=r"private\.csv, outside the corpus folder"):
            read_manifest(corpus, files=files)
    result = read_manifest(corpus, files="../*.csv", allow_outside_root=True)
    assert result.utterances.column("text").to_pylist() == ["Secret."]


def test_missing_columns_and_files_name_the_mapping_key(friends):
    folder, _ = friends
    with pytest.raises(CorpusError, match=r"columns\.dialogue_id names column\(s\) 'Scene'"):
        read_manifest(folder, **{**MAPPING, "columns": {**MAPPING["columns"],
                                                        "dialogue_id": "{Season}-{Scene}"}})
    with pytest.raises(CorpusError, match=r"files\.dev: no file matches 'friends_valid.csv'"):
        read_manifest(folder, **{**MAPPING, "files": {"train": "friends_train.csv",
                                                      "dev": "friends_valid.csv"}})
    with pytest.raises(CorpusError, match=r"missing column\(s\) dialogue_id"):
        read_manifest(folder, files="*.csv")


def test_files_as_a_split_mapping_a_glob_and_one_file(friends):
    folder, counts = friends
    by_pattern = checked(read_manifest(folder, **MAPPING)).utterances
    by_split = checked(read_manifest(folder, **{**MAPPING, "files": {
        "train": "friends_train.csv", "dev": "friends_d*.csv", "test": "friends_test.csv"}}))
    assert by_split.utterances.equals(by_pattern)
    # A plain glob: no split from the names, so the `split` option's for every row.
    pooled = checked(read_manifest(folder, **{**MAPPING, "files": "friends_*.csv", "split": "all"}))
    assert set(pooled.utterances.column("split").to_pylist()) == {"all"}
    # One file of the set: its split still comes from the pattern.
    one = checked(read_manifest(folder / "friends_dev.csv", **MAPPING))
    assert set(one.utterances.column("split").to_pylist()) == {"dev"}
    assert one.n_input == counts["dev"]


def test_label_map_null_excludes_and_a_target_label_passes(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("dialogue_id,speaker,text,emotion\n"
                    "d,A,one,Joyful\nd,B,two,joy\nd,A,three,Powerful\nd,B,four,JOYFUL\n")
    result = checked(read_manifest(path, label_map={"Joyful": "joy", "Powerful": None}))
    assert result.utterances.column("emotion").to_pylist() == ["joy", "joy", "joy"]
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "excluded_label" and problem["line"] == 4


def test_mapping_file_reads_yes_no_on_off_and_numbers_as_the_labels_written(tmp_path):
    """A corpus whose labels are yes/no/on/off/1 (a survey's answers, a rating): a mapping
    file naming them unquoted reads each as the text written, not as YAML 1.1's booleans
    and numbers; null still sets rows aside, and a typed option still reads as its type."""
    folder = tmp_path / "survey"
    folder.mkdir()
    (folder / "train.csv").write_text("dialogue_id,speaker,text,emotion\n"
                                      "d,A,one,yes\nd,B,two,no\nd,A,three,on\n"
                                      "d,B,four,off\nd,A,five,1\nd,B,six,n\n")
    (folder / MAPPING_FILE).write_text("label_map: {yes: joy, no: anger, on: neutral, "
                                       "off: null, 1: sadness, n: no}\n"
                                       "labels: [joy, anger, neutral, sadness, no]\n"
                                       "keep_missing_media: true\n")
    assert load_mapping(folder / MAPPING_FILE).keep_missing_media is True
    result = checked(read_manifest(folder))
    assert result.utterances.column("emotion").to_pylist() == [
        "joy", "anger", "neutral", "sadness", "no"]
    assert [(p["line"], p["reason"]) for p in result.problems.to_pylist()] == [(5, "excluded_label")]


def test_labels_yes_and_no_given_on_the_command_line_or_in_a_run_config_read_as_written(tmp_path):
    """The mapping file read label_map: {yes: joy} as written, but the same option given as
    ``erc corpus ingest -o`` or as corpus.options of a run config (file or -o) read yes as
    true: the label never matched, or the option was refused. Each reads as the file does;
    a typed option (keep_missing_media=true) still reads as its type."""
    from erc.corpus.mapping import parse_reader_option, parse_run_override
    from erc.recipes import load_run_config
    from erc.settings import tree

    assert parse_reader_option("label_map={yes: joy, no: null, 1: sadness}") == (
        "label_map", {"yes": "joy", "no": None, "1": "sadness"})
    assert parse_reader_option("label_map.on=off") == ("label_map.on", "off")
    assert parse_reader_option("labels=[yes, no]") == ("labels", ["yes", "no"])
    assert parse_reader_option("keep_missing_media=true") == ("keep_missing_media", True)
    assert parse_run_override("corpus.options.label_map={yes: joy}") == (
        "corpus.options.label_map", {"yes": "joy"})
    assert parse_run_override("corpus.options={label_map: {no: anger}, keep_missing_media: on}") \
        == ("corpus.options", {"label_map": {"no": "anger"}, "keep_missing_media": True})
    assert parse_run_override("train.epochs=3") == ("train.epochs", 3)
    config = tmp_path / "run.yaml"
    config.write_text("corpus:\n  path: survey\n  options:\n    label_map: {yes: joy, off: null}\n"
                      "    keep_missing_media: yes\ntrain:\n  enabled: no\n")
    loaded = load_run_config(config, tree([parse_run_override("corpus.options.labels=[joy, no]")]))
    assert loaded.corpus.options == {"label_map": {"yes": "joy", "off": None},
                                     "keep_missing_media": True, "labels": ["joy", "no"]}
    assert loaded.train.enabled is False
    folder = tmp_path / "survey"
    folder.mkdir()
    (folder / "train.csv").write_text("dialogue_id,speaker,text,emotion\nd,A,one,yes\nd,B,two,no\n")
    assert main(["corpus", "ingest", str(folder), "--format", "manifest", "--out",
                 str(tmp_path / "out"), "-o", "label_map={yes: joy, no: anger}"]) == 0
    ingested = pq.read_table(tmp_path / "out" / "utterances.parquet")
    assert ingested.column("emotion").to_pylist() == ["joy", "anger"]


def test_parquet_with_list_speakers_and_numeric_template_fields(tmp_path):
    rows = [{"season": 1, "scene": 2.0, "who": ["Ann"], "said": "hi"},
            {"season": 1, "scene": 2.0, "who": ["Ann", "Bob"], "said": "both"},
            {"season": 1, "scene": None, "who": ["Bob"], "said": "lost"}]
    path = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    result = checked(read_manifest(path, columns={"dialogue_id": "s{season}e{scene}",
                                                  "speaker": "who", "text": "said"}))
    assert result.utterances.column("dialogue_id").to_pylist() == ["s1e2"]
    assert [p["reason"] for p in result.problems.to_pylist()] == [
        "several_speakers", "missing_template_field"]


# --- other shapes of corpora in the wild -------------------------------------------------


def test_a_semicolon_csv_with_milliseconds_and_numbered_turns(tmp_path):
    """A call-centre CSV: ";" between fields (commas inside the text), times in
    milliseconds, turns numbered from 1, the role in the speaker's name. Inspect suggests
    the delimiter, the time unit and the turn column; the ingest reads every row."""
    folder = tmp_path / "calls"
    folder.mkdir()
    (folder / "calls.csv").write_text(
        "Conversation;Turn_No;Speaker_Role;Transcript;Sentiment_Label;Begin_ms;End_ms\n"
        "call_1;2;Bob (customer);My internet is down, nothing works!;angry;2300;5900\n"
        "call_1;1;Ann (agent);Good morning, how can I help?;neutral;0;2150\n"
        'call_2;1;Carl (agent);"Hello; support here.";neutral;0;1800\n'
        "call_2;2;Dana (customer);Thanks;happy;1900\n")  # a cut row
    inspection = inspect_corpus(folder)
    m = inspection.mapping
    assert (m["delimiter"], m["time_unit"]) == (";", "ms")
    assert m["columns"] == {"dialogue_id": "Conversation", "text": "Transcript",
                            "speaker": "Speaker_Role", "emotion": "Sentiment_Label",
                            "start": "Begin_ms", "end": "End_ms", "turn": "Turn_No"}
    assert inspection.unread == {folder / "calls.csv": 1}  # the cut row, said, not hidden
    (folder / MAPPING_FILE).write_text(mapping_yaml(inspection))
    result = checked(read_manifest(folder))
    rows = sorted(result.utterances.to_pylist(), key=lambda r: (r["dialogue_id"], r["turn"]))
    assert [(r["dialogue_id"], r["turn"], r["speaker"], r["start_s"], r["end_s"], r["emotion"])
            for r in rows] == [("call_1", 1, "Ann (agent)", 0.0, 2.15, "neutral"),
                               ("call_1", 2, "Bob (customer)", 2.3, 5.9, "anger"),
                               ("call_2", 1, "Carl (agent)", 0.0, 1.8, "neutral")]
    assert rows[2]["text"] == "Hello; support here."
    [problem] = result.problems.to_pylist()
    assert (problem["line"], problem["reason"]) == (5, "bad_field_count")
    assert "delimiter ';'" in problem["detail"]
    # Read with a comma, the file is one column: the error says which delimiter it has.
    with pytest.raises(CorpusError, match=r"fields separated by ';'\? set delimiter: ';'"):
        read_manifest(folder / "calls.csv", columns={"dialogue_id": "Conversation"})
    # A .tsv file is read by tabs whatever the default says: commas in it want a .csv name.
    commas = tmp_path / "calls.tsv"
    commas.write_text("Conversation,Speaker\ncall_1,Ann\n")
    with pytest.raises(CorpusError, match=r"fields separated by ','\? a \.tsv file is read by "
                                          r"tabs: name it \.csv"):
        read_manifest(commas, columns={"dialogue_id": "Conversation"})


def test_json_lines_with_nested_objects(tmp_path):
    """{"conv": {"id": ..}, "turn": {"idx": .., ...}}: a column is a dotted path into the
    objects; lines out of order take their turn from turn.idx; the keys no field reads
    stay in meta by their path."""
    lines = [{"conv": {"id": "c1", "channel": "web"},
              "turn": {"idx": i, "speaker": s, "text": t, "label": lab}}
             for i, (s, t, lab) in enumerate([("user", "my order never arrived", "anger"),
                                              ("bot", "Sorry about that!", "neutral"),
                                              ("user", "ok thanks", "joy")])]
    lines.reverse()
    lines.append({"conv": {"id": "c1"}, "turn": "not an object"})
    path = tmp_path / "turns.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    inspection = inspect_corpus(path)
    assert inspection.mapping["columns"] == {"dialogue_id": "conv.id", "text": "turn.text",
                                             "speaker": "turn.speaker", "emotion": "turn.label",
                                             "turn": "turn.idx"}
    result = checked(read_manifest(path, **yaml.safe_load(mapping_yaml(inspection))))
    rows = sorted(result.utterances.to_pylist(), key=lambda r: r["turn"])
    assert [(r["turn"], r["speaker"], r["text"], r["emotion"]) for r in rows] == [
        (0, "user", "my order never arrived", "anger"), (1, "bot", "Sorry about that!", "neutral"),
        (2, "user", "ok thanks", "joy")]
    assert rows[0]["meta"] == [("conv.channel", "web")]
    assert [(p["line"], p["reason"]) for p in result.problems.to_pylist()] == [(4, "missing_field")]


def _scene(episode: str, scene: int, lines) -> dict:
    return {"scene_id": f"{episode}_c{scene:02d}", "utterances": [
        {"utterance_id": f"{episode}_c{scene:02d}_u{u:03d}", "speakers": who, "transcript": text,
         "tokens": [text.split()], "emotion": emotion}
        for u, (who, text, emotion) in enumerate(lines, start=1)]}


def test_a_json_document_of_episodes_scenes_and_utterances(tmp_path):
    """EmoryNLP's shape: one JSON document per split (trn, dev, tst), episodes -> scenes ->
    utterances, speakers as a list, Title Case emotions. Inspect finds the utterances
    (records:), the split of each file and the scene id as the dialogue; every utterance
    is kept or set aside with its reason."""
    folder = tmp_path / "emorynlp"
    folder.mkdir()
    train = {"episodes": [
        {"episode_id": "s01_e01", "scenes": [
            _scene("s01_e01", 1, [(["Monica Geller"], "There's nothing to tell!", "Neutral"),
                                  (["Joey Tribbiani"], "C'mon, you're going out with him!", "Joyful"),
                                  (["Phoebe Buffay", "Joey Tribbiani"], "Does he eat chalk?", "Scared"),
                                  ([], "(Everyone laughs.)", "Neutral")]),
            _scene("s01_e01", 2, [(["Ross Geller"], "Hi.", "Sad")])]},
        {"episode_id": "s01_e02", "scenes": [
            _scene("s01_e02", 1, [(["Rachel Green"], "Guess what?", "Joyful")])]}]}
    train["episodes"][1]["scenes"][0]["utterances"].append("a stray string")
    for name, document in [("trn", train), ("dev", {"episodes": [{"episode_id": "s02_e01", "scenes": [
            _scene("s02_e01", 1, [(["Ross Geller"], "I'm fine.", "Mad")])]}]})]:
        (folder / f"emotion-detection-{name}.json").write_text(json.dumps(document, indent=2))
    inspection = inspect_corpus(folder)
    m = inspection.mapping
    assert m["records"] == "episodes.scenes.utterances"
    assert m["files"] == {"dev": "emotion-detection-dev.json", "train": "emotion-detection-trn.json"}
    assert m["columns"] == {"dialogue_id": "episodes.scenes.scene_id", "text": "transcript",
                            "speaker": "speakers", "emotion": "emotion"}
    assert m["label_map"]["Scared"] == "fear"
    (folder / MAPPING_FILE).write_text(mapping_yaml(inspection))
    result = checked(read_manifest(folder))
    assert result.n_input == 8
    rows = result.utterances.to_pylist()
    assert [(r["split"], r["dialogue_id"], r["turn"], r["speaker"], r["emotion"]) for r in rows] == [
        ("dev", "s02_e01_c01", 0, "Ross Geller", "anger"),
        ("train", "s01_e01_c01", 0, "Monica Geller", "neutral"),
        ("train", "s01_e01_c01", 1, "Joey Tribbiani", "joy"),
        ("train", "s01_e01_c02", 0, "Ross Geller", "sadness"),
        ("train", "s01_e02_c01", 0, "Rachel Green", "joy")]
    assert rows[1]["utterance_id"] == "s01_e01_c01_u001"
    assert ("episodes.episode_id", "s01_e01") in rows[1]["meta"]
    assert [p["reason"] for p in result.problems.to_pylist()] == [
        "several_speakers", "missing_field", "malformed_row"]
    assert "episodes[1].scenes[0].utterances[1]" in result.problems.to_pylist()[2]["detail"]
    # Without records:, or with a wrong one, the error names the key and the right value.
    dev = folder / "emotion-detection-dev.json"
    with pytest.raises(CorpusError, match="records: episodes.scenes.utterances, say"):
        read_manifest(dev, columns=m["columns"])
    with pytest.raises(CorpusError, match="no list 'scene'.*records: episodes.scenes.utterances "
                                          "would read"):
        read_manifest(dev, columns=m["columns"], records="episodes.scene.utterances")


def test_json_records_under_a_list_valued_enclosing_key_are_bad_type_naming_it(tmp_path):
    """A scene whose scene_id is a list (["s1"]) sets its utterances aside as bad_type
    naming the key, not as a missing dialogue_id; when every scene has one, the file is
    read (its rows set aside), not stopped as lacking the column."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    (folder / MAPPING_FILE).write_text("records: episodes.scenes.utterances\n"
                                       "columns: {dialogue_id: episodes.scenes.scene_id}\n")
    listed = {"scene_id": ["s1"], "cast": ["Ann", "Bob"],
              "utterances": [{"speaker": "Ann", "text": "Hi."}]}
    plain = {"scene_id": "s2", "utterances": [{"speaker": "Bob", "text": "Yo."}]}
    path = folder / "train.json"
    for scenes, kept in [([listed, plain], ["s2"]), ([listed], [])]:
        path.write_text(json.dumps({"episodes": [{"episode_id": "e1", "scenes": scenes}]}))
        result = checked(read_manifest(folder))
        assert result.utterances.column("dialogue_id").to_pylist() == kept
        [problem] = result.problems.to_pylist()
        assert problem["reason"] == "bad_type"
        assert "'episodes.scenes.scene_id': a list" in problem["detail"]


def test_json_utterances_keyed_by_id_are_named_as_such(tmp_path):
    """Utterances as an object keyed by their ids, not a list, read as one record whose
    columns are u1.speaker, u2.speaker, ...: the error says what the file looks like."""
    path = tmp_path / "c.json"
    keyed = {"u1": {"dialogue_id": "d", "speaker": "Ann", "text": "Hi."},
             "u2": {"dialogue_id": "d", "speaker": "Bob", "text": "Yo."}}
    path.write_text(json.dumps({"utterances": keyed}))
    with pytest.raises(CorpusError, match=r"missing column\(s\) dialogue_id, speaker.*the fields sit "
                                          r"under the keys 'u1, u2': utterances keyed by id\?"):
        read_manifest(path, records="utterances")
    # One object per utterance whose fields are nested objects is no such file.
    path.write_text(json.dumps({"utterances": [{"conv": {"id": "c"}, "turn": {"text": "Hi."}}]}))
    with pytest.raises(CorpusError, match=r"missing column\(s\) dialogue_id, speaker") as error:
        read_manifest(path, records="utterances")
    assert "keyed by id" not in str(error.value)


@pytest.mark.parametrize("pattern", [
    "*.csv", ".*.csv", "parts/*.csv", "parts/*", "*/*.csv", "*/*/*.csv", "a.csv", "none/*.csv",
    "*", "*/", "[ad]*.csv", "**/*.csv", ".hidden/*", "*/sub/*", "../other/*.csv",
    "link/*.csv", "data_*.csv", "parts/sub/", "a.csv/", "{root}/other/*.csv"])
def test_files_patterns_find_what_glob_finds(tmp_path, pattern):
    """``files:`` patterns are expanded by erc's own walk (which names a folder it may not
    list, where glob passes over it): it finds exactly the names glob finds, hidden
    names and trailing slashes included."""
    import glob

    from erc.corpus.mapping import _glob

    corpus = tmp_path / "c"
    for name in ("a.csv", ".b.csv", "parts/x.csv", "parts/y.tsv", "parts/sub/z.csv",
                 ".hidden/h.csv", "train/m.csv", "data_dev.csv", "../other/o.csv"):
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_text("dialogue_id,speaker,text\n")
    (corpus / "link").symlink_to(tmp_path / "other")
    pattern = pattern.format(root=tmp_path)
    expected = [name.rstrip("/") for name in sorted(glob.glob(pattern, root_dir=corpus))]
    assert _glob(corpus, pattern) == expected


def test_inspect_writes_a_mapping_for_file_names_that_are_not_utf8(tmp_path, capsys):
    """A corpus folder and a file named in Latin-1 (bytes that are not UTF-8): `erc corpus
    inspect --write` stopped with a traceback writing the name into the file; it writes
    the name escaped, and the console shows it so."""
    import os

    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))
    folder.mkdir()
    (folder / "a.csv").write_text("dialogue_id,speaker,text\nd,Ann,Hi\n")
    Path(os.fsdecode(os.fsencode(folder) + b"/b\xe9.csv")).write_text(
        "dialogue_id,speaker,text\ne,Bob,Yo,cut\n")
    written = tmp_path / "m.yaml"
    assert main(["corpus", "inspect", str(folder), "--write", str(written)]) == 0
    out = capsys.readouterr().out
    assert "b\\udce9.csv: 0 rows, 1 not read" in out
    text = written.read_text(encoding="utf-8")
    assert "# NOTE: b\\udce9.csv: 1 record(s) not read" in text
    assert yaml.safe_load(text)["corpus"] == "caf\udce9"  # reads back as the folder's name


def test_inspect_of_records_all_set_aside_says_why(tmp_path):
    """Data lines ending in a comma the header lacks: every record set aside, and `erc
    corpus inspect` said only "no rows to inspect"."""
    path = tmp_path / "m.csv"
    path.write_text("dialogue_id,speaker,text\nd,Ann,Hi,\nd,Bob,Yo,\n")
    with pytest.raises(CorpusError, match=r"no rows to inspect: 2 record\(s\) not read, the first "
                                          r"at m\.csv line 2: bad_field_count: 4 values for the "
                                          r"header's 3 columns"):
        inspect_corpus(path)


def test_inspect_passes_over_a_value_too_long_for_a_file_name(tmp_path):
    """A column of values ending in .mp4 but too long for a file name stopped inspect with
    "File name too long" naming the value as a file, not the manifest."""
    path = tmp_path / "m.csv"
    path.write_text("dialogue_id,speaker,text,x\n"
                    + "".join(f"d,Ann,Hello there {n},{'a' * 5000}.mp4\n" for n in range(3)))
    inspection = inspect_corpus(path)
    assert "media" not in inspection.mapping["columns"]
    assert inspection.mapping["columns"]["text"] == "text"


# --- layouts a researcher brings: inspect's suggestion reads them as they are -------------


def test_inspect_finds_the_turns_of_a_json_list_of_dialogues(tmp_path):
    """[{"dialogue_id": .., "turns": [{"speaker", "text", "emotion"}]}] (DailyDialog's and
    EmoWOZ's JSON): inspect suggested no records: and saw only dialogue_id and turns."""
    dialogues = [{"dialogue_id": f"d{d}", "turns": [
        {"speaker": who, "text": f"Line {d}.{t} here", "emotion": emotion}
        for t, (who, emotion) in enumerate([("USER", "happy"), ("SYSTEM", "neutral"), ("USER", "angry")])]}
        for d in range(3)]
    (tmp_path / "train.json").write_text(json.dumps(dialogues))
    inspection = inspect_corpus(tmp_path)
    assert inspection.mapping["records"] == "turns"
    assert inspection.mapping["columns"] == {"dialogue_id": "dialogue_id", "text": "text",
                                             "speaker": "speaker", "emotion": "emotion"}
    (tmp_path / MAPPING_FILE).write_text(mapping_yaml(inspection))
    result = checked(read_manifest(tmp_path))
    assert result.utterances.num_rows == 9
    assert result.utterances.column("emotion").to_pylist()[:3] == ["joy", "neutral", "anger"]
    # A list of utterance objects holding a list of objects (few) is still read as it is.
    flat = [{"dialogue_id": "d", "speaker": "A", "text": f"Hi {n}", "tags": [{"k": 1}]}
            for n in range(3)]
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    assert "records" not in inspect_corpus(tmp_path / "flat.json").mapping


def test_inspect_suggests_the_folder_of_bare_media_file_names(tmp_path):
    """A TSV naming wavs by their bare names, kept in wavs/: inspect left the column in
    meta, the ingest read no media."""
    (tmp_path / "wavs").mkdir()
    lines = ["session\tspeaker_id\tfile_name\ttranscript\tlabel"]
    for n in range(4):
        (tmp_path / "wavs" / f"s{n}.wav").write_bytes(b"")
        lines.append(f"a\tspk{n % 2}\ts{n}.wav\tSome words number {n}\tneu")
    (tmp_path / "metadata.tsv").write_text("\n".join(lines) + "\n")
    inspection = inspect_corpus(tmp_path)
    assert inspection.mapping["columns"]["audio"] == "wavs/{file_name}"
    (tmp_path / MAPPING_FILE).write_text(mapping_yaml(inspection))
    result = checked(read_manifest(tmp_path))
    assert result.utterances.column("audio_path").to_pylist() == [
        str(tmp_path / "wavs" / f"s{n}.wav") for n in range(4)]
    assert summarise(result)["splits"]["train"]["with_media"] == 4  # audio alone is media
    # A column found by its name ("audio") was named as it is: every row missing_media.
    (tmp_path / "metadata.tsv").write_text((tmp_path / "metadata.tsv").read_text().replace(
        "file_name", "audio", 1))
    assert inspect_corpus(tmp_path).mapping["columns"]["audio"] == "wavs/{audio}"
    # Files found nowhere below the folder: a note says how to name their folder.
    for n in range(4):
        (tmp_path / "wavs" / f"s{n}.wav").unlink()
    inspection = inspect_corpus(tmp_path)
    assert inspection.mapping["columns"]["audio"] == "audio"  # as named, with a note
    assert any("column audio names audio files" in note for note in inspection.notes)
    # Every row set aside (missing_media): the summary still names the corpus ("-" before).
    result = checked(read_manifest(tmp_path, **inspection.mapping))
    assert result.utterances.num_rows == 0 and summarise(result)["corpora"] == [tmp_path.name]


def test_inspect_reads_accented_column_names(tmp_path):
    """"émotion" lost its é to the letters-only key ("motion") and matched no field."""
    (tmp_path / "c.csv").write_text("dialogue,locuteur,texte,émotion\nd,Zoé,Ça va très bien,joie\n"
                                    "d,Noël,Où est la gare?,colère\n", encoding="utf-8")
    assert inspect_corpus(tmp_path / "c.csv").mapping["columns"]["emotion"] == "émotion"


def test_inspect_reads_column_names_in_other_languages(tmp_path):
    """Sprecher, Beginn, Ende (locuteur, début, fin): no field matched them, and the
    suggested mapping, lacking the speaker, did not ingest."""
    (tmp_path / "daten.csv").write_text("Dialog,Sprecher,Äußerung,Emotion,Beginn,Ende\n"
                                        "1,Ann,Guten Morgen allerseits,joy,00:01:02,00:01:04\n")
    assert inspect_corpus(tmp_path / "daten.csv").mapping["columns"] == {
        "dialogue_id": "Dialog", "text": "Äußerung", "speaker": "Sprecher", "emotion": "Emotion",
        "start": "Beginn", "end": "Ende"}
    (tmp_path / "c.csv").write_text("dialogue,locuteur,texte,début,fin\nd,Zoé,Ça va,1.5,2\n")
    assert inspect_corpus(tmp_path / "c.csv").mapping["columns"] == {
        "dialogue_id": "dialogue", "text": "texte", "speaker": "locuteur", "start": "début",
        "end": "fin"}


def test_a_per_dialogue_utterance_id_column_is_the_turn(tmp_path):
    """dialogue_id,utterance_id (0, 1, 2 in each dialogue),...: inspect left utterance_id
    to be read as the id, and the ingest set aside every repeat as duplicate_id (28 of 32
    rows); a mapping naming it as the turn still read it as the id too."""
    rows = [f"{d},{u},{'AB'[u % 2]},Words {d} {u},joy" for u in range(4) for d in range(8)]
    (tmp_path / "train.csv").write_text("dialogue_id,utterance_id,speaker,text,emotion\n"
                                        + "\n".join(rows) + "\n")
    inspection = inspect_corpus(tmp_path)
    assert inspection.mapping["columns"]["turn"] == "utterance_id"
    assert "-> turn\n" in format_inspection(inspection) + "\n"
    (tmp_path / MAPPING_FILE).write_text(mapping_yaml(inspection))
    result = checked(read_manifest(tmp_path))
    assert result.problems.num_rows == 0
    table = result.utterances
    assert sorted(zip(table.column("dialogue_id").to_pylist(), table.column("turn").to_pylist()))[:2] == [
        ("0", 0), ("0", 1)]
    assert table.column("utterance_id").to_pylist()[0] == f"{tmp_path.name}/train/0/0"
    # With a turn column of its own, repeated ids are named in a note.
    (tmp_path / "train.csv").write_text("dialogue_id,turn,utterance_id,speaker,text\n"
                                        "1,0,u1,A,Hi there\n2,0,u1,B,Ho there\n")
    assert any("utterance_id repeats values" in note for note in inspect_corpus(tmp_path).notes)


def test_a_semicolon_csv_with_decimal_comma_seconds(tmp_path):
    """A spreadsheet's ";" export writes seconds as 1257,256: inspect took the column for
    text and suggested no start or end, and mapped, each row was a bad_time problem."""
    (tmp_path / "m.csv").write_text("Dialogue_ID;Speaker;Utterance;Start_s;End_s\n"
                                    "0;Ann;Oh my God, he is lost;1257,256;1260,049\n"
                                    "0;Bob;What is it now?;1261,927;1263,5\n")
    inspection = inspect_corpus(tmp_path)
    assert inspection.mapping["columns"]["start"] == "Start_s"
    assert inspection.mapping["columns"]["end"] == "End_s"
    (tmp_path / MAPPING_FILE).write_text(mapping_yaml(inspection))
    table = checked(read_manifest(tmp_path)).utterances
    assert table.column("start_s").to_pylist() == [1257.256, 1261.927]
    assert table.column("end_s").to_pylist() == [1260.049, 1263.5]


def test_a_meld_utterance_id_column_orders_the_turns(tmp_path):
    """MELD's own Utterance_ID (0, 1, 2 in each dialogue): inspect matched only a column
    named utterance_id exactly, so it went to meta and turns followed the rows' order;
    in a file sorted otherwise (here by speaker) each dialogue's turns came out of order."""
    rows = sorted(((d, u, "ZA"[u % 2]) for d in range(3) for u in range(4)), key=lambda r: r[2])
    (tmp_path / "m.csv").write_text("Dialogue_ID,Utterance_ID,Speaker,Utterance\n" + "".join(
        f"{d},{u},{s},Words of turn {u}\n" for d, u, s in rows))
    inspection = inspect_corpus(tmp_path)
    assert inspection.mapping["columns"]["turn"] == "Utterance_ID"
    assert not any("repeats values" in note for note in inspection.notes)  # no id to repeat
    (tmp_path / MAPPING_FILE).write_text(mapping_yaml(inspection))
    table = checked(read_manifest(tmp_path)).utterances
    assert {(t, x) for t, x in zip(table.column("turn").to_pylist(), table.column("text").to_pylist())} == {
        (u, f"Words of turn {u}") for u in range(4)}


def test_a_folder_of_one_csv_per_dialogue(tmp_path):
    """Ses01F_impro01.csv, ...: no column names the dialogue, only the file's name; inspect
    suggested no dialogue_id and the ingest stopped on the missing column, with no way to
    say "the file name" in a mapping."""
    for name in ("Ses01F_impro01", "Ses01F_script02"):
        (tmp_path / f"{name}.csv").write_text("Utterance_ID,Speaker,Utterance\n"
                                              "1,M,And you?\n0,F,Hi there.\n")
    inspection = inspect_corpus(tmp_path)
    assert inspection.mapping["columns"]["dialogue_id"] == "_file"
    (tmp_path / MAPPING_FILE).write_text(mapping_yaml(inspection))
    table = checked(read_manifest(tmp_path)).utterances
    assert sorted(zip(table.column("dialogue_id").to_pylist(), table.column("turn").to_pylist(),
                      table.column("text").to_pylist())) == [
        ("Ses01F_impro01", 0, "Hi there."), ("Ses01F_impro01", 1, "And you?"),
        ("Ses01F_script02", 0, "Hi there."), ("Ses01F_script02", 1, "And you?")]
    assert all(not meta for meta in table.column("meta").to_pylist())  # no _file in meta
    (tmp_path / MAPPING_FILE).unlink()
    with pytest.raises(CorpusError, match=r"missing column\(s\) dialogue_id; .*dialogue_id: _file"):
        read_manifest(tmp_path, columns={"text": "Utterance", "speaker": "Speaker"})


def test_a_json_document_keyed_by_dialogue_id_says_how_to_read_it(tmp_path):
    """EmoWOZ's {"MUL0001.json": {"log": [...]}, ...}: the error asked for a records: key
    that no records: value can be, naming none."""
    document = {f"MUL{d:04d}.json": {"goal": {}, "log": [{"text": "Hi there."}]} for d in range(3)}
    (tmp_path / "data.json").write_text(json.dumps(document))
    with pytest.raises(CorpusError, match=r"its 3 objects sit under keys of their own, "
                                          r"'MUL0000\.json, .*write them as a list"):
        inspect_corpus(tmp_path)


def test_inspect_notes_numbered_labels(tmp_path):
    """Labels written as numbers (0..3, their names in a separate list) got a label_map
    of "0": "0" and no word that the numbers want names."""
    (tmp_path / "d.jsonl").write_text("".join(
        json.dumps({"conv": n // 2, "speaker": "AB"[n % 2], "text": f"Words {n}", "label": n % 3}) + "\n"
        for n in range(6)))
    inspection = inspect_corpus(tmp_path)
    assert inspection.mapping["label_map"] == {"0": "0", "1": "1", "2": "2"}
    assert any("label holds numbers" in note for note in inspection.notes)


def test_one_file_of_a_folder_with_a_mapping_names_the_mapping(tmp_path):
    """`erc corpus ingest corpus/x_dev.csv` beside corpus/erc-mapping.yaml said only that
    columns were missing, not that the mapping beside the file goes unread."""
    (tmp_path / "x_dev.csv").write_text("Utt,Who,Dia\nHello there,Ann,1\n")
    (tmp_path / MAPPING_FILE).write_text("columns: {dialogue_id: Dia, speaker: Who, text: Utt}\n")
    with pytest.raises(CorpusError, match=r"missing column\(s\) dialogue_id, speaker.*the mapping "
                                          r"beside it is not read for one file: add --mapping "):
        read_manifest(tmp_path / "x_dev.csv")
    assert checked(read_manifest(tmp_path / "x_dev.csv", mapping=tmp_path / MAPPING_FILE)
                   ).utterances.num_rows == 1


def test_tables_erc_does_not_read_say_what_would_read_them(tmp_path):
    """A tab-separated metadata.txt, a train.csv.gz, and -o delimiter=\\t (a backslash and
    a t) or a tab the shell gave (stripped to nothing): each error named the rule broken,
    not what the user can do."""
    (tmp_path / "metadata.txt").write_text("session\tspeaker\ttext\ns\tAnn\tHi there\n")
    with pytest.raises(CorpusError, match=r"'metadata\.txt' is none: rename a table \(\.tsv for tab-"):
        read_manifest(tmp_path)
    with pytest.raises(CorpusError, match=r"metadata\.txt: manifest must be .*name it \.tsv when tabs"):
        read_manifest(tmp_path, files="metadata.txt")
    (tmp_path / "train.csv.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(CorpusError, match=r"train\.csv\.gz: manifest must be .*unpack it"):
        read_manifest(tmp_path / "train.csv.gz")
    for written in ("\\t", ""):
        with pytest.raises(CorpusError, match=r"delimiter: .*\(a tab: \"\\t\" in double quotes"):
            load_mapping(None, delimiter=written)


def test_inspect_gives_a_lone_file_the_split_its_name_holds(tmp_path):
    """One file, emory_test.csv: inspect suggested no files:, and the ingest read the
    test set as train (the split option)."""
    (tmp_path / "emory_test.csv").write_text("Utterance,Speaker,Dialogue_ID\nHello there,Ann,1\n")
    for path in (tmp_path, tmp_path / "emory_test.csv"):
        inspection = inspect_corpus(path)
        assert [split for _, _, split in inspection.files] == ["test"]
        assert inspection.mapping["files"] == "emory_{split}.csv"
        result = checked(read_manifest(path, **inspection.mapping))
        assert result.utterances.column("split").to_pylist() == ["test"]


def test_inspect_takes_a_repeated_id_as_the_dialogue(tmp_path):
    """[{"meta": {"id": "x0"}, "turns": [...]}]: the dialogue's id ("meta.id") matched no
    dialogue word, and inspect suggested no dialogue_id; an utterance's own id, unique in
    its file (though not across files), is no dialogue."""
    dialogues = [{"meta": {"id": f"x{d}"}, "turns": [{"id": t, "speaker": "AB"[t % 2], "text": f"Hi {d} {t}"}
                                                     for t in range(3)]} for d in range(2)]
    (tmp_path / "train.json").write_text(json.dumps(dialogues))
    inspection = inspect_corpus(tmp_path)
    assert inspection.mapping["columns"]["dialogue_id"] == "meta.id"
    result = checked(read_manifest(tmp_path, **inspection.mapping))
    assert result.utterances.column("dialogue_id").to_pylist() == ["x0"] * 3 + ["x1"] * 3
    for split in ("train", "dev"):
        (tmp_path / "train.json").unlink(missing_ok=True)
        (tmp_path / f"{split}.csv").write_text("id,speaker,text\n1,A,Hi there\n2,B,Ho there\n")
    assert "dialogue_id" not in inspect_corpus(tmp_path).mapping["columns"]
