"""``erc corpus inspect``: a look at an unknown manifest (a CSV, JSON Lines or Parquet
file, or a folder of them) and a suggested mapping file that reads it
(``erc.corpus.mapping``), for the user to check and edit.

The suggestion comes from column names and values: the transcript, speaker, emotion and
time columns by their names (the transcript also as the column of longest text); the
dialogue id as the fewest id-like columns (season, episode, scene, dialogue, ...) that
group the rows as finely as all of them together, composed by a template when it takes
several; the split of each file from a split word in its name; the label map from the
emotion column's values, named as MELD names its emotions where a label is a common name
of one. A name matches by its last dotted part (``turn.speaker``) or, failing that, by one
of its words (``Speaker_Role``, ``Begin_ms``). Files are read as the ingest reads them:
a CSV's delimiter is taken from its header line, the keys of nested JSON objects are
columns of their own (``conv.id``), and a JSON document's utterances are the lists of
objects holding the most (``records: episodes.scenes.utterances``).
"""

from __future__ import annotations

import codecs
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from erc.corpus.base import SPLIT_WORDS, CorpusError, as_utf8, decode_line
from erc.corpus.manifest import json_records, read_json, read_records, records_path
from erc.corpus.mapping import (
    FIELDS,
    FILE_COLUMN,
    MAPPING_FILE,
    TABLE_META,
    ManifestMapping,
    flat_items,
    source_columns,
    speaker_names,
    split_of_name,
)
from erc.corpus.values import RowProblem, blank, parse_time
from erc.errors import preview, printable
from erc.redaction import clip
from erc.schema import storable

MAX_ROWS_PER_FILE = 200_000
HEADER_BYTES = 1 << 16  # enough of a CSV's first line to tell its delimiter
MAX_LABELS = 40  # more distinct values than this is no label column
EXAMPLES = 3

# Column names (lower case, without "_", "-", " ") that say which field a column holds;
# some in German, French and Spanish too (accents dropped: "début" is "debut").
NAMES = {
    "text": ("utterance", "text", "transcript", "transcription", "sentence", "line", "content",
             "texte", "texto"),
    "speaker": ("speaker", "speakers", "character", "spk", "speakername", "role", "sprecher",
                "locuteur", "hablante"),
    "emotion": ("emotion", "emotions", "emotionlabel", "emo", "label", "category", "emocion"),
    "split": ("split", "partition", "subset", "fold", "set"),
    "media": ("media", "video", "clip", "mediafile", "videofile", "videopath", "path", "file"),
    "audio": ("audio", "audiofile", "audiopath", "wav"),
    "start": ("start", "starttime", "begin", "onset", "startsec", "starts", "beginn", "debut",
              "inicio"),
    "end": ("end", "endtime", "stop", "offset", "endsec", "ends", "ende", "fin"),
    "turn": ("turn", "turnid", "turnno", "turnnum", "turnidx", "turnindex", "idx", "index",
             "position", "seq"),
}
MILLISECONDS = ("ms", "msec", "millis", "milliseconds")  # a word of a time column's name
DELIMITERS = (",", ";", "\t", "|")
# Id-like columns for the dialogue, from the widest to the narrowest.
DIALOGUE_LEVELS = (("season", "series", "show"), ("session", "episode", "ep"),
                   ("scene",), ("dialogue", "dialog", "conversation", "conv", "dia", "thread"))
VIDEO = (".mp4", ".avi", ".mkv", ".mov", ".webm")
AUDIO = (".wav", ".flac", ".mp3", ".m4a", ".ogg")
# MELD's seven labels and common other names of them, for a suggested label_map.
LABEL_NAMES = {
    "neutral": ("neutral", "neu"),
    "joy": ("joy", "joyful", "happy", "happiness", "hap"),
    "sadness": ("sadness", "sad"),
    "anger": ("anger", "angry", "mad", "ang"),
    "surprise": ("surprise", "surprised", "sur"),
    "fear": ("fear", "fearful", "scared", "afraid", "fea"),
    "disgust": ("disgust", "disgusted", "dis"),
}


