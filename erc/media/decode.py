"""Decoding one utterance's media with PyAV: 16 kHz mono float32 audio and a few sampled
RGB frames, in one pass over the file.

``decode_utterance`` opens the media once and demuxes its audio and video streams
together, honouring a segment (``start_s``/``end_s``, IEMOCAP's dialogue videos) and a
separate audio file (``audio_path``, decoded whole: IEMOCAP's sentence wavs are the segment
itself). It never raises for bad media; it returns a ``Decoded`` whose ``reason`` says what
was wrong:

| reason           | when                                                                  |
|------------------|-----------------------------------------------------------------------|
| unreadable_media | missing, corrupt or truncated file; a path that is a folder, a named  |
|                  | pipe or a device (refused unopened: a pipe would block forever); a    |
|                  | segment outside the media, empty, or with a time that is not finite;  |
|                  | audio with NaN or infinite samples                                    |
| no_audio         | no audio stream (and no separate audio file)                          |
| overlong_clip    | the container says the utterance is longer than ``max_clip_seconds``  |
|                  | (checked before decoding anything; a WAV by the data its file holds) |
| too_short        | the decoded audio is shorter than ``min_clip_seconds`` (a few         |
|                  | samples, a segment of milliseconds): too short for a speaker model    |
|                  | to embed                                                              |
| silence          | the loudest 0.25 s of the audio (30 ms frames) has an RMS below       |
|                  | ``silence_rms``: a dead channel, not a quiet speaker whose pauses     |
|                  | pull the whole clip's RMS under the bar (some RAVDESS recordings)     |
| clipping         | at least ``max_clipped_share`` of the samples at full scale (within   |
|                  | 1 %: ``CLIP_LEVEL``): a square wave, an overdriven channel; no speech |
| no_frames        | video was expected (a video stream, or ``expect_video=True``) and no  |
|                  | frame was decoded                                                     |

Frames: ``n = min(max_frames, max(1, round(duration * frame_rate)))`` frames are taken at
the centres of ``n`` equal slices of the utterance (so ``max_frames`` spreads over a long
clip instead of stopping early), each the first decoded frame at or after its target time.
Frames larger than ``max_side`` are downscaled as each is picked (``scale`` maps their
pixels back to the original frame), so one full-size decoded frame is held at a time.
``frame_times`` are seconds from the utterance start.

A WAV's length is its header's (FFmpeg would take it from the file size and a truncated
WAV would look whole), except where the header cannot be an utterance's: a data size of 0
or 0xFFFFFFFF (a streaming recorder's placeholder) declares nothing, and one declaring more
than ``max_clip_seconds`` over less data than that (a stale size: 10 hours over a 4 s
file) is overruled by the file size. Either way the clip is the data present, judged by
the cap before decoding (a real 5-hour file is refused as cheaply) and not called
truncated. Within the cap, a header declaring more than the file holds is a truncated file
(unreadable_media). A header declaring less than the file holds is obeyed: the clip ends
where the data chunk says (FFmpeg reads no further; the bytes after it may be other
chunks, such as LIST metadata, not samples).

``audio_defect`` is the cheap part of this for a whole file: whether its audio decodes
through to its declared end, by the same truncation rule (``erc corpus ingest --check-media``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import av
import numpy as np

from erc.media.probe import not_a_file
from erc.recipes import MAX_CLIP_SECONDS, DecodeSettings

AUDIO_RATE = 16_000
LOUDEST_S, FRAME_S = 0.25, 0.03  # the silence test's span (about a short word) and frame
CLIP_LEVEL = 0.99  # a sample this close to full scale (1.0) is clipped
DECODE_REASONS = ("unreadable_media", "no_audio", "overlong_clip", "too_short", "silence", "clipping",
                  "no_frames")


@dataclass
class Decoded:
    audio: np.ndarray | None = None  # (samples,) float32 at 16 kHz
    frames: list[np.ndarray] = field(default_factory=list)  # HxWx3 uint8 RGB
    frame_times: list[float] = field(default_factory=list)  # seconds from the utterance start
    scale: float = 1.0  # original pixels per decoded pixel (>= 1 when downscaled)
    duration_s: float | None = None  # of the decoded audio
    reason: str | None = None  # one of DECODE_REASONS, None when fine
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


class _Failure(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _open(path: str):
    if problem := not_a_file(path):
        raise _Failure("unreadable_media", problem)
    try:
        return av.open(str(path), metadata_errors="ignore")
    except Exception as err:
        raise _Failure("unreadable_media", f"{path}: {type(err).__name__}: {err}") from err


def _stream_seconds(container, stream) -> float | None:
    """Declared length of a stream, else of the container."""
    if stream is not None and stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _wav_data_seconds(path: str) -> tuple[float, float] | None:
    """(declared, held): the seconds of audio a WAV header's data chunk declares, and the
    seconds the file's bytes after that chunk's header can hold; None when the header
    declares no length (streamed: 0 or 0xFFFFFFFF; RF64) or is not a WAV's."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
                return None
            byte_rate = None
            while True:
                chunk = handle.read(8)
                if len(chunk) < 8:
                    return None
                name, size = chunk[:4], int.from_bytes(chunk[4:], "little")
                if name == b"fmt ":
                    fmt = handle.read(size + (size & 1))
                    byte_rate = int.from_bytes(fmt[8:12], "little")
                elif name == b"data":
                    if not byte_rate or size in (0, 0xFFFFFFFF):  # streamed / RF64: unknown
                        return None
                    held = max(0, os.fstat(handle.fileno()).st_size - handle.tell())
                    return size / byte_rate, held / byte_rate
                else:
                    handle.seek(size + (size & 1), 1)
    except OSError:
        return None


