"""A generic manifest, so users bring a new corpus without writing code.

One row per utterance, in CSV (UTF-8 with a header; a ``.tsv`` file separated by tabs),
JSON Lines, or Parquet: one file, or
a folder of files (one per split, say). The columns below are erc's fields; a corpus
whose columns are named otherwise, whose ids are composed of several columns, whose
speakers are list literals or whose labels differ is read through a mapping
(``erc.corpus.mapping``: reader options or a YAML file), not converted by hand.

| field          | required | meaning                                                            |
|----------------|----------|--------------------------------------------------------------------|
| dialogue_id    | yes      | conversation id                                                    |
| speaker        | yes      | speaker identity (a one-name list literal ``['Ann']`` is unwrapped) |
| text           | one of   | transcript                                                         |
| media          | one of   | video or audio file, relative to the manifest's folder or absolute |
| split          | no       | train / dev / test ...; the mapping's files: wins over it; default |
|                |          | from a file named as a split (dev.csv), else options               |
| utterance_id   | no       | default ``<corpus>/<split>/<dialogue_id>/<turn>``                  |
| turn           | no       | 0-based position in the dialogue; default: the row's place among   |
|                |          | its dialogue's rows, rows set aside included                       |
| emotion        | no       | label; mapped by ``label_map``, checked against ``labels``         |
| audio          | no       | separate audio file                                                |
| start, end     | no       | segment within ``media``: seconds or ``[HH:]MM:SS.mmm``            |
| anything else  | no       | kept as text in ``meta``                                           |

erc's own ``utterances.parquet`` reads back as a manifest: its ``media_path``,
``audio_path``, ``start_s`` and ``end_s`` columns are media, audio, start and end, and the
entries of its ``meta`` map are the row's meta again.

Media paths, and the files a mapping names, may not escape the corpus folder (the folder
given, or the manifest file's) unless ``allow_outside_root`` is set.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from erc.corpus.base import (
    CorpusError,
    CsvRecord,
    IngestResult,
    ReaderOptions,
    RowCollector,
    check_file,
    file_delimiter,
    media_problem,
    read_csv_records,
    read_lines,
    resolve_inside,
    split_name,
)
from erc.corpus.mapping import (
    FILE_COLUMN,
    MANIFEST_SUFFIXES,
    MAPPING_FILE,
    TIME_UNITS,
    column_names,
    load_mapping,
    source_columns,
)
from erc.corpus.values import (
    MAX_TURN,
    SURROGATE,
    RowProblem,
    blank,
    id_value,
    kind,
    parse_time,
    parse_turn,
    text_value,
)
from erc.errors import ConfigError, preview
from erc.schema import MISSING_MEDIA_META
from erc.settings import expand_path


def looks_like(path: Path) -> bool:
    """A manifest file, or a corpus folder holding a mapping file."""
    return ((path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES)
            or has_mapping_file(path))


def has_mapping_file(path: Path) -> bool:
    return path.is_dir() and (path / MAPPING_FILE).is_file()


def read_records(path: Path, max_field_bytes: int = ReaderOptions.max_field_bytes,
                 delimiter: str = ",", records: str | None = None,
                 free: str | None = None) -> Iterator[CsvRecord]:
    """Each record of a manifest file, with its line (row) number and, when it cannot be
    read as a row, its problem: CSV records as ``read_csv_records`` reads them (fields
    separated by ``delimiter``); a JSON line that is invalid or not an object is
    malformed_row; a JSON document's records as ``json_records`` finds them."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        yield from read_csv_records(path, (), max_field_bytes, file_delimiter(path, delimiter), free)
    elif suffix == ".json":
        yield from json_records(path, records)
    elif suffix in (".jsonl", ".ndjson"):
        # a line ends at "\n": a "\r" inside one is JSON whitespace, not a second record
        for number, (text, flag) in enumerate(read_lines(path, lf_only=True), start=1):
            if not text.strip():
                continue
            try:
                fields, suspect = _loads(text)
            except (ValueError, RecursionError) as err:
                yield CsvRecord({}, number, flag, ("malformed_row", f"invalid JSON: "
                                                   f"{preview(str(err), 120)}"))
                continue
            if not isinstance(fields, dict):
                yield CsvRecord({}, number, flag, ("malformed_row", f"a JSON line must be an "
                                                   f"object, got {type(fields).__name__}"))
                continue
            yield _json_record(fields, number, flag, suspect)
    elif suffix == ".parquet":
        try:
            names = pq.read_schema(path).names
            # a column named twice: Arrow fails with a message about its internals
            twice = sorted({name for name in names if names.count(name) > 1})
            rows = None if twice else pq.read_table(path).to_pylist()
        except (pa.ArrowException, OSError, ValueError) as err:
            raise CorpusError(f"{path}: not a readable Parquet file ({preview(str(err), 200)})") from None
        except OverflowError as err:  # a timestamp, date or duration no Python value holds
            raise CorpusError(f"{path}: a date, time or duration in it lies beyond what Python "
                              f"reads (year 1-9999, 999999999 days): {preview(str(err), 200)}") from None
        if twice:
            raise CorpusError(f"{path}: column(s) {', '.join(map(repr, twice))} appear more than "
                              f"once in the Parquet schema")
        for number, fields in enumerate(rows, start=1):
            yield CsvRecord(fields, number, None)
    else:
        hint = (" (a table in a text file: name it .tsv when tabs separate its fields, "
                "else .csv)" if suffix == ".txt" else
                " (a compressed file: unpack it)" if suffix in (".gz", ".zip", ".bz2", ".xz", ".zst")
                else "")
        raise CorpusError(f"{path}: manifest must be .csv, .tsv, .jsonl, .json or .parquet{hint}")


