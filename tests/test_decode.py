"""Decoding real media with PyAV: audio at 16 kHz, sampled frames, segments, separate audio
files, the duration cap, and every kind of bad file classified (never raised)."""

from __future__ import annotations

import os
import subprocess
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from erc.media.decode import AUDIO_RATE, DecodeSettings, audio_defect, clipped_share, decode_utterance
from tests.conftest import REPO, make_clip, shared_path

CLIPS = REPO / "erc" / "samples" / "ravdess_dialogues" / "clips"


def _wav(path: Path, samples: np.ndarray, rate: int = AUDIO_RATE) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


def _declared_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def test_sample_clip_gives_16k_audio_and_frames_at_the_rate():
    clip = CLIPS / "sample_d01_t00.mp4"
    got = decode_utterance(str(clip), settings=DecodeSettings(frame_rate=2.0, max_side=None))
    assert got.ok, got.detail
    assert got.audio.dtype == np.float32 and got.audio.ndim == 1
    assert got.duration_s == pytest.approx(got.audio.size / AUDIO_RATE)
    assert got.duration_s == pytest.approx(_declared_seconds(clip), abs=0.1)
    assert 0.01 < np.sqrt(np.mean(got.audio ** 2)) and np.abs(got.audio).max() <= 1.0
    # 2 fps over ~3.8 s: about 8 frames, spread over the clip, of the clip's full size
    assert abs(len(got.frames) - round(got.duration_s * 2)) <= 1
    assert all(f.shape == (224, 398, 3) and f.dtype == np.uint8 for f in got.frames)
    assert got.frame_times == sorted(got.frame_times)
    assert 0 <= got.frame_times[0] < 0.6 and got.frame_times[-1] <= got.duration_s
    assert got.scale == 1.0


def test_max_frames_spreads_and_max_side_downscales():
    clip = str(CLIPS / "sample_d01_t00.mp4")
    got = decode_utterance(clip, settings=DecodeSettings(frame_rate=5.0, max_frames=3, max_side=200))
    assert got.ok and len(got.frames) == 3
    assert got.frames[0].shape == (112, 200, 3)
    assert got.scale == pytest.approx(398 / 200)
    # spread over the whole clip, not the first 0.6 s
    assert got.frame_times[-1] > got.duration_s / 2
    none = decode_utterance(clip, settings=DecodeSettings(expect_video=False))
    assert none.ok and none.frames == [] and none.audio.size == pytest.approx(got.audio.size, abs=1)


def test_segment_matches_the_same_span_of_the_whole_file(tmp_path):
    clip = str(CLIPS / "sample_d01_t00.mp4")
    whole = decode_utterance(clip)
    part = decode_utterance(clip, start_s=1.0, end_s=2.5)
    assert part.ok, part.detail
    assert part.duration_s == pytest.approx(1.5, abs=0.03)
    assert all(0 <= t <= 1.5 for t in part.frame_times) and part.frames
    # the middle of the segment is the same audio as that span of the whole clip
    a = part.audio[AUDIO_RATE // 4: AUDIO_RATE]
    offset = int(1.25 * AUDIO_RATE)
    b = whole.audio[offset: offset + a.size]
    assert np.corrcoef(a, b)[0, 1] > 0.99
    outside = decode_utterance(clip, start_s=30.0, end_s=31.0)
    assert outside.reason == "unreadable_media" and "after the end" in outside.detail


def test_separate_audio_file_and_audio_only_media(tmp_path):
    video = make_clip(tmp_path / "silent_video.mp4", seconds=2.0, audio=False)
    t = np.arange(int(1.5 * AUDIO_RATE)) / AUDIO_RATE
    speech = _wav(tmp_path / "speech.wav", 0.3 * np.sin(2 * np.pi * 220 * t))
    got = decode_utterance(str(video), str(speech), start_s=0.5, end_s=1.5)
    assert got.ok, got.detail
    # the separate audio is the utterance itself: decoded whole, not cut to the segment
    assert got.duration_s == pytest.approx(1.5, abs=0.01)
    assert got.frames and all(0 <= t <= 1.0 for t in got.frame_times)

    audio_only = decode_utterance(str(speech))
    assert audio_only.ok and audio_only.frames == [] and audio_only.duration_s == pytest.approx(1.5, abs=0.01)
    same = decode_utterance(str(speech), str(speech))  # RAVDESS audio rows name the file twice
    assert same.ok and same.audio.size == audio_only.audio.size
    wanted = decode_utterance(str(speech), settings=DecodeSettings(expect_video=True))
    assert wanted.reason == "no_frames"


def test_real_recordings_decode(tmp_path):
    flac = next(shared_path("assets", "speech", "ravdess16k", "Actor_01").glob("*.flac"))
    got = decode_utterance(str(flac))
    assert got.ok and got.duration_s > 1.0 and not got.frames
    video = shared_path("assets", "faces", "known_identities", "videos", "video.mp4")
    got = decode_utterance(str(video), settings=DecodeSettings(max_side=480))
    assert got.ok and got.duration_s == pytest.approx(4.2, abs=0.2)
    assert got.frames[0].shape[1] == 480 and got.scale == pytest.approx(4.0)


@pytest.mark.parametrize("kind", ["missing", "zero_bytes", "random_bytes", "truncated", "truncated_faststart"])
def test_broken_files_are_unreadable(tmp_path, kind):
    good = make_clip(tmp_path / "good.mp4", seconds=2.0)
    path = tmp_path / f"{kind}.mp4"
    if kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(20_000))
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_faststart":  # index at the front: opens, then runs out of data
        front = tmp_path / "front.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(good), "-c", "copy",
                        "-movflags", "+faststart", str(front)], check=True)
        data = front.read_bytes()
        path.write_bytes(data[: int(len(data) * 0.6)])
    got = decode_utterance(str(path))
    assert got.reason == "unreadable_media" and got.detail and got.audio is None
    assert audio_defect(str(path)), kind  # ingest's media check finds it too