def _declared_audio_seconds(container, stream, path: str, cap: float | None) -> float | None:
    """The length the container declares for its audio stream (a WAV's from its header,
    or from its data when the header declares more than ``cap`` over less: see the module
    doc)."""
    declared = _stream_seconds(container, stream)
    if "wav" in container.format.name.split(","):
        header = _wav_data_seconds(path)
        if header is not None:
            said, held = header
            stale = cap is not None and said > cap and held < said
            declared = held if stale else said
    return declared


def _truncation(decoded_s: float, declared_s: float | None, tolerance: float) -> str | None:
    """Why ``decoded_s`` seconds of audio mean a truncated file, None when they do not."""
    if declared_s is not None and decoded_s < tolerance * declared_s - 0.25:
        return f"truncated: decoded {decoded_s:.2f} s of audio, container declares {declared_s:.2f} s"
    return None


def audio_defect(path: str, tolerance: float | None = None,
                 max_clip_seconds: float | None = MAX_CLIP_SECONDS) -> str | None:
    """Why the audio stream of ``path`` cannot be decoded through to its declared end (what
    ``decode_utterance`` reports as unreadable_media for the whole file), None when it can or
    the file has no audio stream. Decodes the audio alone and does not resample it: the
    cheap check of ``erc corpus ingest --check-media``. ``max_clip_seconds`` tells a WAV's
    stale header from a truncated file, as in decoding; None is no cap, as in
    ``DecodeSettings`` (every header is taken at its word)."""
    if tolerance is None:
        tolerance = DecodeSettings().truncation_tolerance
    seconds = 0.0
    try:
        with _open(path) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                return None
            declared = _declared_audio_seconds(container, stream, path, max_clip_seconds)
            for packet in container.demux(stream):
                seconds += sum(frame.samples / frame.sample_rate for frame in packet.decode())
    except _Failure as failure:
        return failure.detail
    except Exception as err:
        return f"{path}: its audio stops decoding at {seconds:.2f} s: {type(err).__name__}: {err}"
    if seconds == 0:
        return f"{path}: no audio samples decoded"
    return _truncation(seconds, declared, tolerance)


