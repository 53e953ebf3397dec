"""How a manifest in the wild maps onto erc's utterance fields, without code.

A ``ManifestMapping`` holds every option of the manifest reader: given as reader options
(``-o columns='{text: Utterance}'``), as a YAML mapping file (``--mapping FILE``, or
``erc-mapping.yaml`` in the corpus folder), or both (options override the file's keys).
It owns what differs between corpora:

- ``files``: which files hold the corpus: a glob whose ``{split}`` part names the split
  (``friends_{split}.csv``), a mapping split -> file or glob, or a plain glob;
- ``columns``: erc field -> the column holding it, or a template composing it from several
  columns (``dialogue_id: "{Season}-{Episode}-{Scene_ID}"``);
- speaker lists (``['Rachel Green']``): the single name is taken; several names are a
  ``several_speakers`` problem, or joined with " & " (``several_speakers: join``);
- ``label_map``: corpus label -> erc label (``Joyful: joy``); null sets rows aside as
  ``excluded_label``; a label neither a key nor a value is an ``unknown_label``;
- times as seconds (milliseconds with ``time_unit: ms``) or ``[HH:]MM:SS.mmm`` (a comma
  works as the decimal mark too);
- nested JSON: a column named ``conv.id`` is the key ``id`` of the object in ``conv``;
  in a JSON document (``.json``), ``records: episodes.scenes.utterances`` names the lists
  holding the utterances, each reading its enclosing objects' keys by their path
  (``episodes.scenes.scene_id``);
- CSV with another delimiter (``delimiter: ";"``).

Mapping failures are per row (``missing_template_field``, ``several_speakers``,
``excluded_label``, ``unknown_label``, ``bad_time``); a file lacking a column the mapping
names is an error for the whole file, naming the mapping key.
"""

from __future__ import annotations

import ast
import datetime
import decimal
import glob
import os
import re
import string
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from erc.corpus.base import (
    SPLIT_WORDS,
    CorpusError,
    ReaderOptions,
    check_file,
    file_delimiter,
    listed,
    reader_options,
    too_large,
)
from erc.corpus.values import SURROGATE, RowProblem, blank, id_value, kind, meta_value, text_value
from erc.errors import preview
from erc.io import MARKER as OUTPUT_MARKER
from erc.settings import ConfigLoader, load_yaml, parse_override, validate

# The fields of a manifest row (the columns of erc.schema's utterance table, in the
# manifest's names); any other column is kept in ``meta``.
FIELDS = ("dialogue_id", "speaker", "text", "media", "split", "utterance_id", "turn",
          "emotion", "audio", "start", "end", "corpus")
REQUIRED = ("dialogue_id", "speaker")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".json")
MAPPING_FILE = "erc-mapping.yaml"  # a corpus folder holding one is read with it
# A column every row has: its manifest file's name without the suffix. A folder of one
# file per dialogue has no dialogue id column; `dialogue_id: _file` names them so.
FILE_COLUMN = "_file"
SPEAKER_JOIN = " & "
SEVERAL_SPEAKERS = ("problem", "join")
TIME_UNITS = {"s": 1, "ms": 1000}  # a number in start/end: how many make a second
# erc's own utterance table (``erc.schema``) names these fields otherwise, and keeps the
# other columns in a map column "meta": read back as a manifest, they are those fields and
# that meta again, not meta of their own.
TABLE_COLUMNS = {"media": "media_path", "audio": "audio_path", "start": "start_s", "end": "end_s"}
TABLE_META = "meta"