@dataclass
class Column:
    name: str
    values: list = field(default_factory=list)  # every non-blank value, as read
    blank: int = 0

    @property
    def plain(self) -> str:
        """The name without accents ("émotion" -> "emotion"): an accented letter is no
        letter to drop."""
        return "".join(c for c in unicodedata.normalize("NFKD", self.name)
                       if not unicodedata.combining(c))

    @property
    def key(self) -> str:
        """The name's last dotted part in lower case, letters and digits only."""
        return re.sub(r"[^a-z0-9]", "", self.plain.rsplit(".", 1)[-1].lower())

    @property
    def full_key(self) -> str:
        """The whole name in lower case, letters and digits only ("conv.id" -> convid)."""
        return re.sub(r"[^a-z0-9]", "", self.plain.lower())

    @property
    def words(self) -> list[str]:
        """The words of the name's last dotted part: "Speaker_Role" -> speaker, role."""
        last = re.sub(r"([a-z])([A-Z])", r"\1 \2", self.plain.rsplit(".", 1)[-1])
        return [w for w in re.split(r"[^a-z0-9]+", last.lower()) if w]

    def examples(self) -> list[str]:
        seen: list[str] = []
        for value in self.values:
            text = str(value)
            if text not in seen:
                seen.append(text)
            if len(seen) == EXAMPLES:
                break
        return seen

    @cached_property
    def distinct(self) -> int:
        return len({str(v) for v in self.values})

    def share(self, test) -> float:
        return sum(1 for v in self.values if test(v)) / len(self.values) if self.values else 0.0

    @cached_property
    def kind(self) -> str:
        """empty, list (of speakers, say), time (clock times), number or text."""
        if not self.values:
            return "empty"
        if self.share(lambda v: isinstance(v, (list, tuple)) or str(v).strip().startswith("[")) > 0.9:
            return "list"
        if self.share(lambda v: ":" in str(v) and _is_time(v)) > 0.9:
            return "time"
        # Seconds written with a decimal comma ("1257,256") are numbers as times read them.
        if self.share(lambda v: _is_number(v) or _is_time(v)) > 0.9:
            return "number"
        return "text"


@dataclass
class Inspection:
    path: Path
    files: list[tuple[Path, int, str | None]]  # file, rows read, split its name gives
    columns: dict[str, Column]
    mapping: dict  # the suggested mapping (ManifestMapping keys)
    notes: list[str]  # what the user should check
    unread: dict[Path, int] = field(default_factory=dict)  # records set aside, per file
    by_name: bool = False  # the splits are the ingest's by the names, without files:


def inspect_corpus(path: str | Path) -> Inspection:
    """Reads the manifest file(s) at ``path`` and suggests a mapping for them."""
    path = Path(path)
    if path.is_dir():  # the files the ingest reads without files: (and split/ folders')
        files = [found.path for found in ManifestMapping().manifest_files(path)]
    elif path.is_file():
        files = [path]
    else:
        raise CorpusError(f"{path}: no such file or folder")

    columns: dict[str, Column] = {}
    rows: list[tuple[int, dict]] = []  # (file index, row)
    read = []
    unread: dict[Path, int] = {}
    first_unread = None  # (file, line, problem) of the first record set aside
    delimiters, records = set(), set()
    for index, file in enumerate(files):
        n = 0
        delimiter = _delimiter(file) if file.suffix.lower() in (".csv", ".tsv") else ","
        found = None
        if file.suffix.lower() == ".json":  # parsed once, for its records path and its rows
            document = read_json(file)
            found = records_path(document.value)
            file_records = json_records(file, found, document)
        else:
            file_records = read_records(file, delimiter=delimiter)
        delimiters.add(delimiter)
        records.add(found)
        for record in file_records:
            if record.problem is not None:
                unread[file] = unread.get(file, 0) + 1
                first_unread = first_unread or (file, record.line, record.problem)
                continue
            raw = {}  # a nested object's keys as columns of their own: "conv.id"
            for name, value in record.fields.items():
                raw.update(flat_items(name, value) if isinstance(value, dict) else [(name, value)])
            n += 1
            rows.append((index, raw))
            for name, value in raw.items():
                column = columns.setdefault(name, Column(name))
                if blank(value):
                    column.blank += 1
                else:
                    column.values.append(value)
            if n >= MAX_ROWS_PER_FILE:
                break
        read.append((file, n))
    if not rows and first_unread:
        file, line, (reason, detail) = first_unread
        raise CorpusError(f"{path}: no rows to inspect: {sum(unread.values()):,} record(s) not "
                          f"read, the first at {file.name} line {line}: {reason}: {detail}")
    if not rows:
        raise CorpusError(f"{path}: no rows to inspect")
    if not columns:  # JSON lines that are all {}: rows with nothing to suggest a mapping for
        raise CorpusError(f"{path}: no columns to inspect (every row is empty)")

    notes: list[str] = []
    folder = path if path.is_dir() else path.parent
    # The ingest's own rule (a split word as the stem or folder: ManifestMapping.
    # manifest_files) needs no files: and lets a split column win; other names that hold a
    # split word ("friends_dev.csv") are named by a suggested files: instead.
    splits = {f: split for f, _ in read if (split := split_of_name(f, folder))}
    by_name = bool(splits)
    if by_name:
        unnamed = [f.name for f, _ in read if f not in splits]
        if unnamed:
            notes.append(f"{preview(', '.join(unnamed), 120)}: no split by the name; the rows "
                         f"take the split option (train) unless a split column names theirs")
    else:
        splits = _file_splits([f for f, _ in read])  # one file too: emory_test.csv is test
    mapping: dict = {"corpus": path.name if path.is_dir() else path.stem}
    if (path.is_dir() and len(splits) < len(read)) or (splits and not by_name):
        mapping["files"] = _files_entry(read, {} if by_name else splits)
    if delimiters - {","}:
        mapping["delimiter"] = max(delimiters - {","})
        if len(delimiters) > 1:
            notes.append(f"the CSV files differ in delimiter ({', '.join(sorted(delimiters))}): "
                         "one mapping reads one; name the files of each with files:")
    records.discard(None)
    if records:
        mapping["records"] = max(records)
        if len(records) > 1:
            notes.append(f"the JSON files keep their utterances in different places "
                         f"({', '.join(sorted(records))}): one mapping reads one")
    for file, count in unread.items():
        notes.append(f"{file.name}: {count:,} record(s) not read (the ingest sets them aside "
                     f"with their reason)")
    chosen = _guess_columns(columns, path if path.is_dir() else path.parent, notes)
    dialogue = _guess_dialogue(columns, rows, set(chosen.values()))
    if dialogue:
        chosen = {"dialogue_id": dialogue, **chosen}
    elif len(read) > 1 and not any(f.stem.casefold() in SPLIT_WORDS for f, _ in read):
        # Files named otherwise than by split, none with a dialogue column: one dialogue each.
        chosen = {"dialogue_id": FILE_COLUMN, **chosen}
        notes.append(f"no column looks like a dialogue id: each file is read as one dialogue, "
                     f"named by its file name ({FILE_COLUMN}); or name a column (or a "
                     f"template) as columns.dialogue_id")
    else:
        notes.append("no column looks like a dialogue id: name it (or a template) as "
                     "columns.dialogue_id")
    mapping["columns"] = chosen
    if "speaker" in chosen:
        several = sum(1 for v in columns[chosen["speaker"]].values if _several(v))
        if several:
            mapping["several_speakers"] = "problem"
            notes.append(f"{several} rows list several speakers: they are set aside as "
                         "several_speakers problems, or kept as one joined name with "
                         "several_speakers: join")
    if any(w in MILLISECONDS for name in ("start", "end") if name in chosen
           for w in columns[chosen[name]].words):
        mapping["time_unit"] = "ms"
    if "emotion" in chosen:
        labels = sorted({str(v).strip() for v in columns[chosen["emotion"]].values})
        mapping["label_map"] = {label: _label_name(label) for label in labels}
        if columns[chosen["emotion"]].kind == "number":
            notes.append(f"the emotion column {chosen['emotion']} holds numbers: name the "
                         f"emotion of each in label_map (from the corpus's label list)")
    return Inspection(path, [(f, n, splits.get(f)) for f, n in read], columns, mapping, notes,
                      unread, by_name)


def format_inspection(inspection: Inspection) -> str:
    """The files and columns, with examples, for a person."""
    # Names come from the input: printable() keeps a newline or escape in one from breaking
    # the line or driving the terminal.
    lines = [f"{printable(inspection.path)}: {len(inspection.files)} file(s)"]
    folder = inspection.path if inspection.path.is_dir() else inspection.path.parent
    how = ", from its name; a split column wins" if inspection.by_name else ""
    for file, n, split in inspection.files:
        name = file.relative_to(folder).as_posix() if file.is_relative_to(folder) else file.name
        lines.append(f"  {printable(name)}: {n:,} rows" + (f" (split {printable(split)}{how})" if split else "")
                     + (f", {inspection.unread[file]:,} not read" if file in inspection.unread else ""))
    used = _used_columns(inspection.mapping, inspection.columns)
    width = max(len(printable(name)) for name in inspection.columns)
    lines += ["", "columns (kind, distinct values, blanks, examples; -> the field they map to):"]
    for column in inspection.columns.values():
        examples = ", ".join(json.dumps(_short(e), ensure_ascii=False) for e in column.examples())
        target = f"  -> {', '.join(used[column.name])}" if column.name in used else "  (meta)"
        lines.append(f"  {printable(column.name):{width}}  {column.kind:6} {column.distinct:7,} "
                     f"{column.blank:6,}  {examples}{target}")
    return "\n".join(lines)


