"""What every corpus reader shares: the options every format takes (limits), the result
type, lenient text decoding, strict CSV records, and a collector that turns each input row
into a kept row or a problem row (never losing one).

Row accounting: a reader passes the rows of each source through ``RowCollector.rows``,
which counts them; each must then end kept (``add``) or recorded with a reason
(``reject``). ``IngestResult.check_accounting`` is the one check that the counts agree; a
violation is a bug in a reader and stops the ingest before anything is written.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import itertools
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, TypeVar

import pyarrow as pa
from pydantic import Field

from erc.errors import ConfigError, ErcError, preview
from erc.schema import PROBLEM_REASONS, problem_table, storable, utterance_table

T = TypeVar("T")
# erc limits fields itself (max_field_bytes, one row set aside); the csv module's own limit
# (128 KiB) would abort the whole file with an error naming no line.
csv.field_size_limit(2**31 - 1)


class CorpusError(ErcError, ValueError):
    """The input as a whole cannot be read (missing file or column): nothing to record per row."""


class RowAccountingError(RuntimeError):
    """Input rows != kept + problem rows: a reader lost or invented a row (a bug in erc)."""


@dataclass
class ReaderOptions:
    """The options every corpus format takes: limits on what one row may hold."""
    max_field_bytes: Annotated[int, Field(ge=1)] = 128 << 10  # a longer field sets its row aside (field_too_large)


# `erc corpus ingest` flags that set a reader option: a format without the option names the flag
FLAG_OF_OPTION = {"splits": "--split", "media_root": "--media-root", "mapping": "--mapping"}


def reader_options(cls: type[T], options: dict, format: str) -> T:
    """The reader options of ``format`` as its typed dataclass ``cls``; a ConfigError names
    an unknown option or a value of the wrong type."""
    import dataclasses

    from erc.settings import validate

    data = {key: str(value) if isinstance(value, Path) else value for key, value in options.items()}
    known = {f.name for f in dataclasses.fields(cls)}
    for key, flag in FLAG_OF_OPTION.items():  # said in the user's words: the flag they gave
        if key in data and key not in known:
            raise ConfigError(f"reader options of {format}: {flag} (option {key!r}) does not "
                              f"apply to the {format} format; its options: {', '.join(sorted(known))}")
    return validate(cls, data, f"reader options of {format}")


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
    # Where each split's rows took their split from: {split: {"valid.csv: its name": rows}}
    # (the manifest reader's; printed with the summary), and what else the reader noticed.
    split_sources: dict[str, Counter] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def check_accounting(self) -> None:
        """Input rows = kept rows + problem rows, or RowAccountingError."""
        kept, dropped = self.utterances.num_rows, self.problems.num_rows
        if kept + dropped != self.n_input:
            raise RowAccountingError(
                f"row accounting broken: {self.n_input} input rows, {kept} kept + {dropped} "
                f"problems; nothing was written")


# C0 control characters (and DEL) in a transcript break tokenizers, CSV and Parquet
# consumers and terminals: the whitespace ones become spaces, the others (NUL, ESC, ...) go.
_CONTROLS = {code: " " if chr(code) in "\t\n\v\f\r" else None for code in (*range(32), 127)}
TEXT_CLEANED = "text held control characters: NUL and the like removed, tabs and line breaks made spaces"


def clean_text(text: str) -> str:
    """A transcript without control characters (``clean_text("a\\x00b\\tc") == "ab c"``)."""
    return text.translate(_CONTROLS)


# A transcript of emoji, punctuation or symbols alone ("😂😂", "...", "?!") says no word:
# the text model would embed noise and QC has nothing to compare the ASR with. The row is
# kept as one without text (as a blank one is), the text it had in its meta.
TEXT_WITHOUT_WORDS = "text held no word (only punctuation, symbols or emoji): kept as no text"
TEXT_WITHOUT_WORDS_META = "text_without_words"


def has_word(text: str) -> bool:
    """Whether ``text`` holds a letter or digit of any script (``has_word("?!") is False``,
    ``has_word("Ναι") is True``)."""
    return any(char.isalnum() for char in text)


# A split's name as a file, folder or split column names it -> the split erc gives its
# rows (erc's "dev", as MELD and DailyDialog are read; training takes "valid" for it too).
SPLIT_WORDS = {"train": "train", "training": "train", "trn": "train", "dev": "dev",
               "valid": "dev", "validation": "dev", "val": "dev", "test": "test",
               "testing": "test", "tst": "test"}


def split_name(name: str) -> str | None:
    """The split a corpus's name for it gives its rows: spaces around it dropped (" train"
    is train, not a split of its own), a split word in any case read as ``SPLIT_WORDS``
    says ("TRAIN" and "Validation" are train and dev); None for a blank name, which no
    role (train, dev) would find."""
    name = name.strip()
    return SPLIT_WORDS.get(name.casefold(), name) if name else None


class RowCollector:
    """Accumulates kept rows and problem rows for one corpus; enforces unique ids."""

    def __init__(self, corpus: str):
        self.corpus = corpus
        self.rows_kept: list[dict] = []
        self.problems: list[dict] = []
        self.repairs: Counter = Counter()
        self.sources: list[str] = []
        self.media: set[str] = set()
        self.split_sources: dict[str, Counter] = {}
        self.notes: list[str] = []
        self.n_input = 0
        self._seen_ids: dict[str, str] = {}
        self._seen_turns: dict[tuple, str] = {}  # (corpus, split, dialogue, turn) -> where

    def rows(self, records: Iterable[T]) -> Iterator[T]:
        """The input rows of one source, each counted as it is taken: the reader must then
        keep it (``add``) or record why not (``reject``)."""
        for record in records:
            self.n_input += 1
            yield record

    def add(self, row: dict, *, source: str, line: int | None) -> bool:
        """Keeps one input row, its text cleaned (``clean_text``; a blank text, or one
        without a word, is None), unless it has neither text nor media, or its id, or its
        turn of its dialogue, was seen before (then it is a problem). Whether the row was
        kept."""
        uid = row["utterance_id"]
        text = row.get("text")
        cleaned = clean_text(text) if isinstance(text, str) else text
        wordless = cleaned if cleaned and cleaned.strip() and not has_word(cleaned) else None
        if not (cleaned and cleaned.strip()) or wordless:
            cleaned = None
        if cleaned is None and not row.get("media_path"):
            only = (f" (its text {preview(text, 40)} holds no word)" if wordless
                    else f" (its text {preview(text, 40)} holds only control characters)"
                    if text and text.strip() else "")
            self._record(source, line, row.get("split"), uid, "missing_field",
                         f"row has neither text nor media{only}")
            return False
        # A file name whose bytes are not UTF-8 (Python reads them as lone surrogates) in
        # a path, or an id made of one: no table can hold it.
        unstorable = next(((key, value) for key, value in [*row.items(), *(row.get("meta") or {}).items()]
                           if isinstance(value, str) and storable(value) != value), None)
        if unstorable:
            self._record(source, line, row.get("split"), uid, "bad_encoding",
                         f"its {unstorable[0]} {preview(unstorable[1], 120)} is not UTF-8 text (a file "
                         f"or folder name in another encoding?): rename it")
            return False
        if uid in self._seen_ids:
            self._record(
                source, line, row.get("split"), uid, "duplicate_id",
                f"first seen at {self._seen_ids[uid]}",
            )
            return False
        turn = (row.get("corpus") or self.corpus, row.get("split"), row.get("dialogue_id"),
                row.get("turn"))
        if turn in self._seen_turns:
            self._record(source, line, row.get("split"), uid, "duplicate_turn",
                         f"turn {turn[3]} of dialogue {preview(turn[2], 40)} first seen at "
                         f"{self._seen_turns[turn]}")
            return False
        where = f"{source}:{line}" if line is not None else source
        self._seen_ids[uid] = self._seen_turns[turn] = where
        row.setdefault("corpus", self.corpus)
        if cleaned is not None and cleaned != text:
            self.repairs[TEXT_CLEANED] += 1
        if wordless:
            self.repairs[TEXT_WITHOUT_WORDS] += 1
            row["meta"] = {**(row.get("meta") or {}), TEXT_WITHOUT_WORDS_META: wordless}
        row["text"] = cleaned
        self.rows_kept.append(row)
        return True

    def reject(self, reason: str, detail: str, *, source: str, line: int | None,
               split: str | None = None, utterance_id: str | None = None) -> None:
        """Records why one input row was set aside."""
        self._record(source, line, split, utterance_id, reason, detail)

    def _record(self, source, line, split, uid, reason, detail) -> None:
        if reason not in PROBLEM_REASONS:
            raise ValueError(f"unknown problem reason {reason!r}: add it to erc.schema.PROBLEM_REASONS")
        self.problems.append(
            {"corpus": self.corpus, "split": split, "source": source, "line": line,
             "utterance_id": uid, "reason": reason, "detail": detail}
        )

    def result(self) -> IngestResult:
        """The table of kept rows and the table of problems; CorpusError when the sources
        held no row at all (a header-only csv, a folder of no transcript): an empty corpus
        is a mistake in the input, not a result to train on."""
        if self.n_input == 0:
            raise CorpusError(f"{', '.join(self.sources) or self.corpus}: "
                              f"no utterance rows (only a header, or no line read as an "
                              f"utterance)")  # the corpus's name, a file's stem, is no reader
        result = IngestResult(
            utterances=utterance_table(self.rows_kept),
            problems=problem_table(self.problems),
            n_input=self.n_input,
            repairs=self.repairs,
            sources=self.sources,
            media=self.media,
            split_sources=self.split_sources,
            notes=self.notes,
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


# Bytes no text file holds (tab, line feed, form feed and carriage return are text).
CONTROL_BYTES = bytes([*range(0, 9), 11, *range(14, 32), 127])


# The byte order marks that say a file's encoding ("Unicode" text of Windows tools is
# UTF-16 LE with its mark); UTF-32 LE's mark begins as UTF-16 LE's, so it is tried first.
UNICODE_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                 (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def as_utf8(data: bytes, path: Path, partial: bool = False) -> bytes:
    """``data``, bytes of the corpus file ``path``, as UTF-8: a file that starts with a
    UTF-16 or UTF-32 byte order mark is decoded as its mark says (read byte by byte, its
    lines were text with a NUL between letters: a transcript line silently no utterance, a
    header no column). ``partial``: ``data`` is the file's first bytes, a character cut
    at their end dropped."""
    for mark, codec in UNICODE_MARKS:
        if data.startswith(mark):
            try:
                return data.decode(codec, errors="ignore" if partial else "strict").encode("utf-8")
            except UnicodeDecodeError as err:
                raise CorpusError(f"{path}: it starts with a {codec.upper()} byte order mark, but "
                                  f"its bytes from {err.start} are not {codec.upper()} text "
                                  f"({err.reason}); save it as UTF-8") from None
    return data


def read_lines(path: Path, keepends: bool = False,
               lf_only: bool = False) -> list[tuple[str, str | None]]:
    """(text, repair flag of ``decode_line``) of each line of a corpus text file. A UTF-8
    byte order mark (files saved by Windows tools) is taken off the first line, and off
    any later line it starts (such files joined one after another): it would otherwise
    stick to the first field, and a first row would no longer parse, a later row's
    dialogue id silently be another dialogue's (the mark is invisible). A UTF-16 or
    UTF-32 file with its byte order mark reads as its UTF-8 text would (``as_utf8``).
    ``lf_only``: a line ends at "\n" alone, the "\r"s
    before it taken off, for files of one record a line: a stray "\r" inside a line
    would otherwise cut its record in two (the rest of an IEMOCAP transcript line lost,
    a JSON line holding "\r" as whitespace two malformed rows) and, with "\r\r\n" from
    converting line ends twice, shift every later DailyDialog line against its labels. A
    file of binary bytes (a workbook, an archive named .csv) is a CorpusError naming it,
    not a header of garbled column names."""
    data = as_utf8(path.read_bytes(), path)
    head = data[:4096]
    if head.count(0) * 3 > len(head):  # the same without the mark (or no text at all)
        raise CorpusError(f"{path}: {head.count(0)} of its first {len(head)} bytes are NUL: UTF-16 "
                          f"or UTF-32 text without a byte order mark, or not text; save it as UTF-8")
    controls = sum(head.count(byte) for byte in CONTROL_BYTES)
    if controls >= 16 and controls * 10 > len(head):  # random bytes: about 12 %, text: none
        raise CorpusError(f"{path}: {controls} of its first {len(head)} bytes are control "
                          f"characters: not a text file (an archive, an image, a spreadsheet "
                          f"workbook?); save the corpus file as UTF-8 text (CSV: export it)")
    if lf_only:
        lines = [line.rstrip(b"\r") for line in data.split(b"\n")]
        if lines and not lines[-1]:
            lines.pop()  # after the last line break
    else:
        lines = data.splitlines(keepends=keepends)
    return [decode_line(raw.removeprefix(codecs.BOM_UTF8)) for raw in lines]


# C1 control characters (U+0080-U+009F): cp1252 bytes once decoded as Latin-1 (MELD's
# apostrophes stored as U+0092, bytes C2 92 in a UTF-8 file); no transcript means one.
_C1_CONTROL = re.compile("[\x80-\x9f]")


def _c1_as_cp1252(match: re.Match) -> str:
    try:
        return match.group().encode("latin-1").decode("cp1252")
    except UnicodeDecodeError:  # the five bytes cp1252 leaves undefined
        return match.group()


def fix_mojibake(text: str) -> str:
    """Undoes UTF-8 text that was once decoded as cp1252 (``â€™`` -> ``’``; ``Â’``, bytes
    C2 92 read so, -> ``’``), and cp1252 bytes once decoded as Latin-1 (U+0092 -> ``’``)."""
    if "â€" in text or "Ã" in text or "Â" in text:
        try:
            text = text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return _C1_CONTROL.sub(_c1_as_cp1252, text)


@dataclass
class CsvRecord:
    fields: dict[str, str]
    line: int  # 1-based physical line where the record starts
    encoding: str | None  # None, "cp1252" or "undecodable" (worst of its lines)
    # (reason, detail) when the record cannot be read as a row; fields is then empty
    problem: tuple[str, str] | None = None
    # Of a record set aside, the columns whose values could still be read (``known_values``):
    # enough, often, to give it its place in its dialogue.
    known: dict[str, str] = field(default_factory=dict)


def too_large(value: str, limit: int) -> bool:
    """Whether a text is longer than ``limit`` bytes in UTF-8 (cheap for short texts)."""
    return len(value) > limit or (len(value) * 4 > limit and len(value.encode("utf-8")) > limit)


def file_delimiter(path: Path, delimiter: str) -> str:
    """The delimiter a CSV file is read with: a .tsv file separates by tabs unless
    another delimiter than the default comma is named."""
    return "\t" if path.suffix.lower() == ".tsv" and delimiter == "," else delimiter


def read_csv_records(path: Path, required: Iterable[str],
                     max_field_bytes: int = ReaderOptions.max_field_bytes,
                     delimiter: str = ",", free: str | None = None) -> Iterator[CsvRecord]:
    """Reads a CSV file record by record, strictly: each physical line is decoded on its
    own (one bad byte spoils one record, not the file); a record the CSV grammar rejects
    (a quote never closed, text after a closing quote), the header row again (files joined
    with their headers), one with more or fewer values than
    the header has columns, and one with a field over ``max_field_bytes`` come back with a
    ``problem``. After a quoting problem, reading resumes on the line after the record's
    first line, so a stray quote costs one row, not the rest of the file (``known``: what
    can still be read of a record set aside; ``free``: the column of free text, where a
    delimiter goes astray). Raises
    CorpusError when the file is missing, empty, has an unreadable header, a column twice,
    or lacks a required column."""
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    lines = read_lines(path, keepends=True)
    if not lines:
        raise CorpusError(f"{path}: empty file (expected a header row)")
    decoded, flags = [text for text, _ in lines], [flag for _, flag in lines]

    header_reader = csv.reader(iter(decoded), strict=True, delimiter=delimiter)
    try:
        written = [h.strip() for h in next(header_reader)]
    except (csv.Error, StopIteration) as err:
        raise CorpusError(f"{path}: line 1: cannot read the header row ({err})") from None
    # A spreadsheet's export often ends its lines with empty columns of no name: each is
    # named by its place, not a column named '' several times.
    header = [h or f"unnamed column {n}" for n, h in enumerate(written, start=1)]
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise CorpusError(f"{path}: line 1: column(s) {', '.join(map(repr, twice))} appear more "
                          f"than once in the header")
    missing = [c for c in required if c not in header]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {', '.join(missing)}; found "
                          f"{preview(', '.join(header), 200)}")
    for start, end, values, error in _csv_records(decoded, header_reader.line_num, len(header),
                                                  delimiter):
        empty = values is not None and not any(v.strip() for v in values)
        if empty and len(values) <= 1:
            continue  # a blank line is no row; a row of delimiters only is one, set aside below
        span = flags[start:end]
        encoding = "undecodable" if "undecodable" in span else ("cp1252" if "cp1252" in span else None)
        line = start + 1
        problem = None
        # files joined with their headers (cat a.csv b.csv): no row, but a sign of it,
        # which a reason about its values ("Dialogue_ID is not a number") would hide
        # (its empty names as written: such a header again ends in empty values)
        repeated = values is not None and [v.strip() for v in values] == written
        if error is not None:
            until = "the end of the file" if end >= len(decoded) else f"line {end}"
            # An odd number of quotes on the record's line: one of them has no partner (it
            # ran into a later field's quote, another line or the end of the file).
            unpaired = decoded[start].count('"') % 2 == 1
            problem = (("unterminated_quote", f"a quote on line {line} is not closed where its "
                        f"field ends (the CSV parser ran to {until}: {error}); the lines "
                        f"after it are read on their own")
                       if unpaired or end - start > 1 or "end of data" in error else
                       ("malformed_row", f"not a CSV record: {error}"))
        elif empty:
            problem = ("missing_field", "every field is empty (a row of delimiters only)")
        elif repeated:
            problem = ("malformed_row", "the header row again (files joined one after "
                       "another, each with its header?)")
        elif len(values) != len(header):
            mark = "comma" if delimiter == "," else f"delimiter {delimiter!r}"
            problem = ("bad_field_count", f"{len(values)} values for the header's {len(header)} "
                       f"columns (a {mark} in an unquoted field, or a cut row)")
        else:
            big = next((h for h, v in zip(header, values) if too_large(v, max_field_bytes)), None)
            if big is not None:
                size = len(values[header.index(big)].encode("utf-8", "replace"))
                problem = ("field_too_large", f"column {big!r} holds {size:,} bytes; the limit is "
                           f"{max_field_bytes:,} (reader option max_field_bytes)")
        fields = dict(zip(header, values)) if problem is None else {}
        known = {} if problem is None or repeated else known_values(
            header, values, decoded[start], delimiter, max_field_bytes, free)
        yield CsvRecord(fields, line, encoding, problem, known)


def known_values(header: list[str], values: list[str] | None, first_line: str,
                 delimiter: str, max_field_bytes: int, free: str | None) -> dict[str, str]:
    """The values of a record set aside that can be told apart from its fault: with a
    field too large, every other column; with too many or too few values, the columns
    before the ``free`` text column (where a delimiter goes unquoted), and with too many
    those after it too, counted from the right; after a quoting error, the columns before
    the first quote of the record's first line."""
    if values is None:
        before = first_line.split('"', 1)[0] if '"' in first_line else ""
        return dict(zip(header, before.split(delimiter)[:-1]))
    if len(values) == len(header):
        return {h: v for h, v in zip(header, values) if not too_large(v, max_field_bytes)}
    if free not in header:
        return {}
    at = header.index(free)
    known = dict(zip(header[:at], values[:at]))
    if len(values) > len(header):  # the free text's own delimiters: the columns after it too
        known.update(zip(header[at + 1:], values[len(values) - len(header) + at + 1:]))
    return known