def test_truncated_wav_is_caught_by_its_declared_length(tmp_path):
    t = np.arange(2 * AUDIO_RATE) / AUDIO_RATE
    full = _wav(tmp_path / "full.wav", 0.3 * np.sin(2 * np.pi * 220 * t))
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 3])  # the header still says 2 s
    got = decode_utterance(str(cut))
    assert got.reason == "unreadable_media" and "truncated" in got.detail
    assert "truncated" in audio_defect(str(cut)) and audio_defect(str(full)) is None


def _with_data_size(wav: Path, out: Path, data_bytes: int) -> Path:
    """``wav`` with its header's RIFF and data sizes rewritten (the samples untouched)."""
    data = bytearray(wav.read_bytes())
    at = data.index(b"data") + 4
    data[at:at + 4] = data_bytes.to_bytes(4, "little")
    data[4:8] = min(0xFFFFFFFF, data_bytes + at + 4 - 8).to_bytes(4, "little")
    out.write_bytes(bytes(data))
    return out


def test_a_wav_header_overstating_its_length_is_judged_by_its_data(tmp_path):
    """A streaming recorder's header (0xFFFFFFFF, or a stale 10 hours over 3.8 s of
    samples) was an overlong_clip (or a truncated file to the media check): the clip is the
    data present, judged by the cap; a header over more than the cap of real data is still
    refused, before decoding anything."""
    t = np.arange(int(3.8 * AUDIO_RATE)) / AUDIO_RATE
    real = _wav(tmp_path / "real.wav", 0.3 * np.sin(2 * np.pi * 220 * t))
    whole = decode_utterance(str(real))
    for name, size in [("stale", 10 * 3600 * AUDIO_RATE * 2), ("streamed", 0xFFFFFFFF)]:
        path = _with_data_size(real, tmp_path / f"{name}.wav", size)
        got = decode_utterance(str(path))
        assert got.ok, (name, got.detail)
        assert got.duration_s == pytest.approx(3.8, abs=0.01)
        assert np.array_equal(got.audio, whole.audio)
        assert audio_defect(str(path)) is None  # ingest's media check keeps it too
        capped = decode_utterance(str(path), settings=DecodeSettings(max_clip_seconds=3.0))
        assert capped.reason == "overlong_clip" and capped.detail == "3.8 s > cap 3 s"

    # Within the cap, a header saying more than the file holds is a truncated file still.
    cut = _with_data_size(real, tmp_path / "cut.wav", 30 * AUDIO_RATE * 2)
    got = decode_utterance(str(cut))
    assert got.reason == "unreadable_media" and "declares 30.00 s" in got.detail
    assert "truncated" in audio_defect(str(cut))

    # A real 5-hour file (sparse: zero samples) is refused from its size, not decoded.
    five_hours = 5 * 3600 * AUDIO_RATE * 2
    long = _with_data_size(real, tmp_path / "five_hours.wav", five_hours)
    with open(long, "r+b") as handle:
        handle.truncate(44 + five_hours)
    started = time.perf_counter()
    got = decode_utterance(str(long))
    assert got.reason == "overlong_clip" and got.detail == "18000.0 s > cap 60 s"
    assert time.perf_counter() - started < 2.0  # decoding it takes minutes


