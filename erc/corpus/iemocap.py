"""IEMOCAP (Busso et al. 2008), two layouts:

- the ``IEMOCAP_full_release`` tree: ``Session{N}/dialog/transcriptions/*.txt`` (text and
  times), ``Session{N}/dialog/EmoEvaluation/*.txt`` (labels),
  ``Session{N}/sentences/wav/<dialog>/<utt>.wav`` (audio per utterance) and
  ``Session{N}/dialog/avi/DivX/<dialog>.avi`` (video of the whole dialogue, cut by times);
- text-only CSVs (``Dialogue_ID,Utterance_ID,Speaker,Utterance,Emotion``), one per split.

Labels follow the common 6-class setup (neutral, happy, sad, angry, excited, frustrated).
Utterances whose annotators did not agree (``xxx``) or whose label lies outside the
chosen set (surprise, fear, disgust, other) are ``excluded_label`` problems, counted per label.
Speakers are identities, ``Ses01_F``: one actress and one actor per session.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import Field

from erc.corpus.base import (
    CorpusError,
    IngestResult,
    ReaderOptions,
    RowCollector,
    check_file,
    fix_mojibake,
    is_split_file,
    listed,
    media_problem,
    read_csv_records,
    read_lines,
    reader_options,
    split_files,
    split_name,
    too_large,
)
from erc.corpus.values import RowProblem, parse_turn
from erc.errors import ConfigError, preview
from erc.schema import MISSING_MEDIA_META

CODES = {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry",
         "exc": "excited", "fru": "frustrated"}
LABELS = tuple(CODES.values())
OTHER_CODES = {"sur": "surprised", "fea": "fearful", "dis": "disgusted", "oth": "other",
               "xxx": "no agreement"}

NAMED = {name: code for code, name in {**CODES, **OTHER_CODES}.items()}  # 'neutral' -> 'neu'

_UTT_ID = re.compile(r"^(Ses\d\d)[FM]_.+_([FM])[A-Z]*\d+$")
_TRANSCRIPT_LINE = re.compile(r"^(\S+)\s+\[([0-9]+(?:\.[0-9]+)?)-([0-9]+(?:\.[0-9]+)?)\]:\s?(.*)$")


SESSION_SPLITS = {1: "train", 2: "train", 3: "train", 4: "dev", 5: "test"}


@dataclass
class IemocapOptions(ReaderOptions):
    """The IEMOCAP_full_release reader's options."""
    session_splits: dict[int, Annotated[str, Field(min_length=1)]] = field(default_factory=lambda: dict(SESSION_SPLITS))  # session -> split; sessions not named are not read
    keep_missing_media: bool = False  # keep rows with neither a sentence wav nor a dialogue video


@dataclass
class IemocapTextOptions(ReaderOptions):
    """The IEMOCAP text-csv reader's options."""
    splits: list[str] | None = None  # read only these splits (train, dev, valid, test)
_EMO_LINE = re.compile(r"^\[(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\]\s+(\S+)\s+(\S+)")


def speaker_identity(dialogue_id: str, speaker: str) -> str:
    """'Ses01F_impro01', 'F' -> 'Ses01_F' (the same person across that session's dialogues)."""
    return f"{dialogue_id[:5]}_{speaker}" if re.match(r"^Ses\d\d", dialogue_id) else speaker


def _code(code: str) -> str:
    """An IEMOCAP code as written in any case and spacing: 'Neu ' -> 'neu'."""
    return code.strip().lower()


def _label(code: str, collector: RowCollector, where: dict) -> str | None:
    """Maps an IEMOCAP code to a label, recording the row as a problem when it has none."""
    code = _code(code)
    # A label written out ('Neutral', 'frustrated': a test file of one's own) is the one its
    # code stands for; set aside as an unknown code, a whole held-out split could go unscored.
    code = NAMED.get(code, code)
    if code in CODES:
        return CODES[code]
    if code in OTHER_CODES:
        collector.reject("excluded_label", f"{code} ({OTHER_CODES[code]}) is outside the 6-class set",
                         **where)
    else:
        collector.reject("unknown_label", f"emotion {preview(code, 40)} is not an IEMOCAP code",
                         **where)
    return None


# -- text-only CSVs -----------------------------------------------------------------------

TEXT_SPLIT_FILES = {"train": "iemocap_train.csv", "dev": "iemocap_dev.csv",
                    "valid": "iemocap_valid.csv", "test": "iemocap_test.csv"}
TEXT_COLUMNS = ("Dialogue_ID", "Utterance_ID", "Speaker", "Utterance", "Emotion")


def looks_like_text(path: Path) -> bool:
    return (path.is_dir() and any((path / f).is_file() for f in TEXT_SPLIT_FILES.values())
            or is_split_file(path, TEXT_SPLIT_FILES) is not None)


