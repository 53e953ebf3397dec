"""The bad media campaign: malformed media of kinds the decode tests do not build (odd
sample formats and rates, audio-only and single-frame containers, huge frames, files that
are not media, impossible segments, a long file cut short, clips of a few samples or
milliseconds), each built here from scratch
and run as one batch through the decode stage of the pass (no Ray). For each row the
outcome must be the one its case names: status ok, or failed with the reason it provokes
and a detail saying what to fix; no exception escapes, no row is lost, nothing hangs.

Kinds already covered elsewhere (tests/test_decode.py, test_media_samples.py): a missing
file, zero bytes, random bytes, a truncated mp4 (index at either end), a truncated or
mis-sized WAV header, NaN/infinite float samples, video without audio, silence, a DC
offset, clipping, an overlong clip, a video stream without frames, a segment after the end.

The counts (kinds tried, ok, failed with their reason, rows lost) are printed at the end
(``pytest -s``) and asserted.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from erc.features import INPUT_COLUMNS
from erc.media.decode import DECODE_REASONS
from erc.pipeline.stages import DecodeStage
from erc.recipes import DecodeSettings

SECONDS = 3.0


def ffmpeg(out: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args, str(out)], check=True)
    return out


def tone(rate: int = 48_000) -> list[str]:
    """A 3 s tone at about -18 dBFS: neither silence nor clipping."""
    return ["-f", "lavfi", "-i", f"sine=frequency=220:sample_rate={rate}:duration={SECONDS}"]


def wav_bytes(path: Path, data: bytes, fmt_tag: int, channels: int, rate: int, bits: int) -> Path:
    """A WAV whose header says exactly what it is given, sane or not."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def speech_pcm(seconds: float = 1.0) -> bytes:
    return (3000 * np.sin(np.arange(int(16_000 * seconds)) / 5)).astype("<i2").tobytes()


