"""The stages of the preprocessing pass, as Ray Data ``map_batches`` callables on Arrow
batches. Each stage is a class declaring its name, the model roles it loads, the columns it
reads and writes and its default resources (overridden by ``PreprocessConfig.<stage>``);
model stages load their backends once per actor in ``__init__`` (NeMo Curator's
``setup``) and process whole batches; decode runs as CPU tasks. ``PASS`` is the pass in
order.

Columns between stages (``_``-prefixed ones never reach the output):

| stage   | reads                                   | writes                                        |
|---------|-----------------------------------------|-----------------------------------------------|
| decode  | media_path, audio_path, start_s, end_s, | status, failure_*, duration_s, n_frames,      |
|         | missing_media                           |                                               |
|         |                                         | speech_segments (voice activity),             |
|         |                                         | _audio (float32 bytes), _frames (uint8 bytes),|
|         |                                         | _frame_shape, _frame_times, _scale            |
| faces   | _frames, _frame_shape, _frame_times     | faces (drops the frame columns)               |
| asr     | _audio                                  | asr_text, asr_language, asr_*_prob, asr_words |
| speaker | _audio                                  | speaker_embedding (drops _audio)              |
| text    | text                                    | text_embedding, text_layers                   |

Every stage adds ``_s_<stage>`` (its busy seconds for the batch, spread over the batch's
rows, so their sum over rows is the stage's busy time) and model stages add
``_load_<stage>`` (model load seconds, on the first row an actor returns) and
``_rec_<stage>`` (JSON list of the ``ModelRecord``s of the models that processed the row).

Model stages only touch rows whose status is "ok" (text: every row with a transcript, so
a row whose media failed can still be used as text). A backend that raises on a batch is
retried one row at a time; a row that still fails becomes status "failed", reason
``model_error``, with the role, the error and (audio stages) the audio's length in
``failure_detail``.
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from erc.features import FACE, INPUT_COLUMNS, WORD
from erc.media.decode import AUDIO_RATE, decode_utterance
from erc.media.vad import speech_segments
from erc.recipes import DecodeSettings
from erc.redaction import clip

FRAME_COLUMNS = ("_frames", "_frame_shape", "_frame_times", "_scale")
# The path a row named for a media file that was missing at ingest (its meta's
# MISSING_MEDIA_META entries), taken into the pass beside INPUT_COLUMNS.
MISSING_MEDIA = "missing_media"


class PassStage:
    """What every stage of the pass declares (its name, the model roles it loads, the
    columns it reads and writes, and its default resources: rows per call, actors or
    tasks at once, CPUs and GPUs each; None: fitted to the cluster)."""

    name: ClassVar[str] = ""
    roles: ClassVar[tuple[str, ...]] = ()  # model roles (empty: a CPU task, no model)
    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[dict[str, Any]] = {}
    # CPU seconds an utterance costs the stage on a CPU (offline profile, measured by
    # bench/preprocess): a CPU stage's actors, unless the config sizes its pool, are the
    # machine's CPUs in proportion to it (erc.pipeline.preprocess.stage_resources).
    cpu_seconds: ClassVar[float] = 0.0

    @classmethod
    def options(cls, config) -> dict:
        """The stage's own constructor arguments from the ``PreprocessConfig`` (beyond the
        model specs and resources every model stage takes)."""
        return {}


# -- Arrow helpers ------------------------------------------------------------------------

def _embedding_array(rows: list[np.ndarray | None]) -> pa.Array:
    """list<float32> from per-row vectors (None -> null), without Python float lists."""
    offsets, values, valid, at = [0], [], [], 0
    for row in rows:
        if row is None:
            valid.append(False)
        else:
            row = np.asarray(row, dtype=np.float32).reshape(-1)
            values.append(row)
            at += row.size
            valid.append(True)
        offsets.append(at)
    flat = np.concatenate(values) if values else np.zeros(0, np.float32)
    mask = pa.array([not v for v in valid], type=pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), pa.array(flat, type=pa.float32()),
                                    mask=mask)


def _set(table: pa.Table, name: str, array) -> pa.Table:
    if not isinstance(array, (pa.Array, pa.ChunkedArray)):
        array = pa.array(array)
    index = table.schema.get_field_index(name)
    if index >= 0:
        return table.set_column(index, name, array)
    return table.append_column(name, array)


def _drop(table: pa.Table, names) -> pa.Table:
    return table.drop_columns([n for n in names if n in table.column_names])


def _per_row(table: pa.Table, name: str, seconds: float) -> pa.Table:
    n = table.num_rows
    return _set(table, name, pa.array(np.full(n, seconds / max(n, 1)), type=pa.float64()))


def _fail(table: pa.Table, failures: dict[int, tuple[str, str]]) -> pa.Table:
    """Marks rows failed: {row: (reason, detail)}."""
    status = table.column("status").to_pylist()
    reason = table.column("failure_reason").to_pylist()
    detail = table.column("failure_detail").to_pylist()
    for i, (why, message) in failures.items():
        status[i], reason[i], detail[i] = "failed", why, message
    table = _set(table, "status", pa.array(status, pa.string()))
    table = _set(table, "failure_reason", pa.array(reason, pa.string()))
    return _set(table, "failure_detail", pa.array(detail, pa.string()))


def stage_threads(num_cpus: float | None) -> int:
    """The threads a stage's actor computes with: one per CPU it is given, at least one."""
    return max(1, int(num_cpus or 1))