def loudest_rms(audio: np.ndarray, rate: int = AUDIO_RATE) -> float:
    """RMS of the loudest ``LOUDEST_S`` of ``audio``, over ``FRAME_S`` frames (all of it
    when shorter): whether anyone speaks, whatever the share of pauses in the clip. Each
    frame's mean is taken out first: a dead channel stuck at a constant offset is silence."""
    step = int(rate * FRAME_S)
    n = max(1, audio.size // step)
    frames = audio[: n * step].reshape(n, -1)  # n is 1 for a clip shorter than a frame
    power = np.var(frames, axis=1, dtype=np.float64)
    k = min(n, max(1, round(LOUDEST_S / FRAME_S)))
    return float(np.sqrt(np.mean(np.partition(power, n - k)[n - k:])))


def clipped_share(audio: np.ndarray) -> float:
    """The share of ``audio``'s samples at full scale (``|x| >= CLIP_LEVEL``)."""
    return float(np.count_nonzero(np.abs(audio) >= CLIP_LEVEL)) / max(audio.size, 1)


def _frame_size(width: int, height: int, max_side: int | None) -> tuple[int, int, float]:
    longer = max(width, height)
    if not max_side or longer <= max_side:
        return width, height, 1.0
    factor = max_side / longer
    new_w, new_h = max(2, round(width * factor / 2) * 2), max(2, round(height * factor / 2) * 2)
    return new_w, new_h, width / new_w


class _FramePicker:
    """Keeps the first decoded frame at or after each target time."""

    def __init__(self, start: float, length: float | None, settings: DecodeSettings):
        rate = max(settings.frame_rate, 1e-6)
        if length is not None and length > 0:
            n = min(settings.max_frames, max(1, round(length * rate)))
            step = length / n
        else:  # unknown length: a fixed rate from the start, up to max_frames
            n, step = settings.max_frames, 1.0 / rate
        self.targets = [start + (k + 0.5) * step for k in range(n)]
        self.start = start
        self.max_side = settings.max_side
        self.size: tuple[int, int, float] | None = None  # width, height, scale of the kept frames
        self.picked: list[tuple[float, np.ndarray]] = []
        self.last: tuple[float, av.VideoFrame] | None = None  # fallback: last frame in range

    def _rgb(self, frame) -> np.ndarray:
        """The frame as RGB, downscaled to the first kept frame's size, as soon as it is
        kept: decoded frames held to the end cost 96 MB each at 8000x8000 (gigabytes over
        ``max_frames``)."""
        if self.size is None:
            self.size = _frame_size(frame.width, frame.height, self.max_side)
        width, height, _ = self.size
        return frame.to_ndarray(format="rgb24", width=width, height=height)

    def offer(self, time: float, frame) -> None:
        if time < self.start - 1e-6:
            return
        self.last = (time, frame)
        taken = False
        while self.targets and time >= self.targets[0] - 1e-6:
            self.targets.pop(0)
            if not taken:
                self.picked.append((time, self._rgb(frame)))
                taken = True

    @property
    def done(self) -> bool:
        return not self.targets

    def frames(self) -> list[tuple[float, np.ndarray]]:
        if not self.picked and self.last is not None:
            time, frame = self.last
            return [(time, self._rgb(frame))]
        return self.picked


def _decode(container, audio_stream, video_stream, start: float, end: float | None,
            picker: _FramePicker | None):
    """Demuxes the chosen streams once; returns (audio samples, first audio time, frames)."""
    streams = [s for s in (audio_stream, video_stream) if s is not None]
    if start > 0:
        container.seek(int(start * av.time_base), backward=True)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE) if audio_stream else None
    chunks: list[np.ndarray] = []
    audio_t0: float | None = None
    audio_done = audio_stream is None
    video_done = video_stream is None or picker is None
    reached = start  # the last frame's time: where a damaged file stops decoding
    try:
        for packet in container.demux(*streams):
            is_audio = packet.stream is audio_stream
            if (audio_done if is_audio else video_done) and packet.dts is not None:
                continue
            for frame in packet.decode():
                t = frame.time
                reached = t if t is not None else reached
                if is_audio:
                    if t is not None and end is not None and t > end:
                        audio_done = True
                        break
                    if audio_t0 is None:
                        audio_t0 = t if t is not None else 0.0
                    chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
                else:
                    if t is None:
                        continue
                    if end is not None and t > end:
                        video_done = True
                        break
                    picker.offer(t, frame)
                    if picker.done:
                        video_done = True
                        break
            if audio_done and video_done:
                break
    except av.error.FFmpegError as err:
        raise _Failure("unreadable_media", f"{container.name}: decoding stops at {reached:.2f} s, "
                                           f"a truncated or corrupt file: {type(err).__name__}: {err}"
                       ) from err
    if resampler is not None:
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)
    return audio, audio_t0, (picker.frames() if picker else [])


def _trim(audio: np.ndarray, t0: float | None, start: float, end: float | None) -> np.ndarray:
    t0 = t0 or 0.0
    first = max(0, int(round((start - t0) * AUDIO_RATE)))
    last = None if end is None else max(first, int(round((end - t0) * AUDIO_RATE)))
    return audio[first:last]


def decode_utterance(media_path: str | None, audio_path: str | None = None,
                     start_s: float | None = None, end_s: float | None = None,
                     settings: DecodeSettings | None = None) -> Decoded:
    """Decodes one utterance. Never raises for bad media: see the module doc for reasons."""
    settings = settings or DecodeSettings()
    try:
        return _decode_utterance(media_path, audio_path, start_s, end_s, settings)
    except _Failure as failure:
        return Decoded(reason=failure.reason, detail=failure.detail)
    except Exception as err:
        return Decoded(reason="unreadable_media",
                       detail=f"{media_path or audio_path}: {type(err).__name__}: {err}")