def long_cut(t: Path) -> Path:
    """A 120 s clip with its index at the front, cut to its first quarter: it opens, and its
    header still says 120 s."""
    whole = ffmpeg(t / "whole.mp4", *tone(16_000)[:-1], "sine=frequency=220:sample_rate=16000:duration=120",
                   "-f", "lavfi", "-i", "testsrc=size=32x32:rate=1:duration=120", "-c:v", "libx264",
                   "-c:a", "aac", "-movflags", "+faststart")
    data = whole.read_bytes()
    cut = t / "cut.mp4"
    cut.write_bytes(data[: len(data) // 4])
    return cut


def clip(t: Path) -> Path:
    return ffmpeg(t / "clip.mp4", *tone(), "-f", "lavfi", "-i", f"testsrc=size=64x64:rate=5:duration={SECONDS}",
                  "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac")


def single_frame(t: Path, size: str) -> Path:
    """One video frame at the start, then 3 s of audio."""
    frame = ffmpeg(t / "frame.mkv", "-f", "lavfi", "-i", f"color=c=gray:size={size}:rate=1",
                   "-frames:v", "1", "-c:v", "mjpeg")
    return ffmpeg(t / "single_frame.mkv", "-i", str(frame), *tone(), "-c:v", "copy", "-c:a", "pcm_s16le")


def fifo(t: Path) -> Path:
    os.mkfifo(t / "pipe.wav")
    return t / "pipe.wav"


def a_folder(t: Path, name: str) -> Path:
    (t / name).mkdir()
    return t / name


def html_page(t: Path) -> Path:
    (t / "page.mp4").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>\n")
    return t / "page.mp4"


def sparse_zeros(t: Path) -> Path:
    with open(t / "zeros.mp4", "wb") as handle:
        handle.truncate(2 << 30)
    return t / "zeros.mp4"


@dataclass
class Case:
    name: str
    build: Callable[[Path], dict]  # the row's media_path / audio_path / start_s / end_s
    reason: str | None  # None: status ok
    detail: tuple[str, ...] = ()  # parts the failure_detail must hold
    frames: int | None = None  # frames an ok row must have
    seconds: float | None = None  # the audio an ok row must have (None: about SECONDS)


CASES: list[Case] = []


def case(name, build, reason=None, detail=(), frames=None, seconds=None):
    CASES.append(Case(name, build, reason, detail, frames, seconds))


def media(build: Callable[[Path], Path], **segment) -> Callable[[Path], dict]:
    return lambda t: {"media_path": str(build(t)), **segment}


# Sample formats, rates and codecs: all decode to 16 kHz mono.
case("6-channel 48 kHz WAV", media(lambda t: ffmpeg(t / "a.wav", *tone(), "-ac", "6", "-c:a", "pcm_s16le")))
case("192 kHz 24-bit WAV", media(lambda t: ffmpeg(t / "a.wav", *tone(192_000), "-c:a", "pcm_s24le")))
case("8-bit unsigned WAV", media(lambda t: ffmpeg(t / "a.wav", *tone(), "-c:a", "pcm_u8")))
case("64-bit float WAV", media(lambda t: ffmpeg(t / "a.wav", *tone(), "-c:a", "pcm_f64le")))
case("mp3", media(lambda t: ffmpeg(t / "a.mp3", *tone(), "-c:a", "libmp3lame")))
case("ogg vorbis", media(lambda t: ffmpeg(t / "a.ogg", *tone(), "-c:a", "libvorbis")))
case("opus", media(lambda t: ffmpeg(t / "a.opus", *tone(), "-c:a", "libopus")))
case("audio-only .mp4", media(lambda t: ffmpeg(t / "a.mp4", *tone(), "-c:a", "aac")), frames=0)
# A float WAV far beyond full scale holds no usable speech.
case("float WAV at 30x full scale", media(lambda t: wav_bytes(
    t / "loud.wav", (30 * np.sin(np.arange(32_000) / 5)).astype("<f4").tobytes(), 3, 1, 16_000, 32)),
    "clipping", ("full scale",))
# Headers no decoder can take.
case("WAV header with a 0 Hz rate", media(lambda t: wav_bytes(t / "a.wav", speech_pcm(), 1, 1, 0, 16)),
     "unreadable_media", ("a.wav",))
case("WAV header with 0 channels", media(lambda t: wav_bytes(t / "a.wav", speech_pcm(), 1, 0, 16_000, 16)),
     "unreadable_media", ("a.wav",))

# Video: a single frame (small, and 8000x8000: downscaled, one frame's memory).
case("single-frame video", media(lambda t: single_frame(t, "64x64")), frames=1)
case("single 8000x8000 frame", media(lambda t: single_frame(t, "8000x8000")), frames=1)
case("segment after a single frame", media(lambda t: single_frame(t, "64x64"), start_s=1.0, end_s=2.5),
     "no_frames", ("yielded no frame",))
case("still PNG named .mp4", media(lambda t: ffmpeg(t / "still.mp4", "-f", "lavfi", "-i", "testsrc=size=64x64",
                                                    "-frames:v", "1", "-f", "image2", "-c:v", "png")),
     "no_audio", ("still.mp4", "no audio stream"))


def subtitles_only(t: Path) -> Path:
    (t / "s.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    return ffmpeg(t / "subs.mkv", "-i", str(t / "s.srt"))


case("subtitles-only .mkv", media(subtitles_only), "no_audio", ("subs.mkv", "no audio stream"))

# Files that are not media at all. A named pipe made FFmpeg wait for a writer forever.
case("HTML page named .mp4", media(html_page), "unreadable_media", ("page.mp4", "Invalid data"))
case("folder named clip.mp4", media(lambda t: a_folder(t, "clip.mp4")), "unreadable_media",
     ("clip.mp4 is a folder",))
case("named pipe named .wav", media(fifo), "unreadable_media", ("pipe.wav is a named pipe",))
case("a device (/dev/zero)", lambda t: {"media_path": "/dev/zero"}, "unreadable_media", ("/dev/zero is a device",))
case("2 GiB of zero bytes", media(sparse_zeros), "unreadable_media", ("zeros.mp4",))
case("separate audio is a folder", lambda t: {"media_path": str(clip(t)),
                                              "audio_path": str(a_folder(t, "audio.wav"))},
     "unreadable_media", ("audio.wav is a folder",))

# Segments no clip can have: empty, inverted, not a number.
case("segment ends before it starts", media(clip, start_s=2.0, end_s=1.0), "unreadable_media",
     ("segment is empty",))
case("segment of zero length", media(clip, start_s=1.0, end_s=1.0), "unreadable_media", ("segment is empty",))
case("segment ends at infinity", media(clip, start_s=0.0, end_s=float("inf")), "unreadable_media",
     ("end_s is inf",))
case("segment starts at NaN", media(clip, start_s=float("nan"), end_s=2.0), "unreadable_media",
     ("start_s is nan",))
case("segment running past the end", media(clip, start_s=2.5, end_s=50.0))
case("segment starting at 1e300 s", media(clip, start_s=1e300, end_s=None), "unreadable_media",
     ("segment starts at 1e+300 s, after the end",))  # said in 7 digits, not 301

# A long file cut short, its header still whole.
case("header says 120 s, file cut", media(long_cut), "overlong_clip", ("120.0 s > cap 60 s",))
case("segment inside what is left", media(long_cut, start_s=1.0, end_s=4.0), frames=3)
case("segment past where it was cut", media(long_cut, start_s=100.0, end_s=104.0), "unreadable_media",
     ("truncated",))

# Clips of a few samples or milliseconds: too short for any speaker model (one sample was
# "silence", the others passed decoding and failed in the speaker stage as "silence").
MINIMUM = f"min_clip_seconds {DecodeSettings().min_clip_seconds:g} s"


def short_wav(t: Path, samples: int) -> Path:
    return wav_bytes(t / "short.wav", speech_pcm(samples / 16_000), 1, 1, 16_000, 16)


def short_mp4(t: Path, seconds: float, video: bool) -> Path:
    """AAC pads its last frame: 20 ms of tone decodes to 64 ms of audio."""
    picture = ["-f", "lavfi", "-i", f"testsrc=size=64x64:rate=25:duration={seconds}", "-c:v", "libx264",
               "-pix_fmt", "yuv420p"] if video else []
    return ffmpeg(t / "short.mp4", "-f", "lavfi", "-i", f"sine=frequency=220:sample_rate=16000:duration={seconds}",
                  *picture, "-c:a", "aac")


case("WAV of 1 sample", media(lambda t: short_wav(t, 1)), "too_short", ("0.1 ms of audio", MINIMUM))
case("WAV of 10 samples", media(lambda t: short_wav(t, 10)), "too_short", ("0.6 ms of audio", MINIMUM))
case("WAV of 20 ms", media(lambda t: short_wav(t, 320)), "too_short", ("20.0 ms of audio", MINIMUM))
case("WAV of 100 ms, the minimum", media(lambda t: short_wav(t, 1600)), seconds=0.1)
case("audio-only .mp4 of 20 ms", media(lambda t: short_mp4(t, 0.02, False)), "too_short",
     ("64.0 ms of audio", MINIMUM))
case(".mp4 of 20 ms with video", media(lambda t: short_mp4(t, 0.02, True)), "too_short",
     ("64.0 ms of audio", MINIMUM))
case(".mp4 of 100 ms with video", media(lambda t: short_mp4(t, 0.1, True)), frames=1, seconds=0.128)
case("segment of 5 ms", media(clip, start_s=1.0, end_s=1.005), "too_short", ("5.0 ms of audio", MINIMUM))
case("segment of 5 ms of a WAV", media(lambda t: ffmpeg(t / "a.wav", *tone(16_000)), start_s=1.0, end_s=1.005),
     "too_short", ("5.0 ms of audio", MINIMUM))


SCHEMA = pa.schema([("utterance_id", pa.string()), ("text", pa.string()), ("media_path", pa.string()),
                    ("audio_path", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64())])


def _decode_in_time(batch: pa.Table, seconds: float) -> pa.Table:
    """The decode stage on the batch, or a failure naming a hang (a worker thread: a hung
    open cannot be interrupted)."""
    done: dict = {}

    def work():
        try:
            done["out"] = DecodeStage(DecodeSettings())(batch)
        except BaseException as err:  # reported as the campaign's failure
            done["error"] = err

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        for path in batch.column("media_path").to_pylist():  # let a reader blocked on a pipe go
            if path and Path(path).is_fifo():
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        raise AssertionError(f"decoding the batch hung for {seconds:.0f} s")
    if "error" in done:
        raise AssertionError(f"an exception escaped the decode stage: {done['error']!r}")
    return done["out"]


def test_bad_media_campaign(tmp_path, capsys):
    rows = []
    for number, case_ in enumerate(CASES):
        folder = tmp_path / f"case{number:02d}"
        folder.mkdir()
        rows.append({"utterance_id": case_.name, "text": "a transcript", "audio_path": None,
                     "start_s": None, "end_s": None, **case_.build(folder)})
    assert set(INPUT_COLUMNS) == set(SCHEMA.names)
    out = _decode_in_time(pa.Table.from_pylist(rows, schema=SCHEMA), seconds=60).to_pylist()

    got = {row["utterance_id"]: row for row in out}
    lost = len(rows) - len(got)
    failures = []
    for case_ in CASES:
        row = got.get(case_.name)
        if row is None:
            failures.append(f"{case_.name}: row lost")
            continue
        said = f"{row['status']} {row['failure_reason']}: {row['failure_detail']}"
        if case_.reason is None:
            if row["status"] != "ok":
                failures.append(f"{case_.name}: expected ok, got {said}")
            elif not row["_audio"] or (not 0.5 < row["duration_s"] <= SECONDS + 0.1 if case_.seconds is None
                                       else abs(row["duration_s"] - case_.seconds) > 1e-3):
                failures.append(f"{case_.name}: ok with {row['duration_s']} s of audio")
            elif case_.frames is not None and row["n_frames"] != case_.frames:
                failures.append(f"{case_.name}: {row['n_frames']} frames, expected {case_.frames}")
            elif row["n_frames"] and max(row["_frame_shape"][:2]) > DecodeSettings().max_side:
                failures.append(f"{case_.name}: frames of {row['_frame_shape']} not downscaled")
            continue
        if row["status"] != "failed" or row["failure_reason"] != case_.reason:
            failures.append(f"{case_.name}: expected failed {case_.reason}, got {said}")
        elif missing := [part for part in case_.detail if part not in (row["failure_detail"] or "")]:
            failures.append(f"{case_.name}: detail lacks {missing}: {row['failure_detail']!r}")
        elif row["_audio"] is not None or row["_frames"] is not None:
            failures.append(f"{case_.name}: a failed row carries media to the model stages")
    ok = sum(1 for c in CASES if c.reason is None)
    with capsys.disabled():
        print(f"\nbad media campaign: {len(CASES)} kinds tried, {ok} decoded ok, "
              f"{len(CASES) - ok} failed with their reason, rows lost: {lost}, "
              f"failures: {len(failures)}")
    assert not failures, "\n".join(failures)
    assert lost == 0 and len(out) == len(rows)


# The peak is the process's own resident high-water mark (VmHWM): getrusage's ru_maxrss
# keeps the parent's peak across fork and exec, so under a long pytest run it reads pytest.
HUGE_FRAMES = """
import re, sys
from pathlib import Path
from erc.media.decode import decode_utterance
got = decode_utterance(sys.argv[1])
assert got.ok and len(got.frames) >= 9 and got.frames[0].shape == (480, 480, 3), got
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) // 1024)
"""


def test_huge_frames_are_downscaled_as_they_are_picked(tmp_path):
    """Ten 8000x8000 frames (96 MB each decoded) were all held until the end of decoding,
    over 1.1 GB at once; each is now downscaled as soon as it is picked: one decoded frame
    at a time. Measured in a process of its own (peak memory only grows)."""
    video = ffmpeg(tmp_path / "huge.mkv", "-f", "lavfi", "-i", "color=c=gray:size=8000x8000:rate=1:duration=10",
                   "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000:duration=10",
                   "-c:v", "mjpeg", "-q:v", "31", "-c:a", "pcm_s16le")
    peak_mb = int(subprocess.run([sys.executable, "-c", HUGE_FRAMES, str(video)], check=True,
                                 capture_output=True, text=True).stdout)
    assert peak_mb < 600, f"peak memory {peak_mb} MB decoding ten 8000x8000 frames"


def test_audio_too_short_for_the_speaker_model_says_its_length(tmp_path):
    """Past decoding's minimum the speaker model has its own (Resemblyzer: 0.3 s of voice):
    a 0.2 s tone failed there as "silence" with no length; it is too_short and says how
    long it is. A row the model raises on names its audio's length. No row is lost."""
    from dataclasses import asdict

    from erc.backends.registry import profile_specs, resolve
    from erc.pipeline.preprocess import FAILURE_REASONS
    from erc.pipeline.stages import SpeakerStage

    assert set(DECODE_REASONS) <= set(FAILURE_REASONS)  # every reason decode gives is documented
    rows = [{"utterance_id": name, "text": "a transcript", "media_path": str(path), "audio_path": None,
             "start_s": None, "end_s": None}
            for name, path in [("tone of 0.2 s", short_wav(tmp_path, 3200)),
                               ("tone of 3 s", ffmpeg(tmp_path / "a.wav", *tone(16_000)))]]
    decoded = DecodeStage(DecodeSettings())(pa.Table.from_pylist(rows, schema=SCHEMA))
    assert decoded.column("status").to_pylist() == ["ok", "ok"]
    broken = decoded.column("_audio").to_pylist()
    broken[1] = np.full(16_000, np.nan, np.float32).tobytes()  # what no decoder gives: the model raises
    decoded = decoded.set_column(decoded.schema.get_field_index("_audio"), "_audio",
                                 pa.array(broken, pa.large_binary()))
    stage = SpeakerStage({"speaker": asdict(resolve(profile_specs("offline")["speaker"]))}, num_cpus=1)
    out = stage(decoded).select(["utterance_id", "status", "failure_reason", "failure_detail"]).to_pylist()
    assert [row["utterance_id"] for row in out] == [row["utterance_id"] for row in rows]
    assert out[0]["failure_reason"] == "too_short"
    assert out[0]["failure_detail"] == "speaker: 0.200 s of audio, the speaker model embeds 0.3 s or more"
    assert out[1]["failure_reason"] == "model_error"
    assert out[1]["failure_detail"].startswith("speaker: ValueError")
    assert out[1]["failure_detail"].endswith("(on 1.000 s of audio)")
