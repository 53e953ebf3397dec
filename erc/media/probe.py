"""Opening media files without decoding them: duration and streams (PyAV)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import av


@dataclass
class MediaInfo:
    duration_s: float | None
    has_audio: bool
    has_video: bool
    error: str | None = None  # set when the file cannot be opened


def not_a_file(path: str) -> str | None:
    """Why ``path`` cannot be media although it exists (a folder, a named pipe, a device),
    None for a regular file or a path that does not exist. Asked before FFmpeg opens it:
    opening a named pipe waits for a writer forever, and a device may never end."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    return f"{path} is {kind}, not a media file"


def probe(path: str) -> MediaInfo:
    """Reads the container header of ``path``; never raises for a bad file."""
    if problem := not_a_file(path):
        return MediaInfo(None, False, False, problem)
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