def test_a_wav_header_understating_its_length_ends_the_clip_where_it_says(tmp_path):
    """Samples after the data chunk's declared end are not read (they may be another
    chunk, LIST metadata): the clip is the declared span."""
    t = np.arange(int(3.8 * AUDIO_RATE)) / AUDIO_RATE
    real = _wav(tmp_path / "real.wav", 0.3 * np.sin(2 * np.pi * 220 * t))
    short = _with_data_size(real, tmp_path / "short.wav", AUDIO_RATE * 2)  # says 1 s
    got = decode_utterance(str(short))
    assert got.ok and got.duration_s == pytest.approx(1.0, abs=0.01)
    assert np.array_equal(got.audio, decode_utterance(str(real)).audio[:got.audio.size])
    assert audio_defect(str(short)) is None


def test_no_cap_means_the_same_to_the_media_check_as_to_decoding(tmp_path):
    """max_clip_seconds=None was the decode default (60 s) to audio_defect and no cap to
    DecodeSettings: it is no cap to both (a stale 10-hour header then reads as a truncated
    file), and both default to the one cap, which tells that header from a truncated file."""
    from erc.recipes import MAX_CLIP_SECONDS

    t = np.arange(int(3.8 * AUDIO_RATE)) / AUDIO_RATE
    real = _wav(tmp_path / "real.wav", 0.3 * np.sin(2 * np.pi * 220 * t))
    stale = str(_with_data_size(real, tmp_path / "stale.wav", 10 * 3600 * AUDIO_RATE * 2))
    uncapped = decode_utterance(stale, settings=DecodeSettings(max_clip_seconds=None))
    assert uncapped.reason == "unreadable_media" and "declares 36000.00 s" in uncapped.detail
    assert "declares 36000.00 s" in audio_defect(stale, max_clip_seconds=None)
    assert DecodeSettings().max_clip_seconds == MAX_CLIP_SECONDS
    assert decode_utterance(stale).ok and audio_defect(stale) is None


