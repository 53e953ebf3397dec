"""RAVDESS (Livingstone & Russo 2018): labels are coded in the file names,
``MM-VV-EE-II-SS-RR-AA.ext`` (modality, vocal channel, emotion, intensity, statement,
repetition, actor). The unimodal speech-emotion corpus for the speaker adapter.

Each actor's recordings form one "dialogue" (there is no conversation); splits go by
actor so that evaluation is on unseen speakers (default: actors 1-14 train, 15-24 test).
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
    media_problem,
    reader_options,
    split_name,
    tree,
)
from erc.errors import ConfigError, preview

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
            "06": "fearful", "07": "disgust", "08": "surprised"}
LABELS = tuple(EMOTIONS.values())
STATEMENTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
MODALITIES = {"01": "audio-video", "02": "video-only", "03": "audio-only"}
CHANNELS = {"01": "speech", "02": "song"}
INTENSITIES = {"01": "normal", "02": "strong"}
MEDIA_SUFFIXES = {".wav", ".flac", ".mp4", ".mp3", ".ogg"}
MAX_ACTOR = 99  # actors are two digits in the file names

# ASCII digits: "\d" also matched "١٢", actor 12 under a second name (Actor_١٢)
_NAME = re.compile(r"^([0-9]{2})-([0-9]{2})-([0-9]{2})-([0-9]{2})-([0-9]{2})-([0-9]{2})-([0-9]{2})$")
_RANGE = re.compile(r"\s*([0-9]{1,2})\s*(?:-\s*([0-9]{1,2})\s*)?")


ACTOR_SPLITS = {"train": "1-14", "test": "15-24"}


@dataclass
class RavdessOptions(ReaderOptions):
    """The RAVDESS reader's options."""
    actor_splits: dict[str, str | int] = field(default_factory=lambda: dict(ACTOR_SPLITS))  # split -> actors ("1-14", "15-18,20"); others set aside


def parse_actor_ranges(spec: dict[str, str | int]) -> dict[int, str]:
    """{'train': '1-14', 'test': '15-18,20'} -> {1: 'train', ..., 20: 'test'}; a
    ConfigError names the split whose ranges are not actor numbers 1-99."""
    actors: dict[int, str] = {}
    for name, ranges in spec.items():
        split = split_name(name)
        if split is None:
            raise ConfigError(f"reader options of ravdess: actor_splits: {preview(name)} is no "
                              f"split name")
        for part in str(ranges).split(","):
            match = _RANGE.fullmatch(part)
            lo, hi = (int(match.group(1)), int(match.group(2) or match.group(1))) if match else (0, 0)
            if not match or not 1 <= lo <= hi <= MAX_ACTOR:
                raise ConfigError(f"reader options of ravdess: actor_splits.{split}: "
                                  f"{preview(part.strip(), 40)} is not an actor number or range "
                                  f"within 1-{MAX_ACTOR} (e.g. 1-14 or 15-18,20)")
            for actor in range(lo, hi + 1):
                if actor in actors:
                    raise ConfigError(f"reader options of ravdess: actor {actor} is in both "
                                      f"{actors[actor]} and {split}")
                actors[actor] = split
    return actors


def looks_like(path: Path) -> bool:
    return path.is_dir() and any(_NAME.match(p.stem) for p in path.glob("Actor_*/*"))


def read_ravdess(path: Path, /, **options) -> IngestResult:
    """Reads a RAVDESS folder; every media file (by suffix) under it is an input row.
    ``options`` are RavdessOptions fields."""
    opts = reader_options(RavdessOptions, options, "ravdess")
    path = Path(path)
    if not path.is_dir():
        raise CorpusError(f"{path}: no such folder")
    split_of = parse_actor_ranges(opts.actor_splits)
    files = [p for p in tree(path) if p.suffix.lower() in MEDIA_SUFFIXES
             and not p.name.startswith("._")]
    if not files:
        raise CorpusError(f"{path}: no RAVDESS media files ({', '.join(sorted(MEDIA_SUFFIXES))})")
    out = RowCollector("ravdess")
    out.sources.append(str(path))
    turns: dict[str, int] = {}
    for file in out.rows(files):
        source = str(file)
        match = _NAME.match(file.stem)
        if not match:
            out.reject("bad_filename", "name is not MM-VV-EE-II-SS-RR-AA", source=source, line=None)
            continue
        modality, channel, emo, intensity, statement, repetition, actor = match.groups()
        split = split_of.get(int(actor))
        uid = f"ravdess/{file.stem}"
        where = dict(source=source, line=None, split=split, utterance_id=uid)
        problem = media_problem(file)
        if problem is not None:
            out.reject(*problem, **where)
            continue
        if emo not in EMOTIONS:
            out.reject("unknown_label", f"emotion code {emo} not in 01-08", **where)
            continue
        if (modality not in MODALITIES or channel not in CHANNELS or intensity not in INTENSITIES
                or statement not in STATEMENTS):
            out.reject("bad_filename", f"unknown code in {file.stem}", **where)
            continue
        if split is None:
            out.reject("missing_field", f"actor {int(actor)} is in no split of the reader option "
                       f"actor_splits", **where)
            continue
        dialogue = f"Actor_{actor}"
        turn = turns.get(dialogue, 0)
        kept_before = len(out.rows_kept)
        out.add(
            {"utterance_id": uid, "split": split, "dialogue_id": dialogue, "turn": turn,
             "speaker": dialogue, "text": STATEMENTS[statement], "emotion": EMOTIONS[emo],
             "media_path": str(file),
             "audio_path": str(file) if modality == "03" else None,
             "meta": {"modality": MODALITIES[modality], "vocal_channel": CHANNELS[channel],
                      "intensity": INTENSITIES[intensity], "repetition": repetition,
                      "gender": "male" if int(actor) % 2 else "female"}},
            source=source, line=None,
        )
        if len(out.rows_kept) > kept_before:  # a duplicate takes no turn
            turns[dialogue] = turn + 1
    return out.result()
