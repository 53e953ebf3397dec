"""What every corpus reader shares: the result type, lenient text decoding, and a
collector that turns candidate rows into kept rows or problem rows (never losing one)."""

from __future__ import annotations

from erc.errors import ErcError

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from erc.schema import PROBLEM_REASONS, problem_table, utterance_table


class CorpusError(ErcError, ValueError):
    """The input as a whole cannot be read (missing file or column): nothing to record per row."""


@dataclass
class IngestResult:
    utterances: pa.Table
    problems: pa.Table
    n_input: int
    # Rows kept after a repair (cp1252 bytes, mojibake): counted, not dropped.
    repairs: Counter = field(default_factory=Counter)
    sources: list[str] = field(default_factory=list)
    # Every media path a row named, found or not: a file added or changed later makes the
    # ingest stale (its fingerprint covers their sizes and modification times).
    media: set[str] = field(default_factory=set)

    def check_accounting(self) -> None:
        kept, dropped = self.utterances.num_rows, self.problems.num_rows
        if kept + dropped != self.n_input:
            raise AssertionError(
                f"row accounting broken: {self.n_input} input rows, {kept} kept + {dropped} problems"
            )


class RowCollector:
    """Accumulates kept rows and problem rows for one corpus; enforces unique ids."""

    def __init__(self, corpus: str):
        self.corpus = corpus
        self.rows: list[dict] = []
        self.problems: list[dict] = []
        self.repairs: Counter = Counter()
        self.sources: list[str] = []
        self.media: set[str] = set()
        self.n_input = 0
        self._seen_ids: dict[str, str] = {}

    def add(self, row: dict, *, source: str, line: int | None) -> None:
        """Counts one input row and keeps it unless its id was seen before."""
        self.n_input += 1
        uid = row["utterance_id"]
        if uid in self._seen_ids:
            self._record(
                source, line, row.get("split"), uid, "duplicate_id",
                f"first seen at {self._seen_ids[uid]}",
            )
            return
        self._seen_ids[uid] = f"{source}:{line}" if line is not None else source
        row.setdefault("corpus", self.corpus)
        self.rows.append(row)

    def reject(self, reason: str, detail: str, *, source: str, line: int | None,
               split: str | None = None, utterance_id: str | None = None) -> None:
        """Counts one input row and records why it was set aside."""
        self.n_input += 1
        self._record(source, line, split, utterance_id, reason, detail)

    def _record(self, source, line, split, uid, reason, detail) -> None:
        assert reason in PROBLEM_REASONS, reason
        self.problems.append(
            {"corpus": self.corpus, "split": split, "source": source, "line": line,
             "utterance_id": uid, "reason": reason, "detail": detail}
        )

    def result(self) -> IngestResult:
        result = IngestResult(
            utterances=utterance_table(self.rows),
            problems=problem_table(self.problems),
            n_input=self.n_input,
            repairs=self.repairs,
            sources=self.sources,
            media=self.media,
        )
        result.check_accounting()
        return result


def decode_line(raw: bytes) -> tuple[str, str | None]:
    """Decodes one line of a corpus text file.

    Returns (text, repair) where repair is None for clean UTF-8, "cp1252" when the line
    only decodes as Windows-1252 (MELD's ``\\x92`` apostrophes), or "undecodable" when
    neither works (the text then holds U+FFFD replacement characters).
    """
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), "undecodable"


def fix_mojibake(text: str) -> str:
    """Undoes UTF-8 text that was once decoded as cp1252 (``â€™`` -> ``’``)."""
    if "â€" not in text and "Ã" not in text:
        return text
    try:
        return text.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


@dataclass
class CsvRecord:
    fields: dict[str, str]
    line: int  # 1-based physical line where the record starts
    encoding: str | None  # None, "cp1252" or "undecodable" (worst of its lines)


def read_csv_records(path: Path, required: Iterable[str]) -> Iterator[CsvRecord]:
    """Reads a CSV file record by record, decoding each physical line on its own so
    one bad byte spoils one record, not the file. Raises CorpusError when the file is
    missing, empty or lacks a required column."""
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    lines = path.read_bytes().splitlines(keepends=True)
    if not lines:
        raise CorpusError(f"{path}: empty file (expected a header row)")
    decoded, flags = [], []
    for raw in lines:
        text, flag = decode_line(raw)
        decoded.append(text)
        flags.append(flag)
    if decoded[0].startswith("\ufeff"):
        decoded[0] = decoded[0][1:]

    reader = csv.reader(io.StringIO("".join(decoded), newline=""))
    header = [h.strip() for h in next(reader)]
    missing = [c for c in required if c not in header]
    if missing:
        raise CorpusError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header)}"
        )
    start = reader.line_num  # physical lines consumed so far
    for values in reader:
        end = reader.line_num
        if not any(v.strip() for v in values):
            start = end
            continue
        span = flags[start:end]
        encoding = "undecodable" if "undecodable" in span else ("cp1252" if "cp1252" in span else None)
        padded = values + [""] * (len(header) - len(values))
        yield CsvRecord(dict(zip(header, padded)), start + 1, encoding)
        start = end


def resolve_inside(root: Path, relative: str, allow_outside: bool) -> Path | None:
    """Resolves a media path named in a manifest against its root. Returns None when the
    path escapes the root and escaping is not allowed."""
    path = Path(relative)
    if not path.is_absolute():
        path = root / path
    path = Path(os.path.normpath(path))
    if not allow_outside:
        try:
            path.resolve().relative_to(root.resolve())
        except ValueError:
            return None
    return path
