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
  silence_peak; faster-whisper also compute_type (int8 on CPU, float16 on CUDA) and
  cpu_threads. openai-whisper runs fp32 on CPU, fp16 on CUDA.
"""

from __future__ import annotations

import numpy as np

from erc.backends.base import AUDIO_RATE, ModelSpec, Transcript, Word, pick_device
from erc.backends.registry import Backend, require_path
from erc.errors import ConfigError

_DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
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
        self.spec = spec
        self.device = pick_device(device)
        on_gpu = self.device.startswith("cuda")
        compute_type = spec.options.get("compute_type", "float16" if on_gpu else "int8")
        device_index = int(self.device.split(":")[1]) if ":" in self.device else 0
        self.model = WhisperModel(require_path(spec), device="cuda" if on_gpu else "cpu",
                                  device_index=device_index, compute_type=compute_type,
                                  cpu_threads=int(spec.options.get("cpu_threads", 0)),
                                  local_files_only=True)
        self.language = "en" if not self.model.model.is_multilingual else spec.options.get("language")
        options = _decode_options(spec)
        options["temperature"] = list(options["temperature"]) if isinstance(
            options["temperature"], tuple) else options["temperature"]
        if "logprob_threshold" in spec.options:
            options["log_prob_threshold"] = spec.options["logprob_threshold"]
        self.options = options
        self.silence_peak = float(spec.options.get("silence_peak", 1e-4))
        self.dim = None

    def transcribe(self, audios: list[np.ndarray]) -> list[Transcript]:
        return [self._one(_as_audio(audio)) for audio in audios]

    def _one(self, audio: np.ndarray) -> Transcript:
        duration = audio.size / AUDIO_RATE
        if _silent(audio, self.silence_peak):
            return _transcript("", self.language, [], duration)
        segments, info = self.model.transcribe(audio, language=self.language,
                                               word_timestamps=True, vad_filter=False,
                                               **self.options)
        segments = list(segments)  # a generator: decoding happens here
        text = "".join(s.text for s in segments)
        parts = [(s.no_speech_prob, s.avg_logprob, len(s.tokens),
                  [(w.word, w.start, w.end, w.probability) for w in (s.words or [])])
                 for s in segments]
        return _transcript(text, info.language or self.language, parts, duration)

