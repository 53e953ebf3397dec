"""Strict, typed reading (the classes behind the bad input campaign): CSV records that
recover after a stray quote, limits that are reader options, typed values that never
become a Python repr, typed reader options per format, and the accounting check."""

from __future__ import annotations

import codecs
import datetime
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from erc.corpus import FORMATS, CorpusError, read_corpus
from erc.corpus.base import (
    TEXT_CLEANED,
    TEXT_WITHOUT_WORDS,
    TEXT_WITHOUT_WORDS_META,
    RowAccountingError,
    RowCollector,
    read_csv_records,
)
from erc.corpus.values import RowProblem, kind, meta_value, parse_time, parse_turn, text_value
from erc.errors import ConfigError
from erc.qc.alignment import check_alignment
from erc.schema import PROBLEM_REASONS
from tests.conftest import by_uid, checked


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.csv"
    path.write_text(text)
    return path


def test_reading_resumes_on_the_line_after_a_stray_quote(tmp_path):
    path = _csv(tmp_path, 'a,b\n1,ok\n2,"never closed\n3,fine\n4,"two\nlines"\n5,last\n')
    records = list(read_csv_records(path, ("a", "b")))
    assert [(r.line, r.problem[0] if r.problem else r.fields["b"]) for r in records] == [
        (2, "ok"), (3, "unterminated_quote"), (4, "fine"), (5, "two\nlines"), (7, "last")]


def test_field_counts_and_sizes_are_checked(tmp_path):
    path = _csv(tmp_path, "a,b\n1,2,3\n1\n1,2\n1," + "x" * 40 + "\n")
    reasons = [r.problem[0] if r.problem else "ok"
               for r in read_csv_records(path, ("a",), max_field_bytes=32)]
    assert reasons == ["bad_field_count", "bad_field_count", "ok", "field_too_large"]
    assert [r.problem for r in read_csv_records(path, ("a",))][3] is None  # the default: 128 KiB


def test_the_field_limit_is_a_reader_option_of_every_format(tmp_path):
    path = _csv(tmp_path, "dialogue_id,speaker,text\nd,Ann," + "x" * 500 + "\nd,Bob,Hi.\n")
    result = checked(read_corpus(path, options={"max_field_bytes": 100}))
    assert [p["reason"] for p in result.problems.to_pylist()] == ["field_too_large"]
    assert "max_field_bytes" in result.problems.to_pylist()[0]["detail"]
    assert checked(read_corpus(path)).problems.num_rows == 0
    for name, format in FORMATS.items():
        assert "max_field_bytes" in {f for f in format.options.__dataclass_fields__}, name


@pytest.mark.parametrize("format", sorted(FORMATS))
def test_reader_options_are_typed_per_format(format, tmp_path):
    """An unknown option or a wrong type is an error naming it, before anything is read."""
    with pytest.raises(ConfigError, match=rf"reader options of {format}: unknown key 'bogus'"):
        read_corpus(tmp_path, format=format, options={"bogus": 1})
    with pytest.raises(ConfigError, match="max_field_bytes"):
        read_corpus(tmp_path, format=format, options={"max_field_bytes": "big"})


def test_turns_are_whole_numbers_in_range():
    assert [parse_turn(v) for v in (0, "7", " 3 ", 4.0, "5.0", "+6", "0000012")] == [0, 7, 3, 4, 5, 6, 12]
    for bad in (1.7, "1.7", -1, "-1", "99999999999", 2**31, float("inf"), float("nan"), "two", ""):
        with pytest.raises(RowProblem) as problem:
            parse_turn(bad)
        assert problem.value.reason == "bad_turn", bad
    for wrong in (True, b"3", [3], {"n": 3}):
        with pytest.raises(RowProblem) as problem:
            parse_turn(wrong)
        assert problem.value.reason == "bad_type", wrong


