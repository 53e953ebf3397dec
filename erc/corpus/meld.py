"""MELD (Poria et al. 2019): the official ``{split}_sent_emo.csv`` files, optionally with
the MELD.Raw clip folders (``dia{D}_utt{U}.mp4``).

Known quirks handled here:
- cp1252 bytes (``\\x92`` for an apostrophe) and UTF-8-read-as-cp1252 mojibake in the
  text: repaired and counted; bytes that decode as neither are a ``bad_encoding`` problem.
- clips missing from MELD.Raw: ``missing_media`` problem (or kept without media when
  ``keep_missing_media`` is set, for text-only work).
- macOS ``._dia*.mp4`` resource-fork files in the archives: ignored.
- mis-cut clips minutes long: the CSV's episode times give the expected duration
  (``meta.expected_duration_s``); media probing (``erc.corpus.probe``) sets aside clips
  longer than the cap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from erc.corpus.base import (
    CorpusError,
    IngestResult,
    ReaderOptions,
    RowCollector,
    fix_mojibake,
    is_split_file,
    media_problem,
    read_csv_records,
    reader_options,
    split_files,
)
from erc.corpus.values import MAX_TURN, RowProblem, parse_turn
from erc.errors import preview
from erc.schema import MISSING_MEDIA_META
from erc.settings import PATH

LABELS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
SPLIT_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
# Folder names of the MELD.Raw archives, per split.
CLIP_FOLDERS = {
    "train": ("train_splits",),
    "dev": ("dev_splits_complete", "dev_splits"),
    "test": ("output_repeated_splits_test", "test_splits_complete", "test_splits"),
}
_CLIP_NAME = re.compile(r"^dia(\d+)_utt(\d+)\.mp4$")


@dataclass
class MeldOptions(ReaderOptions):
    """The MELD reader's options."""
    media_root: str | None = field(default=None, metadata={**PATH, "help": (
        "the MELD.Raw folder (clip folders below it); None: text only")})
    splits: list[str] | None = None  # read only these splits (train, dev, test)
    keep_missing_media: bool = False  # keep rows whose clip is absent (text only)


def looks_like(path: Path) -> bool:
    return (path.is_dir() and any((path / name).is_file() for name in SPLIT_FILES.values())
            or is_split_file(path, SPLIT_FILES) is not None)


def _episode_seconds(stamp: str) -> float | None:
    """'00:16:16,059' -> 976.059; None when unparseable."""
    match = re.fullmatch(r"\s*([0-9]+):([0-9]+):([0-9]+)[,.]([0-9]+)\s*", stamp or "")
    if not match or len(stamp) > 40:
        return None
    h, m, s, frac = match.groups()
    return int(h) * 3600 + int(m) * 60 + int(s) + int(frac) / 10 ** len(frac)


def index_clips(media_root: Path) -> dict[str, dict[str, Path]]:
    """Finds the clip folders of each split under media_root: {split: {file name: path}}.
    Entries named like a clip are indexed whatever they are (a folder named
    ``dia1_utt0.mp4`` is a row's media_not_a_file problem, not a missing clip)."""
    index: dict[str, dict[str, Path]] = {split: {} for split in CLIP_FOLDERS}
    for split, names in CLIP_FOLDERS.items():
        for name in names:
            for folder in sorted(media_root.glob(f"**/{name}")):
                if not folder.is_dir():
                    continue
                for clip in folder.iterdir():
                    if _CLIP_NAME.match(clip.name):  # skips ._dia*.mp4 and stray files
                        index[split].setdefault(clip.name, clip)
    return index


def _ids(fields: dict) -> tuple[str, str, int]:
    """(dialogue number, utterance number, turn) of a row, or a RowProblem. The numbers
    are written as the clip names write them (``00`` -> ``0``, ``1.0`` -> ``1``): the same
    utterance written two ways is one id, so the duplicate check sees it."""
    dia, utt = fields["Dialogue_ID"].strip(), fields["Utterance_ID"].strip()
    try:
        dialogue = parse_turn(dia, "Dialogue_ID")
    except RowProblem:
        raise RowProblem("missing_field", f"Dialogue_ID {preview(dia, 40)} is not a whole "
                         f"number from 0 to {MAX_TURN}") from None
    turn = parse_turn(utt, "Utterance_ID")
    if not fields["Speaker"].strip():
        raise RowProblem("missing_field", "Speaker is empty")
    return str(dialogue), str(turn), turn