def mapping_yaml(inspection: Inspection) -> str:
    """The suggested mapping as a YAML file with comments, for the user to edit."""
    m = inspection.mapping
    where = printable(inspection.path)  # in a comment: a newline would end it
    out = [f"# A mapping for {where}, suggested by `erc corpus inspect`: check it, edit it, then",
           f"#   erc corpus ingest {where} --mapping THIS_FILE",
           f"# (or save it as {MAPPING_FILE} in the corpus folder). Keys: erc.corpus.mapping."]
    for note in inspection.notes:
        out.append(f"# NOTE: {printable(note)}")
    out.append(f"corpus: {_q(m['corpus'])}")
    files = m.get("files")
    if isinstance(files, dict):
        out.append("files:  # split -> file")
        out += [f"  {_q(split)}: {_q(name)}" for split, name in files.items()]
    elif files is not None:
        out.append(f"files: {_q(files)}" + ("  # the {split} part of a name is its split"
                                            if "{split}" in files else ""))
    out.append("columns:  # erc field -> column, or a template of columns")
    out += [f"  {name}: {_q(spec)}" for name, spec in m["columns"].items()]
    if "delimiter" in m:
        out.append(f"delimiter: {_q(m['delimiter'])}")
    if "records" in m:
        out.append(f"records: {_q(m['records'])}  # the lists holding the utterances")
    if "time_unit" in m:
        out.append(f"time_unit: {m['time_unit']}  # start and end count milliseconds")
    if "several_speakers" in m:
        out.append(f"several_speakers: {m['several_speakers']}  # or join")
    if "label_map" in m:
        out.append("label_map:  # corpus label -> erc label (rename to compare corpora; "
                   "null sets its rows aside)")
        out += [f"  {_q(label)}: {_q(name)}" for label, name in m["label_map"].items()]
    return "\n".join(out) + "\n"


# -- guesses ------------------------------------------------------------------------------

def _guess_columns(columns: dict[str, Column], folder: Path, notes: list[str]) -> dict[str, str]:
    """field -> column for the fields a column's name (or values) gives."""
    chosen: dict[str, str] = {}
    taken: set[str] = set()

    def take(field_name: str, column: Column) -> None:
        chosen[field_name] = column.name
        taken.add(column.name)

    def fits(field_name: str, column: Column, by_words: bool) -> bool:
        if column.name in taken or not column.values:
            return False
        if by_words and (field_name in ("media", "audio")
                         or field_name == "text" and column.kind != "text"):
            return False  # "Utterance_ID" is no transcript, "Source_File" no clip
        if field_name in ("start", "end", "turn") and column.kind not in ("time", "number"):
            return False
        if field_name == "turn" and column.kind != "number":
            return False
        return not (field_name == "emotion" and column.distinct > MAX_LABELS)

    for by_words in (False, True):  # the whole name first, then one of its words
        for field_name, names in NAMES.items():
            if field_name in chosen:
                continue
            for column in columns.values():
                if ((any(w in names for w in column.words) if by_words else column.key in names)
                        and fits(field_name, column, by_words)):
                    take(field_name, column)
                    break
    # An utterance id column (MELD's Utterance_ID) whose numbers repeat (0, 1, 2 in each
    # dialogue) is the turn's place in its dialogue, which orders the turns whatever the
    # rows' order. Named utterance_id it is read as the id, which must be unique.
    own = next((c for c in columns.values() if c.key == "utteranceid"), None)
    if own is not None and own.distinct < len(own.values):
        if "turn" not in chosen and own.distinct <= len(own.values) / 2 and fits("turn", own, False):
            take("turn", own)
        elif own.name == "utterance_id":
            notes.append("column utterance_id repeats values (an id in each dialogue?): the "
                         "ingest sets a repeated id aside as duplicate_id; map it as "
                         "columns.turn, or make it unique (\"{dialogue}-{utterance_id}\")")
    if "text" not in chosen:
        texts = [c for c in columns.values() if c.name not in taken and c.kind == "text"]
        longest = max(texts, key=lambda c: _mean_length(c), default=None)
        if longest is not None and _mean_length(longest) > 15:
            take("text", longest)
    for field_name, suffixes in (("media", VIDEO), ("audio", AUDIO)):
        if field_name in chosen:  # by its name: its values may be bare names of files below
            chosen[field_name] = _file_spec(columns[chosen[field_name]], folder, field_name,
                                            notes) or chosen[field_name]
            continue
        for column in columns.values():
            if (column.name not in taken
                    and column.share(lambda v, ends=suffixes: str(v).lower().endswith(ends)) > 0.9
                    and (spec := _file_spec(column, folder, field_name, notes))):
                chosen[field_name] = spec
                taken.add(column.name)
                break
    for field_name in ("speaker", "text"):
        if field_name not in chosen:
            notes.append(f"no column looks like the {field_name}: name it as columns.{field_name}")
    return {name: chosen[name] for name in NAMES if name in chosen}