def worker_env(num_cpus: float | None) -> dict:
    """Ray options that start a stage actor's process with ``OMP_NUM_THREADS`` set to its
    threads. OpenMP reads the variable once, when torch loads it; Ray sets it in a worker
    it had started before only after that, so the process kept the machine's core count as
    its OpenMP default. CTranslate2 (faster-whisper) computes with that default whatever
    its ``cpu_threads``: its transcripts then depended on which worker an actor landed in
    (no_speech_prob moved by up to 0.003, a first word's start by 0.7 s, over four
    sample clips on one machine)."""
    return {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(stage_threads(num_cpus))}}}


def _fit_threads(num_cpus: float | None) -> None:
    """Torch in an actor uses as many threads as the CPUs it was given (at least one)."""
    try:
        import torch

        torch.set_num_threads(stage_threads(num_cpus))
    except ImportError:
        pass


# -- decode -------------------------------------------------------------------------------

class DecodeStage(PassStage):
    """Decodes the media of each row (a CPU task: an instance is the task's function).
    Rows without media are "text_only"; those whose media file was missing at ingest
    (``missing_media``: the path the row named) say so in failure_reason and _detail."""

    name = "decode"
    reads = ("media_path", "audio_path", "start_s", "end_s", MISSING_MEDIA)
    writes = ("status", "failure_reason", "failure_detail", "duration_s", "n_frames",
              "speech_segments", "_audio", *FRAME_COLUMNS)
    resources = {"batch_size": 4, "concurrency": None, "num_cpus": 1.0, "num_gpus": 0.0}

    def __init__(self, settings: DecodeSettings):
        self.settings = settings

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        cols = {name: batch.column(name).to_pylist() for name in INPUT_COLUMNS}
        missing = (batch.column(MISSING_MEDIA).to_pylist() if MISSING_MEDIA in batch.column_names
                   else [None] * batch.num_rows)
        status, reason, detail, duration, n_frames, speech = [], [], [], [], [], []
        audio, frames, shapes, times, scales = [], [], [], [], []
        for i in range(batch.num_rows):
            media, separate = cols["media_path"][i], cols["audio_path"][i]
            if not media and not separate:
                status.append("text_only")
                if missing[i]:
                    reason.append("missing_media")
                    detail.append(f"{missing[i]} was missing at ingest (kept by the reader "
                                  f"option keep_missing_media); text only")
                else:
                    reason.append(None), detail.append(None)
                duration.append(None), n_frames.append(0)
                speech.append(None)
                audio.append(None), frames.append(None), shapes.append(None), times.append(None)
                scales.append(None)
                continue
            got = decode_utterance(media, separate, cols["start_s"][i], cols["end_s"][i],
                                   self.settings)
            status.append("ok" if got.ok else "failed")
            reason.append(got.reason)
            detail.append(got.detail)
            duration.append(got.duration_s)
            n_frames.append(len(got.frames))
            keep = got.ok
            speech.append(speech_segments(got.audio) if keep and got.audio is not None else None)
            audio.append(got.audio.tobytes() if keep and got.audio is not None else None)
            if keep and got.frames:
                frames.append(np.stack(got.frames).tobytes())
                shapes.append(list(got.frames[0].shape))
                times.append(got.frame_times)
            else:
                frames.append(None), shapes.append(None), times.append(None)
            scales.append(got.scale)
        out = batch.select([c for c in batch.column_names if c not in self.reads])
        for name, values, kind in (
                ("status", status, pa.string()), ("failure_reason", reason, pa.string()),
                ("failure_detail", detail, pa.string()), ("duration_s", duration, pa.float64()),
                ("n_frames", n_frames, pa.int32()),
                ("speech_segments", speech, pa.list_(pa.list_(pa.float32(), 2))),
                ("_audio", audio, pa.large_binary()),
                ("_frames", frames, pa.large_binary()), ("_frame_shape", shapes, pa.list_(pa.int32())),
                ("_frame_times", times, pa.list_(pa.float32())), ("_scale", scales, pa.float32())):
            out = _set(out, name, pa.array(values, type=kind))
        return _per_row(out, "_s_decode", time.perf_counter() - started)


