"""Voice activity: where in a clip someone is speaking (webrtcvad, the WebRTC GMM detector).

    segments = speech_segments(audio)          # 16 kHz mono float32 -> [(start_s, end_s), ...]

The audio is cut into 30 ms frames; each frame is voiced or not by webrtcvad at
``aggressiveness`` 2 (0 keeps the most frames as speech, 3 the fewest). Voiced frames merge
into segments; gaps shorter than ``bridge_s`` are closed (the pauses between words) and
segments shorter than ``min_segment_s`` dropped (clicks). QC compares the speech's extent
and total length with the transcript (``erc.qc.timing``).
"""

from __future__ import annotations

import numpy as np

RATE = 16000
FRAME_MS = 30


def speech_segments(audio: np.ndarray, rate: int = RATE, aggressiveness: int = 2,
                    bridge_s: float = 0.15,
                    min_segment_s: float = 0.06) -> list[tuple[float, float]]:
    """Voiced segments (seconds from the clip start) of mono float audio in [-1, 1]."""
    import webrtcvad

    if rate not in (8000, 16000, 32000, 48000):
        raise ValueError(f"webrtcvad needs 8, 16, 32 or 48 kHz audio, got {rate} Hz")
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    step = rate * FRAME_MS // 1000
    n = len(audio) // step
    if n == 0:
        return []
    pcm = (np.clip(audio[: n * step], -1.0, 1.0) * 32767).astype("<i2")
    vad = webrtcvad.Vad(aggressiveness)
    voiced = [vad.is_speech(pcm[k * step:(k + 1) * step].tobytes(), rate) for k in range(n)]
    frame = FRAME_MS / 1000
    segments: list[list[float]] = []
    for k, v in enumerate(voiced):
        if not v:
            continue
        start, end = k * frame, (k + 1) * frame
        if segments and start - segments[-1][1] < bridge_s:
            segments[-1][1] = end
        else:
            segments.append([start, end])
    return [(round(s, 3), round(e, 3)) for s, e in segments if e - s >= min_segment_s]