def test_times_are_finite_and_not_negative():
    assert [parse_time(v) for v in ("", None, 1.5, "2", "00:01:02,500", "01:02.5")] == \
        [None, None, 1.5, 2.0, 62.5, 62.5]
    reasons = {}
    for value in ("-1", -0.5, "nan", "inf", "1e999", "soon", "00:61:00", b"1", [1], True):
        with pytest.raises(RowProblem) as problem:
            parse_time(value)
        reasons[repr(value)] = problem.value.reason
    assert reasons == {"'-1'": "negative_time", "-0.5": "negative_time", "'nan'": "bad_time",
                       "'inf'": "bad_time", "'1e999'": "bad_time", "'soon'": "bad_time",
                       "'00:61:00'": "bad_time", "b'1'": "bad_type", "[1]": "bad_type",
                       "True": "bad_type"}


def test_values_never_become_a_python_repr():
    assert text_value(3, "x") == "3" and text_value(3.0, "x") == "3" and text_value(2.5, "x") == "2.5"
    with pytest.raises(RowProblem, match="bytes"):
        text_value(b"text", "x")
    assert meta_value(["a", 1], "m") == '["a", 1]' and meta_value({"k": "v"}, "m") == '{"k": "v"}'
    assert meta_value(datetime.date(2024, 5, 1), "m") == "2024-05-01"
    assert meta_value(True, "m") == "true" and meta_value(float("nan"), "m") is None
    for wrong in (b"\x89PNG", [b"x"], {"k": b"v"}):
        with pytest.raises(RowProblem) as problem:
            meta_value(wrong, "m")
        assert problem.value.reason == "bad_type"
    # what a value is, in the message: "a number", not "a int"
    assert [kind(v) for v in (3, 2.5, None, datetime.date(2024, 5, 1), object())] == [
        "a number", "a number", "no value (null)", "a date", "an object"]


def test_parquet_lists_and_structs_in_meta_are_json(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"dialogue_id": ["d", "d"], "speaker": [["Ann"], ["Bob"]],
                             "text": ["Hi.", "Ho."], "tags": [["a", "b"], []],
                             "info": [{"season": 1}, {"season": 2}]}), path)
    result = checked(read_corpus(path))
    rows = by_uid(result.utterances)
    meta = dict(rows["m/train/d/0"]["meta"])
    assert json.loads(meta["tags"]) == ["a", "b"] and json.loads(meta["info"]) == {"season": 1}
    assert rows["m/train/d/0"]["speaker"] == "Ann"  # a one-name list is the name


def test_a_lost_row_is_an_error_not_a_silent_loss():
    out = RowCollector("c")
    for _ in out.rows(["one", "two"]):
        pass  # a reader that forgets to keep or record a row
    with pytest.raises(RowAccountingError, match="2 input rows, 0 kept"):
        out.result()
    with pytest.raises(ValueError, match="PROBLEM_REASONS"):
        out.reject("because", "no such reason", source="x", line=1)
    assert all(meaning.strip() for meaning in PROBLEM_REASONS.values())


def test_a_corpus_of_headers_only_is_an_error_not_an_empty_corpus(tmp_path):
    """MELD and IEMOCAP csvs with a header and no row were ingested as a corpus of 0
    utterances (exit 0); training then failed far from the cause."""
    from erc.corpus.iemocap import TEXT_COLUMNS, TEXT_SPLIT_FILES
    from erc.corpus.meld import REQUIRED_COLUMNS, SPLIT_FILES

    cases = {"meld": (SPLIT_FILES["train"], REQUIRED_COLUMNS),
             "iemocap": (TEXT_SPLIT_FILES["train"], TEXT_COLUMNS),
             "manifest": ("m.csv", ("dialogue_id", "speaker", "text"))}
    for name, (file, columns) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / file).write_text(",".join(columns) + "\n")
        with pytest.raises(CorpusError, match=rf"{file}: no utterance rows") as err:
            read_corpus(folder if name != "manifest" else folder / file)
        # a manifest's corpus is named by its file ("m"): no "m reader" to name
        assert "reader" not in str(err.value), err.value


