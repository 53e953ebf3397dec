"""The IEMOCAP readers (erc.corpus.iemocap): the text-only csvs (real ones from ../shared
and malformed ones in tmp_path) and a tiny IEMOCAP_full_release tree built in tmp_path."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from erc.corpus import CorpusError, detect_format, read_corpus
from erc.corpus.iemocap import LABELS, read_iemocap_release, read_iemocap_text
from tests.conftest import by_uid, checked, make_clip, shared_path

TEXT_HEADER = b"Dialogue_ID,Utterance_ID,Speaker,Utterance,Emotion\n"




def write_text_csv(folder: Path, rows: list[bytes], name: str = "iemocap_train.csv",
                   header: bytes = TEXT_HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(header + b"".join(r if r.endswith(b"\n") else r + b"\n" for r in rows))
    return folder


# --- text csvs: the real corpus --------------------------------------------------------


def test_real_iemocap_text():
    path = shared_path("data", "iemocap_text")
    assert detect_format(path) == "iemocap_text"
    result = checked(read_corpus(path))
    t = result.utterances
    assert result.problems.num_rows == 0
    assert Counter(t.column("split").to_pylist()) == {"train": 5163, "valid": 647}
    assert set(t.column("emotion").to_pylist()) == set(LABELS) and len(LABELS) == 6
    speakers = set(t.column("speaker").to_pylist())
    assert {"Ses01_F", "Ses01_M"} <= speakers
    assert all(re.fullmatch(r"Ses0\d_[FM]", s) for s in speakers), speakers
    assert len(set(t.column("utterance_id").to_pylist())) == t.num_rows
    first = t.slice(0, 1).to_pylist()[0]
    assert first == {**first, "utterance_id": "iemocap/train/Ses01F_impro01/0",
                     "dialogue_id": "Ses01F_impro01", "turn": 0, "speaker": "Ses01_F",
                     "text": "Excuse me.", "emotion": "neutral"}


# --- text csvs: malformed ----------------------------------------------------------------


def test_text_missing_column(tmp_path):
    write_text_csv(tmp_path, [b"Ses01F_impro01,0,F,Hi.,neu"],
                   header=b"Dialogue_ID,Utterance_ID,Speaker,Utterance\n")
    with pytest.raises(CorpusError, match="Emotion"):
        read_iemocap_text(tmp_path)


def test_text_no_csv(tmp_path):
    with pytest.raises(CorpusError):
        read_iemocap_text(tmp_path)


def test_text_labels(tmp_path):
    write_text_csv(tmp_path, [
        b"Ses01F_impro01,0,F,Hi.,neu",
        b"Ses01F_impro01,1,M,Hm.,xxx",
        b"Ses01F_impro01,2,F,Oh!,sur",
        b"Ses01F_impro01,3,M,Eh.,zzz",
        b"Ses01F_impro01,4,F,Great.,EXC",
    ])
    result = checked(read_iemocap_text(tmp_path))
    kept = by_uid(result.utterances)
    assert set(kept) == {"iemocap/train/Ses01F_impro01/0", "iemocap/train/Ses01F_impro01/4"}
    assert kept["iemocap/train/Ses01F_impro01/4"]["emotion"] == "excited"
    problems = by_uid(result.problems)
    xxx = problems["iemocap/train/Ses01F_impro01/1"]
    sur = problems["iemocap/train/Ses01F_impro01/2"]
    zzz = problems["iemocap/train/Ses01F_impro01/3"]
    assert xxx["reason"] == "excluded_label" and "xxx" in xxx["detail"]
    assert sur["reason"] == "excluded_label" and "sur" in sur["detail"]
    assert zzz["reason"] == "unknown_label" and "zzz" in zzz["detail"]
    assert (xxx["line"], sur["line"], zzz["line"]) == (3, 4, 5)


def test_text_labels_written_out(tmp_path):
    # a test file of one's own may name the emotions instead of coding them: the model's
    # own label in another case is that label, not an unknown code that empties the split
    write_text_csv(tmp_path, [
        b"Ses05F_impro01,0,F,Hi.,Neutral",
        b"Ses05F_impro01,1,M,Hm.,frustrated ",
        b"Ses05F_impro01,2,F,Oh!,surprised",
    ], name="iemocap_test.csv")
    result = checked(read_iemocap_text(tmp_path))
    kept = by_uid(result.utterances)
    assert [kept[f"iemocap/test/Ses05F_impro01/{t}"]["emotion"] for t in (0, 1)] == [
        "neutral", "frustrated"]
    assert by_uid(result.problems)["iemocap/test/Ses05F_impro01/2"]["reason"] == "excluded_label"


def test_text_one_split_file_given_alone(tmp_path):
    # the held-out file named itself (not its folder) read as a manifest lacking erc's
    # column names, though it has Dialogue_ID and Speaker: it is iemocap_text, its split
    write_text_csv(tmp_path, [b"Ses01F_impro01,0,F,Hi.,neu"])
    write_text_csv(tmp_path, [b"Ses05F_impro01,0,F,Hi.,neu"], name="iemocap_test.csv")
    file = tmp_path / "iemocap_test.csv"
    assert detect_format(file) == "iemocap_text"
    assert list(by_uid(checked(read_corpus(file)).utterances)) == ["iemocap/test/Ses05F_impro01/0"]


def test_text_release_utterance_ids_are_turns_in_order(tmp_path):
    # a Session 5 test file that names its turns by the release's ids set every row aside
    # (bad_turn): each is the next turn of its dialogue, its id kept in meta
    write_text_csv(tmp_path, [
        b"Ses05F_impro01,Ses05F_impro01_F000,F,Hi.,neu",
        b"Ses05F_impro01,Ses05F_impro01_M000,M,Hello.,hap",
        b"Ses05F_impro01,Ses05F_impro01_F001,F,Bye.,sad",
        b"Ses05F_impro01,Ses05F_impro02_F002,F,Other dialogue's id.,sad",
    ], name="iemocap_test.csv")
    result = checked(read_iemocap_text(tmp_path))
    kept = result.utterances.to_pylist()
    assert [(r["turn"], r["speaker"], dict(r["meta"])["release_id"]) for r in kept] == [
        (0, "Ses05_F", "Ses05F_impro01_F000"), (1, "Ses05_M", "Ses05F_impro01_M000"),
        (2, "Ses05_F", "Ses05F_impro01_F001")]
    assert [p["reason"] for p in result.problems.to_pylist()] == ["bad_turn"]


def test_text_missing_field_and_duplicate(tmp_path):
    write_text_csv(tmp_path, [
        b"Ses01F_impro01,0,F,Hi.,neu",
        b"Ses01F_impro01,1,X,Who?,neu",      # speaker must be F or M
        b"Ses01F_impro01,two,M,What?,neu",   # turn not a number
        b",3,M,Nowhere.,neu",                # no dialogue
        b"Ses01F_impro01,0,M,Again.,ang",    # same dialogue/turn as line 2
    ])
    result = checked(read_iemocap_text(tmp_path))
    assert result.utterances.num_rows == 1
    reasons = [(p["line"], p["reason"]) for p in result.problems.to_pylist()]
    assert reasons == [(3, "missing_field"), (4, "bad_turn"), (5, "missing_field"),
                       (6, "duplicate_id")]
    dup = result.problems.to_pylist()[-1]
    assert dup["utterance_id"] == "iemocap/train/Ses01F_impro01/0" and "first seen" in dup["detail"]


def test_text_ids_are_the_whole_dialogue_and_the_turn_as_a_number(tmp_path):
    """"0" and "0.0" are one turn (a duplicate); two long dialogue ids that share their
    first 80 characters are two dialogues (not a duplicate)."""
    long = b"D" * 90
    write_text_csv(tmp_path, [
        b"Ses01F_impro01,0,F,Hi.,neu",
        b"Ses01F_impro01,0.0,M,Again.,ang",
        long + b"x,0,F,One.,neu",
        long + b"y,0,F,Other.,neu",
    ])
    result = checked(read_iemocap_text(tmp_path))
    assert [(p["line"], p["reason"]) for p in result.problems.to_pylist()] == [(3, "duplicate_id")]
    assert sorted(by_uid(result.utterances)) == [
        f"iemocap/train/{'D' * 90}x/0", f"iemocap/train/{'D' * 90}y/0",
        "iemocap/train/Ses01F_impro01/0"]


def test_text_encodings(tmp_path):
    write_text_csv(tmp_path, [
        b"Ses01F_impro01,0,F,Excuse me.,neu",
        b'Ses01F_impro01,1,M,"Two\nlines, quoted",fru',     # lines 3-4
        b"Ses01F_impro01,2,F,I\x92m here.,neu",              # line 5: cp1252
        b"Ses01F_impro01,3,M,Bad \x81\x8d.,ang",             # line 6: undecodable
        b"Ses01F_impro01,4,F,Fine.,sad",                     # line 7
        "Ses01F_impro01,5,M,It\u00e2\u20ac\u2122s.,neu".encode(),  # line 8: mojibake
        "Ses01F_impro01,6,F,I don\u0092t.,neu".encode(),      # line 9: cp1252 read as Latin-1
    ])
    result = checked(read_iemocap_text(tmp_path))
    assert result.utterances.num_rows == 6
    [problem] = result.problems.to_pylist()
    assert problem["reason"] == "bad_encoding" and problem["line"] == 6
    assert problem["utterance_id"] == "iemocap/train/Ses01F_impro01/3"
    assert "cp1252" in problem["detail"]
    kept = by_uid(result.utterances)
    assert kept["iemocap/train/Ses01F_impro01/1"]["text"] == "Two lines, quoted"  # the line break a space
    assert kept["iemocap/train/Ses01F_impro01/2"]["text"] == "I\u2019m here."
    assert kept["iemocap/train/Ses01F_impro01/4"]["text"] == "Fine."
    assert kept["iemocap/train/Ses01F_impro01/5"]["text"] == "It\u2019s."
    assert kept["iemocap/train/Ses01F_impro01/6"]["text"] == "I don\u2019t."
    assert sum(result.repairs.values()) == 4  # cp1252, the line break, the two mojibakes


# --- the full release ------------------------------------------------------------------

DIALOGUE = "Ses01F_impro01"
TRANSCRIPT = [
    b"Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.",
    b"Ses01F_impro01_M000 [007.5712-010.4750]: Do you have your forms?",
    b"M: [BREATHING]",
    b"Ses01F_impro01_F002 [016.0000-018.0000]: I\x92m here.",       # out of time order, cp1252
    b"Ses01F_impro01_F001 [010.9000-014.0000]: Yeah.",
    b"Ses01F_impro01_M001 [019.0000-020.0000]: No label for me.",   # no EmoEvaluation entry
    b"Ses01F_impro01_F003 [021.0000-022.5000]: No audio for me.",   # no wav, no avi
    b"Ses01F_impro01_M002 [023.0000-024.0000]: Whatever.",          # xxx
    b"Ses01F_impro01_M003 [026.0000-025.0000]: Backwards.",         # end before start
    b"Ses01F_impro01_F004 [027.0000-028.0000]: Bad \x81\x8d bytes.",
    b"",
]
EMO_EVALUATION = [
    "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]",
    "",
    "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]",
    "C-E1:\tNeutral state;\t()",
    "C-E2:\tFrustration;\t()",
    "A-E1:\tval 3; act 2; dom  2;\t()",
    "",
    "[7.5712 - 10.4750]\tSes01F_impro01_M000\tfru\t[2.0000, 3.5000, 3.5000]",
    "C-E1:\tFrustration;\t()",
    "",
    "[10.9000 - 14.0000]\tSes01F_impro01_F001\tsad\t[2.0000, 2.0000, 2.0000]",
    "[16.0000 - 18.0000]\tSes01F_impro01_F002\thap\t[4.0000, 3.0000, 3.0000]",
    "[21.0000 - 22.5000]\tSes01F_impro01_F003\tang\t[2.0000, 4.0000, 4.0000]",
    "[23.0000 - 24.0000]\tSes01F_impro01_M002\txxx\t[2.5000, 2.5000, 2.5000]",
    "[26.0000 - 25.0000]\tSes01F_impro01_M003\tneu\t[2.5000, 2.5000, 2.5000]",
    "[27.0000 - 28.0000]\tSes01F_impro01_F004\tneu\t[2.5000, 2.5000, 2.5000]",
    # Only annotator lines for M001: it has no evaluation of its own.
    "C-E1:\tAnger;\t()",
    "C-E2:\tAnger;\t()",
]
WAVS = ["F000", "M000", "F001", "F002", "M001", "M002", "M003", "F004"]  # not F003


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release"
    s1 = root / "Session1"
    (s1 / "dialog" / "transcriptions").mkdir(parents=True)
    (s1 / "dialog" / "EmoEvaluation").mkdir(parents=True)
    (s1 / "dialog" / "transcriptions" / f"{DIALOGUE}.txt").write_bytes(b"\r\n".join(TRANSCRIPT))
    (s1 / "dialog" / "transcriptions" / f"._{DIALOGUE}.txt").write_bytes(b"\x00\x05junk")
    (s1 / "dialog" / "EmoEvaluation" / f"{DIALOGUE}.txt").write_text("\n".join(EMO_EVALUATION) + "\n")
    wav_dir = s1 / "sentences" / "wav" / DIALOGUE
    first = make_clip(wav_dir / f"{DIALOGUE}_{WAVS[0]}.wav", seconds=0.3, video=False)
    for name in WAVS[1:]:
        shutil.copy(first, wav_dir / f"{DIALOGUE}_{name}.wav")
    # Session 5: one utterance with a sentence wav and the dialogue video.
    s5 = root / "Session5"
    (s5 / "dialog" / "transcriptions").mkdir(parents=True)
    (s5 / "dialog" / "EmoEvaluation").mkdir(parents=True)
    (s5 / "dialog" / "transcriptions" / "Ses05M_script01_1.txt").write_text(
        "Ses05M_script01_1_M000 [001.5000-003.0000]: Hello there.\n")
    (s5 / "dialog" / "EmoEvaluation" / "Ses05M_script01_1.txt").write_text(
        "[1.5000 - 3.0000]\tSes05M_script01_1_M000\texc\t[4.0000, 4.0000, 3.0000]\n")
    (s5 / "sentences" / "wav" / "Ses05M_script01_1").mkdir(parents=True)
    shutil.copy(first, s5 / "sentences" / "wav" / "Ses05M_script01_1" / "Ses05M_script01_1_M000.wav")
    make_clip(s5 / "dialog" / "avi" / "DivX" / "Ses05M_script01_1.avi", seconds=0.4)
    return root


def test_release_detected(release):
    assert detect_format(release) == "iemocap"


def test_release_rows(release):
    result = checked(read_corpus(release))
    # 9 utterance lines in Session 1 (the breathing line is not one) + 1 in Session 5.
    assert result.n_input == 10
    rows = by_uid(result.utterances)
    assert set(rows) == {f"iemocap/{DIALOGUE}_{u}" for u in ("F000", "M000", "F001", "F002")} | {
        "iemocap/Ses05M_script01_1_M000"}
    s1 = sorted((r for r in rows.values() if r["dialogue_id"] == DIALOGUE), key=lambda r: r["turn"])
    # Turns follow time, not file order (F002 is listed before F001).
    assert [r["utterance_id"].rsplit("_", 1)[1] for r in s1] == ["F000", "M000", "F001", "F002"]
    assert [r["turn"] for r in s1] == [0, 1, 2, 3]
    assert [r["speaker"] for r in s1] == ["Ses01_F", "Ses01_M", "Ses01_F", "Ses01_F"]
    assert [r["emotion"] for r in s1] == ["neutral", "frustrated", "sad", "happy"]
    assert s1[0]["text"] == "Excuse me."
    assert s1[3]["text"] == "I\u2019m here."
    for r in s1:
        assert r["split"] == "train" and r["corpus"] == "iemocap"
        assert r["audio_path"] and Path(r["audio_path"]).is_file()
        assert r["audio_path"].endswith(f"{r['utterance_id'].split('/')[1]}.wav")
        assert r["media_path"] == r["audio_path"]  # no dialogue video: the wav is the media
        assert r["start_s"] is None and r["end_s"] is None
        assert dict(r["meta"])["session"] == "1"
    assert dict(s1[0]["meta"])["segment_start_s"] == "6.2901"


def test_release_problems(release):
    result = checked(read_iemocap_release(release))
    problems = {p["utterance_id"].rsplit("_", 1)[1]: p for p in result.problems.to_pylist()}
    assert {k: p["reason"] for k, p in problems.items()} == {
        "M001": "unknown_label", "F003": "missing_media", "M002": "excluded_label",
        "M003": "bad_time", "F004": "bad_encoding"}
    assert "EmoEvaluation" in problems["M001"]["detail"]
    assert f"{DIALOGUE}_F003.wav" in problems["F003"]["detail"]
    assert f"{DIALOGUE}.avi" in problems["F003"]["detail"]
    assert "xxx" in problems["M002"]["detail"]
    assert "26.0" in problems["M003"]["detail"] and "25.0" in problems["M003"]["detail"]
    # Lines are the physical lines of the transcript.
    assert problems["M001"]["line"] == 6 and problems["F004"]["line"] == 10
    assert all(p["source"].endswith(f"transcriptions/{DIALOGUE}.txt") for p in problems.values())
    assert all(p["split"] == "train" for p in problems.values())


def test_release_video_and_default_session_split(release):
    result = checked(read_iemocap_release(release))
    [row] = [r for r in result.utterances.to_pylist() if r["dialogue_id"] == "Ses05M_script01_1"]
    assert row["split"] == "test"  # default: session 5 -> test
    assert row["speaker"] == "Ses05_M" and row["emotion"] == "excited" and row["turn"] == 0
    assert row["media_path"].endswith("Session5/dialog/avi/DivX/Ses05M_script01_1.avi")
    assert row["audio_path"].endswith("Ses05M_script01_1_M000.wav")
    assert (row["start_s"], row["end_s"]) == (1.5, 3.0)  # times index the dialogue video


def test_release_session_splits(release):
    result = checked(read_iemocap_release(release, session_splits={1: "dev"}))
    assert set(result.utterances.column("split").to_pylist()) == {"dev"}
    assert set(result.utterances.column("dialogue_id").to_pylist()) == {DIALOGUE}
    assert set(result.problems.column("split").to_pylist()) == {"dev"}
    with pytest.raises(CorpusError):
        read_iemocap_release(release, session_splits={2: "train"})


def test_release_keep_missing_media(release):
    result = checked(read_iemocap_release(release, keep_missing_media=True))
    row = by_uid(result.utterances)[f"iemocap/{DIALOGUE}_F003"]
    assert row["media_path"] is None and row["audio_path"] is None
    meta = dict(row["meta"])  # the files it lacks are named, for preprocessing to say so
    assert meta["missing_media"].endswith(f"{DIALOGUE}.avi")
    assert meta["missing_audio"].endswith(f"{DIALOGUE}_F003.wav")
    assert row["emotion"] == "angry" and row["turn"] == 5
    assert "missing_media" not in result.problems.column("reason").to_pylist()


def test_release_cp1252_repair_counted(release):
    """A transcript line kept after cp1252 decoding is a repair, as in the text reader."""
    result = checked(read_iemocap_release(release))
    assert by_uid(result.utterances)[f"iemocap/{DIALOGUE}_F002"]["text"] == "I\u2019m here."
    assert sum(result.repairs.values()) == 1, result.repairs


def test_release_not_a_release(tmp_path):
    with pytest.raises(CorpusError):
        read_iemocap_release(tmp_path)


def test_text_stray_byte_in_turn_is_a_problem_row(tmp_path):
    """One bad byte spoils one record, not the file: a stray b"\\xb2" in Utterance_ID
    decodes (cp1252) to "²", which str.isdigit accepts but int() rejects; the record is a
    bad_turn problem and the read goes on."""
    write_text_csv(tmp_path, [b"Ses01F_impro01,0,F,Hi.,neu",
                              b"Ses01F_impro01,\xb2,M,Hm.,neu",
                              b"Ses01F_impro01,2,F,Ho.,neu"])
    result = checked(read_iemocap_text(tmp_path))
    assert result.utterances.num_rows == 2
    assert [(p["line"], p["reason"]) for p in result.problems.to_pylist()] == [(3, "bad_turn")]


def test_release_evaluation_that_labels_a_turn_twice(tmp_path):
    """An EmoEvaluation file holding two summary lines for one turn (a merge gone wrong)
    kept the first label in silence. Lines that agree give that label; lines that
    disagree set the row aside naming both, and the other rows keep theirs."""
    dialog = tmp_path / "IEMOCAP_full_release" / "Session1" / "dialog"
    (dialog / "transcriptions").mkdir(parents=True)
    (dialog / "EmoEvaluation").mkdir(parents=True)
    (dialog / "transcriptions" / f"{DIALOGUE}.txt").write_text(
        f"{DIALOGUE}_F000 [001.0000-002.0000]: Hi.\n{DIALOGUE}_M000 [003.0000-004.0000]: Yo.\n")
    (dialog / "EmoEvaluation" / f"{DIALOGUE}.txt").write_text(
        f"[1.0 - 2.0]\t{DIALOGUE}_F000\tneu\t[2.5, 2.5, 2.5]\n"
        f"[3.0 - 4.0]\t{DIALOGUE}_M000\tang\t[2.5, 2.5, 2.5]\n"
        f"[1.0 - 2.0]\t{DIALOGUE}_F000\tneu\t[2.5, 2.5, 2.5]\n"
        f"[3.0 - 4.0]\t{DIALOGUE}_M000\thap\t[2.5, 2.5, 2.5]\n")
    result = checked(read_corpus(tmp_path / "IEMOCAP_full_release", keep_missing_media=True))
    assert [(r["utterance_id"], r["emotion"]) for r in result.utterances.to_pylist()] == [
        (f"iemocap/{DIALOGUE}_F000", "neutral")]
    [problem] = result.problems.to_pylist()
    assert problem["utterance_id"] == f"iemocap/{DIALOGUE}_M000" and problem["reason"] == "unknown_label"
    assert "'ang' (line 2), 'hap' (line 4)" in problem["detail"]