# -- model stages -------------------------------------------------------------------------

class _ModelStage(PassStage):
    """Loads the backends of its roles once (per actor); runs them on the batch's eligible
    rows, retrying row by row when a batch fails."""

    def __init__(self, specs: dict[str, dict], num_cpus: float | None = None,
                 num_gpus: float | None = None, device: str | None = None):
        from erc import runtime
        from erc.backends.base import ModelSpec
        from erc.backends.registry import load_backend

        runtime.apply_offline_env()
        _fit_threads(num_cpus)
        started = time.perf_counter()
        if device is None:  # CPU, with a message, where a GPU was promised but none works
            from erc.cluster import torch_device

            device = torch_device(num_gpus)
        self.backends = {role: load_backend(ModelSpec(**spec), device=device)
                         for role, spec in specs.items()}
        self.load_s = time.perf_counter() - started
        self.records = json.dumps([b.record().to_dict() for b in self.backends.values()])

    # subclasses: which rows, and what to compute for a list of them
    def eligible(self, batch: pa.Table) -> list[int]:
        status = batch.column("status").to_pylist()
        return [i for i, s in enumerate(status) if s == "ok"]

    def compute(self, batch: pa.Table, rows: list[int]) -> list:
        raise NotImplementedError

    def write(self, batch: pa.Table, results: dict[int, Any]) -> pa.Table:
        raise NotImplementedError

    def _input_of(self, batch: pa.Table, i: int) -> str:
        """What a row's error adds about its input: the audio's length (a clip too short
        for the model is told from a broken one)."""
        if "_audio" not in self.reads or not batch.column("_audio")[i].is_valid:
            return ""
        return f" (on {_audio_of(batch, i).size / AUDIO_RATE:.3f} s of audio)"

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        rows = self.eligible(batch)
        results: dict[int, Any] = {}
        errors: dict[int, str] = {}
        if rows:
            try:
                results = dict(zip(rows, self.compute(batch, rows)))
            except Exception:
                for i in rows:
                    try:
                        results[i] = self.compute(batch, [i])[0]
                    except Exception as err:
                        reason = clip(str(err), 1800)
                        errors[i] = f"{self.name}: {type(err).__name__}: {reason}{self._input_of(batch, i)}"
        if errors:
            batch = _fail(batch, {i: ("model_error", message) for i, message in errors.items()})
        batch = self.write(batch, results)
        touched = set(results) | set(errors)
        batch = _set(batch, f"_rec_{self.name}", pa.array(
            [self.records if i in touched else None for i in range(batch.num_rows)], pa.string()))
        load = [None] * batch.num_rows
        if self.load_s is not None and batch.num_rows:
            load[0], self.load_s = self.load_s, None
        batch = _set(batch, f"_load_{self.name}", pa.array(load, pa.float64()))
        return _per_row(batch, f"_s_{self.name}", time.perf_counter() - started)


def _audio_of(batch: pa.Table, i: int) -> np.ndarray:
    return np.frombuffer(batch.column("_audio")[i].as_py(), dtype=np.float32)


def sampled_frames(batch: pa.Table, i: int) -> list[np.ndarray]:
    """Row ``i``'s sampled frames (H, W, 3 uint8 each) from the decode stage's columns."""
    shape = batch.column("_frame_shape")[i].as_py()
    stack = np.frombuffer(batch.column("_frames")[i].as_py(), dtype=np.uint8)
    return list(stack.reshape(-1, *shape))