def test_meld_episode_times_are_metadata(tmp_path):
    """Inverted or unreadable episode times cost the row its expected duration, counted as
    a repair: the clip is cut already, nothing else reads them."""
    folder = tmp_path / "meld"
    folder.mkdir()
    (folder / "train_sent_emo.csv").write_text(
        "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
        "StartTime,EndTime\n"
        '1,Hi.,Ross,joy,positive,0,0,1,1,"00:00:05,000","00:00:04,000"\n'
        '2,Ho.,Rachel,joy,positive,0,1,1,1,"00:00:05,000","00:00:06,000"\n')
    result = checked(read_corpus(folder))
    rows = by_uid(result.utterances)
    assert "expected_duration_s" not in dict(rows["meld/train/dia0_utt0"]["meta"])
    assert dict(rows["meld/train/dia0_utt1"]["meta"])["expected_duration_s"] == "1.000"
    assert sum(result.repairs.values()) == 1


def test_control_characters_leave_the_text_of_every_reader(tmp_path):
    """A NUL (or ESC, or another C0 control character) in a transcript was kept in the
    ingested text, where it breaks tokenizers, CSV and Parquet consumers and terminals; a
    tab or line break was kept too. Every reader's text is cleaned by one rule, counted as
    a repair; a text of nothing else is no text (no media either: missing_field)."""
    meld = tmp_path / "meld"
    meld.mkdir()
    (meld / "train_sent_emo.csv").write_bytes(
        b"Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
        b'1,"Hi\x00 there,\ttoo\r\nlate",Ross,joy,positive,0,0\n'
        b"2,\x00\x1b,Ross,joy,positive,0,1\n3,Fine.,Ross,joy,positive,0,2\n")
    iemocap = tmp_path / "iemocap_text"
    iemocap.mkdir()
    (iemocap / "iemocap_train.csv").write_bytes(
        b"Dialogue_ID,Utterance_ID,Speaker,Utterance,Emotion\n"
        b"Ses01F_impro01,0,F,Fi\x00ne.,neu\nSes01F_impro01,1,M,\x07,neu\n")
    daily = tmp_path / "daily"
    daily.mkdir()
    (daily / "dialogues_text.txt").write_bytes(b"A\x00 . __eou__ \x00\x01 __eou__ B . __eou__\n")
    (daily / "dialogues_emotion.txt").write_text("0 0 4\n")
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"dialogue_id": "d", "speaker": "Ann", "text": "Hi\u0000."}) + "\n"
                     + json.dumps({"dialogue_id": "d", "speaker": "Bob", "text": "\u0000"}) + "\n")
    for path, fine, empty, text in [
            (meld, "meld/train/dia0_utt0", "meld/train/dia0_utt1", "Hi there, too  late"),
            (iemocap, "iemocap/train/Ses01F_impro01/0", "iemocap/train/Ses01F_impro01/1", "Fine."),
            (daily, "dailydialog/train/0/0", "dailydialog/train/0/1", "A ."),
            (jsonl, "m/train/d/0", "m/train/d/1", "Hi.")]:
        result = checked(read_corpus(path))
        assert by_uid(result.utterances)[fine]["text"] == text, path
        assert [(p["utterance_id"], p["reason"]) for p in result.problems.to_pylist()] == [
            (empty, "missing_field")], path
        assert result.repairs[TEXT_CLEANED] == 1, path
    problem = checked(read_corpus(jsonl)).problems.to_pylist()[0]
    assert "neither text nor media" in problem["detail"]
    assert "only control characters" in problem["detail"]
    # A row with media keeps its place; a text of control characters only is no text.
    collector = RowCollector("x")
    collector.n_input = 1
    assert collector.add({"utterance_id": "x/1", "split": "train", "dialogue_id": "d", "turn": 0,
                          "speaker": "Ann", "text": "\x00", "media_path": "/clip.mp4"},
                         source="s", line=1)
    assert collector.result().utterances.column("text").to_pylist() == [None]


