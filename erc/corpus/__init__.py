"""Corpus readers: each turns one corpus layout into the canonical utterance table
(``erc.schema.UTTERANCE_SCHEMA``) plus a problem table, with input = kept + problems."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from erc.corpus import iemocap, manifest, meld, ravdess
from erc.corpus.base import CorpusError, IngestResult

# format name -> (recogniser, reader, one-line description)
FORMATS: dict[str, tuple[Callable[[Path], bool], Callable[..., IngestResult], str]] = {
    "meld": (meld.looks_like, meld.read_meld,
             "MELD *_sent_emo.csv files (+ MELD.Raw clips with media_root)"),
    "iemocap": (iemocap.looks_like_release, iemocap.read_iemocap_release,
                "IEMOCAP_full_release folder (Session*/dialog, sentences/wav, avi)"),
    "iemocap_text": (iemocap.looks_like_text, iemocap.read_iemocap_text,
                     "IEMOCAP text-only CSVs (iemocap_train.csv, iemocap_valid.csv, ...)"),
    "ravdess": (ravdess.looks_like, ravdess.read_ravdess,
                "RAVDESS Actor_*/MM-VV-EE-II-SS-RR-AA.{wav,flac,mp4}"),
    "manifest": (manifest.looks_like, manifest.read_manifest,
                 "manifest (.csv, .jsonl, .parquet) of utterances, or a folder of them with a mapping"),
}


def detect_format(path: Path, options: dict | None = None) -> str:
    """The format of the corpus at ``path``; reader ``options`` naming a mapping, or a
    mapping file beside the data, make it a manifest."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    if (options or {}).get("mapping") or manifest.has_mapping_file(path):
        return "manifest"
    for name, (recognise, _, _) in FORMATS.items():
        if recognise(path):
            return name
    raise CorpusError(
        f"{path}: cannot tell the corpus format; pass --format, one of {', '.join(FORMATS)}"
    )


def read_corpus(path: Path, format: str | None = None, **options) -> IngestResult:
    """Reads a corpus in the given (or detected) format; options go to its reader."""
    name = format or detect_format(path, options)
    if name not in FORMATS:
        raise CorpusError(f"unknown corpus format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name][1](Path(path), **options)


__all__ = ["FORMATS", "CorpusError", "IngestResult", "detect_format", "read_corpus"]
