"""The feature table the preprocessing pass writes (``features/part-*.parquet``), keyed by
utterance_id: everything later stages (QC, adapters, fusion) need, so no model runs twice.

| column              | type                                   | meaning                                  |
|---------------------|----------------------------------------|------------------------------------------|
| utterance_id        | string                                 | key into the utterance table             |
| status              | string                                 | "ok" or "failed"                         |
| failure_reason      | string, nullable                       | e.g. unreadable_media, silence, no_frames |
| failure_detail      | string, nullable                       | the error message                        |
| duration_s          | float64, nullable                      | decoded audio duration                   |
| asr_text            | string, nullable                       | Whisper transcript                       |
| asr_language        | string, nullable                       |                                          |
| asr_no_speech_prob  | float32, nullable                      |                                          |
| asr_avg_logprob     | float32, nullable                      |                                          |
| asr_words           | list<struct<word, start, end, probability>> | word timestamps                     |
| speech_segments     | list<list<float32>[2]>, nullable        | voiced (start, end) seconds (webrtcvad)  |
| n_frames            | int32                                  | video frames sampled                     |
| faces               | list<struct<frame, time_s, box[4], score, embedding[]>> | every face of every sampled frame |
| speaker_embedding   | list<float32>, nullable                | one vector per utterance                 |
| text_embedding      | list<float32>, nullable                | of the corpus transcript (sentence vector) |
| text_layers         | list<float32>, nullable                | the text model's last layers, each pooled |
|                     |                                        | (``PreprocessConfig.text_layers``; null   |
|                     |                                        | when 1): the main job's text tokens       |

A "failed" row still has every column (nulls where nothing was computed) so the counts of
rows in and rows out always match. Which models produced the features is stored in the
Parquet schema metadata under ``erc.models`` (a JSON list of ``ModelRecord`` dicts).
"""

from __future__ import annotations

import json

import pyarrow as pa

WORD = pa.struct([("word", pa.string()), ("start", pa.float32()), ("end", pa.float32()),
                  ("probability", pa.float32())])
FACE = pa.struct([("frame", pa.int32()), ("time_s", pa.float32()),
                  ("box", pa.list_(pa.float32(), 4)), ("score", pa.float32()),
                  ("embedding", pa.list_(pa.float32()))])

FEATURE_SCHEMA = pa.schema([
    pa.field("utterance_id", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("failure_reason", pa.string()),
    pa.field("failure_detail", pa.string()),
    pa.field("duration_s", pa.float64()),
    pa.field("asr_text", pa.string()),
    pa.field("asr_language", pa.string()),
    pa.field("asr_no_speech_prob", pa.float32()),
    pa.field("asr_avg_logprob", pa.float32()),
    pa.field("asr_words", pa.list_(WORD)),
    pa.field("speech_segments", pa.list_(pa.list_(pa.float32(), 2))),
    pa.field("n_frames", pa.int32()),
    pa.field("faces", pa.list_(FACE)),
    pa.field("speaker_embedding", pa.list_(pa.float32())),
    pa.field("text_embedding", pa.list_(pa.float32())),
    pa.field("text_layers", pa.list_(pa.float32())),
])

MODELS_KEY = b"erc.models"

# The utterance table's columns the features are computed from (the pass's input).
INPUT_COLUMNS = ("utterance_id", "text", "media_path", "audio_path", "start_s", "end_s")


def source_digest(table: pa.Table) -> str:
    """Of what the features of an utterance table are computed from: every row's id,
    transcript, media and segment. Labels are left out: relabelling a table leaves its
    features valid."""
    from erc.fingerprint import digest

    return digest(table.select(list(INPUT_COLUMNS)).sort_by("utterance_id").to_pydict())


def with_models(schema: pa.Schema, records: list[dict]) -> pa.Schema:
    """The schema with the model records attached as metadata."""
    return schema.with_metadata({**(schema.metadata or {}), MODELS_KEY: json.dumps(records).encode()})


def models_of(schema: pa.Schema) -> list[dict]:
    raw = (schema.metadata or {}).get(MODELS_KEY)
    return json.loads(raw) if raw else []