def test_a_carriage_return_inside_a_line_cuts_no_record(tmp_path):
    """Files of one record a line end a line at "\n" alone: a stray "\r" cut an IEMOCAP
    transcript line, the words after it dropped without a word, and a JSON line holding
    "\r" as whitespace between its keys was read as two malformed rows."""
    dialog = tmp_path / "IEMOCAP_full_release" / "Session1" / "dialog"
    (dialog / "transcriptions").mkdir(parents=True)
    (dialog / "EmoEvaluation").mkdir(parents=True)
    (dialog / "transcriptions" / "Ses01F_impro01.txt").write_bytes(
        b"Ses01F_impro01_F000 [001.0000-002.0000]: Hello\r there.\r\n"
        b"Ses01F_impro01_M000 [002.0000-003.0000]: Fine.\r\r\n")
    (dialog / "EmoEvaluation" / "Ses01F_impro01.txt").write_bytes(
        b"[1.0 - 2.0]\tSes01F_impro01_F000\tneu\t[2.5, 2.5, 2.5]\r\n"
        b"[2.0 - 3.0]\tSes01F_impro01_M000\tang\t[2.5, 2.5, 2.5]\r\n")
    result = checked(read_corpus(tmp_path / "IEMOCAP_full_release", keep_missing_media=True))
    rows = by_uid(result.utterances)
    assert rows["iemocap/Ses01F_impro01_F000"]["text"] == "Hello  there."
    assert rows["iemocap/Ses01F_impro01_M000"]["emotion"] == "angry"
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_bytes(b'{"dialogue_id": "d",\r "speaker": "Ann", "text": "Hi."}\n'
                      b'{"dialogue_id": "d", "speaker": "Bob", "text": "Yo."}\r\n')
    result = checked(read_corpus(jsonl))
    assert result.problems.num_rows == 0 and result.n_input == 2
    assert [r["speaker"] for r in result.utterances.to_pylist()] == ["Ann", "Bob"]


