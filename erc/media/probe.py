"""Opening media files without decoding them: duration and streams (PyAV)."""

from __future__ import annotations

from dataclasses import dataclass

import av


@dataclass
class MediaInfo:
    duration_s: float | None
    has_audio: bool
    has_video: bool
    error: str | None = None  # set when the file cannot be opened


def probe(path: str) -> MediaInfo:
    """Reads the container header of ``path``; never raises for a bad file."""
    try:
        with av.open(path) as container:
            audio = [s for s in container.streams if s.type == "audio"]
            video = [s for s in container.streams if s.type == "video"]
            duration = None
            if container.duration is not None:
                duration = container.duration / av.time_base
            else:
                for stream in audio + video:
                    if stream.duration is not None and stream.time_base is not None:
                        duration = max(duration or 0.0, float(stream.duration * stream.time_base))
            return MediaInfo(duration, bool(audio), bool(video))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        return MediaInfo(None, False, False, f"{type(err).__name__}: {err}")