def read_iemocap_text(path: Path, /, **options) -> IngestResult:
    """Reads the text-only csvs; ``options`` are IemocapTextOptions fields."""
    opts = reader_options(IemocapTextOptions, options, "iemocap_text")
    path = Path(path)
    unknown = sorted(set(opts.splits or ()) - set(TEXT_SPLIT_FILES))
    if unknown:
        raise CorpusError(f"reader options of iemocap_text: splits: {preview(unknown)} are not "
                          f"splits of the text csvs ({', '.join(TEXT_SPLIT_FILES)})")
    out = RowCollector("iemocap")
    next_turn: dict[tuple[str, str], int] = {}  # (split, dialogue) -> turn after its last row
    for split, csv_path in split_files(path, TEXT_SPLIT_FILES, opts.splits):
        source = str(csv_path)
        out.sources.append(source)
        for record in out.rows(read_csv_records(csv_path, TEXT_COLUMNS, opts.max_field_bytes)):
            where = dict(source=source, line=record.line, split=split)
            if record.problem is not None:
                out.reject(*record.problem, **where)
                continue
            f = record.fields
            dia, turn_text = f["Dialogue_ID"].strip(), f["Utterance_ID"].strip()
            where.update(utterance_id=f"iemocap/{split}/{dia[:80]}/{turn_text[:40]}")
            if record.encoding == "undecodable":
                out.reject("bad_encoding", "bytes neither UTF-8 nor cp1252", **where)
                continue
            release_id = {}  # meta: the release's id the row was given, where it was
            try:
                turn = parse_turn(turn_text, "Utterance_ID")
            except RowProblem as failure:
                # the release's own id of the turn ('Ses05F_impro01_F000', numbered per
                # speaker): the turn is the row's place in its dialogue, as written
                if not (turn_text.startswith(f"{dia}_") and _UTT_ID.match(turn_text)):
                    out.reject(failure.reason, failure.detail, **where)
                    continue
                turn, release_id = next_turn.get((split, dia), 0), {"release_id": turn_text}
            next_turn[(split, dia)] = max(next_turn.get((split, dia), 0), turn + 1)
            # The id of a readable row: the whole dialogue id (two long ones sharing their
            # first characters are two dialogues) and the turn as a number ("0", "00" and
            # "0.0" are one turn, so the duplicate check sees them).
            where.update(utterance_id=f"iemocap/{split}/{dia}/{turn}")
            if not dia or f["Speaker"].strip() not in ("F", "M"):
                out.reject("missing_field", f"dialogue={preview(dia, 40)} "
                           f"speaker={preview(f['Speaker'], 40)} (F or M)", **where)
                continue
            emotion = _label(f["Emotion"], out, where)
            if emotion is None:
                continue
            text = fix_mojibake(f["Utterance"])  # a file once re-saved through cp1252, as MELD
            if record.encoding or text != f["Utterance"]:
                out.repairs["iemocap text decoded as cp1252 / mojibake fixed"] += 1
            out.add(
                {"utterance_id": where["utterance_id"], "split": split, "dialogue_id": dia,
                 "turn": turn, "speaker": speaker_identity(dia, f["Speaker"].strip()),
                 "text": text, "emotion": emotion,
                 "meta": {"speaker_label": f["Speaker"].strip(), **release_id}},
                source=source, line=record.line,
            )
    if not out.sources:
        raise CorpusError(f"{path}: no IEMOCAP text csv ({', '.join(TEXT_SPLIT_FILES.values())})")
    return out.result()


# -- the full release ---------------------------------------------------------------------

def looks_like_release(path: Path) -> bool:
    return path.is_dir() and any(path.glob("Session[0-9]/dialog/transcriptions"))


def _read_lines(path: Path) -> list[tuple[int, str, str | None]]:
    """(line number, text, repair flag) for each non-empty line."""
    lines = []
    for number, (text, flag) in enumerate(read_lines(path, lf_only=True), start=1):
        if text.strip():
            lines.append((number, text.strip(), flag))
    return lines


def _emotion_codes(path: Path) -> dict[str, list[tuple[str, int]]]:
    """Utterance id -> (majority code, line number) of each of its summary lines in an
    EmoEvaluation file: one in the release; several that disagree leave no label. A link
    that leads nowhere or a folder by its name is an error, not a file without labels."""
    codes: dict[str, list[tuple[str, int]]] = {}
    check_file(path)
    if path.is_file():
        for number, text, _ in _read_lines(path):
            match = _EMO_LINE.match(text)
            if match:
                codes.setdefault(match.group(3), []).append((match.group(4), number))
    return codes