class FaceStage(_ModelStage):
    """Detects every face in every sampled frame and embeds it; one actor owns both models
    so the frames move once. Boxes are in pixels of the original frame."""

    name = "faces"
    roles = ("face_detect", "face_embed")
    reads = ("status", "n_frames", "_frames", "_frame_shape", "_frame_times", "_scale")
    writes = ("faces",)
    resources = {"batch_size": 8, "concurrency": 1, "num_cpus": None, "num_gpus": 0.0}
    cpu_seconds = 0.16

    def eligible(self, batch):
        n_frames = batch.column("n_frames").to_pylist()
        return [i for i in super().eligible(batch) if n_frames[i]]

    def compute(self, batch, rows):
        clips = [sampled_frames(batch, i) for i in rows]
        frames = [frame for frames_of_clip in clips for frame in frames_of_clip]
        owner = [(i, k) for i, frames_of_clip in zip(rows, clips) for k in range(len(frames_of_clip))]
        detections = self._by_clip("face_detect", clips, lambda b, lo, hi: b.detect(frames[lo:hi]))
        boxes = [[face.box for face in found] for found in detections]
        embeddings = self._by_clip("face_embed", clips,
                                   lambda b, lo, hi: b.embed(frames[lo:hi], boxes[lo:hi]))
        per_row: dict[int, list] = {i: [] for i in rows}
        for (i, k), found, vectors in zip(owner, detections, embeddings):
            times = batch.column("_frame_times")[i].as_py()
            scale = batch.column("_scale")[i].as_py() or 1.0
            for face, vector in zip(found, vectors):
                vector = np.asarray(vector, dtype=np.float32)
                per_row[i].append({
                    "frame": k, "time_s": float(times[k]),
                    "box": [float(v) * scale for v in face.box], "score": float(face.score),
                    "embedding": None if not np.isfinite(vector).all() else vector.tolist()})
        return [per_row[i] for i in rows]

    def _by_clip(self, role: str, clips: list[list], call) -> list:
        """``call(backend, lo, hi)``'s results for the frames ``lo:hi`` of the batch (all
        clips' frames in order), clip after clip. On a CPU each clip goes on its own: the
        models' arithmetic (their kernels differ with the batch size) then never depends on
        which clips share the batch, so a resumed pass gives bit for bit what a clean one
        gives (together, boxes moved by about 1e-4 px, enough to flip the embedder's pixel
        rounding now and then, and embeddings by about 2e-7). On a GPU one call spans the
        batch's clips, for throughput."""
        backend = self.backends[role]
        if str(getattr(backend, "device", "cpu")).startswith("cuda"):
            return call(backend, 0, sum(map(len, clips)))
        results, lo = [], 0
        for frames_of_clip in clips:
            results += call(backend, lo, lo + len(frames_of_clip))
            lo += len(frames_of_clip)
        return results

    def write(self, batch, results):
        faces = [results.get(i, [] if s == "ok" else None)
                 for i, s in enumerate(batch.column("status").to_pylist())]
        batch = _set(batch, "faces", pa.array(faces, type=pa.list_(FACE)))
        return _drop(batch, FRAME_COLUMNS)


class ASRStage(_ModelStage):
    """Transcribes each utterance's audio (Whisper)."""

    name = "asr"
    roles = ("asr",)
    reads = ("status", "_audio")
    writes = ("asr_text", "asr_language", "asr_no_speech_prob", "asr_avg_logprob", "asr_words")
    resources = {"batch_size": 8, "concurrency": 1, "num_cpus": None, "num_gpus": 0.0}
    cpu_seconds = 0.22

    def compute(self, batch, rows):
        return self.backends["asr"].transcribe([_audio_of(batch, i) for i in rows])

    def write(self, batch, results):
        n = batch.num_rows
        got = [results.get(i) for i in range(n)]
        batch = _set(batch, "asr_text", pa.array([t.text if t else None for t in got], pa.string()))
        batch = _set(batch, "asr_language", pa.array([t.language if t else None for t in got], pa.string()))
        batch = _set(batch, "asr_no_speech_prob", pa.array(
            [t.no_speech_prob if t else None for t in got], pa.float32()))
        batch = _set(batch, "asr_avg_logprob", pa.array(
            [t.avg_logprob if t else None for t in got], pa.float32()))
        words = [None if t is None else [{"word": w.word, "start": w.start, "end": w.end,
                                          "probability": w.probability} for w in t.words]
                 for t in got]
        return _set(batch, "asr_words", pa.array(words, type=pa.list_(WORD)))