def test_split_names_of_reader_options_are_read_as_the_manifest_reads_its_split_column(tmp_path):
    """A split named " train" in actor_splits or session_splits kept its rows in a split
    of its own, which the train role never finds; a blank name kept them in no split. A
    split word in another case ("TRAIN", "Validation") was a split of its own too, in a
    split column as in the options, while a file named TRAIN.csv was read as train."""
    ravdess = tmp_path / "ravdess" / "Actor_01"
    ravdess.mkdir(parents=True)
    (ravdess / "03-01-01-01-01-01-01.wav").write_bytes(b"RIFF")
    result = checked(read_corpus(tmp_path / "ravdess", actor_splits={" train ": "1-24"}))
    assert result.utterances.column("split").to_pylist() == ["train"]
    result = checked(read_corpus(tmp_path / "ravdess", actor_splits={"Train": "1-24"}))
    assert result.utterances.column("split").to_pylist() == ["train"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("split,dialogue_id,speaker,text\nTRAIN,a,Ann,Hi.\n Validation ,b,Bob,Yo.\n"
                        "Fold1,c,Cy,Hey.\n,d,Di,Oh.\n")
    result = checked(read_corpus(manifest))
    assert result.utterances.column("split").to_pylist() == ["train", "dev", "Fold1", "train"]
    with pytest.raises(ConfigError, match="actor_splits: '' is no split name"):
        read_corpus(tmp_path / "ravdess", actor_splits={"": "1-24"})
    dialog = tmp_path / "IEMOCAP_full_release" / "Session1" / "dialog"
    (dialog / "transcriptions").mkdir(parents=True)
    (dialog / "EmoEvaluation").mkdir(parents=True)
    (dialog / "transcriptions" / "Ses01F_impro01.txt").write_text(
        "Ses01F_impro01_F000 [001.0000-002.0000]: Hello.\n")
    (dialog / "EmoEvaluation" / "Ses01F_impro01.txt").write_text(
        "[1.0 - 2.0]\tSes01F_impro01_F000\tneu\t[2.5, 2.5, 2.5]\n")
    release = tmp_path / "IEMOCAP_full_release"
    result = checked(read_corpus(release, session_splits={1: "dev "}, keep_missing_media=True))
    assert result.utterances.column("split").to_pylist() == ["dev"]
    result = checked(read_corpus(release, session_splits={1: "VALID"}, keep_missing_media=True))
    assert result.utterances.column("split").to_pylist() == ["dev"]
    with pytest.raises(ConfigError, match="session_splits.1: ' ' is no split name"):
        read_corpus(release, session_splits={1: " "})


def test_a_text_without_a_word_is_no_text(tmp_path):
    """A transcript of emoji, punctuation or symbols alone was kept as text: embedded by the
    text model and compared with the ASR. It is now no text, as a blank one is (counted as a
    repair, the text it had in meta text_without_words), so QC has no transcript to judge
    the clip by; with no media either the row is a missing_field problem. A word of any
    script (letters or digits) is a word."""
    (tmp_path / "clip.wav").write_bytes(b"RIFF")
    wordless = ["😂😂", "...", "?!", "★ ♪ → ©"]
    words = ["Ναι", "Да", "好", "نعم", "٣", "42", "¿Sí?", "😂 ok"]
    lines = [{"dialogue_id": "d", "speaker": "Ann", "text": t, "media": "clip.wav"}
             for t in wordless + words]
    lines.append({"dialogue_id": "d", "speaker": "Bob", "text": "🙂"})
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = checked(read_corpus(jsonl))
    rows = result.utterances.to_pylist()
    assert [r["text"] for r in rows] == [None] * len(wordless) + words
    assert [dict(r["meta"]).get(TEXT_WITHOUT_WORDS_META) for r in rows] == wordless + [None] * len(words)
    assert result.repairs[TEXT_WITHOUT_WORDS] == len(wordless)
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "missing_field" and "holds no word" in problem["detail"]
    # QC compares no transcript with the ASR: neither a pass nor a rejection on nothing.
    statuses = [r["status"] for r in check_alignment([r["text"] for r in rows], ["hello there"] * len(rows))]
    assert statuses[:len(wordless)] == ["no_transcript"] * len(wordless)
    assert "no_transcript" not in statuses[len(wordless):]


def test_a_byte_order_mark_is_no_part_of_the_first_row(tmp_path):
    """Files saved by Windows tools start with a UTF-8 BOM: the first JSON line still
    parses, and the first IEMOCAP transcript line is still an utterance (not a line that
    silently is no row)."""
    bom = b"\xef\xbb\xbf"
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_bytes(bom + b'{"dialogue_id": "d", "speaker": "Ann", "text": "Hi."}\n'
                      b'{"dialogue_id": "d", "speaker": "Bob", "text": "Ho."}\n')
    result = checked(read_corpus(jsonl))
    assert result.problems.num_rows == 0
    assert by_uid(result.utterances)["m/train/d/0"]["speaker"] == "Ann"

    top = tmp_path / "IEMOCAP_full_release"
    dialog = top / "Session1" / "dialog"
    name = "Ses01F_impro01"
    for sub, lines in (("transcriptions", [f"{name}_F000 [1.0-2.0]: Hello.",
                                           f"{name}_M000 [2.5-3.0]: Hi."]),
                       ("EmoEvaluation", [f"[1.0 - 2.0]\t{name}_F000\tneu\t[2.5]",
                                          f"[2.5 - 3.0]\t{name}_M000\tang\t[2.5]"])):
        (dialog / sub).mkdir(parents=True)
        (dialog / sub / f"{name}.txt").write_bytes(bom + "\r\n".join(lines).encode() + b"\r\n")
    wavs = top / "Session1" / "sentences" / "wav" / name
    wavs.mkdir(parents=True)
    for speaker in ("F000", "M000"):
        (wavs / f"{name}_{speaker}.wav").write_bytes(b"RIFF")
    result = checked(read_corpus(top))
    rows = by_uid(result.utterances)
    assert result.n_input == 2 and result.problems.num_rows == 0
    assert rows[f"iemocap/{name}_F000"]["emotion"] == "neutral"


def test_a_byte_order_mark_inside_a_file_is_no_part_of_its_row(tmp_path):
    """Files saved by Windows tools joined one after another (cat a.csv b.csv) hold a BOM
    at the start of a later line: it stuck to that row's dialogue id, the row kept in a
    dialogue "\ufeffd" of its own, silently; a JSON line holding it was malformed."""
    bom = "\ufeff"
    csv_path = _csv(tmp_path, f"dialogue_id,speaker,text\nd,Ann,Hi.\n{bom}d,Bob,Yo.\n")
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"dialogue_id": "d", "speaker": "Ann", "text": "Hi."}\n'
                     f'{bom}{{"dialogue_id": "d", "speaker": "Bob", "text": "Yo."}}\n')
    for path in (csv_path, jsonl):
        result = checked(read_corpus(path))
        assert result.problems.num_rows == 0
        assert by_uid(result.utterances)["m/train/d/1"]["speaker"] == "Bob"