class JsonDocument(NamedTuple):
    value: object
    flag: str | None  # the worst repair flag of its lines (``decode_line``)
    suspect: bool  # whether its records need ``_json_record``'s closer look


def read_json(path: Path) -> JsonDocument:
    """A JSON document, parsed."""
    lines = read_lines(path, keepends=True)
    flags = {flag for _, flag in lines}
    flag = "undecodable" if "undecodable" in flags else ("cp1252" if "cp1252" in flags else None)
    try:
        value, suspect = _loads("".join(text for text, _ in lines))
    except (ValueError, RecursionError) as err:
        raise CorpusError(f"{path}: not a JSON document ({preview(str(err), 200)})") from None
    return JsonDocument(value, flag, suspect)


def json_records(path: Path, records: str | None,
                 read: JsonDocument | None = None) -> Iterator[CsvRecord]:
    """The utterance objects of a JSON document, numbered in document order: the items of
    a top-level list, or those the dotted keys of ``records`` lead to through lists and
    objects (``episodes.scenes.utterances``). Each record holds its own keys and the other
    keys of the objects enclosing it (but for lists of objects), named by their path (``episodes.episode_id``,
    ``episodes.scenes.scene_id``). An item that is no object, or an enclosing object
    lacking the next key, is a malformed_row naming where it is. ``read``: the document
    as ``read_json`` returned it, when it was read already."""
    document, flag, suspect = read or read_json(path)
    if records is None and not isinstance(document, list):
        guess = records_path(document)
        raise CorpusError(f"{path}: a JSON document holding {kind(document)}: name the lists "
                          f"of utterances in it with the mapping's records: key"
                          + (f" (records: {guess}, say)" if guess else _keyed_hint(document)))
    keys = records.split(".") if records else []
    found = list(_walk(document, keys, "", {}, ""))
    if found and all(fields is None and "no list" in problem[1] for fields, problem in found):
        guess = records_path(document)
        raise CorpusError(f"{path}: records: {records!r} leads to no object; "
                          f"{found[0][1][1]}" + (f"; records: {guess} would read "
                                                 f"the file" if guess else ""))
    for number, (fields, problem) in enumerate(found, start=1):
        yield (CsvRecord({}, number, flag, problem) if problem is not None
               else _json_record(fields, number, flag, suspect))


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # how one gets into JSON text


class _KeyTwice(dict):
    """A JSON object that named a key twice (``key``): JSON keeps the last value silently."""
    key: str