@dataclass
class ManifestMapping(ReaderOptions):
    """The manifest reader's options; the keys of a mapping file."""
    corpus: str | None = None  # corpus name; default: the manifest's stem or folder name
    split: str = "train"  # split of rows that neither their file nor a column names
    # Which files: "friends_{split}.csv" (the {split} part is the split), {train: a.csv,
    # dev: b.csv} (values may be globs), or a plain glob; relative to the corpus folder.
    # None: the manifest file given, or every .csv/.jsonl/.parquet in the folder given.
    files: str | dict[str, str] | None = None  # which files: "x_{split}.csv", {split: file or glob}, or a glob
    columns: dict[str, str] = field(default_factory=dict)  # field -> column or "{A}-{B}"
    label_map: dict[str, str | None] = field(default_factory=dict)  # corpus label -> label
    labels: list[str | int] | None = None  # the label set (0, 1 read as "0", "1"); other labels are unknown_label
    several_speakers: str = "problem"  # a list of several speakers: "problem" or "join"
    allow_outside_root: bool = False  # media paths and files: may leave the corpus folder
    keep_missing_media: bool = False  # keep rows whose media file is absent (text only)
    delimiter: str = ","  # a CSV file's field delimiter: ",", ";", "\t", "|"
    time_unit: str = "s"  # what a number in start/end counts: "s" or "ms"
    records: str | None = None  # in a .json document, the lists of utterances: "episodes.scenes.utterances"

    def check(self, where: str) -> None:
        """Raises CorpusError naming the key of the first invalid setting."""
        for name, spec in self.columns.items():
            if name not in FIELDS:
                raise CorpusError(f"{where}: columns.{name}: not a field; fields: "
                                  f"{', '.join(FIELDS)}")
            if not isinstance(spec, str) or not spec.strip():
                raise CorpusError(f"{where}: columns.{name}: expected a column name or a "
                                  f"template like \"{{A}}-{{B}}\", got {preview(spec)}")
            try:
                _template(spec)
            except ValueError as err:
                raise CorpusError(f"{where}: columns.{name}: bad template {preview(spec)} "
                                  f"({err})") from None
        if self.labels is not None and not self.labels:  # a check that admits no label
            raise CorpusError(f"{where}: labels: an empty list admits no label; leave labels "
                              f"out to keep every label")
        for label in self.labels or ():
            if not str(label).strip():  # ""
                raise CorpusError(f"{where}: labels: expected label names, got {preview(label)}")
        seen: dict[str, str] = {}
        for label, target in self.label_map.items():
            if target is not None and (not isinstance(target, str) or not target.strip()):
                raise CorpusError(f"{where}: label_map.{label}: expected a label or null, "
                                  f"got {preview(target)}")
            # Labels match ignoring case and spaces: two such keys mapped to different
            # labels would leave one of them silently unused.
            key = str(label).strip().casefold()
            if key in seen and _target(self.label_map[seen[key]]) != _target(target):
                raise CorpusError(f"{where}: label_map: {seen[key]!r} and {label!r} are the "
                                  f"same label (labels match ignoring case) mapped differently")
            seen.setdefault(key, label)
        # An empty split name makes ids like "corpus//dialogue/0" and a split no role finds.
        if not self.split.strip():
            raise CorpusError(f"{where}: split: expected a split name, got {preview(self.split)}")
        if self.corpus is not None and not self.corpus.strip():  # ids like "  /train/d/0"
            raise CorpusError(f"{where}: corpus: expected a corpus name, got {preview(self.corpus)}")
        if self.several_speakers not in SEVERAL_SPEAKERS:
            raise CorpusError(f"{where}: several_speakers: expected one of "
                              f"{', '.join(SEVERAL_SPEAKERS)}, got {preview(self.several_speakers)}")
        if len(self.delimiter) != 1 or self.delimiter in "\"\r\n":
            raise CorpusError(f"{where}: delimiter: expected one character other than a quote "
                              f"or a line break, got {preview(self.delimiter)}"
                              + (" (a tab: \"\\t\" in double quotes, -o 'delimiter=\"\\t\"')"
                                 if self.delimiter in ("\\t", "") else ""))
        if self.time_unit not in TIME_UNITS:
            raise CorpusError(f"{where}: time_unit: expected one of {', '.join(TIME_UNITS)}, "
                              f"got {preview(self.time_unit)}")
        if self.records is not None and not all(p.strip() for p in self.records.split(".")):
            raise CorpusError(f"{where}: records: expected keys joined by dots "
                              f"(episodes.scenes.utterances), got {preview(self.records)}")
        patterns = self.files.items() if isinstance(self.files, dict) else [(None, self.files)]
        for split, pattern in patterns:
            key = "files" if split is None else f"files.{split}"
            if split is not None and not split.strip():
                raise CorpusError(f"{where}: files: {preview(split)} is no split name")
            if pattern is not None and (not isinstance(pattern, str) or not pattern.strip()):
                raise CorpusError(f"{where}: {key}: expected a file name or glob, got {preview(pattern)}")
            if isinstance(pattern, str) and (split is not None and "{split}" in pattern
                                             or pattern.count("{split}") > 1):
                raise CorpusError(f"{where}: {key}: {{split}} may appear once, in a single pattern")

    # -- files ---------------------------------------------------------------------------

    def manifest_files(self, path: Path) -> list[ManifestFile]:
        """Each manifest file to read, with the split its name gives. ``path`` is the corpus
        folder or one manifest file (then only that file is read).

        The one rule of a file's split: the mapping's ``files:`` naming it (a key of its
        mapping, or the ``{split}`` part of its pattern) gives its rows that split, over
        any split column. Otherwise a split word (``SPLIT_WORDS``) as the file's stem
        (``dev.csv``) or, below the corpus folder, as the name of its folder
        (``valid/part-0.csv``) gives the rows that split unless a split column names
        another; other rows take the ``split`` option. Without ``files:``, a folder's
        manifests are its own and those of its subfolders named by a split word."""
        folder = path if path.is_dir() else path.parent
        if self.files is None:
            if path.is_file():
                return [_by_name(path, folder)]
            named = [p for p in listed(folder) if _manifest_name(p)]
            for sub in listed(folder):
                # a folder train/ or valid/ of manifests; not an output folder of erc's
                if sub.name.casefold() in SPLIT_WORDS and sub.is_dir():
                    inside = listed(sub)
                    if sub / OUTPUT_MARKER not in inside:
                        named += [p for p in inside if _manifest_name(p)]
            for file in named:
                check_file(file)
            found = [_by_name(p, folder) for p in named if p.is_file()]
            if not found:
                # a table under another suffix (metadata.txt, train.csv.gz) is read by none
                other = next((p.name for p in listed(folder) if p.is_file() and p.suffix.lower()
                              in (".txt", ".gz", ".zip", ".bz2", ".xz", ".zst")), None)
                raise CorpusError(f"{folder}: no .csv, .tsv, .jsonl, .json or .parquet manifest in the folder "
                                  f"(name them with files: in the mapping)"
                                  + (f"; {preview(other, 80)} is none: rename a table (.tsv for tab-"
                                     f"separated), unpack a compressed one" if other else ""))
            return found
        entries = self.files.items() if isinstance(self.files, dict) else [(None, self.files)]
        found: dict[Path, str | None] = {}
        for split, pattern in entries:
            matches = _matches(folder, pattern)
            key = "files" if split is None else f"files.{split}"
            if not matches:
                raise CorpusError(f"{folder}: {key}: no file matches {pattern!r}")
            for file, named in matches:
                # A corpus's own mapping may not read the machine's other files ("/etc/*"),
                # as its media may not (links are the user's own doing: not followed here).
                if not (self.allow_outside_root or Path(os.path.abspath(file)).is_relative_to(
                        os.path.abspath(folder))):
                    raise CorpusError(f"{folder}: {key}: {pattern!r} matches {file}, outside "
                                      f"the corpus folder (allow_outside_root: true allows it)")
                found.setdefault(file, split or named)
        if path.is_file():
            found = {path: found.get(folder / path.name)}
        return [ManifestFile(file, split, "files") if split else _by_name(file, folder)
                for file, split in sorted(found.items(), key=lambda item: str(item[0]))]

    # -- rows ----------------------------------------------------------------------------

    def for_columns(self, columns: list[str]) -> ManifestMapping:
        """This mapping for a file of ``columns``: a field that is neither mapped nor a
        column of its own is read from its column in erc's utterance table, when the
        file has it (``media_path`` for media, ...)."""
        named = {c for spec in self.columns.values() for c in source_columns(spec)}
        extra = {name: column for name, column in TABLE_COLUMNS.items()
                 if name not in self.columns and name not in columns
                 and column in columns and column not in named}
        return replace(self, columns={**extra, **self.columns}) if extra else self

    def check_columns(self, columns: list[str], source: str) -> None:
        """Raises CorpusError when a file lacks a column the mapping names, or a field
        every row needs (dialogue_id, speaker, and text or media) is neither mapped nor a
        column."""
        have = set(columns)
        # One column whose name holds another delimiter: a header of ";"-separated names.
        file = Path(source)
        used = file_delimiter(file, self.delimiter)
        other = next((d for d in ";\t|," if d != used and len(columns) == 1
                      and d in str(columns[0])), None)
        hint = "" if other is None else (
            " (fields separated by ','? a .tsv file is read by tabs: name it .csv)"
            if file_delimiter(file, other) != other
            else f" (fields separated by {other!r}? set delimiter: {other!r})")
        for name, spec in self.columns.items():
            lacking = [c for c in source_columns(spec) if c not in have]
            if lacking:
                raise CorpusError(f"{source}: columns.{name} names column(s) "
                                  f"{', '.join(map(repr, lacking))}, which the file lacks; "
                                  f"it has {preview(', '.join(map(str, columns)), 200)}{hint}")
        covered = (have - self.renamed_columns()) | set(self.columns)  # as map_row reads them
        missing = [f for f in REQUIRED if f not in covered]
        if missing:
            # {"u1": {"speaker": ..}, "u2": {..}}: one record whose columns are u1.speaker, ...
            keyed = sorted({c.rsplit(".", 1)[0] for c in map(str, columns)
                            if "." in c and c.rsplit(".", 1)[1] in missing})
            if len(keyed) > 1:
                hint += (f" (the fields sit under the keys {preview(', '.join(keyed), 80)}: "
                         f"utterances keyed by id? erc reads lists of utterance objects)")
            if "dialogue_id" in missing:
                hint += f" (one file per dialogue? columns: {{dialogue_id: {FILE_COLUMN}}})"
            raise CorpusError(f"{source}: missing column(s) {', '.join(missing)}; found "
                              f"{preview(', '.join(map(str, columns)), 200)} (a mapping's "
                              f"columns: can name others){hint}")
        if not ({"text", "media"} & covered):
            raise CorpusError(f"{source}: manifest needs a text or a media column; found "
                              f"{preview(', '.join(map(str, columns)), 200)}")

    def map_row(self, raw: dict[str, Any]
                ) -> tuple[dict[str, Any], dict[str, str], RowProblem | None]:
        """(fields, meta, problem) of one row: the erc fields (speaker unwrapped, label
        mapped), the remaining columns as text, and the first failure or None. Values are
        typed: a column an erc field reads holding bytes, a mapping, a boolean or (but for
        the speaker) a list is a bad_type problem, as is a meta column holding bytes; a
        value over ``max_field_bytes`` is field_too_large. Fields stay filled as far as
        they could be mapped, for the problem's record."""
        problem = None
        speaker_columns = set(source_columns(self.columns.get("speaker") or "speaker"))
        read = self.field_columns()
        raw = dict(raw)
        roots = set()  # objects a mapped path (conv.id) reads into: not themselves a field
        for column in read:
            if column not in raw and (value := lookup(raw, column)) is not _ABSENT:
                raw[column] = value
                roots.add(column.split(".", 1)[0])
        roots = {c for c in roots if isinstance(raw.get(c), dict)}
        for column in [c for c in raw if c in read and c not in roots]:
            value = raw[column]
            if isinstance(value, (list, tuple)) and column in speaker_columns:
                continue
            if not blank(value) and (isinstance(value, bool) or not isinstance(
                    value, (str, int, float, decimal.Decimal, datetime.timedelta))):
                problem = problem or RowProblem("bad_type", f"column {column!r}: {kind(value)} "
                                                f"({preview(value, 40)}) where text or a number belongs")
                raw[column] = None
        fields_: dict[str, Any] = {}
        renamed = self.renamed_columns()
        for name in FIELDS:
            spec = self.columns.get(name)
            if spec is None:
                fields_[name] = None if name in roots or name in renamed else raw.get(name)
                continue
            text, parts = _template(spec)
            if not parts:
                fields_[name] = raw.get(spec)
                continue
            missing = [c for c in parts if blank(raw.get(c))]
            if missing:
                problem = problem or RowProblem(
                    "missing_template_field", f"columns.{name} {spec!r}: "
                    + ", ".join(f"{c}={preview(raw.get(c), 40)}" for c in missing))
                fields_[name] = None
            else:
                try:
                    fields_[name] = text.format(*[_text(raw[c]) for c in parts])
                except RowProblem as wrong:  # a value no id is made of (a duration)
                    problem, fields_[name] = problem or wrong, None
        meta, carried = {}, {}
        items = list(raw.items())
        for root in roots:  # the keys of a mapped object no field reads, as "root.key"
            items += [(k, v) for k, v in flat_items(root, raw[root]) if k not in raw]
        kept = []  # (where it goes, its key, its value, how a problem names it)
        for column, value in items:
            if column in FIELDS or column in renamed or column in roots or column == FILE_COLUMN:
                continue
            if column == TABLE_META and (entries := _map_entries(value)) is not None:
                kept += [(carried, key, inner, f"meta key {key!r}")  # erc's own meta, read back
                         for key, inner in entries]
            else:
                kept.append((meta, column, value, f"column {column!r}"))
        for target, key, value, what in kept:
            try:
                text = meta_value(value, what)
            except RowProblem as failure:
                problem = problem or failure
                continue
            if text is not None:
                target[key] = text
        meta = {**carried, **meta}  # a column of the row's own names its value
        try:
            fields_["speaker"] = self._speaker(fields_.get("speaker"))
            fields_["emotion"] = self._emotion(fields_.get("emotion"))
        except RowProblem as failure:
            problem = problem or failure
        big = next((name for name, value in [*fields_.items(), *meta.items()]
                    if isinstance(value, str) and too_large(value, self.max_field_bytes)), None)
        if big is not None:
            problem = problem or RowProblem("field_too_large", f"{big} is longer than "
                                            f"{self.max_field_bytes:,} bytes (reader option "
                                            f"max_field_bytes)")
        return fields_, meta, problem

    def renamed_columns(self) -> set[str]:
        """The columns a field reads as they are (not by a template): that field's alone,
        neither a field of their own name (turn: utterance_id) nor meta."""
        return {spec for spec in self.columns.values() if not _template(spec)[1]}

    def field_columns(self) -> set[str]:
        """The columns erc's fields read (the rest go to ``meta``)."""
        return {column for name in FIELDS
                for column in source_columns(self.columns.get(name) or name)}

    def _speaker(self, value) -> str | None:
        names = speaker_names(value)
        if not names:
            return None
        if len(names) > 1 and self.several_speakers == "problem":
            raise RowProblem("several_speakers", f"speaker {preview(value, 60)} names {len(names)} people "
                             f"(several_speakers: join keeps them as one)")
        return SPEAKER_JOIN.join(names)

    def _emotion(self, value) -> str | None:
        label = text_value(value, "emotion")
        if label is None:
            return None
        label = label.strip()
        if (label.casefold() in MISSING_WORDS and not self.label_map
                and label.casefold() not in {str(k).casefold() for k in self.labels or ()}):
            raise RowProblem("unknown_label", f"emotion {preview(label, 40)} is a missing "
                             f"value written as a word (pandas writes NaN as 'nan', Python "
                             f"None as 'None'), not a label: leave the cell empty for an "
                             f"unlabelled utterance, or name it in labels or label_map")
        if not self.label_map:
            return label.lower()
        by_key = {k.strip().casefold(): v for k, v in self.label_map.items()}
        if label.casefold() in by_key:
            target = by_key[label.casefold()]
            if target is None:
                raise RowProblem("excluded_label", f"label_map maps {preview(label, 40)} to null")
            return target.strip().lower()
        if label.casefold() in {v.strip().casefold() for v in by_key.values() if v}:
            return label.lower()
        raise RowProblem("unknown_label", f"emotion {preview(label, 40)} is not in the "
                         f"label_map ({preview(', '.join(self.label_map), 200)})")


