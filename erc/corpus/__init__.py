"""Corpus readers: each turns one corpus layout into the canonical utterance table
(``erc.schema.UTTERANCE_SCHEMA``) plus a problem table, with input = kept + problems."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from erc.corpus import dailydialog, iemocap, manifest, meld, ravdess
from erc.corpus.base import CorpusError, IngestResult, ReaderOptions
from erc.corpus.mapping import ManifestMapping


@dataclass(frozen=True)
class Format:
    """One corpus format: how to recognise it, its reader, its typed options."""
    recognise: Callable[[Path], bool]
    read: Callable[..., IngestResult]  # read(path, **options)
    options: type[ReaderOptions]  # the reader options (-o KEY=VALUE, corpus.options)
    description: str


FORMATS: dict[str, Format] = {
    "meld": Format(meld.looks_like, meld.read_meld, meld.MeldOptions,
                   "MELD *_sent_emo.csv files (+ MELD.Raw clips with media_root)"),
    "iemocap": Format(iemocap.looks_like_release, iemocap.read_iemocap_release,
                      iemocap.IemocapOptions,
                      "IEMOCAP_full_release folder (Session*/dialog, sentences/wav, avi)"),
    "iemocap_text": Format(iemocap.looks_like_text, iemocap.read_iemocap_text,
                           iemocap.IemocapTextOptions,
                           "IEMOCAP text-only CSVs (iemocap_train.csv, iemocap_valid.csv, ...)"),
    "ravdess": Format(ravdess.looks_like, ravdess.read_ravdess, ravdess.RavdessOptions,
                      "RAVDESS Actor_*/MM-VV-EE-II-SS-RR-AA.{wav,flac,mp4}"),
    "dailydialog": Format(dailydialog.looks_like, dailydialog.read_dailydialog,
                          dailydialog.DailyDialogOptions,
                          "DailyDialog dialogues_text.txt + dialogues_emotion.txt (or its "
                          "train/ validation/ test/ folders)"),
    "manifest": Format(manifest.looks_like, manifest.read_manifest, ManifestMapping,
                       "manifest (.csv, .tsv, .jsonl, .json, .parquet) of utterances, or a folder of them "
                       "with a mapping (option mapping: FILE)"),
}


def detect_format(path: Path, options: dict | None = None) -> str:
    """The format of the corpus at ``path``; reader ``options`` naming a mapping, or a
    mapping file beside the data, make it a manifest."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder")
    if (options or {}).get("mapping") or manifest.has_mapping_file(path):
        return "manifest"
    for name, format in FORMATS.items():
        if format.recognise(path):
            return name
    raise CorpusError(f"{path}: cannot tell the corpus format; pass --format (corpus.format "
                      f"in a run config), one of {', '.join(FORMATS)}; for a corpus of your own "
                      f"tables, `erc corpus inspect {path}` suggests a mapping")


def corpus_format(path: Path, format: str | None = None, options: dict | None = None) -> str:
    """The format the corpus at ``path`` is read in: ``format`` when given, else the one
    detected; CorpusError for a format erc does not know or cannot tell. Cheap (no row is
    read): a dry run checks it as the run would."""
    name = format or detect_format(path, options)
    if name not in FORMATS:
        raise CorpusError(f"unknown corpus format {name!r}; known: {', '.join(FORMATS)}")
    return name


def read_corpus(path: Path, format: str | None = None, options: dict | None = None,
                **more) -> IngestResult:
    """Reads a corpus in the given (or detected) format; ``options`` (and ``more``) are
    its reader's, checked against the format's options: an unknown key or a wrong type is
    a ConfigError naming it. Every input row is kept or recorded as a problem."""
    options = {**(options or {}), **more}
    name = corpus_format(path, format, options)
    result = FORMATS[name].read(Path(path), **options)
    result.check_accounting()
    return result


__all__ = ["FORMATS", "CorpusError", "Format", "IngestResult", "corpus_format", "detect_format",
           "read_corpus"]