def read_iemocap_release(path: Path, /, **options) -> IngestResult:
    """Reads an IEMOCAP_full_release tree; ``options`` are IemocapOptions fields. Every
    transcript line that starts with an utterance id, or with the dialogue's name and an
    underscore, is an input row; other lines (``M: [BREATHING]``) are not rows."""
    opts = reader_options(IemocapOptions, options, "iemocap")
    path = Path(path)
    if not looks_like_release(path):
        raise CorpusError(f"{path}: no Session*/dialog/transcriptions folder (IEMOCAP_full_release)")
    splits = {session: split_name(name) for session, name in opts.session_splits.items()}
    for session, split in splits.items():
        if split is None:
            raise ConfigError(f"reader options of iemocap: session_splits.{session}: "
                              f"{preview(opts.session_splits[session])} is no split name")
    out = RowCollector("iemocap")
    for session_dir in listed(path, "Session[0-9]"):
        session = int(session_dir.name[-1])
        split = splits.get(session)
        if split is None:
            continue
        for transcript in listed(session_dir / "dialog" / "transcriptions", "*.txt"):
            if transcript.name.startswith("._"):
                continue
            check_file(transcript)
            if not transcript.is_file():
                continue
            dialogue = transcript.stem
            source = str(transcript)
            out.sources.append(source)
            codes = _emotion_codes(session_dir / "dialog" / "EmoEvaluation" / transcript.name)
            video = session_dir / "dialog" / "avi" / "DivX" / f"{dialogue}.avi"
            entries = []
            # A line naming an utterance of this dialogue is a row even when its id is
            # malformed ("..._F000[1.0-2.0]: Hi", the space lost): set aside, not skipped.
            utterance_lines = ((number, text, flag) for number, text, flag in _read_lines(transcript)
                               if _UTT_ID.match(text.split(None, 1)[0])
                               or text.startswith(f"{dialogue}_"))
            for number, text, flag in out.rows(utterance_lines):
                utt_id = text.split(None, 1)[0]
                where = dict(source=source, line=number, split=split, utterance_id=f"iemocap/{utt_id}")
                if not _UTT_ID.match(utt_id):
                    utt_id = re.split(r"[\[:]", utt_id, maxsplit=1)[0]
                    where.update(utterance_id=f"iemocap/{utt_id}")
                    out.reject("malformed_row", f"expected '{dialogue}_<F|M><number> "
                               f"[START-END]: text', got {preview(text, 80)}", **where)
                    continue
                match = _TRANSCRIPT_LINE.match(text)
                times = (float(match.group(2)), float(match.group(3))) if match else None
                if times is None or not all(map(math.isfinite, times)):
                    out.reject("bad_time", f"expected '{utt_id} [START-END]: text' with times in "
                               f"seconds, got {preview(text, 80)}", **where)
                    continue
                entries.append((times[0], times[1], number, flag, utt_id, match.group(4), where))
            # Transcription files are not always in time order; turns follow time.
            entries.sort(key=lambda e: e[0])
            for turn, (start, end, number, flag, utt_id, words, where) in enumerate(entries):
                if flag == "undecodable":
                    out.reject("bad_encoding", "bytes neither UTF-8 nor cp1252", **where)
                    continue
                if too_large(words, opts.max_field_bytes):
                    out.reject("field_too_large", f"the text is longer than {opts.max_field_bytes:,} "
                               f"bytes (reader option max_field_bytes)", **where)
                    continue
                if end <= start:
                    out.reject("bad_time", f"segment [{start}, {end}] ends before it starts", **where)
                    continue
                if utt_id not in codes:
                    out.reject("unknown_label", "no EmoEvaluation entry", **where)
                    continue
                if len({_code(code) for code, _ in codes[utt_id]}) > 1:
                    said = ", ".join(f"{preview(code, 20)} (line {line})" for code, line in codes[utt_id])
                    out.reject("unknown_label", f"its EmoEvaluation file labels it several times, "
                               f"differently: {said}", **where)
                    continue
                emotion = _label(codes[utt_id][0][0], out, where)
                if emotion is None:
                    continue
                if flag == "cp1252":
                    out.repairs["iemocap transcript decoded as cp1252"] += 1
                wav = session_dir / "sentences" / "wav" / dialogue / f"{utt_id}.wav"
                out.media.update((str(wav), str(video)))
                has_video, has_wav = video.is_file(), wav.is_file()
                if not (has_video or has_wav):
                    not_files = [p for p in (wav, video) if p.exists()]
                    if not_files:
                        out.reject(*media_problem(not_files[0]), **where)
                        continue
                    if not opts.keep_missing_media:
                        out.reject("missing_media", f"neither {wav.name} nor {video.name} found", **where)
                        continue
                gender = _UTT_ID.match(utt_id).group(2)
                # kept without either file (keep_missing_media): the paths stay in meta
                missing = {} if has_video or has_wav else {
                    MISSING_MEDIA_META["media"]: str(video), MISSING_MEDIA_META["audio"]: str(wav)}
                out.add(
                    {"utterance_id": where["utterance_id"], "split": split, "dialogue_id": dialogue,
                     "turn": turn, "speaker": speaker_identity(dialogue, gender), "text": words,
                     "emotion": emotion,
                     "media_path": str(video) if has_video else (str(wav) if has_wav else None),
                     "audio_path": str(wav) if has_wav else None,
                     # Times index the dialogue video; a sentence wav is the segment itself.
                     "start_s": start if has_video else None, "end_s": end if has_video else None,
                     "meta": {"session": str(session), "speaker_label": gender,
                              "segment_start_s": f"{start:.4f}", "segment_end_s": f"{end:.4f}",
                              **missing}},
                    source=source, line=number,
                )
    if not out.sources:
        raise CorpusError(f"{path}: no transcription file in sessions mapped to a split")
    return out.result()