class ManifestFile(NamedTuple):
    path: Path
    split: str | None  # the split its name gives, or None
    # "files" (the mapping's files: names the split: it wins over a split column), "name"
    # (a split word as its stem or folder: a split column wins), or None
    origin: str | None = None


def _manifest_name(file: Path) -> bool:
    """A file a folder's manifests are among: a manifest suffix, and not macOS's
    AppleDouble metadata ``._train.csv`` (binary, left by copying to other file systems;
    the MELD, IEMOCAP and RAVDESS readers pass them over too)."""
    return file.suffix.lower() in MANIFEST_SUFFIXES and not file.name.startswith("._")


def split_of_name(file: Path, folder: Path) -> str | None:
    """The split a split word gives as the file's stem (``valid.csv`` -> dev) or as the
    name of its folder below the corpus ``folder`` (``test/part-0.csv`` -> test)."""
    if file.stem.casefold() in SPLIT_WORDS:
        return SPLIT_WORDS[file.stem.casefold()]
    parent = file.parent
    if parent != folder and Path(os.path.abspath(parent)).is_relative_to(os.path.abspath(folder)):
        return SPLIT_WORDS.get(parent.name.casefold())
    return None


def _by_name(file: Path, folder: Path) -> ManifestFile:
    split = split_of_name(file, folder)
    return ManifestFile(file, split, "name" if split else None)