def _unlistable(monkeypatch, folder: Path) -> None:
    """Listing ``folder`` fails as it does without read permission (which does not stop
    root, as whom tests may run)."""
    def guarded(real):
        def call(path=".", *args, **kwargs):
            if isinstance(path, (str, os.PathLike)) and os.fspath(path) == str(folder):
                raise PermissionError(13, "Permission denied", os.fspath(path))
            return real(path, *args, **kwargs)
        return call
    monkeypatch.setattr(os, "scandir", guarded(os.scandir))
    monkeypatch.setattr(os, "listdir", guarded(os.listdir))


def test_a_folder_erc_may_not_list_is_an_error_naming_it(tmp_path, monkeypatch):
    """glob passes over a folder it may not list in silence: a RAVDESS actor's folder,
    an IEMOCAP session's transcriptions, a manifest folder that ``files:`` globs into or a
    split folder of manifests without read permission lost their rows unseen, and the
    ingest counted none of them."""
    ravdess = tmp_path / "ravdess"
    for actor in ("01", "02"):
        (ravdess / f"Actor_{actor}").mkdir(parents=True)
        (ravdess / f"Actor_{actor}" / f"03-01-01-01-01-01-{actor}.flac").write_bytes(b"fLaC")
    release = tmp_path / "IEMOCAP_full_release"
    for session in (1, 2):
        name = f"Ses0{session}F_impro01"
        dialog = release / f"Session{session}" / "dialog"
        (dialog / "transcriptions").mkdir(parents=True)
        (dialog / "EmoEvaluation").mkdir()
        (dialog / "transcriptions" / f"{name}.txt").write_text(f"{name}_F000 [1.0-2.0]: Hi.\n")
        (dialog / "EmoEvaluation" / f"{name}.txt").write_text(
            f"[1.0 - 2.0]\t{name}_F000\tneu\t[2.5]\n")
    # manifests: a folder that files: globs into, and a split folder found without files:
    globbed, by_split = tmp_path / "globbed", tmp_path / "by_split"
    for corpus, mapping, files in ((globbed, "files: parts/*.csv\n", ("parts/a.csv", "parts/b.csv")),
                                   (by_split, "split: train\n", ("train.csv", "dev/m.csv"))):
        for file in files:
            (corpus / file).parent.mkdir(parents=True, exist_ok=True)
            (corpus / file).write_text("dialogue_id,speaker,text\nd,Ann,Hi.\n")
        (corpus / "erc-mapping.yaml").write_text(mapping)
    for corpus, folder, options in (
            (ravdess, ravdess / "Actor_02", {}),
            (release, release / "Session2" / "dialog" / "transcriptions", {"keep_missing_media": True}),
            (globbed, globbed / "parts", {}), (by_split, by_split / "dev", {})):
        with monkeypatch.context() as patch:
            _unlistable(patch, folder)
            with pytest.raises(CorpusError, match=rf"{folder.name}: the folder cannot be listed "
                                                  rf"\(Permission denied\)"):
                read_corpus(corpus, options=options)
        assert checked(read_corpus(corpus, options=options)).n_input == 2


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be-marked", "utf-32"])
def test_a_utf16_file_with_its_byte_order_mark_reads_as_its_utf8_text(tmp_path, encoding):
    """A file saved as UTF-16 ("Unicode" text in Windows tools, its byte order mark first)
    was refused; it reads as the same text saved as UTF-8 does: an IEMOCAP transcript, a
    manifest, and `erc corpus inspect`'s view of its columns."""
    from erc.corpus.inspect import inspect_corpus

    def encoded(text: str) -> bytes:
        if encoding == "utf-16-be-marked":
            return codecs.BOM_UTF16_BE + text.encode("utf-16-be")
        return text.encode(encoding)

    name = "Ses01F_impro01"
    tables = {}
    for saved_as, write in (("utf8", str.encode), ("unicode", encoded)):
        dialog = tmp_path / saved_as / "IEMOCAP_full_release" / "Session1" / "dialog"
        (dialog / "transcriptions").mkdir(parents=True)
        (dialog / "transcriptions" / f"{name}.txt").write_bytes(
            write(f"{name}_F000 [1.0-2.0]: Hello, Zoë.\r\n{name}_M001 [2.5-3.0]: Oh.\r\n"))
        csv_path = tmp_path / saved_as / "m.csv"
        csv_path.write_bytes(write("dialogue_id,speaker,text\r\nd,Ann,\"Hi, Zoë.\"\r\nd,Bob,Oh.\r\n"))
        tables[saved_as] = [checked(read_corpus(path)).utterances.select(["dialogue_id", "speaker", "text"])
                        for path in (dialog.parents[1], csv_path)]
        tsv_path = tmp_path / saved_as / "t.csv"  # what "Unicode text" of a spreadsheet is
        tsv_path.write_bytes(write("dialogue_id\tspeaker\ttext\r\nd\tAnn\tHi.\r\n"))
        assert inspect_corpus(tsv_path).mapping["delimiter"] == "\t"
    assert tables["unicode"] == tables["utf8"] and tables["utf8"][1].num_rows == 2
    assert tables["utf8"][1].column("text").to_pylist() == ["Hi, Zoë.", "Oh."]


