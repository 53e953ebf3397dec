"""Speech recognition backends: openai-whisper and faster-whisper (CTranslate2).

Both take 16 kHz mono float32 arrays and give one ``Transcript`` each: the text, the
language, ``no_speech_prob`` (mean over the decoded windows' segments), ``avg_logprob``
(token-weighted mean over segments) and the words with start/end (seconds, clipped to the
clip) and probability. An empty or digitally silent array (peak below
``options["silence_peak"]``, default 1e-4) gives text "" without running the model; so does
audio Whisper itself skips as no speech. In both cases no_speech_prob and avg_logprob are
None (nothing was decoded).

Options (``spec.options``), the same for both engines:
  beam_size (default 5), temperature (default Whisper's fallback 0.0, 0.2, ... 1.0),
  condition_on_previous_text (default False: one utterance per clip, no carried prompt),
  language (multilingual models only; English-only models always say "en"),
  no_speech_threshold, logprob_threshold, compression_ratio_threshold, initial_prompt,
  silence_peak; faster-whisper also compute_type (int8 on CPU, float16 on CUDA),
  cpu_threads (default: torch's thread count in this process, so that a Ray worker given
  one CPU runs one thread; CTranslate2 and torch share one OpenMP pool) and batch_size
  (clips per encoder and decoder call, default 16 on CUDA and 1 on CPU, where batching
  saves little) and encoder_window (below).
  openai-whisper runs fp32 on CPU, fp16 on CUDA.

Encoder window (faster-whisper): Whisper pads every clip to a 30 s window, and on a CPU the
encoder over that window is about four fifths of the time of a 3 s clip. faster-whisper
encodes a clip of one window over its own length plus ``WINDOW_MARGIN_S``, rounded up to
``WINDOW_STEP_S`` (so that a clip's window depends on the clip alone, never on the clips
batched with it), at least ``encoder_window`` seconds (default ``ENCODER_WINDOW_S``) and at
most 30 s (``encoder_window: 30`` is Whisper's own fixed window). Measured in the README
(tiny.en, int8, one thread): a quarter of the time, no higher WER; windows shorter than
10 s make tiny.en repeat its sentence (7 clips in 98 at 5 s).

Batched faster-whisper: the clips of a call that fit one 30 s window are encoded and
beam-searched together, then each is finished exactly as ``WhisperModel.transcribe`` would
finish it (the same features, prompt, decoding options, no-speech rule, segment split and
word alignment); a clip whose first decoding would fall back to a higher temperature, or
whose words leave audio for a second window, is transcribed on its own instead. The
result equals the clip-by-clip one up to the arithmetic of a batched matrix product
(``tests/test_backends_asr.py`` states the tolerance).

A clip whose greedy decoding fails Whisper's checks is decoded again by sampling at the
fallback temperatures (about one RAVDESS clip in 300). CTranslate2 draws those samples from
a generator its worker thread seeds once, so the draws would depend on every clip sampled
before; faster-whisper transcribes such a clip again on a fresh model instance seeded with
``FALLBACK_SEED``, so that its transcript depends on the clip alone and a resumed or
repeated pass gives the same text.
"""

from __future__ import annotations

import numpy as np

from erc.backends.base import AUDIO_RATE, ModelSpec, Transcript, Word, pick_device
from erc.backends.registry import Backend, require_path
from erc.errors import ConfigError

_DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
FALLBACK_SEED = 0  # CTranslate2's sampling seed for a clip decoded at a fallback temperature
ENCODER_WINDOW_S = 10.0  # the shortest window faster-whisper encodes (module doc)
WINDOW_MARGIN_S = 2.0  # audio-free seconds the encoder reads after a clip
WINDOW_STEP_S = 5.0  # window lengths come in steps: few sizes, each batched on its own
_PASSED = ("beam_size", "temperature", "condition_on_previous_text", "no_speech_threshold",
           "compression_ratio_threshold", "initial_prompt")

# openai-whisper architectures, for random_init (no weights needed).
_WHISPER_DIMS = {
    "tiny": (384, 6, 4), "base": (512, 8, 6), "small": (768, 12, 12), "medium": (1024, 16, 24),
}


def _decode_options(spec: ModelSpec) -> dict:
    options = {"beam_size": 5, "temperature": _DEFAULT_TEMPERATURES,
               "condition_on_previous_text": False}
    options.update({k: spec.options[k] for k in _PASSED if k in spec.options})
    if isinstance(options["temperature"], list):
        options["temperature"] = tuple(options["temperature"])
    return options