# A missing value a tool wrote out as a word: no emotion label, unless labels or
# label_map name it.
MISSING_WORDS = frozenset({"nan", "none", "null"})


# The keys whose values are the corpus's own names, labels and files: a mapping file's
# plain scalars there (and its keys everywhere) read as the text written, not as YAML 1.1
# reads them (label_map: {yes: joy, no: anger} would be {True: joy, False: anger}).
AS_WRITTEN = ("corpus", "split", "files", "columns", "label_map", "labels")
_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"


class MappingLoader(ConfigLoader):
    """The loader of mapping files: a plain scalar a corpus's label, column or file name
    stands for (``yes``, ``on``, ``1``, ``1.0``) is the text written; null stays null
    (``label_map: {Other: null}``), and the typed options (``keep_missing_media: true``)
    read as YAML reads them."""

    def construct_document(self, node):
        options_as_written(node)
        return super().construct_document(node)


def options_as_written(node) -> None:
    """Marks a YAML node of reader options (a mapping file, ``corpus.options`` of a run
    config) to be read as a mapping file is: its keys, and every plain scalar under a key
    of ``AS_WRITTEN``, as the text written."""
    if isinstance(node, yaml.MappingNode):
        _keys_as_written(node)
        for key, value in node.value:
            if key.value in AS_WRITTEN:
                _as_written(value)