def _decode_utterance(media_path, audio_path, start_s, end_s, settings: DecodeSettings) -> Decoded:
    if not media_path and not audio_path:
        raise _Failure("unreadable_media", "the utterance names no media")
    separate_audio = bool(audio_path) and audio_path != media_path
    for name, value in (("start_s", start_s), ("end_s", end_s)):
        if value is not None and not np.isfinite(value):
            raise _Failure("unreadable_media", f"the segment's {name} is {value}, not a time")
    start = max(0.0, float(start_s)) if start_s is not None else 0.0
    end = float(end_s) if end_s is not None else None
    if end is not None and end <= start:
        raise _Failure("unreadable_media", f"the segment is empty: it ends at {end:.7g} s, "
                                           f"not after its start at {start:.7g} s")

    containers = []
    try:
        media = _open(media_path) if media_path else None
        if media is not None:
            containers.append(media)
        audio_container = _open(audio_path) if separate_audio else media
        if separate_audio:
            containers.append(audio_container)

        audio_stream = next((s for s in audio_container.streams if s.type == "audio"), None)
        video_stream = None
        if media is not None and settings.expect_video is not False:
            video_stream = next((s for s in media.streams if s.type == "video"), None)
        expect_video = video_stream is not None if settings.expect_video is None else settings.expect_video

        # Streams and length, from the containers, before decoding anything.
        if audio_stream is None:
            where = audio_path if separate_audio else media_path
            raise _Failure("no_audio", f"{where} has no audio stream")
        audio_declared = _declared_audio_seconds(audio_container, audio_stream,
                                                 audio_path if separate_audio else media_path,
                                                 settings.max_clip_seconds)
        if media is None:
            media_total = None
        elif video_stream is not None:
            media_total = _stream_seconds(media, video_stream)
        elif not separate_audio:
            media_total = audio_declared
        else:
            media_total = _stream_seconds(media, None)
        if media_total is not None and start >= media_total:
            raise _Failure("unreadable_media",
                           f"segment starts at {start:.7g} s, after the end of {media_path} "
                           f"({media_total:.2f} s)")
        seg_end = end if end is not None else media_total
        if seg_end is not None and media_total is not None:
            seg_end = min(seg_end, media_total)
        length = (seg_end - start) if seg_end is not None else None
        if separate_audio:
            audio_length = audio_declared
        elif audio_declared is not None:
            audio_length = max(0.0, min(seg_end if seg_end is not None else audio_declared,
                                        audio_declared) - start)
        else:
            audio_length = length
        longest = max((x for x in (length, audio_length) if x is not None), default=None)
        if settings.max_clip_seconds is not None and longest is not None \
                and longest > settings.max_clip_seconds:
            raise _Failure("overlong_clip",
                           f"{longest:.1f} s > cap {settings.max_clip_seconds:g} s")
        if expect_video and video_stream is None:
            raise _Failure("no_frames", f"{media_path} has no video stream")

        picker = _FramePicker(start, length, settings) if video_stream is not None else None
        if separate_audio:
            audio, t0, _ = _decode(audio_container, audio_stream, None, 0.0, None, None)
            audio = _trim(audio, t0, 0.0, None)
            frames = _decode(media, None, video_stream, start, end, picker)[2] if picker else []
        else:
            audio, t0, frames = _decode(media, audio_stream, video_stream, start, end, picker)
            audio = _trim(audio, t0, start, end)
    finally:
        for container in containers:
            container.close()

    duration = audio.size / AUDIO_RATE
    truncated = _truncation(duration, audio_length, settings.truncation_tolerance)
    if truncated:  # before the empty case: a segment past where a cut file stops is truncation
        raise _Failure("unreadable_media", truncated)
    if audio.size == 0:
        raise _Failure("unreadable_media", "no audio samples decoded"
                       + (f" in segment {start:.2f}-{end:.2f} s" if end is not None else ""))
    bad = int(audio.size - np.count_nonzero(np.isfinite(audio)))
    if bad:  # a damaged float stream: every model downstream would fail on it
        raise _Failure("unreadable_media", f"the audio holds {bad} NaN or infinite samples "
                                           f"of {audio.size}")
    result = Decoded(audio=audio, duration_s=duration)
    if frames:
        result.scale = picker.size[2]
        for time, rgb in frames:
            result.frames.append(rgb)
            result.frame_times.append(round(time - start, 4))
    rms = loudest_rms(audio)
    if duration < settings.min_clip_seconds:  # before silence: one sample has no variance
        result.reason, result.detail = "too_short", (f"{duration * 1000:.1f} ms of audio, shorter "
                                                     f"than min_clip_seconds {settings.min_clip_seconds:g} s")
    elif rms < settings.silence_rms:
        result.reason, result.detail = "silence", (f"audio RMS {rms:.2e} over its loudest "
                                                   f"{LOUDEST_S:g} s < {settings.silence_rms:g}")
    elif (clipped := clipped_share(audio)) >= settings.max_clipped_share:
        result.reason, result.detail = "clipping", (f"{clipped:.1%} of the audio samples are at "
                                                    f"full scale (|x| >= {CLIP_LEVEL:g}); "
                                                    f"the bar is {settings.max_clipped_share:.0%}")
    elif expect_video and not result.frames:
        result.reason, result.detail = "no_frames", f"{media_path}: the video stream yielded no frame"
    return result