def _as_audio(audio) -> np.ndarray:
    array = np.asarray(audio)
    if array.ndim != 1:
        raise ValueError(f"ASR expects 1-D mono {AUDIO_RATE} Hz audio, got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.size and not np.isfinite(array).all():
        raise ValueError("audio holds NaN or infinite samples")
    return array


def _silent(audio: np.ndarray, peak: float) -> bool:
    return audio.size == 0 or float(np.abs(audio).max()) < peak


def _clip(value: float, duration: float) -> float:
    return float(min(max(value, 0.0), duration))


def _transcript(text: str, language: str | None, segments: list[tuple[float, float, int, list]],
                duration: float) -> Transcript:
    """segments: (no_speech_prob, avg_logprob, n_tokens, [(word, start, end, prob), ...])."""
    if not segments:
        return Transcript(text="", language=language, no_speech_prob=None, avg_logprob=None,
                          words=[])
    tokens = np.array([max(n, 1) for _, _, n, _ in segments], dtype=np.float64)
    avg_logprob = float(np.dot([s[1] for s in segments], tokens) / tokens.sum())
    no_speech = float(np.mean([s[0] for s in segments]))
    words = []
    for _, _, _, seg_words in segments:
        for word, start, end, prob in seg_words:
            start, end = _clip(start, duration), _clip(end, duration)
            words.append(Word(word=word.strip(), start=start, end=max(start, end),
                              probability=float(prob)))
    return Transcript(text=text.strip(), language=language, no_speech_prob=no_speech,
                      avg_logprob=avg_logprob, words=words)


class WhisperASR(Backend):
    """openai-whisper: ``whisper.load_model(path, device)``; ``transcribe`` per clip with
    word timestamps."""

    role = "asr"

    def __init__(self, spec: ModelSpec, device: str | None = None):
        import whisper

        self.spec = spec
        self.device = pick_device(device)
        if spec.random_init:
            size = spec.name.split(".")[0]
            if size not in _WHISPER_DIMS:
                raise ConfigError(f"random_init knows the whisper sizes {sorted(_WHISPER_DIMS)}, "
                                 f"not {spec.name!r}")
            state, heads, layers = _WHISPER_DIMS[size]
            dims = whisper.model.ModelDimensions(
                n_mels=80, n_audio_ctx=1500, n_audio_state=state, n_audio_head=heads,
                n_audio_layer=layers, n_vocab=51864 if spec.name.endswith(".en") else 51865,
                n_text_ctx=448, n_text_state=state, n_text_head=heads, n_text_layer=layers)
            self.model = whisper.model.Whisper(dims).to(self.device)
        else:
            self.model = whisper.load_model(require_path(spec), device=self.device)
        self.model.eval()
        self.language = "en" if not self.model.is_multilingual else spec.options.get("language")
        self.options = _decode_options(spec)
        if "logprob_threshold" in spec.options:
            self.options["logprob_threshold"] = spec.options["logprob_threshold"]
        self.options["fp16"] = self.device.startswith("cuda")
        self.silence_peak = float(spec.options.get("silence_peak", 1e-4))
        self.dim = None

    def transcribe(self, audios: list[np.ndarray]) -> list[Transcript]:
        return [self._one(_as_audio(audio)) for audio in audios]

    def _one(self, audio: np.ndarray) -> Transcript:
        duration = audio.size / AUDIO_RATE
        if _silent(audio, self.silence_peak):
            return _transcript("", self.language, [], duration)
        result = self.model.transcribe(audio, language=self.language, word_timestamps=True,
                                       verbose=None, **self.options)
        segments = [(s["no_speech_prob"], s["avg_logprob"], len(s["tokens"]),
                     [(w["word"], w["start"], w["end"], w["probability"])
                      for w in s.get("words", [])])
                    for s in result["segments"]]
        return _transcript(result["text"], result.get("language") or self.language, segments,
                           duration)



class FasterWhisperASR(Backend):
    """faster-whisper (CTranslate2): ``WhisperModel(path, device, compute_type)``, int8 on
    CPU by default."""

    role = "asr"

    def __init__(self, spec: ModelSpec, device: str | None = None):
        from faster_whisper import WhisperModel

        if spec.random_init:
            raise ConfigError("faster-whisper needs converted CTranslate2 weights; for a "
                             "random-init ASR use the openai-whisper backend")
        import torch

        self.spec = spec
        self.device = pick_device(device)
        on_gpu = self.device.startswith("cuda")
        compute_type = spec.options.get("compute_type", "float16" if on_gpu else "int8")
        device_index = int(self.device.split(":")[1]) if ":" in self.device else 0
        threads = int(spec.options.get("cpu_threads") or torch.get_num_threads())
        self._load = lambda: WhisperModel(  # also makes a seeded fresh instance
            require_path(spec), device="cuda" if on_gpu else "cpu", device_index=device_index,
            compute_type=compute_type, cpu_threads=threads, local_files_only=True)
        self.model = self._load()
        torch.set_num_threads(threads)  # CTranslate2 has just set the shared OpenMP pool
        self.batch_size = int(spec.options.get("batch_size") or (16 if on_gpu else 1))
        self.language = "en" if not self.model.model.is_multilingual else spec.options.get("language")
        options = _decode_options(spec)
        options["temperature"] = list(options["temperature"]) if isinstance(
            options["temperature"], tuple) else options["temperature"]
        if "logprob_threshold" in spec.options:
            options["log_prob_threshold"] = spec.options["logprob_threshold"]
        self.options = options
        self.silence_peak = float(spec.options.get("silence_peak", 1e-4))
        full = self.model.feature_extractor.chunk_length
        self.encoder_window = float(spec.options.get("encoder_window", ENCODER_WINDOW_S))
        if not 1.0 <= self.encoder_window <= full:
            raise ConfigError(f"asr encoder_window must be between 1 and {full} seconds, "
                              f"got {self.encoder_window:g}")
        self.dim = None

    def _window_frames(self, content_frames: int) -> int:
        """Feature frames the encoder reads for a clip of ``content_frames`` (module doc)."""
        extractor = self.model.feature_extractor
        per_second = extractor.sampling_rate // extractor.hop_length
        seconds = content_frames / per_second + WINDOW_MARGIN_S
        seconds = max(self.encoder_window, np.ceil(seconds / WINDOW_STEP_S) * WINDOW_STEP_S)
        frames = int(np.ceil(min(seconds, extractor.chunk_length) * per_second))
        return min(frames + frames % 2, extractor.nb_max_frames)  # even: the encoder halves it

    def transcribe(self, audios: list[np.ndarray]) -> list[Transcript]:
        audios = [_as_audio(audio) for audio in audios]
        out: list[Transcript | None] = [None] * len(audios)
        window = self.model.feature_extractor.n_samples
        batchable = [i for i, a in enumerate(audios)
                     if a.size <= window and not _silent(a, self.silence_peak)]
        short_window = self.encoder_window < self.model.feature_extractor.chunk_length
        if (self.batch_size > 1 or short_window) and batchable and self.language is not None:
            for start in range(0, len(batchable), self.batch_size):
                chunk = batchable[start:start + self.batch_size]
                for i, got in zip(chunk, self._one_window_batch([audios[i] for i in chunk])):
                    out[i] = got
        return [got if got is not None else self._one(audio) for got, audio in zip(out, audios)]

    def _one_window_batch(self, audios: list[np.ndarray]) -> list[Transcript | None]:
        """Clips of at most one window, encoded and decoded together (those of one window
        length at a time); None for a clip the clip-by-clip path must do (temperature
        fallback, or speech left for a second window). Mirrors
        ``WhisperModel.generate_segments`` for a first window at seek 0."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer

        model, options = self.model, self.options
        temperatures = options["temperature"] if isinstance(options["temperature"], list) \
            else [options["temperature"]]
        if temperatures[0] > 0:
            return [None] * len(audios)  # sampling: left to the clip-by-clip path
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                              language=self.language or "en")
        features = [model.feature_extractor(audio) for audio in audios]
        sizes = [f.shape[-1] - 1 for f in features]  # content frames (the last is padding)
        lengths = [self._window_frames(n) for n in sizes]
        out: list[Transcript | None] = [None] * len(audios)
        for length in sorted(set(lengths)):
            group = [i for i, n in enumerate(lengths) if n == length]
            encoded = model.encode(np.stack([pad_or_trim(features[i][:, :sizes[i]], length)
                                             for i in group]))
            done = self._finish_window(tokenizer, encoded, [audios[i] for i in group],
                                       [sizes[i] for i in group])
            for i, got in zip(group, done):
                out[i] = got
        return out

    def _finish_window(self, tokenizer, encoded, audios: list[np.ndarray],
                       sizes: list[int]) -> list[Transcript | None]:
        """Beam search over encoded windows, then each clip finished as faster-whisper
        finishes a first window (no-speech rule, fallback check, segments, word times)."""
        import ctranslate2
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
        from faster_whisper.utils import get_end

        model, options = self.model, self.options
        initial = options.get("initial_prompt")
        prompt = model.get_prompt(tokenizer, tokenizer.encode(" " + initial.strip()) if initial else [])
        results = model.model.generate(
            encoded, [prompt] * len(audios), beam_size=options["beam_size"], patience=1,
            length_penalty=1, repetition_penalty=1, no_repeat_ngram_size=0,
            max_length=model.max_length, return_scores=True, return_no_speech_prob=True,
            suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            max_initial_timestamp_index=int(round(1.0 / model.time_precision)))
        rows = np.asarray(encoded if encoded.device == "cpu" else encoded.to_device(ctranslate2.Device.cpu))
        no_speech_threshold = options.get("no_speech_threshold", 0.6)
        logprob_threshold = options.get("log_prob_threshold", -1.0)
        ratio_threshold = options.get("compression_ratio_threshold", 2.4)
        out: list[Transcript | None] = []
        for k, result in enumerate(results):
            tokens = result.sequences_ids[0]
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            silence = (no_speech_threshold is not None and result.no_speech_prob > no_speech_threshold
                       and logprob_threshold is not None and avg_logprob < logprob_threshold)
            fallback = ((ratio_threshold is not None and get_compression_ratio(
                tokenizer.decode(tokens).strip()) > ratio_threshold)
                or (logprob_threshold is not None and avg_logprob < logprob_threshold))
            duration = audios[k].size / AUDIO_RATE
            if fallback and not silence:
                out.append(None)
                continue
            skip = no_speech_threshold is not None and result.no_speech_prob > no_speech_threshold \
                and not (logprob_threshold is not None and avg_logprob > logprob_threshold)
            if skip:
                out.append(_transcript("", self.language, [], duration))
                continue
            size = sizes[k]
            segments, seek, single_ending = model._split_segments_by_timestamps(
                tokenizer=tokenizer, tokens=tokens, time_offset=0.0, segment_size=size,
                segment_duration=size * model.feature_extractor.time_per_frame, seek=0)
            model.add_word_timestamps(
                [segments], tokenizer, ctranslate2.StorageView.from_array(rows[k:k + 1]), size,
                "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、", last_speech_timestamp=0.0)
            last_end = get_end(segments)
            if not single_ending and last_end is not None and last_end > 0:
                seek = round(last_end * model.frames_per_second)
            if seek < size:
                out.append(None)  # speech left after the first window's words
                continue
            kept = [s for s in segments if s["start"] != s["end"] and tokenizer.decode(s["tokens"]).strip()]
            text = "".join(tokenizer.decode(s["tokens"]) for s in kept)
            parts = [(result.no_speech_prob, avg_logprob, len(s["tokens"]),
                      [(w["word"], w["start"], w["end"], w["probability"]) for w in s["words"]])
                     for s in kept]
            out.append(_transcript(text, self.language, parts, duration))
        return out

    def _one(self, audio: np.ndarray) -> Transcript:
        duration = audio.size / AUDIO_RATE
        if _silent(audio, self.silence_peak):
            return _transcript("", self.language, [], duration)
        segments, info = self._decode(self.model, audio)
        if any(s.temperature > 0 for s in segments):  # sampled: draws that depend on the clip alone
            import ctranslate2

            ctranslate2.set_random_seed(FALLBACK_SEED)  # seeds the fresh instance's worker thread
            segments, info = self._decode(self._load(), audio)
        text = "".join(s.text for s in segments)
        parts = [(s.no_speech_prob, s.avg_logprob, len(s.tokens),
                  [(w.word, w.start, w.end, w.probability) for w in (s.words or [])])
                 for s in segments]
        return _transcript(text, info.language or self.language, parts, duration)

    def _decode(self, model, audio: np.ndarray) -> tuple[list, object]:
        segments, info = model.transcribe(audio, language=self.language, word_timestamps=True,
                                          vad_filter=False, **self.options)
        return list(segments), info  # a generator: decoding happens here