def _loads(text: str) -> tuple[object, bool]:
    """JSON text parsed, and whether its records need ``_json_record``'s closer look (an
    object names a key twice, or a string may hold a surrogate): most need none."""
    twice = False

    def object_of(pairs: list[tuple[str, object]]) -> dict:
        nonlocal twice
        found = dict(pairs)
        if len(found) < len(pairs):
            twice = True
            found = _KeyTwice(found)
            found.key = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        return found

    value = json.loads(text, object_pairs_hook=object_of)
    return value, twice or _SURROGATE_ESCAPE.search(text) is not None


def _json_record(fields: dict, number: int, flag: str | None, suspect: bool = True) -> CsvRecord:
    """The record of one JSON object; a problem when an object in it names a key twice
    (malformed_row: which value is meant?) or a key or text holds a lone UTF-16 surrogate
    (bad_encoding: JSON allows ``"\\ud800"``, but it is no character and no UTF-8 text can
    hold it)."""
    stack = [fields] if suspect else []
    while stack:  # a loop, not recursion: the object may be nested as deep as JSON allows
        value = stack.pop()
        if isinstance(value, _KeyTwice):
            return CsvRecord({}, number, flag, ("malformed_row", f"key {preview(value.key, 60)} "
                                                "appears twice in one object"))
        if isinstance(value, dict):
            stack += [*value.keys(), *value.values()]
        elif isinstance(value, list):
            stack += value
        elif isinstance(value, str) and SURROGATE.search(value):
            return CsvRecord({}, number, flag, ("bad_encoding", f"{preview(value, 60)} holds "
                                                "a lone UTF-16 surrogate escape: no character"))
    return CsvRecord(fields, number, flag)