def test_audio_defect_passes_whole_clips_and_finds_a_halved_one(tmp_path):
    for clip in sorted(CLIPS.glob("*.mp4"))[:5]:
        assert audio_defect(str(clip)) is None, clip
    data = (CLIPS / "sample_d01_t00.mp4").read_bytes()
    halved = tmp_path / "halved.mp4"
    halved.write_bytes(data[: len(data) // 2])  # the sample clips' index is at the front: it opens
    with av.open(str(halved)):
        pass
    assert audio_defect(str(halved)) and decode_utterance(str(halved)).reason == "unreadable_media"
    assert audio_defect(str(make_clip(tmp_path / "video_only.mp4", audio=False))) is None  # probe's no_audio


def test_no_audio_silence_overlong(tmp_path):
    video = make_clip(tmp_path / "video_only.mp4", seconds=1.0, audio=False)
    assert decode_utterance(str(video)).reason == "no_audio"

    silent = _wav(tmp_path / "silent.wav", np.zeros(AUDIO_RATE))
    got = decode_utterance(str(silent))
    assert got.reason == "silence" and got.duration_s == pytest.approx(1.0)
    quiet = _wav(tmp_path / "quiet.wav", 0.05 * np.random.default_rng(1).standard_normal(AUDIO_RATE))
    assert decode_utterance(str(quiet)).ok
    # A dead channel stuck at a constant offset (a DC bias, nothing said) is silence too.
    stuck = _wav(tmp_path / "stuck.wav", 0.3 + 1e-5 * np.random.default_rng(2).standard_normal(AUDIO_RATE))
    assert decode_utterance(str(stuck)).reason == "silence"

    long = make_clip(tmp_path / "long.mp4", seconds=4.0)
    capped = decode_utterance(str(long), settings=DecodeSettings(max_clip_seconds=3.0))
    assert capped.reason == "overlong_clip" and capped.audio is None
    segment = decode_utterance(str(long), start_s=0.5, end_s=1.5, settings=DecodeSettings(max_clip_seconds=3.0))
    assert segment.ok and segment.duration_s == pytest.approx(1.0, abs=0.03)



def test_quiet_speech_with_long_pauses_is_not_silence(tmp_path):
    """Silence is a dead channel, not a quiet speaker: a 0.3 s word at -51 dBFS in 3 s of
    pause has a whole-clip RMS near -61 dBFS (under the -60 dBFS bar) and is kept; a steady
    hiss at -66 dBFS is silence."""
    rng = np.random.default_rng(3)
    audio = np.zeros(3 * AUDIO_RATE)
    tone = np.sin(2 * np.pi * 220 * np.arange(int(0.3 * AUDIO_RATE)) / AUDIO_RATE)
    audio[AUDIO_RATE:AUDIO_RATE + tone.size] = 10 ** (-51 / 20) * np.sqrt(2) * tone
    assert np.sqrt(np.mean(audio ** 2)) < DecodeSettings().silence_rms
    got = decode_utterance(str(_wav(tmp_path / "quiet_word.wav", audio)))
    assert got.ok and got.reason is None
    hiss = 10 ** (-66 / 20) * rng.standard_normal(3 * AUDIO_RATE)
    got = decode_utterance(str(_wav(tmp_path / "hiss.wav", hiss)))
    assert got.reason == "silence" and "loudest 0.25 s" in got.detail


def test_audio_at_full_scale_is_clipping_and_loud_real_speech_is_not(tmp_path):
    """A square wave at full scale, or a channel overdriven until 98 % of it is clipped,
    holds no speech: the row fails as clipping. A square wave recorded at 48 kHz keeps the
    reason though resampling rounds its edges. The real clips of shared/assets with the
    most samples at full scale (0.064 % and 0.011 %) decode as speech."""
    def square(rate: int, hz: float) -> np.ndarray:
        return np.where(np.sin(2 * np.pi * hz * np.arange(rate) / rate) >= 0, 1.0, -1.0)

    got = decode_utterance(str(_wav(tmp_path / "square.wav", square(AUDIO_RATE, 150))))
    assert got.reason == "clipping" and got.detail.startswith("100.0% of the audio samples")
    assert decode_utterance(str(_wav(tmp_path / "square48k.wav", square(48_000, 2000), 48_000))).reason == "clipping"
    overdriven = 50 * np.random.default_rng(4).standard_normal(AUDIO_RATE)
    assert decode_utterance(str(_wav(tmp_path / "overdriven.wav", overdriven))).reason == "clipping"
    for loudest in (("speech", "asr_samples", "jfk.flac"),
                    ("speech", "ravdess16k", "Actor_13", "03-01-05-02-02-02-13.flac")):
        got = decode_utterance(str(shared_path("assets", *loudest)))
        assert got.ok and 0 < clipped_share(got.audio) < 0.001, (loudest, got.detail)


def test_one_open_per_file(tmp_path, monkeypatch):
    clip = make_clip(tmp_path / "a.mp4", seconds=1.0)
    wav = _wav(tmp_path / "a.wav", 0.2 * np.sin(np.linspace(0, 440 * np.pi, AUDIO_RATE)))
    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    assert decode_utterance(str(clip)).ok
    assert opened == [str(clip)]
    opened.clear()
    assert decode_utterance(str(clip), str(wav)).ok
    assert sorted(opened) == sorted([str(clip), str(wav)])


def test_video_stream_without_frames_is_no_frames(tmp_path):
    # an mp4 whose video track is declared but whose video packets are gone: audio decodes,
    # the video stream yields nothing
    clip = make_clip(tmp_path / "a.mp4", seconds=2.0)
    with av.open(str(clip)) as src, av.open(str(tmp_path / "no_frames.mkv"), "w") as dst:
        a_in, v_in = src.streams.audio[0], src.streams.video[0]
        a_out = dst.add_stream_from_template(a_in)
        dst.add_stream_from_template(v_in)
        for packet in src.demux(a_in):
            if packet.dts is None:
                continue
            packet.stream = a_out
            dst.mux(packet)
    got = decode_utterance(str(tmp_path / "no_frames.mkv"))
    assert got.reason == "no_frames" and got.audio is not None and got.duration_s > 1.5
    assert os.path.getsize(tmp_path / "no_frames.mkv") > 0
