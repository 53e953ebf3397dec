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
from pathlib import Path

from erc.corpus.base import CorpusError, IngestResult, RowCollector, fix_mojibake, read_csv_records

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


def looks_like(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in SPLIT_FILES.values())


def _episode_seconds(stamp: str) -> float | None:
    """'00:16:16,059' -> 976.059; None when unparseable."""
    match = re.fullmatch(r"\s*(\d+):(\d+):(\d+)[,.](\d+)\s*", stamp or "")
    if not match:
        return None
    h, m, s, frac = match.groups()
    return int(h) * 3600 + int(m) * 60 + int(s) + int(frac) / 10 ** len(frac)


def index_clips(media_root: Path) -> dict[str, dict[str, Path]]:
    """Finds the clip folders of each split under media_root: {split: {file name: path}}."""
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


def read_meld(path: Path, media_root: Path | None = None, splits: list[str] | None = None,
              keep_missing_media: bool = False) -> IngestResult:
    path = Path(path)
    if not looks_like(path):
        raise CorpusError(f"{path}: no MELD csv ({', '.join(SPLIT_FILES.values())}) found")
    clips = index_clips(Path(media_root)) if media_root else None
    if clips is not None and not any(clips.values()):
        raise CorpusError(
            f"{media_root}: no MELD clip folder ({', '.join(sum(CLIP_FOLDERS.values(), ()))}) found"
        )
    out = RowCollector("meld")
    for split, file_name in SPLIT_FILES.items():
        csv_path = path / file_name
        if (splits and split not in splits) or not csv_path.is_file():
            continue
        out.sources.append(str(csv_path))
        source = str(csv_path)
        for record in read_csv_records(csv_path, REQUIRED_COLUMNS):
            f = record.fields
            dia, utt = f["Dialogue_ID"].strip(), f["Utterance_ID"].strip()
            uid = f"meld/{split}/dia{dia}_utt{utt}"
            where = dict(source=source, line=record.line, split=split, utterance_id=uid)
            if record.encoding == "undecodable":
                out.reject("bad_encoding", "bytes neither UTF-8 nor cp1252", **where)
                continue
            if not (dia.isascii() and dia.isdigit() and utt.isascii() and utt.isdigit()) or not f["Speaker"].strip():
                out.reject("missing_field", f"dialogue={dia!r} utterance={utt!r} "
                           f"speaker={f['Speaker']!r}", **where)
                continue
            emotion = f["Emotion"].strip().lower()
            if emotion not in LABELS:
                out.reject("unknown_label", f"emotion {f['Emotion']!r} not in {LABELS}", **where)
                continue
            text = fix_mojibake(f["Utterance"])
            if record.encoding or text != f["Utterance"]:
                out.repairs["meld text decoded as cp1252 / mojibake fixed"] += 1
            media = None
            if clips is not None:
                clip = clips[split].get(f"dia{dia}_utt{utt}.mp4")
                if clip is None and not keep_missing_media:
                    out.reject("missing_media", f"dia{dia}_utt{utt}.mp4 not in the {split} clips",
                               **where)
                    continue
                media = str(clip) if clip else None
            meta = {k: f.get(k, "").strip() for k in ("Sentiment", "Season", "Episode")}
            start, end = _episode_seconds(f.get("StartTime", "")), _episode_seconds(f.get("EndTime", ""))
            if start is not None and end is not None:
                meta.update(episode_start_s=f"{start:.3f}", episode_end_s=f"{end:.3f}",
                            expected_duration_s=f"{end - start:.3f}")
            out.add(
                {"utterance_id": uid, "split": split, "dialogue_id": f"dia{dia}", "turn": int(utt),
                 "speaker": f["Speaker"].strip(), "text": text, "emotion": emotion,
                 "media_path": media, "meta": {k.lower(): v for k, v in meta.items()}},
                source=source, line=record.line,
            )
    if not out.sources:
        raise CorpusError(f"{path}: none of the requested splits {splits} has a csv")
    return out.result()