def _walk(node, keys: list[str], path: str, enclosing: dict, where: str):
    """(fields, None) of each record under ``node``, or (None, (reason, detail))."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, keys, path, enclosing, f"{where}[{index}]")
        return
    if not isinstance(node, dict):
        yield None, ("malformed_row", f"{where or 'the document'}: {kind(node)} "
                     f"({preview(node, 40)}) where an object belongs")
        return
    if not keys:
        yield {**enclosing, **node}, None
        return
    key = keys[0]
    if not isinstance(node.get(key), (list, dict)):
        yield None, ("malformed_row", f"{where or 'the document'}: no list {key!r} in it, "
                     f"which the mapping's records: names (its keys: "
                     f"{preview(', '.join(map(str, node)), 120)})")
        return
    inner = f"{path}{key}"
    # The enclosing object's other keys, but for lists of objects (other records, not a
    # value of this one's): a list of values (scene_id: ["x"]) is read as any value is,
    # a bad_type where a field reads it.
    enclosing = {**enclosing, **{f"{path}{k}": v for k, v in node.items()
                                 if k != key and not _holds_objects(v)}}
    yield from _walk(node[key], keys[1:], inner + ".", enclosing, f"{where}.{key}".lstrip("."))


def _keyed_hint(document) -> str:
    """What to do with a document of objects under keys of their own ({"MUL0001.json":
    {"log": [...]}, ...}, EmoWOZ's): records: names fixed keys, not every key."""
    if not (isinstance(document, dict) and len(document) > 1
            and all(isinstance(v, dict) for v in document.values())):
        return ""
    return (f" (its {len(document):,} objects sit under keys of their own, "
            f"{preview(', '.join(map(str, list(document)[:3])), 80)}, ...: records: follows "
            f"fixed keys only; write them as a list, each with its key as a value)")


def _holds_objects(value) -> bool:
    return isinstance(value, list) and any(isinstance(item, dict) for item in value)


def records_path(document) -> str | None:
    """The dotted keys leading to the most objects through lists of objects
    (``episodes.scenes.utterances``); None when no key holds a list of objects, or when
    the document is a list whose own items are the most (they are read without records:)."""
    best: tuple[int, int, str] | None = None

    def visit(objects: list, keys: list[str]) -> None:
        nonlocal best
        if keys and (best is None or (len(objects), len(keys)) > best[:2]):
            best = (len(objects), len(keys), ".".join(keys))
        names = dict.fromkeys(k for o in objects for k, v in o.items()
                              if isinstance(v, list) and any(isinstance(i, dict) for i in v))
        for name in names:
            visit([i for o in objects for i in o.get(name) or [] if isinstance(i, dict)],
                  [*keys, name])

    if isinstance(document, dict):
        visit([document], [])
    elif isinstance(document, list):  # dialogues holding their turns: [{"turns": [...]}]
        items = [i for i in document if isinstance(i, dict)]
        visit(items, [])
        if best and best[0] <= len(items):  # as many as its own items: they are the records
            return None
    return best[2] if best else None


def read_manifest(path: Path, /, mapping: str | Path | dict | None = None,
                  **options) -> IngestResult:
    """Reads a manifest file, or a folder of them, into the utterance table. ``mapping``
    is a mapping file (a relative path is taken from the corpus folder) or dict; without
    one, a folder's ``erc-mapping.yaml`` is used. ``options`` are ManifestMapping fields
    and override the mapping's."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such manifest")
    if not (path.is_file() or path.is_dir()):  # a pipe or device: its folder is not the corpus
        raise CorpusError(f"{path}: not a regular file or a folder; name a manifest file or "
                          f"the folder holding the manifests")
    if not (mapping is None or isinstance(mapping, (dict, Path))
            or isinstance(mapping, str) and mapping.strip()):
        raise ConfigError(f"reader options of manifest: mapping: expected a mapping file "
                          f"(YAML) or the mapping's keys, got {preview(mapping)}")
    folder = path if path.is_dir() else path.parent
    if mapping is None and path.is_dir():
        check_file(path / MAPPING_FILE)  # a folder by its name: not read, the labels unmapped
    if mapping is None and has_mapping_file(path):
        mapping = path / MAPPING_FILE
    if isinstance(mapping, (str, Path)):  # -o mapping=~/m.yaml: in the home folder
        mapping = Path(expand_path(str(mapping)))
        mapping = mapping if mapping.is_absolute() else folder / mapping
    spec = load_mapping(mapping, **options)
    corpus = spec.corpus or (path.name if path.is_dir() else path.stem)
    label_set = {str(label).strip().lower() for label in spec.labels} if spec.labels else None
    out = RowCollector(corpus)
    if isinstance(mapping, Path):
        out.sources.append(str(mapping))
    turns: dict[tuple[str, str], int] = {}
    files_of: dict[str, dict[str, set[str]]] = {}  # dialogue -> split -> files
    for file, file_split, origin in spec.manifest_files(path):
        out.sources.append(str(file))
        source = str(file)
        root = file.parent
        text = source_columns(spec.columns.get("text") or "text")
        records = list(read_records(file, spec.max_field_bytes, spec.delimiter, spec.records,
                                    text[0] if len(text) == 1 else None))
        # The file's columns: a CSV header or Parquet schema, and for JSON every key any
        # record has (a nested one as "conv.id"); a record lacking one is its own problem.
        columns = list(dict.fromkeys(key for r in records if r.problem is None
                                     for key in column_names(r.fields)))
        if FILE_COLUMN in spec.field_columns() and FILE_COLUMN not in columns:
            columns.append(FILE_COLUMN)
            for record in records:  # a row set aside still names its dialogue
                (record.fields if record.problem is None else record.known)[FILE_COLUMN] = file.stem
        file_spec = spec.for_columns(columns)
        if any(r.problem is None for r in records):
            try:
                file_spec.check_columns(columns, source)
            except CorpusError as err:
                if mapping is None and path.is_file() and has_mapping_file(path.parent):
                    # one file of a corpus folder: the folder's mapping is read for the folder
                    raise CorpusError(f"{err} (the mapping beside it is not read for one file: "
                                      f"add --mapping {path.parent / MAPPING_FILE})") from None
                raise
        shown = file.relative_to(folder).as_posix() if file.is_relative_to(folder) else file.name
        fixed = file_split if origin == "files" else None  # over a split column
        named = file_split if origin == "name" else None  # under it
        split_columns = set(source_columns(file_spec.columns.get("split") or "split"))
        split_column = bool(split_columns & set(columns))
        for record in out.rows(records):
            where = dict(source=source, line=record.line, split=file_split)
            if record.problem is not None:
                if record.known:  # its dialogue and place, as far as they can be read
                    try:
                        _place(file_spec.map_row(record.known)[0], where, fixed, named,
                               spec.split, corpus, turns)
                    except RowProblem:
                        pass
                if not fixed and split_column and not split_columns <= set(record.known or ()):
                    # its split column was not read: its split is unknown, not guessed (a
                    # test row counted in train); an evaluation counts such rows apart
                    where.update(split=None)
                elif where["split"] is None and not split_column:
                    # a line that reads as nothing (invalid JSON) in a file whose rows take
                    # the split option: counted in that split (an evaluation of it counts
                    # its every input row), not in none
                    where.update(split=split_name(spec.split))
                out.reject(*record.problem, **where)
                continue
            f, meta, problem = file_spec.map_row(record.fields)
            try:
                row_split, how, dialogue, turn = _place(f, where, fixed, named, spec.split,
                                                        corpus, turns)
                if record.encoding == "undecodable":
                    raise RowProblem("bad_encoding", "bytes neither UTF-8 nor cp1252")
                if problem is not None:
                    raise problem
                row = _row(f, meta, spec, root, folder, label_set, out.media)
            except RowProblem as failure:
                out.reject(failure.reason, failure.detail, **where)
                continue
            if not dialogue or row["speaker"] is None:
                out.reject("missing_field", f"dialogue_id={preview(dialogue, 40)} "
                           f"speaker={preview(f['speaker'], 40)}", **where)
                continue
            if record.encoding:
                out.repairs[f"{corpus} manifest decoded as cp1252"] += 1
            if not out.add({**row, "utterance_id": where["utterance_id"],
                            "corpus": row["corpus"] or corpus, "split": row_split,
                            "dialogue_id": dialogue, "turn": turn, "meta": meta},
                           source=source, line=record.line):
                continue
            out.split_sources.setdefault(row_split, Counter())[f"{shown}: {how}"] += 1
            files_of.setdefault(dialogue, {}).setdefault(row_split, set()).add(shown)
    out.notes += _dialogue_notes(files_of)
    return out.result()


SPLIT_ORIGINS = {"files": "the mapping's files:", "column": "its split column",
                 "name": "its name", None: "the split option"}


def _place(f: dict, where: dict, fixed: str | None, named: str | None, default: str,
           corpus: str, turns: dict) -> tuple[str, str, str, int]:
    """(split, where it came from, dialogue id, turn) of a mapped row, its place in its
    dialogue counted in ``turns`` and told to ``where`` (its split and default id); a
    RowProblem for a bad turn or value. The split: the mapping's files: naming the file's
    (``fixed``), else the row's split column, else the file's name (``named``), else the
    split option (``ManifestMapping.manifest_files``)."""
    column = text_value(f["split"], "split")
    column = column if column and column.strip() else None
    row_split, how = ((fixed, "files") if fixed else (column, "column") if column
                      else (named, "name") if named else (default, None))
    row_split = split_name(row_split)
    dialogue = id_value(f["dialogue_id"], "dialogue_id") or ""
    where.update(split=row_split)
    uid = id_value(f["utterance_id"], "utterance_id")
    if uid:  # named before its turn is read: a bad turn keeps it
        where.update(utterance_id=uid)
    # Every row of a dialogue takes its place in it, kept or set aside: fixing one later
    # moves no other row's turn, nor its default id.
    by_order = turns.get((row_split, dialogue), 0)
    if dialogue:
        turns[(row_split, dialogue)] = by_order + 1
    if blank(f["turn"]) and by_order > MAX_TURN:  # after a turn of MAX_TURN: no int32 holds it
        raise RowProblem("bad_turn", f"no turn given, and the next of its dialogue, {by_order}, "
                         f"is outside 0..{MAX_TURN}")
    turn = by_order if blank(f["turn"]) else parse_turn(f["turn"])
    if dialogue:
        turns[(row_split, dialogue)] = max(by_order, turn) + 1
        where.update(utterance_id=uid or "/".join(
            _id_part(part) for part in (corpus, row_split, dialogue, str(turn))))
    return row_split, SPLIT_ORIGINS[how], dialogue, turn


def _dialogue_notes(files_of: dict[str, dict[str, set[str]]]) -> list[str]:
    """What a person should know of dialogue ids found in several files: read as one
    dialogue where the files share a split, as one per split where they do not."""
    notes = []
    merged = [(d, s, sorted(f)) for d, by in files_of.items() for s, f in by.items() if len(f) > 1]
    if merged:
        d, s, f = merged[0]
        notes.append(f"{len(merged):,} dialogue(s) have rows in several files of one split, "
                     f"read as one dialogue each (e.g. {preview(d, 40)} of {s}: "
                     f"{preview(', '.join(f), 120)})")
    crossed = [(d, by) for d, by in files_of.items()
               if len(by) > 1 and len(set().union(*by.values())) > 1]
    if crossed:
        d, by = crossed[0]
        notes.append(f"{len(crossed):,} dialogue id(s) appear in files of different splits, read as "
                     f"different dialogues, one per split (e.g. {preview(d, 40)}: "
                     + preview("; ".join(f"{s} in {', '.join(sorted(f))}"
                                         for s, f in sorted(by.items())), 160)
                     + "); give one conversation's rows one split")
    return notes


def _id_part(text: str) -> str:
    """One part of a default utterance id with its "/" (and "%") escaped: split "train/a"
    with dialogue "b" and split "train" with dialogue "a/b" are two utterances, not a
    duplicate id."""
    return text.replace("%", "%25").replace("/", "%2F")


def _row(f: dict, meta: dict, spec, root: Path, corpus_root: Path, label_set: set[str] | None,
         media_seen: set[str]) -> dict:
    """The typed fields of one mapped row (text, label, times, media paths: relative to
    ``root``, the manifest's folder, and inside ``corpus_root``), or the RowProblem that
    sets it aside."""
    text = text_value(f["text"], "text")
    emotion = f["emotion"]
    if emotion is not None and label_set is not None and emotion not in label_set:
        raise RowProblem("unknown_label", f"emotion {preview(emotion, 40)} not in "
                         f"{preview(sorted(label_set), 200)}")
    per_second = TIME_UNITS[spec.time_unit]
    start, end = (parse_time(f["start"], "start", per_second),
                  parse_time(f["end"], "end", per_second))
    if start is not None and end is not None and end <= start:
        raise RowProblem("bad_time", f"segment [{start}, {end}] ends before it starts")
    paths = {}
    for column in ("media", "audio"):
        named = text_value(f[column], column)
        if named is None or not named.strip():
            continue
        named = named.strip()
        try:  # a NUL byte, a name longer than the system allows, a link loop: no path
            if "\\" in named and not (root / named).exists():
                named = named.replace("\\", "/")  # written on Windows: clips\a.mp4
            resolved = resolve_inside(corpus_root, named, spec.allow_outside_root, root)
            problem = media_problem(resolved, column) if resolved is not None else None
        except (OSError, ValueError, RuntimeError) as err:  # RuntimeError: a symlink loop
            raise RowProblem("media_not_a_file", f"{column} {preview(named, 80)} is not a "
                             f"usable path ({preview(str(err), 80)})") from None
        if resolved is None:
            raise RowProblem("path_outside_root", f"{column} {preview(named, 80)} escapes {corpus_root} "
                             f"(reader option allow_outside_root: true allows it)")
        media_seen.add(str(resolved))
        if problem is not None and not (problem[0] == "missing_media" and spec.keep_missing_media):
            raise RowProblem(*problem)
        paths[column] = None if problem else str(resolved)
        if problem is not None:  # kept without its file: the path it named stays in meta
            meta[MISSING_MEDIA_META[column]] = str(resolved)
    return {"speaker": f["speaker"], "text": text, "emotion": emotion,
            "media_path": paths.get("media"), "audio_path": paths.get("audio"),
            "start_s": start, "end_s": end, "corpus": text_value(f["corpus"], "corpus")}
