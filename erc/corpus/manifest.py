"""A generic manifest, so users bring a new corpus without writing code.

One row per utterance, in CSV (UTF-8 with a header), JSON Lines, or Parquet.

| column         | required | meaning                                                            |
|----------------|----------|--------------------------------------------------------------------|
| dialogue_id    | yes      | conversation id                                                    |
| speaker        | yes      | speaker identity                                                   |
| text           | one of   | transcript                                                         |
| media          | one of   | video or audio file, relative to the manifest's folder or absolute |
| split          | no       | train / dev / test ...; default from the reader options            |
| utterance_id   | no       | default ``<corpus>/<split>/<dialogue_id>/<turn>``                  |
| turn           | no       | 0-based position in the dialogue; default: order of appearance     |
| emotion        | no       | label; checked against ``labels`` when given                       |
| audio          | no       | separate audio file                                                |
| start, end     | no       | segment within ``media`` in seconds                                |
| anything else  | no       | kept as text in ``meta``                                           |

Media paths may not escape the manifest's folder unless ``allow_outside_root`` is set.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from erc.corpus.base import (CorpusError, IngestResult, RowCollector, decode_line,
                             read_csv_records, resolve_inside)

KNOWN_COLUMNS = {"dialogue_id", "speaker", "text", "media", "split", "utterance_id", "turn",
                 "emotion", "audio", "start", "end", "corpus"}
SUFFIXES = {".csv", ".jsonl", ".ndjson", ".parquet"}


def looks_like(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES


def _records(path: Path) -> Iterator[tuple[int, dict, str | None]]:
    """(line or row number, fields, encoding flag) for each record of the manifest."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        for rec in read_csv_records(path, ("dialogue_id", "speaker")):
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


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _seconds(value) -> float | None:
    """Blank -> None; a number -> float; anything else (text, nan, inf) -> ValueError."""
    if _blank(value):
        return None
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"not a finite time: {value!r}")
    return seconds


def read_manifest(path: Path, corpus: str | None = None, split: str = "train",
                  labels: list[str] | None = None, allow_outside_root: bool = False,
                  keep_missing_media: bool = False) -> IngestResult:
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: no such manifest")
    root = path.parent
    corpus = corpus or path.stem
    label_set = {label.lower() for label in labels} if labels else None
    out = RowCollector(corpus)
    out.sources.append(str(path))
    source = str(path)
    turns: dict[tuple[str, str], int] = {}
    header_checked = False
    for number, f, encoding in _records(path):
        if "__error__" in f:
            out.reject("missing_field", f["__error__"], source=source, line=number)
            continue
        if not header_checked and path.suffix.lower() != ".csv":
            # JSONL/Parquet have no header: check the first record's keys instead.
            missing = {"dialogue_id", "speaker"} - set(f)
            if not ({"text", "media"} & set(f)):
                missing.add("text or media")
            if missing:
                raise CorpusError(f"{path}: first record lacks {', '.join(sorted(missing))}; "
                                  f"it has {', '.join(sorted(f))}")
        if not header_checked and path.suffix.lower() == ".csv" and not ({"text", "media"} & set(f)):
            raise CorpusError(f"{path}: manifest needs a text or a media column; found {', '.join(f)}")
        header_checked = True

        row_split = split if _blank(f.get("split")) else str(f["split"]).strip()
        dialogue = "" if _blank(f.get("dialogue_id")) else str(f["dialogue_id"]).strip()
        turn_value = f.get("turn")
        if _blank(turn_value):
            turn = turns.get((row_split, dialogue), 0)
        else:
            try:
                turn = int(float(turn_value))
            except (ValueError, OverflowError):
                turn = -1
        uid = (str(f["utterance_id"]).strip() if not _blank(f.get("utterance_id"))
               else f"{corpus}/{row_split}/{dialogue}/{turn}")
        where = dict(source=source, line=number, split=row_split, utterance_id=uid)
        if encoding == "undecodable":
            out.reject("bad_encoding", "bytes neither UTF-8 nor cp1252", **where)
            continue
        if not dialogue or _blank(f.get("speaker")) or turn < 0:
            out.reject("missing_field", f"dialogue_id={dialogue!r} speaker={f.get('speaker')!r} "
                       f"turn={turn_value!r}", **where)
            continue
        text = None if _blank(f.get("text")) else str(f["text"])
        emotion = None if _blank(f.get("emotion")) else str(f["emotion"]).strip().lower()
        if emotion is not None and label_set is not None and emotion not in label_set:
            out.reject("unknown_label", f"emotion {f['emotion']!r} not in {sorted(label_set)}", **where)
            continue
        try:
            start, end = _seconds(f.get("start")), _seconds(f.get("end"))
        except ValueError:
            out.reject("bad_time", f"start={f.get('start')!r} end={f.get('end')!r}", **where)
            continue
        if start is not None and end is not None and end <= start:
            out.reject("bad_time", f"segment [{start}, {end}]", **where)
            continue
        paths, problem = {}, None
        for column in ("media", "audio"):
            if _blank(f.get(column)):
                continue
            resolved = resolve_inside(root, str(f[column]).strip(), allow_outside_root)
            if resolved is None:
                problem = ("path_outside_root", f"{column} {f[column]!r} escapes {root}")
                break
            out.media.add(str(resolved))
            if not resolved.exists() and not keep_missing_media:
                problem = ("missing_media", f"{column} {resolved} does not exist")
                break
            paths[column] = str(resolved) if resolved.exists() else None
        if problem:
            out.reject(*problem, **where)
            continue
        if text is None and not paths.get("media"):
            out.reject("missing_field", "row has neither text nor media", **where)
            continue
        if encoding:
            out.repairs[f"{corpus} manifest decoded as cp1252"] += 1
        turns[(row_split, dialogue)] = max(turns.get((row_split, dialogue), 0), turn + 1)
        meta = {k: str(v) for k, v in f.items() if k not in KNOWN_COLUMNS and not _blank(v)}
        out.add(
            {"utterance_id": uid, "corpus": str(f.get("corpus") or corpus), "split": row_split,
             "dialogue_id": dialogue, "turn": turn, "speaker": str(f["speaker"]).strip(),
             "text": text, "emotion": emotion, "media_path": paths.get("media"),
             "audio_path": paths.get("audio"), "start_s": start, "end_s": end, "meta": meta},
            source=source, line=number,
        )
    if not header_checked:
        raise CorpusError(f"{path}: manifest has no rows")
    return out.result()