def _guess_dialogue(columns: dict[str, Column], rows: list[tuple[int, dict]],
                    taken: set[str]) -> str | None:
    """The fewest id-like columns that group the rows of each file as finely as all of
    them: one column name, or a template of several (widest first). Within each file,
    because ids often restart per split (MELD's Dialogue_ID does)."""
    levels = []
    for column in columns.values():
        if column.name in taken or not column.values:
            continue
        for level, words in enumerate(DIALOGUE_LEVELS):
            if any(key == w or key.startswith(w) and key[len(w):] in
                   ("", "id", "no", "num", "number", "idx", "index", "name")
                   for w in words for key in {column.key, column.full_key}):
                levels.append((level, column.name))
                break
    if not levels:
        # An "id" whose values each hold one run of rows of a file, some of several, is
        # a dialogue's (meta.id of the dialogue enclosing its turns); an utterance's own
        # id repeats in no file, a turn's index (0, 1, 2, 0, 1, ...) runs apart.
        ids = [c for c in columns.values() if c.key == "id" and c.name not in taken
               and len(_runs(c.name, rows)) == len(set(_runs(c.name, rows))) < len(c.values)]
        return max(ids, key=lambda c: c.distinct).name if ids else None
    levels.sort()
    names = [name for _, name in levels]

    def groups(subset: list[str]) -> int:
        return len({(index, *(str(row.get(c)) for c in subset)) for index, row in rows})

    finest = groups(names)
    for k in range(1, len(names) + 1):
        subset = names[-k:]  # the narrowest k levels
        if groups(subset) == finest:
            break
    if len(subset) == 1:
        return subset[0]
    return "-".join(f"{{{name}}}" for name in subset)


def _runs(name: str, rows: list[tuple[int, dict]]) -> list[tuple[int, str]]:
    """(file index, value) of each run of rows holding one value of column ``name``."""
    runs: list[tuple[int, str]] = []
    for index, row in rows:
        if not blank(row.get(name)) and (not runs or runs[-1] != (index, str(row[name]))):
            runs.append((index, str(row[name])))
    return runs


def _delimiter(file: Path) -> str:
    """The delimiter a CSV file's header line uses most (a comma when none); the rest of
    the file is left to the reader."""
    with file.open("rb") as handle:
        head = as_utf8(handle.read(HEADER_BYTES), file, partial=True)
    head = head.split(b"\n", 1)[0].removeprefix(codecs.BOM_UTF8).splitlines()
    header = decode_line(head[0])[0] if head else ""
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])  # a tie keeps the comma, listed first
    return best if counts[best] else ","


def _file_splits(files: list[Path]) -> dict[Path, str]:
    """The split each file's name gives ("friends_dev.csv" -> dev), when every one has one."""
    found = {}
    for file in files:
        words = [w for w in re.split(r"[^a-z]+", file.stem.lower()) if w in SPLIT_WORDS]
        if len(words) != 1:
            return {}
        found[file] = SPLIT_WORDS[words[0]]
    return found if len(set(found.values())) == len(found) else {}


