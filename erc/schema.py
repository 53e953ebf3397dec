"""The canonical tables every stage of erc reads and writes.

``UTTERANCE_SCHEMA`` is the utterance table (``utterances.parquet``): one row per
utterance, whatever corpus it came from.

| column        | type                | meaning                                                        |
|---------------|---------------------|----------------------------------------------------------------|
| utterance_id  | string, required    | stable id, unique within the table (``<corpus>/<split>/...``)  |
| corpus        | string, required    | corpus name (``meld``, ``iemocap``, ``ravdess``, a manifest's) |
| split         | string, required    | ``train``, ``dev``, ``test``, ...                              |
| dialogue_id   | string, required    | the conversation; unique within (corpus, split)                |
| turn          | int32, required     | 0-based position of the utterance in its dialogue              |
| speaker       | string, required    | speaker identity (``Ses01_F`` for IEMOCAP, actor for RAVDESS)  |
| text          | string, nullable    | the corpus transcript                                          |
| emotion       | string, nullable    | emotion label from the corpus label set; null when unlabelled  |
| media_path    | string, nullable    | absolute path or URI of the video (or audio) holding the turn  |
| audio_path    | string, nullable    | a separate audio file when the corpus has one (IEMOCAP wavs)   |
| start_s       | float64, nullable   | segment start within ``media_path``; null = whole file         |
| end_s         | float64, nullable   | segment end within ``media_path``; null = whole file           |
| meta          | map<string,string>  | corpus-specific fields (MELD season/episode, RAVDESS intensity) |

A row a reader kept without its media file (reader option ``keep_missing_media``) has no
``media_path``/``audio_path``; the path it named is kept in ``meta`` under
``MISSING_MEDIA_META`` (``missing_media`` for the media, ``missing_audio`` for the separate
audio), so preprocessing can say the file was missing rather than that there was none.

``PROBLEM_SCHEMA`` is the problem table (``problems.parquet``): one row per input row
that did not make it into the utterance table, with the reason. For every reader,
``input rows = utterance rows + problem rows``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection

import pyarrow as pa

from erc.redaction import redact

UTTERANCE_SCHEMA = pa.schema(
    [
        pa.field("utterance_id", pa.string(), nullable=False),
        pa.field("corpus", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("dialogue_id", pa.string(), nullable=False),
        pa.field("turn", pa.int32(), nullable=False),
        pa.field("speaker", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("emotion", pa.string()),
        pa.field("media_path", pa.string()),
        pa.field("audio_path", pa.string()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("meta", pa.map_(pa.string(), pa.string())),
    ]
)

# meta keys of the paths a kept row named for files that were missing at ingest
MISSING_MEDIA_META = {"media": "missing_media", "audio": "missing_audio"}

PROBLEM_SCHEMA = pa.schema(
    [
        pa.field("corpus", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("source", pa.string(), nullable=False),  # file the row came from
        pa.field("line", pa.int64()),  # 1-based line (or row) in that file, when known
        pa.field("utterance_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),  # one of PROBLEM_REASONS
        pa.field("detail", pa.string()),
    ]
)

# Every reason a row can be set aside for, with what it means.
PROBLEM_REASONS = {
    # the row as text
    "bad_encoding": "bytes that are neither UTF-8 nor cp1252",
    "unterminated_quote": "a CSV quote without its closing partner (it would swallow the fields or rows after it)",
    "malformed_row": "a row the file's grammar rejects (text after a closing CSV quote, invalid JSON, not an object)",
    "bad_field_count": "a CSV row with more or fewer values than the header has columns",
    "field_too_large": "a field longer than the reader option max_field_bytes",
    "bad_type": "a value of a type the field cannot hold (bytes, a list or a mapping where text or a number belongs)",
    # the fields
    "missing_field": "a required field (dialogue, speaker, ...) is empty or not of the corpus's form",
    "bad_turn": "a turn (utterance number) that is not a whole number from 0 to 2147483647",
    "bad_time": "start/end times that cannot be parsed, are not finite, or are inverted",
    "negative_time": "a start or end time below zero",
    "unknown_label": "emotion label outside the corpus label set",
    "excluded_label": "label known but outside the label set chosen for this run",
    "duplicate_id": "utterance id already seen in this corpus",
    "duplicate_turn": "a second utterance at a turn of a dialogue already seen (same split and dialogue)",
    "missing_template_field": "a column a mapping template composes a field from is empty",
    "several_speakers": "the speaker field lists several people (mapping: several_speakers)",
    # the media
    "missing_media": "the media file the row names does not exist",
    "media_not_a_file": "the media path the row names is a folder or another non-file",
    "path_outside_root": "media path escapes the corpus root",
    "bad_filename": "a media file whose name does not follow the corpus convention",
    "unreadable_media": "the media file exists but cannot be opened or decoded",
    "overlong_clip": "media longer than the configured cap (mis-cut clip)",
    "no_audio": "the media file has no audio stream",
    # after the ingest
    "qc_rejected": "set aside by quality control (detail: the checks it failed, as in decisions.parquet)",
}


def utterance_table(rows: list[dict]) -> pa.Table:
    """Builds an utterance table from dicts with the schema's keys (missing = null). The
    meta values quote the input (the paths of missing media, a manifest's other columns),
    so credentials there are masked (as in ``problem_table``)."""
    columns = {
        field.name: [row.get(field.name) for row in rows] for field in UTTERANCE_SCHEMA
    }
    columns["meta"] = [[(k, redact(v) if isinstance(v, str) else v)
                        for k, v in (row.get("meta") or {}).items()] for row in rows]
    return pa.table(columns, schema=UTTERANCE_SCHEMA)


def storable(text: str) -> str:
    """``text`` as a table can hold it: a lone surrogate (how Python reads the bytes of a
    file name that are not UTF-8) written as its escape, ``\\udce9``."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def problem_reasons(problems: pa.Table | None, splits: Collection[str] | None = None) -> Counter:
    """How many rows of a problem table each reason set aside (of ``splits`` only, when
    given); none for no table."""
    if problems is None:
        return Counter()
    reasons = problems.column("reason").to_pylist()
    if splits is None:
        return Counter(reasons)
    return Counter(r for r, s in zip(reasons, problems.column("split").to_pylist()) if s in splits)


def said_reasons(reasons: Counter) -> str:
    """The counts of ``problem_reasons`` in words, most common first: "bad_turn 3, ..."."""
    return ", ".join(f"{reason} {n:,}" for reason, n in reasons.most_common())


def problem_table(rows: list[dict]) -> pa.Table:
    """Problem rows as a table; their texts quote the input, so credentials are masked."""
    columns = {field.name: [redact(storable(v)) if isinstance(v, str) else v
                            for v in (row.get(field.name) for row in rows)]
               for field in PROBLEM_SCHEMA}
    return pa.table(columns, schema=PROBLEM_SCHEMA)