class _KeysWritten(ConfigLoader):
    """A reader option's value on the command line: its keys as written."""

    def construct_document(self, node):
        _keys_as_written(node)
        return super().construct_document(node)


class _AllWritten(ConfigLoader):
    """The value of a reader option of ``AS_WRITTEN`` on the command line: as written."""

    def construct_document(self, node):
        _as_written(node)
        return super().construct_document(node)


def option_loader(key: str) -> type[ConfigLoader]:
    """The loader of ``-o KEY=VALUE``, KEY a reader option (``label_map``, or
    ``label_map.yes``): VALUE reads as it would in a mapping file."""
    return _AllWritten if key.split(".")[0] in AS_WRITTEN else _KeysWritten


class RunConfigLoader(ConfigLoader):
    """The loader of run configs: ``corpus.options`` reads as a mapping file does."""

    def construct_document(self, node):
        for key, section in node.value if isinstance(node, yaml.MappingNode) else ():
            if key.value == "corpus" and isinstance(section, yaml.MappingNode):
                for name, options in section.value:
                    if name.value == "options":
                        options_as_written(options)
        return super().construct_document(node)


def parse_reader_option(text: str) -> tuple[str, Any]:
    """``-o KEY=VALUE`` of a reader option (``erc corpus ingest -o``)."""
    return parse_override(text, option_loader)