def _files_entry(read: list[tuple[Path, int]], splits: dict[Path, str]) -> str | dict[str, str]:
    """A "{split}" pattern when the split words are the split names and the rest of the
    names agree; else a split -> file mapping; without splits, a glob of the suffixes."""
    if splits:
        patterns = set()
        for file, _ in read:
            word = next(w for w in re.split(r"[^A-Za-z]+", file.name) if w.lower() in SPLIT_WORDS)
            patterns.add(file.name.replace(word, "{split}", 1) if word == splits[file] else None)
        if len(patterns) == 1 and None not in patterns:
            return patterns.pop()
        return {splits[file]: file.name for file, _ in read}
    suffixes = sorted({file.suffix for file, _ in read})
    return f"*{suffixes[0]}" if len(suffixes) == 1 else "*"


def _label_name(label: str) -> str:
    lower = label.lower()
    for name, others in LABEL_NAMES.items():
        if lower in others:
            return name
    return lower


def _used_columns(mapping: dict, columns: dict[str, Column]) -> dict[str, list[str]]:
    """column -> the fields it gives under ``mapping`` (a column named as a field that the
    mapping does not map otherwise gives that field)."""
    read = ManifestMapping(columns=mapping.get("columns", {})).for_columns(list(columns))
    spec = read.columns
    used: dict[str, list[str]] = {}
    for name, entry in spec.items():
        for column in source_columns(entry):
            used.setdefault(column, []).append(name)
    renamed = read.renamed_columns()
    for name in columns:
        if name in FIELDS and name not in spec and name not in renamed:
            used.setdefault(name, []).append(name)
    if TABLE_META in columns and TABLE_META not in used:  # erc's own meta map, read back
        used[TABLE_META] = ["meta"]
    return used


def _mostly_files(values: list, folder: Path) -> bool:
    """Most of ``values`` name files that exist (relative to ``folder`` or absolute); a
    value no path can be (a name too long, a NUL byte) names none."""
    return sum(os.path.isfile(folder / str(v)) for v in values) > len(values) / 2


def _file_spec(column: Column, folder: Path, field_name: str, notes: list[str]) -> str | None:
    """The columns: entry that reads ``column``'s files: the column when they are relative
    to ``folder``, a template naming the folder below it that holds them (bare names of
    clips kept in wavs/: "wavs/{file}"); else None, with a note."""
    if _mostly_files(column.values[:20], folder):
        return column.name
    below = _files_folder(column.values[:20], folder)
    spec = f"{below.replace('{', '{{').replace('}', '}}')}/{{{column.name}}}" if below else None
    if spec is not None and source_columns(spec) == [column.name]:
        return spec
    notes.append(f"column {column.name} names {field_name} files that are not in {folder} or "
                 f"a folder below it (the ingest sets such rows aside as missing_media): name "
                 f"it as columns.{field_name} with their folder, relative to the manifest's "
                 f"(\"clips/{{{column.name}}}\")")
    return None


def _files_folder(values: list, folder: Path, limit: int = 2_000) -> str | None:
    """The folder below ``folder`` (relative, in POSIX form) in which most of ``values``
    name files, looked for in the first ``limit`` folders (a large tree is not walked
    whole); None when there is none."""
    for seen, (where, names, _) in enumerate(os.walk(folder)):
        names.sort()  # the same suggestion on every run
        if seen >= limit:
            return None
        if seen and _mostly_files(values, Path(where)):
            return Path(where).relative_to(folder).as_posix()
    return None


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except OverflowError:  # a JSON integer of hundreds of digits is a number all the same
        return True
    except (TypeError, ValueError):
        return False


def _several(value) -> bool:
    """Whether a speaker value names several people; one that names nobody readable (a
    mapping, say) is the ingest's bad_type problem, not several speakers."""
    try:
        return len(speaker_names(value)) > 1
    except RowProblem:
        return False


def _is_time(value) -> bool:
    try:
        parse_time(value)
        return True
    except ValueError:
        return False


def _mean_length(column: Column) -> float:
    return sum(len(str(v)) for v in column.values) / max(len(column.values), 1)


def _short(value: str, limit: int = 40) -> str:
    return clip(value, limit)  # masked before the cut, which could leave a key's start unmasked


def _q(value: str) -> str:
    """A YAML scalar that reads back as this string (JSON strings are YAML; a lone
    surrogate, of a file name that is not UTF-8, as its escape)."""
    return storable(json.dumps(value, ensure_ascii=False))
