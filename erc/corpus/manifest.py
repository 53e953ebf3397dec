"""A generic manifest, so users bring a new corpus without writing code.

One row per utterance, in CSV (UTF-8 with a header), JSON Lines, or Parquet: one file, or
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
| split          | no       | train / dev / test ...; default from the file (mapping) or options |
| utterance_id   | no       | default ``<corpus>/<split>/<dialogue_id>/<turn>``                  |
| turn           | no       | 0-based position in the dialogue; default: order of appearance     |
| emotion        | no       | label; mapped by ``label_map``, checked against ``labels``         |
| audio          | no       | separate audio file                                                |
| start, end     | no       | segment within ``media``: seconds or ``[HH:]MM:SS.mmm``            |
| anything else  | no       | kept as text in ``meta``                                           |

Media paths may not escape the manifest's folder unless ``allow_outside_root`` is set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from erc.corpus.base import (CorpusError, IngestResult, RowCollector, decode_line,
                             read_csv_records, resolve_inside)
from erc.corpus.mapping import (MANIFEST_SUFFIXES, MAPPING_FILE, blank, load_mapping,
                                parse_time)


def looks_like(path: Path) -> bool:
    """A manifest file, or a corpus folder holding a mapping file."""
    return ((path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES)
            or has_mapping_file(path))


def has_mapping_file(path: Path) -> bool:
    return path.is_dir() and (path / MAPPING_FILE).is_file()


def read_records(path: Path) -> Iterator[tuple[int, dict, str | None]]:
    """(line or row number, fields, encoding flag) for each record of the manifest."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        for rec in read_csv_records(path, ()):
            yield rec.line, rec.fields, rec.encoding
    elif suffix in (".jsonl", ".ndjson"):
        for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
            if not raw.strip():
                continue
            text, flag = decode_line(raw)
            try:
                fields = json.loads(text)
                if not isinstance(fields, dict):
                    raise ValueError("not an object")
            except ValueError as err:
                yield number, {"__error__": f"invalid JSON: {err}"}, flag
                continue
            yield number, fields, flag
    elif suffix == ".parquet":
        table = pq.read_table(path)
        for number, fields in enumerate(table.to_pylist(), start=1):
            yield number, fields, None
    else:
        raise CorpusError(f"{path}: manifest must be .csv, .jsonl or .parquet")


def read_manifest(path: Path, mapping: str | Path | dict | None = None,
                  **options) -> IngestResult:
    """Reads a manifest file, or a folder of them, into the utterance table. ``mapping``
    is a mapping file (a relative path is taken from the corpus folder) or dict; without
    one, a folder's ``erc-mapping.yaml`` is used. ``options`` are ManifestMapping fields
    and override the mapping's."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such manifest")
    folder = path if path.is_dir() else path.parent
    if mapping is None and has_mapping_file(path):
        mapping = path / MAPPING_FILE
    if isinstance(mapping, (str, Path)) and not Path(mapping).is_absolute():
        mapping = folder / mapping
    spec = load_mapping(mapping, **options)
    corpus = spec.corpus or (path.name if path.is_dir() else path.stem)
    label_set = {label.lower() for label in spec.labels} if spec.labels else None
    out = RowCollector(corpus)
    if isinstance(mapping, Path):
        out.sources.append(str(mapping))
    turns: dict[tuple[str, str], int] = {}
    rows_seen = False
    for file, file_split in spec.manifest_files(path):
        out.sources.append(str(file))
        source = str(file)
        root = file.parent
        header_checked = False
        for number, raw, encoding in read_records(file):
            if "__error__" in raw:
                out.reject("missing_field", raw["__error__"], source=source, line=number)
                continue
            if not header_checked:
                spec.check_columns(list(raw), source)
                header_checked = rows_seen = True
            f, meta, problem = spec.map_row(raw)
            row_split = file_split or (spec.split if blank(f["split"]) else str(f["split"]).strip())
            dialogue = "" if blank(f["dialogue_id"]) else str(f["dialogue_id"]).strip()
            if blank(f["turn"]):
                turn = turns.get((row_split, dialogue), 0)
            else:
                try:
                    turn = int(float(f["turn"]))
                except (ValueError, OverflowError):
                    turn = -1
            uid = (str(f["utterance_id"]).strip() if not blank(f["utterance_id"])
                   else f"{corpus}/{row_split}/{dialogue}/{turn}")
            where = dict(source=source, line=number, split=row_split, utterance_id=uid)
            if encoding == "undecodable":
                out.reject("bad_encoding", "bytes neither UTF-8 nor cp1252", **where)
                continue
            if problem is not None:
                out.reject(problem.reason, problem.detail, **where)
                continue
            if not dialogue or blank(f["speaker"]) or turn < 0:
                out.reject("missing_field", f"dialogue_id={dialogue!r} speaker={f['speaker']!r} "
                           f"turn={f['turn']!r}", **where)
                continue
            text = None if blank(f["text"]) else str(f["text"])
            emotion = f["emotion"]
            if emotion is not None and label_set is not None and emotion not in label_set:
                out.reject("unknown_label", f"emotion {emotion!r} not in {sorted(label_set)}", **where)
                continue
            try:
                start, end = parse_time(f["start"]), parse_time(f["end"])
            except ValueError:
                out.reject("bad_time", f"start={f['start']!r} end={f['end']!r} (seconds or "
                           "[HH:]MM:SS.mmm)", **where)
                continue
            if start is not None and end is not None and end <= start:
                out.reject("bad_time", f"segment [{start}, {end}]", **where)
                continue
            paths, failure = {}, None
            for column in ("media", "audio"):
                if blank(f[column]):
                    continue
                resolved = resolve_inside(root, str(f[column]).strip(), spec.allow_outside_root)
                if resolved is None:
                    failure = ("path_outside_root", f"{column} {f[column]!r} escapes {root}")
                    break
                out.media.add(str(resolved))
                if not resolved.exists() and not spec.keep_missing_media:
                    failure = ("missing_media", f"{column} {resolved} does not exist")
                    break
                paths[column] = str(resolved) if resolved.exists() else None
            if failure:
                out.reject(*failure, **where)
                continue
            if text is None and not paths.get("media"):
                out.reject("missing_field", "row has neither text nor media", **where)
                continue
            if encoding:
                out.repairs[f"{corpus} manifest decoded as cp1252"] += 1
            turns[(row_split, dialogue)] = max(turns.get((row_split, dialogue), 0), turn + 1)
            out.add(
                {"utterance_id": uid, "corpus": str(f["corpus"] or corpus), "split": row_split,
                 "dialogue_id": dialogue, "turn": turn, "speaker": f["speaker"],
                 "text": text, "emotion": emotion, "media_path": paths.get("media"),
                 "audio_path": paths.get("audio"), "start_s": start, "end_s": end, "meta": meta},
                source=source, line=number,
            )
    if not rows_seen:
        raise CorpusError(f"{path}: manifest has no rows")
    return out.result()