def read_meld(path: Path, /, **options) -> IngestResult:
    """Reads MELD's csv files (and its clips under ``media_root``); ``options`` are
    MeldOptions fields."""
    opts = reader_options(MeldOptions, options, "meld")
    path = Path(path)
    if not looks_like(path):
        raise CorpusError(f"{path}: no MELD csv ({', '.join(SPLIT_FILES.values())}) found")
    unknown = sorted(set(opts.splits or ()) - set(SPLIT_FILES))
    if unknown:
        raise CorpusError(f"reader options of meld: splits: {preview(unknown)} are not MELD "
                          f"splits ({', '.join(SPLIT_FILES)})")
    clips = None
    if opts.media_root:
        media_root = Path(opts.media_root)
        if not media_root.is_dir():
            raise CorpusError(f"{media_root}: media_root is not a folder")
        clips = index_clips(media_root)
        if not any(clips.values()):
            raise CorpusError(f"{media_root}: no MELD clip folder "
                              f"({', '.join(sum(CLIP_FOLDERS.values(), ()))}) found")
    out = RowCollector("meld")
    if opts.media_root:
        out.sources.append(str(Path(opts.media_root)))
    read_any = False
    for split, csv_path in split_files(path, SPLIT_FILES, opts.splits):
        read_any = True
        out.sources.append(str(csv_path))
        source = str(csv_path)
        for record in out.rows(read_csv_records(csv_path, REQUIRED_COLUMNS, opts.max_field_bytes)):
            where = dict(source=source, line=record.line, split=split)
            if record.problem is not None:
                out.reject(*record.problem, **where)
                continue
            f = record.fields
            try:
                dia, utt, turn = _ids(f)
            except RowProblem as failure:
                uid = f"meld/{split}/dia{f['Dialogue_ID'].strip()[:40]}_utt{f['Utterance_ID'].strip()[:40]}"
                out.reject(failure.reason, failure.detail, **where, utterance_id=uid)
                continue
            uid = f"meld/{split}/dia{dia}_utt{utt}"
            where.update(utterance_id=uid)
            if record.encoding == "undecodable":
                out.reject("bad_encoding", "bytes neither UTF-8 nor cp1252", **where)
                continue
            emotion = f["Emotion"].strip().lower()
            if emotion not in LABELS:
                out.reject("unknown_label", f"emotion {preview(f['Emotion'], 40)} not in {LABELS}",
                           **where)
                continue
            text = fix_mojibake(f["Utterance"])
            if record.encoding or text != f["Utterance"]:
                out.repairs["meld text decoded as cp1252 / mojibake fixed"] += 1
            media = None
            if clips is not None:
                clip = clips[split].get(f"dia{dia}_utt{utt}.mp4")
                problem = (("missing_media", f"dia{dia}_utt{utt}.mp4 not in the {split} clips")
                           if clip is None else media_problem(clip))
                if clip is not None:
                    out.media.add(str(clip))
                if problem and not (problem[0] == "missing_media" and opts.keep_missing_media):
                    out.reject(*problem, **where)
                    continue
                media = None if problem else str(clip)
            meta = {k: f.get(k, "").strip() for k in ("Sentiment", "Season", "Episode")}
            if clips is not None and media is None:  # kept without its clip: named in meta
                meta[MISSING_MEDIA_META["media"]] = f"dia{dia}_utt{utt}.mp4 (the {split} clips)"
            start, end = _episode_seconds(f.get("StartTime", "")), _episode_seconds(f.get("EndTime", ""))
            if start is not None and end is not None and end >= start:
                meta.update(episode_start_s=f"{start:.3f}", episode_end_s=f"{end:.3f}",
                            expected_duration_s=f"{end - start:.3f}")
            elif f.get("StartTime", "").strip() or f.get("EndTime", "").strip():
                # Only metadata (the clip is cut already): kept, without an expected length.
                out.repairs["meld episode times unreadable or inverted (no expected duration)"] += 1
            out.add(
                {"utterance_id": uid, "split": split, "dialogue_id": f"dia{dia}", "turn": turn,
                 "speaker": f["Speaker"].strip(), "text": text, "emotion": emotion,
                 "media_path": media, "meta": {k.lower(): v for k, v in meta.items()}},
                source=source, line=record.line,
            )
    if not read_any:
        raise CorpusError(f"{path}: none of the requested splits {opts.splits} has a csv")
    return out.result()
