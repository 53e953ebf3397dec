"""Audio whose samples are broken rather than its container: a float WAV holding NaN or
infinite samples is recorded as unreadable_media at decode (before: it passed as fine,
and failed later in every model as ``model_error``)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from erc.media.decode import AUDIO_RATE, decode_utterance
from erc.media.vad import speech_segments


def _float_wav(path: Path, samples: np.ndarray, rate: int = AUDIO_RATE) -> Path:
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)  # IEEE float, mono
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def _tone(seconds: float = 1.0, rate: int = AUDIO_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_nan_and_infinite_samples_are_unreadable_media(tmp_path):
    some_nan = _tone()
    some_nan[::100] = np.nan
    some_inf = _tone(rate=48_000)  # resampled to 16 kHz on the way
    some_inf[1000:1100] = np.inf
    for name, samples, rate in (("nan.wav", some_nan, AUDIO_RATE), ("inf.wav", some_inf, 48_000),
                                ("all_nan.wav", np.full(AUDIO_RATE, np.nan, np.float32), AUDIO_RATE)):
        got = decode_utterance(str(_float_wav(tmp_path / name, samples, rate)))
        assert got.reason == "unreadable_media", (name, got)
        assert "NaN or infinite samples" in got.detail and got.audio is None
    fine = decode_utterance(str(_float_wav(tmp_path / "fine.wav", _tone())))
    assert fine.ok and np.isfinite(fine.audio).all()
    speech_segments(fine.audio)