def parse_run_override(text: str) -> tuple[str, Any]:
    """``-o SECTION.KEY=VALUE`` of a run config: ``corpus.options.*`` read as reader options."""
    def loader(key: str) -> type[ConfigLoader]:
        parts = key.split(".")
        if parts[:2] != ["corpus", "options"]:
            return ConfigLoader
        return option_loader(".".join(parts[2:])) if len(parts) > 2 else MappingLoader
    return parse_override(text, loader)


def _plain(node) -> bool:
    """A scalar written without quotes or a tag that YAML resolved as other than null."""
    return (isinstance(node, yaml.ScalarNode) and node.style is None and node.tag != _NULL
            and node.tag.startswith("tag:yaml.org,2002:"))


def _keys_as_written(node) -> None:
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if _plain(key):
                    key.tag = _STR
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


def _as_written(node) -> None:
    stack = [node]
    while stack:
        node = stack.pop()
        if _plain(node):
            node.tag = _STR
        elif isinstance(node, yaml.MappingNode):
            stack += [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value


def load_mapping(mapping: str | Path | dict | None = None,
                 where: str = "reader options of manifest", **options) -> ManifestMapping:
    """The mapping from a YAML file (or a dict) with ``options`` overriding its keys;
    validated, errors name the key (and whether it came from the options or the file)."""
    if options:
        reader_options(ManifestMapping, options, "manifest").check(where)
    data: dict = {}
    if isinstance(mapping, dict):
        data = dict(mapping)
    elif mapping is not None:
        path = Path(mapping)
        if not path.is_file():
            raise CorpusError(f"{path}: no such mapping file" if not path.exists() else
                              f"{path}: is a {'folder' if path.is_dir() else 'special file'}, "
                              f"not a mapping file (YAML)")
        data = load_yaml(path, MappingLoader) or {}
        where = str(path)
        if not isinstance(data, dict):
            raise CorpusError(f"{where}: expected a mapping of keys "
                              f"({', '.join(f.name for f in fields(ManifestMapping))})")
    data.update(options)
    result = validate(ManifestMapping, data, where)
    result.check(where)
    return result


# -- values -------------------------------------------------------------------------------

_ABSENT = object()


def lookup(row: dict, column: str):
    """The value of ``column`` in a row: its key, or for a dotted name the key inside the
    object a key holds ("conv.id" -> row["conv"]["id"]; the longest key matching first,
    so a key "a.b" itself is found); ``_ABSENT`` when there is none."""
    if column in row:
        return row[column]
    for cut in sorted((i for i, c in enumerate(column) if c == "."), reverse=True):
        inner = row.get(column[:cut])
        if isinstance(inner, dict):
            value = lookup(inner, column[cut + 1:])
            if value is not _ABSENT:
                return value
    return _ABSENT


def _map_entries(value) -> list | None:
    """The (key, value) entries of a map value (a Parquet map reads as a list of pairs, a
    JSON one as an object) with text keys; None for any other value."""
    entries = list(value.items()) if isinstance(value, dict) else value
    if isinstance(entries, (list, tuple)) and all(
            isinstance(e, (list, tuple)) and len(e) == 2 and isinstance(e[0], str) for e in entries):
        return [tuple(e) for e in entries]
    return None


def flat_items(prefix: str, value):
    """(dotted name, value) of each leaf of nested objects: ("conv", {"id": 1}) ->
    ("conv.id", 1); a value that is no object is its own leaf."""
    if isinstance(value, dict) and value:
        for key, inner in value.items():
            yield from flat_items(f"{prefix}.{key}", inner)
    else:
        yield prefix, value


def column_names(row: dict, prefix: str = "") -> list[str]:
    """A row's columns: its keys, and the dotted names of the keys of nested objects."""
    names = []
    for key, value in row.items():
        names.append(prefix + str(key))
        if isinstance(value, dict):
            names += column_names(value, f"{prefix}{key}.")
    return names


def speaker_names(value) -> list[str]:
    """The names a speaker field holds: a list (JSON, Parquet) or a list literal in text
    (``['Rachel Green']``) gives its items; any other value is one name."""
    if isinstance(value, (list, tuple)):
        items = value
    elif blank(value):
        return []
    elif isinstance(value, str):
        text = value.strip()
        items = [text]
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
                parsed = None  # "[Narrator]": a name in brackets, not a list
            if isinstance(parsed, (list, tuple)):
                items = parsed
                if any(isinstance(item, str) and SURROGATE.search(item) for item in items):
                    raise RowProblem("bad_encoding", f"speaker {preview(text, 60)}: an escape "
                                     f"of a lone UTF-16 surrogate, no character")
    else:
        items = [value]
    names = []
    for item in items:
        name = id_value(item, "speaker")
        if name is not None:
            names.append(name)
    return names


def _target(label: str | None) -> str | None:
    """A label_map value as the reader applies it."""
    return None if label is None else label.strip().lower()


def _text(value) -> str:
    """A value as it reads in an id: 3.0 from a Parquet float column -> "3"."""
    return text_value(value, "a template column").strip()


def _template(spec: str) -> tuple[str, list[str]]:
    """(a format string with positional fields, the columns they stand for); a plain
    column name names no columns. ValueError on a format spec, conversion or empty field.
    Positional fields because a column name may hold what str.format reads as an index
    or attribute ("a.b", "x[0]")."""
    fmt, names = [], []
    for literal, name, format_spec, conversion in string.Formatter().parse(spec):
        fmt.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        if not name or format_spec or conversion:
            raise ValueError("fields are {Column} with nothing else inside the braces")
        fmt.append("{}")
        names.append(name)
    return ("".join(fmt), names) if names else (spec, [])


def source_columns(spec: str) -> list[str]:
    """The columns a columns: entry reads (one, or those of its template); a name that is
    no template (a column named "a}b") is that one column."""
    try:
        return _template(spec)[1] or [spec]
    except ValueError:
        return [spec]


def _glob_regex(pattern: str) -> str:
    return "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern)


def _glob(folder: Path, pattern: str) -> list[str]:
    """The names ``glob.glob(pattern, root_dir=folder)`` finds (a leading "*" does not
    match hidden names), found by one walk that lists each folder with ``listed``: a
    folder erc may not list is a CorpusError naming it, where glob passes over it in
    silence and the rows of its files would be lost unseen."""
    absolute = pattern.startswith("/")
    base = Path("/") if absolute else folder
    parts = [part for part in pattern.split("/") if part]
    found = [""] if parts else []  # "" and "/" name no file
    for level, part in enumerate(parts):
        last = level == len(parts) - 1 and not pattern.endswith("/")  # "dir/": folders only
        deeper = []
        for name in found:
            here = base / name
            if glob.has_magic(part):
                names = [p.name for p in listed(here, part)
                         if part.startswith(".") or not p.name.startswith(".")]
            else:
                names = [part] if os.path.lexists(here / part) else []
            deeper += [f"{name}/{n}" if name else n for n in names
                       if last or (here / n).is_dir()]
        found = deeper
    return sorted("/" + name if absolute else name for name in found)


def _matches(folder: Path, pattern: str) -> list[tuple[Path, str | None]]:
    """Files under ``folder`` matching ``pattern``; with the split its {split} part names."""
    before, marker, after = pattern.partition("{split}")
    pattern = before + ("*" if marker else "") + after
    found = []
    for name in _glob(folder, pattern):
        file = folder / name
        check_file(file)
        if not file.is_file():
            continue
        split = None
        if marker:
            match = re.fullmatch(_glob_regex(before) + "([^/]+)" + _glob_regex(after), name)
            split = match.group(1) if match else None
        found.append((file, split))
    return found