def _csv_records(lines: list[str], first: int, width: int, delimiter: str = ","
                 ) -> Iterator[tuple[int, int, list[str] | None, str | None]]:
    """(index of the record's first line, index after its last, values or None, the CSV
    error or None) of each record of ``lines[first:]``. After an error, or a record that
    ran over several lines into the wrong number of values (a quote that swallowed the
    rows after it), parsing starts again on the line after the record's first."""
    position = first
    while position < len(lines):
        reader = csv.reader(itertools.islice(lines, position, None), strict=True,
                            delimiter=delimiter)
        start, restart = position, None
        while restart is None:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield start, position + reader.line_num, None, str(err)
                restart = start + 1
                continue
            end = position + reader.line_num
            if end - start > 1 and len(values) != width:
                yield start, end, None, f"the quoted text ran over {end - start} lines"
                restart = start + 1
                continue
            yield start, end, values, None
            start = end
        position = restart


def split_files(folder: Path, files: dict[str, str],
                only: Iterable[str] | None = None) -> Iterator[tuple[str, Path]]:
    """(split, path) of each file of ``files`` (split -> file name) that ``folder`` holds,
    of the splits ``only`` names (every split without it); ``check_file`` on each.
    ``folder`` may be one of those files itself: its split alone (a test file given as it
    is, ``is_split_file``)."""
    if folder.is_file():
        split = is_split_file(folder, files)
        if split and (not only or split in only):
            yield split, folder
        return
    for split, name in files.items():
        if only and split not in only:
            continue
        path = folder / name
        check_file(path)
        if path.is_file():
            yield split, path