class SpeakerStage(_ModelStage):
    """One speaker embedding per utterance. A NaN row makes the row failed: reason
    "too_short" when its audio is shorter than the model's ``min_seconds``, else "silence"
    (the model heard no speech); the detail gives the audio's length either way."""

    name = "speaker"
    roles = ("speaker",)
    reads = ("status", "_audio")
    writes = ("speaker_embedding",)
    resources = {"batch_size": 16, "concurrency": 1, "num_cpus": None, "num_gpus": 0.0}
    cpu_seconds = 0.03

    def compute(self, batch, rows):
        vectors = np.asarray(self.backends["speaker"].embed([_audio_of(batch, i) for i in rows]),
                             dtype=np.float32)
        return [vectors[k] for k in range(len(rows))]

    def write(self, batch, results):
        vectors = [results.get(i) for i in range(batch.num_rows)]
        silent = [i for i, v in enumerate(vectors) if v is not None and not np.isfinite(v).all()]
        for i in silent:
            vectors[i] = None
        if silent:
            shortest = getattr(self.backends["speaker"], "min_seconds", 0.0)
            heard = f"under {shortest:g} s of speech" if shortest else "no speech"
            failures = {}
            for i in silent:
                seconds = _audio_of(batch, i).size / AUDIO_RATE
                failures[i] = (("too_short", f"speaker: {seconds:.3f} s of audio, the speaker model "
                                             f"embeds {shortest:g} s or more") if seconds < shortest
                               else ("silence", f"speaker: the speaker model found {heard} in "
                                                f"{seconds:.3f} s of audio"))
            batch = _fail(batch, failures)
        batch = _set(batch, "speaker_embedding", _embedding_array(vectors))
        return _drop(batch, ("_audio",))


class TextStage(_ModelStage):
    """Embeds the corpus transcript of every row that has one (failed rows included): the
    model's sentence vector, and with ``layers`` > 1 its last layers pooled (what the main
    job's fusion model reads, ``erc.backends.text.layer_vectors``), both from one forward
    pass where the model's sentence vector is its top layer's token mean."""

    name = "text"
    roles = ("text",)
    reads = ("text",)
    writes = ("text_embedding", "text_layers")
    # The last stage's batch is what reaches the driver at once: kept small (the text model
    # costs under 1 % of the pass), so partitions are written, and progress shows, every
    # few seconds.
    resources = {"batch_size": 16, "concurrency": 1, "num_cpus": None, "num_gpus": 0.0}
    cpu_seconds = 0.011

    def __init__(self, specs: dict[str, dict], num_cpus: float | None = None,
                 num_gpus: float | None = None, device: str | None = None, layers: int = 1):
        super().__init__(specs, num_cpus, num_gpus, device)
        self.layers = int(layers)

    @classmethod
    def options(cls, config) -> dict:
        return {"layers": config.text_layers}

    def eligible(self, batch):
        return [i for i, t in enumerate(batch.column("text").to_pylist()) if t and t.strip()]

    def compute(self, batch, rows):
        texts = batch.column("text").to_pylist()
        texts = [texts[i] for i in rows]
        backend = self.backends["text"]
        if self.layers > 1:
            vectors, layers = backend.embed_with_layers(texts, self.layers)
        else:
            vectors, layers = backend.embed(texts), [None] * len(rows)
        vectors = np.asarray(vectors, dtype=np.float32)
        return [(vectors[k], layers[k]) for k in range(len(rows))]

    def write(self, batch, results):
        got = [results.get(i) or (None, None) for i in range(batch.num_rows)]
        batch = _set(batch, "text_embedding", _embedding_array([v for v, _ in got]))
        return _set(batch, "text_layers", _embedding_array([layers for _, layers in got]))


PASS: tuple[type[PassStage], ...] = (DecodeStage, FaceStage, ASRStage, SpeakerStage, TextStage)
MODEL_STAGES = tuple(stage for stage in PASS if stage.roles)
STAGE_OF = {stage.name: stage for stage in PASS}
