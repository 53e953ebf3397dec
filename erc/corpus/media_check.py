"""Checks the media of an ingested corpus on Ray: every file is opened in parallel tasks
and rows whose media cannot be read, has no audio stream, is longer than the cap (MELD's
mis-cut clips) or shorter than the floor (too short to embed) move to the problem table
with their reason. A file a row takes its audio from is also decoded (its audio alone)
through to its end, so that a corrupt or truncated file, which opens fine, is set aside
here rather than failing in ``erc preprocess``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from erc.corpus.base import IngestResult
from erc.media.decode import audio_defect
from erc.media.probe import probe
from erc.recipes import MAX_CLIP_SECONDS, MIN_CLIP_SECONDS
from erc.schema import problem_table


def _probe_batch(batch: dict[str, np.ndarray], max_clip_seconds: float | None = MAX_CLIP_SECONDS
                 ) -> dict[str, np.ndarray]:
    infos = [probe(path) for path in batch["path"]]
    errors = [i.error or (audio_defect(path, max_clip_seconds=max_clip_seconds)
                          if decode and i.has_audio else None)
              for path, decode, i in zip(batch["path"], batch["decode"], infos)]
    return {
        "path": batch["path"],
        "duration_s": np.array([i.duration_s if i.duration_s is not None else np.nan for i in infos]),
        "has_audio": np.array([i.has_audio for i in infos]),
        "error": np.array([e or "" for e in errors], dtype=object),
    }


def probe_paths(paths: list[str], batch_size: int = 128, decode: set[str] = frozenset(),
                max_clip_seconds: float | None = MAX_CLIP_SECONDS) -> dict[str, dict]:
    """path -> {duration_s, has_audio, error}, computed by Ray Data tasks; the audio of the
    paths in ``decode`` is decoded through to its end (a truncated file is an error; the
    cap, None for none, tells a WAV's stale header from a truncated file, as decoding does)."""
    import ray.data

    if not paths:
        return {}
    dataset = ray.data.from_items([{"path": p, "decode": p in decode} for p in paths])
    rows = dataset.map_batches(_probe_batch, batch_size=batch_size, batch_format="numpy",
                               fn_kwargs={"max_clip_seconds": max_clip_seconds}).take_all()
    return {row["path"]: row for row in rows}


def _defect(path: str, meta: dict, length: float, needs_audio: bool, max_clip_seconds: float,
            min_clip_seconds: float) -> tuple[str, str] | None:
    """The reason a row's file, probed as ``meta``, is set aside, or None."""
    if meta["error"]:
        return "unreadable_media", meta["error"]
    if needs_audio and not meta["has_audio"]:
        return "no_audio", f"{path} has no audio stream"
    if length == length and length > max_clip_seconds:  # NaN-safe
        return "overlong_clip", f"{length:.1f} s > cap {max_clip_seconds:.0f} s"
    if length == length and length < min_clip_seconds:
        return "too_short", f"{length:.3f} s < min_clip_seconds {min_clip_seconds:g} s"
    return None


def check_media(result: IngestResult, max_clip_seconds: float = MAX_CLIP_SECONDS,
                min_clip_seconds: float = MIN_CLIP_SECONDS) -> IngestResult:
    """Moves rows with unreadable, audio-less, overlong or too short media to the problem
    table, with the reason preprocessing would give them (``erc.media.decode``)."""
    table = result.utterances
    media = table.column("media_path").to_pylist()
    audio = table.column("audio_path").to_pylist()
    starts, ends = table.column("start_s").to_pylist(), table.column("end_s").to_pylist()
    # Decoded: the file each row's audio comes from, as preprocessing reads it.
    sources = {a or m for m, a in zip(media, audio) if a or m}
    info = probe_paths(sorted({p for p in media + audio if p}), decode=sources,
                       max_clip_seconds=max_clip_seconds)

    keep, problems = [], []
    for i, row_media in enumerate(media):
        reason, source = None, row_media or audio[i]
        if row_media:
            segment = (ends[i] - starts[i]) if starts[i] is not None and ends[i] is not None else None
            # Only whole-file utterances can be mis-cut; a segment's length is its own.
            length = segment if segment is not None else info[row_media]["duration_s"]
            reason = _defect(row_media, info[row_media], length, not audio[i],
                             max_clip_seconds, min_clip_seconds)
        if reason is None and audio[i] and audio[i] != row_media:
            # A separate audio file (the row's only file, or beside its video) is decoded
            # whole, as preprocessing decodes it: judged by its own streams and length.
            source = audio[i]
            reason = _defect(audio[i], info[audio[i]], info[audio[i]]["duration_s"], True,
                             max_clip_seconds, min_clip_seconds)
        keep.append(reason is None)
        if reason:
            problems.append({"corpus": table.column("corpus")[i].as_py(),
                             "split": table.column("split")[i].as_py(),
                             "source": source, "line": None,
                             "utterance_id": table.column("utterance_id")[i].as_py(),
                             "reason": reason[0], "detail": reason[1]})
    checked = IngestResult(
        utterances=table.filter(pa.array(keep, type=pa.bool_())),
        problems=pa.concat_tables([result.problems, problem_table(problems)]),
        n_input=result.n_input, repairs=result.repairs, sources=result.sources,
    )
    checked.check_accounting()
    return checked