def test_a_utf16_file_that_is_not_utf16_past_its_mark_is_an_error_naming_it(tmp_path):
    """A byte order mark then bytes that are no UTF-16 (a lone surrogate): one line naming
    the file and where, not text read with pieces missing."""
    path = tmp_path / "m.csv"
    path.write_bytes("dialogue_id,speaker,text\r\n".encode("utf-16") + b"\x00\xd8")
    with pytest.raises(CorpusError, match=r"m\.csv: it starts with a UTF-16 byte order mark, "
                                          r"but its bytes from \d+ are not UTF-16 text"):
        read_corpus(path)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_a_utf16_file_without_its_byte_order_mark_is_an_error_naming_it(tmp_path, encoding):
    """Without the mark, a UTF-16 manifest's header was read as names with NULs between
    their letters: `erc corpus inspect` suggested a mapping of them."""
    from erc.corpus.inspect import inspect_corpus

    path = tmp_path / "m.csv"
    path.write_bytes("dialogue_id,speaker,text\r\nd,Ann,Hi.\r\n".encode(encoding))
    for read in (read_corpus, inspect_corpus):
        with pytest.raises(CorpusError, match=r"m\.csv: \d+ of its first \d+ bytes are NUL: UTF-16"):
            read(path)


def test_a_binary_file_named_as_a_corpus_file_is_an_error_naming_it(tmp_path):
    """Random bytes (a zipped workbook saved as .csv) read as a header of garbled column
    names: the error quoted them to the terminal instead of saying what the file is."""
    import random

    from erc.corpus.meld import read_meld

    noise = random.Random(0).randbytes(6000)
    meld = tmp_path / "meld"
    meld.mkdir()
    (meld / "train_sent_emo.csv").write_bytes(noise)
    (tmp_path / "m.csv").write_bytes(noise)
    for read in (read_meld, read_corpus):
        with pytest.raises(CorpusError, match=r"\.csv: \d+ of its first \d+ bytes are control "
                                              r"characters: not a text file"):
            read(meld if read is read_meld else tmp_path / "m.csv")
    # a text file with a few terminal escapes in its text stays a corpus
    (tmp_path / "t.csv").write_text("dialogue_id,speaker,text\nd,Ann,\x1b[31mred\x1b[0m hi\n")
    assert read_corpus(tmp_path / "t.csv").utterances.num_rows == 1


def _named(folder: Path, name: bytes) -> Path:
    """``folder``/``name``, a name of bytes that need not be UTF-8, as Python reads it."""
    return Path(os.fsdecode(os.fsencode(folder) + b"/" + name))