def is_split_file(path: Path, files: dict[str, str]) -> str | None:
    """The split of ``path`` when it is a file named as one of ``files`` (split -> file
    name), else None: a format's one split file reads as that format, not as a manifest
    lacking erc's column names."""
    return next((split for split, name in files.items() if name == path.name),
                None) if path.is_file() else None


def check_file(path: Path) -> None:
    """CorpusError for a corpus file that is there but no file: a symbolic link that leads
    to no file (a link loop, or its target gone), or a folder (or pipe, device) by a corpus
    file's name. Passed over as absent, its rows would be lost unseen; an absent file is
    the caller's to judge."""
    if path.is_symlink() and not path.exists():
        raise CorpusError(f"{path}: a symbolic link that leads to no file (a link loop, or "
                          f"its target is gone); fix or remove it")
    if path.exists() and not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file"
        raise CorpusError(f"{path}: is {what}, where a corpus file of that name belongs; "
                          f"move it away or put the file there")


def _unlistable(err: OSError) -> None:
    raise CorpusError(f"{err.filename}: the folder cannot be listed ({err.strerror}); its "
                      f"files would be passed over unseen: give erc read access to it") from None


def listed(folder: Path, pattern: str = "*") -> list[Path]:
    """The entries of ``folder`` matching ``pattern`` (no "/"), sorted; none when there is
    no such folder. A folder erc may not list is a CorpusError naming it: ``Path.glob``
    passes it over in silence, and the rows of its files would be lost unseen."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as err:
        _unlistable(err)
    return sorted(folder / name for name in fnmatch.filter(names, pattern))


def tree(folder: Path) -> list[Path]:
    """Every entry below ``folder`` (files and folders; a link to a folder is not entered),
    sorted, as ``folder.rglob("*")`` finds them, but a folder erc may not list is a
    CorpusError naming it, not passed over in silence (``listed``)."""
    found = []
    for root, dirs, files in os.walk(folder, onerror=_unlistable):
        found += [Path(root, name) for name in (*dirs, *files)]
    return sorted(found)


def media_problem(path: Path, column: str = "media") -> tuple[str, str] | None:
    """("missing_media" | "media_not_a_file", detail) for a media path that cannot be a
    clip, else None."""
    if not path.exists():
        return "missing_media", f"{column} {path} does not exist"
    if not path.is_file():
        return "media_not_a_file", f"{column} {path} is {'a folder' if path.is_dir() else 'not a regular file'}"
    return None


def resolve_inside(root: Path, relative: str, allow_outside: bool,
                   base: Path | None = None) -> Path | None:
    """Resolves a media path named in a manifest against ``base`` (default: the root).
    Returns None when the path escapes the root and escaping is not allowed."""
    path = Path(relative)
    if not path.is_absolute():
        path = (base or root) / path
    path = Path(os.path.normpath(path))
    if not allow_outside:
        resolved = path.resolve()  # ValueError for a NUL byte: no path at all
        if resolved != root.resolve() and root.resolve() not in resolved.parents:
            return None
    return path