def test_file_names_that_are_not_utf8_are_problems_not_a_crash(tmp_path):
    """A file or folder named in Latin-1 (bytes that are not UTF-8) stopped the ingest
    with a traceback: no table holds the name as Python reads it."""
    actor = tmp_path / "ravdess" / "Actor_01"
    actor.mkdir(parents=True)
    (actor / "03-01-01-01-01-01-01.wav").write_bytes(b"RIFF")
    _named(actor, b"03-01-01-01-01-02-01\xe9.wav").write_bytes(b"RIFF")  # a bad name
    result = checked(read_corpus(tmp_path / "ravdess"))
    assert result.utterances.num_rows == 1
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "bad_filename" and problem["source"].endswith("-02-01\\udce9.wav")

    other = _named(tmp_path, b"caf\xe9")  # a corpus in a folder of such a name
    (other / "Actor_01").mkdir(parents=True)
    (other / "Actor_01" / "03-01-01-01-01-01-01.wav").write_bytes(b"RIFF")
    result = checked(read_corpus(other, format="ravdess"))
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "bad_encoding" and "caf\\udce9" in problem["detail"]
    assert "not UTF-8 text" in problem["detail"] and result.utterances.num_rows == 0

    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "a.csv").write_text("dialogue_id,speaker,text\nd,Ann,Hi\n")
    _named(manifests, b"b\xe9.csv").write_text("dialogue_id,speaker,text\ne,Bob,Yo,cut\n")
    result = checked(read_corpus(manifests, format="manifest"))
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "bad_field_count" and problem["source"].endswith("b\\udce9.csv")


def test_parquet_decimals_and_durations_are_numbers_and_times(tmp_path):
    """A Parquet file written from a database (decimal columns) or from pandas timedeltas
    (duration columns): each of its rows was set aside as bad_type, 'a Decimal where text
    or a number belongs'."""
    import decimal

    dec = pa.decimal128(12, 2)
    table = pa.table({
        "dialogue_id": pa.array([decimal.Decimal(7), decimal.Decimal(7), decimal.Decimal(7)], dec),
        "speaker": ["A", "B", "A"], "text": ["One.", "Two.", "Three."],
        "turn": pa.array([decimal.Decimal(0), decimal.Decimal("1.5"), decimal.Decimal(2)], dec),
        "start": pa.array([datetime.timedelta(seconds=1.25), datetime.timedelta(seconds=3),
                           datetime.timedelta(seconds=5)], pa.duration("ms")),
        "end": pa.array([decimal.Decimal("2.5"), decimal.Decimal(4), decimal.Decimal(6)], dec)})
    pq.write_table(table, tmp_path / "m.parquet")
    result = checked(read_corpus(tmp_path / "m.parquet"))
    rows = by_uid(result.utterances)
    assert sorted(rows) == ["m/train/7/0", "m/train/7/2"]
    assert (rows["m/train/7/0"]["start_s"], rows["m/train/7/0"]["end_s"]) == (1.25, 2.5)
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "bad_turn" and "1.50" in problem["detail"]

    # a duration in an id's template is no id: its row set aside, not a crash
    result = checked(read_corpus(tmp_path / "m.parquet", columns={"dialogue_id": "d{start}"}))
    assert result.utterances.num_rows == 0
    assert [p["reason"] for p in result.problems.to_pylist()] == ["bad_type", "bad_turn", "bad_type"]


def test_a_time_of_hundreds_of_digits_is_a_bad_time_row(tmp_path):
    """A JSON integer too large for a float as a start or end stopped the whole ingest
    with an internal error (OverflowError), not one bad_time row."""
    with pytest.raises(RowProblem) as problem:
        parse_time(10**400)
    assert problem.value.reason == "bad_time"
    path = tmp_path / "m.jsonl"
    path.write_text('{"dialogue_id": "d", "speaker": "A", "text": "Hi.", "start": 0, "end": 1'
                    + "0" * 400 + '}\n{"dialogue_id": "d", "speaker": "B", "text": "Yo."}\n')
    result = checked(read_corpus(path))
    assert result.utterances.column("text").to_pylist() == ["Yo."]
    assert [(p["line"], p["reason"]) for p in result.problems.to_pylist()] == [(1, "bad_time")]
