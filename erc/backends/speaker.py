"""Speaker identity embedding backends (role ``speaker``).

Every class takes a list of utterances, each a 1-D float32 array of 16 kHz mono audio in
[-1, 1] (``erc.backends.base.AUDIO_RATE``), and returns an (n, dim) float32 array, one row per
utterance, in input order::

    speaker = ResemblyzerEmbedder(ModelSpec("speaker", "resemblyzer", "ge2e"))
    rows = speaker.embed([audio_1, audio_2])          # (2, 256)

An utterance the model cannot embed gets a row of NaN instead of an exception, so one bad
utterance never fails a batch and rows stay aligned with inputs:

- Resemblyzer: empty or all-zero audio, or less than ``min_voiced_s`` (default 0.3 s) of
  audio left after Resemblyzer's ``preprocess_wav`` (volume normalisation, then webrtcvad
  trimming of long silences): silence, noise without voice, a click.
- SpeechBrain: empty audio or less than ``min_seconds`` (default 0.1 s). SpeechBrain has no
  voice-activity step, so silence of a normal length does get an (uninformative) embedding.

Audio that is not a 1-D array, or holds NaN/inf samples, raises ``ValueError`` (a decoding bug
upstream, not a property of the utterance).

| class               | library                              | dim | weights                                   |
|---------------------|--------------------------------------|-----|-------------------------------------------|
| ResemblyzerEmbedder | resemblyzer VoiceEncoder (GE2E LSTM) | 256 | inside the Resemblyzer wheel, or a .pt path |
| SpeechBrainEmbedder | speechbrain EncoderClassifier, xvector | 512 | a local pretrained folder (hyperparams.yaml |
|                     | ... ECAPA-TDNN                       | 192 | + embedding_model.ckpt) or random_init    |
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from erc.backends.base import (
    AUDIO_RATE,
    MissingWeightsError,
    ModelSpec,
    library_version,
    package_source,
    pick_device,
    sha256_of,
)
from erc.backends.registry import Backend
from erc.errors import ConfigError


def _check_audios(audios: Sequence[np.ndarray]) -> list[np.ndarray]:
    checked = []
    for index, audio in enumerate(audios):
        audio = np.asarray(audio)
        if audio.ndim != 1:
            raise ValueError(f"utterance {index}: expected 1-D mono audio, got shape {audio.shape}")
        audio = audio.astype(np.float32, copy=False)
        if not np.all(np.isfinite(audio)):
            raise ValueError(f"utterance {index}: audio holds NaN or infinite samples")
        checked.append(audio)
    return checked


# -- Resemblyzer --------------------------------------------------------------------------

class ResemblyzerEmbedder(Backend):
    """Resemblyzer's GE2E speaker encoder (3-layer LSTM on 40 mel bands): 256-d unit vectors.

    Weights: ``pretrained.pt`` inside the Resemblyzer wheel, or ``spec.path`` a VoiceEncoder
    checkpoint (a dict with ``model_state``); ``random_init`` re-initialises the same network.

    Each utterance goes through ``resemblyzer.preprocess_wav`` (volume normalisation and
    webrtcvad silence trimming); what is left is cut into 1.6 s partials exactly as
    ``VoiceEncoder.embed_utterance`` does, the partials of every utterance of the call are run
    through the LSTM together, and each utterance's embedding is the L2-normalised mean of its
    partials (identical to ``embed_utterance``, only batched). An utterance with less than
    ``min_voiced_s`` of audio after trimming gets a row of NaN (see the module docstring).

    Options: ``min_voiced_s`` (default 0.3), ``rate`` (partials per second, default 1.3),
    ``min_coverage`` (default 0.75), ``batch_size`` (partials per forward, default 128).
    """

    dim = 256

    def __init__(self, spec: ModelSpec, device: str | None = None):
        with warnings.catch_warnings():  # resemblyzer imports scipy.ndimage.morphology
            warnings.simplefilter("ignore", DeprecationWarning)
            import resemblyzer
        from resemblyzer import VoiceEncoder

        self.spec = spec
        self.device = pick_device(device)
        options = spec.options or {}
        self.min_voiced_s = float(options.get("min_voiced_s", 0.3))
        self.rate = float(options.get("rate", 1.3))
        self.min_coverage = float(options.get("min_coverage", 0.75))
        self.batch_size = int(options.get("batch_size", 128))
        packaged = Path(resemblyzer.__file__).parent / "pretrained.pt"
        if spec.path is not None:
            path = Path(spec.path)
            if not path.is_file():
                raise MissingWeightsError(
                    f"Resemblyzer weights {path} not found: pass spec.path, a VoiceEncoder "
                    "checkpoint (.pt with 'model_state'), or no path to use the packaged one")
            self.model = VoiceEncoder(device=self.device, verbose=False, weights_fpath=path)
            self.weights_source, self.weights_sha256 = package_source(path, packaged, "Resemblyzer"), sha256_of(path)
        elif not packaged.is_file():
            raise MissingWeightsError(
                f"the Resemblyzer wheel has no pretrained.pt ({packaged}): reinstall "
                "resemblyzer==0.1.4 (pip install --no-deps) or pass spec.path, a VoiceEncoder .pt")
        elif spec.random_init:
            self.model = VoiceEncoder(device=self.device, verbose=False)
            for module in self.model.modules():
                if module is not self.model and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            self.weights_source, self.weights_sha256 = "random-init", None
        else:
            self.model = VoiceEncoder(device=self.device, verbose=False)
            self.weights_source = f"package:Resemblyzer=={library_version('resemblyzer')}"
            self.weights_sha256 = sha256_of(packaged)
        self.model.eval()

    @property
    def min_seconds(self) -> float:
        """Audio shorter than this always gets a NaN row (it cannot hold enough voice)."""
        return self.min_voiced_s

    def preprocess(self, audio: np.ndarray) -> np.ndarray | None:
        """The voiced audio Resemblyzer embeds, or None when there is too little of it."""
        from resemblyzer import preprocess_wav

        if audio.size == 0 or not np.any(audio):
            return None  # preprocess_wav would divide by a zero RMS
        wav = preprocess_wav(audio)  # already 16 kHz: no resampling
        if wav.size < self.min_voiced_s * AUDIO_RATE:
            return None
        return wav.astype(np.float32, copy=False)

    def embed(self, audios: list[np.ndarray]) -> np.ndarray:
        import torch
        from resemblyzer import audio as resemblyzer_audio

        audios = _check_audios(audios)
        out = np.full((len(audios), self.dim), np.nan, dtype=np.float32)
        mels, owner = [], []  # every partial of every utterance, and whose it is
        for index, audio in enumerate(audios):
            wav = self.preprocess(audio)
            if wav is None:
                continue
            wav_slices, mel_slices = self.model.compute_partial_slices(
                len(wav), self.rate, self.min_coverage)
            end = wav_slices[-1].stop
            if end >= len(wav):
                wav = np.pad(wav, (0, end - len(wav)), "constant")
            mel = resemblyzer_audio.wav_to_mel_spectrogram(wav)
            for mel_slice in mel_slices:
                mels.append(mel[mel_slice])
                owner.append(index)
        if not mels:
            return out
        partials = []
        with torch.inference_mode():
            for start in range(0, len(mels), self.batch_size):
                batch = torch.from_numpy(np.stack(mels[start:start + self.batch_size]))
                partials.append(self.model(batch.to(self.device)).float().cpu().numpy())
        partials = np.concatenate(partials)
        owner = np.asarray(owner)
        for index in np.unique(owner):
            mean = partials[owner == index].mean(axis=0)
            out[index] = mean / np.linalg.norm(mean)
        return out



# -- SpeechBrain --------------------------------------------------------------------------

# The architectures of speechbrain/spkrec-xvect-voxceleb and speechbrain/spkrec-ecapa-voxceleb
# (their hyperparams.yaml), used for random_init.
ARCHITECTURES = {
    "xvector": {"n_mels": 24, "dim": 512},
    "ecapa": {"n_mels": 80, "dim": 192},
}


def _architecture(spec: ModelSpec) -> str:
    """'xvector' or 'ecapa', from options['architecture'], else the backend or model name."""
    wanted = (spec.options or {}).get("architecture")
    if wanted:
        if wanted not in ARCHITECTURES:
            raise ConfigError(f"unknown SpeechBrain architecture {wanted!r}: use 'xvector' or 'ecapa'")
        return wanted
    text = f"{spec.backend} {spec.name}".lower()
    if "ecapa" in text:
        return "ecapa"
    if "xvect" in text or "x-vect" in text:
        return "xvector"
    raise ConfigError(
        f"cannot tell the SpeechBrain architecture from backend {spec.backend!r} / name "
        f"{spec.name!r}: use backend 'speechbrain-xvector' or 'speechbrain-ecapa', or "
        "options={'architecture': 'xvector' | 'ecapa'}")


def _random_modules(architecture: str) -> dict:
    """compute_features, mean_var_norm and embedding_model as the pretrained models build them."""
    import torch
    from speechbrain.lobes.features import Fbank
    from speechbrain.processing.features import InputNormalization

    n_mels = ARCHITECTURES[architecture]["n_mels"]
    if architecture == "xvector":
        from speechbrain.lobes.models.Xvector import Xvector

        model = Xvector(in_channels=n_mels, activation=torch.nn.LeakyReLU, tdnn_blocks=5,
                        tdnn_channels=[512, 512, 512, 512, 1500],
                        tdnn_kernel_sizes=[5, 3, 3, 1, 1], tdnn_dilations=[1, 2, 3, 1, 1],
                        lin_neurons=512)
    else:
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        model = ECAPA_TDNN(input_size=n_mels, channels=[1024, 1024, 1024, 1024, 3072],
                           kernel_sizes=[5, 3, 3, 3, 1], dilations=[1, 2, 3, 4, 1],
                           attention_channels=128, lin_neurons=192)
    return {"compute_features": Fbank(n_mels=n_mels),
            "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
            "embedding_model": model}


class SpeechBrainEmbedder(Backend):
    """SpeechBrain speaker embeddings: x-vector (512-d) or ECAPA-TDNN (192-d).

    The architecture comes from ``spec.backend`` / ``spec.name`` ("speechbrain-xvector",
    "speechbrain-ecapa", "spkrec-ecapa-voxceleb", ...) or ``options['architecture']``.

    Weights: ``spec.path`` a local folder in SpeechBrain's pretrained layout (``hyperparams.yaml``
    + ``embedding_model.ckpt`` and whatever else its pretrainer lists, e.g. a copy of
    speechbrain/spkrec-xvect-voxceleb), loaded with ``EncoderClassifier.from_hparams``. The
    folder's ``pretrained_path`` entry (a hub id in the published files) is pointed at the
    folder itself, so nothing is fetched; files are used in place unless ``options['savedir']``
    asks SpeechBrain to link them into a folder. ``random_init`` builds the same modules
    (Fbank, sentence mean normalisation, Xvector / ECAPA_TDNN) with random weights.

    Utterances are sorted by length and padded into batches of ``batch_size`` (default 16);
    relative lengths keep padding out of the pooling. Options: ``batch_size``,
    ``min_seconds`` (default 0.1), ``normalize`` (apply the model's ``mean_var_norm_emb``,
    default False, as SpeechBrain's verification does), ``savedir``, ``architecture``,
    ``trust_model_code`` (from_hparams executes hyperparams.yaml: a folder from anywhere but
    a registry package or a hub copy of speechbrain's is loaded only when this is true).
    Rows are SpeechBrain's raw embeddings (not L2-normalised); compare them by cosine.
    """

    def __init__(self, spec: ModelSpec, device: str | None = None):
        from speechbrain.inference.speaker import EncoderClassifier

        self.spec = spec
        self.device = pick_device(device)
        options = spec.options or {}
        self.architecture = _architecture(spec)
        self.batch_size = int(options.get("batch_size", 16))
        self.min_seconds = float(options.get("min_seconds", 0.1))
        self.normalize = bool(options.get("normalize", False))
        run_opts = {"device": self.device}
        if spec.path is not None:
            folder = Path(spec.path)
            hparams = folder / "hyperparams.yaml"
            if not hparams.is_file() or not (folder / "embedding_model.ckpt").is_file():
                raise MissingWeightsError(
                    f"{folder} is not a SpeechBrain pretrained folder: pass spec.path, a folder "
                    "holding hyperparams.yaml and embedding_model.ckpt (e.g. a local copy of "
                    "speechbrain/spkrec-xvect-voxceleb or spkrec-ecapa-voxceleb), or "
                    "random_init=True for random weights (tests only)")
            from erc.backends.registry import check_trust, source_of

            check_trust(spec, source_of(spec, folder))  # from_hparams runs hyperparams.yaml
            text = hparams.read_text(encoding="utf-8")
            overrides = ({"pretrained_path": str(folder.resolve())}
                         if re.search(r"^pretrained_path\s*:", text, re.MULTILINE) else {})
            self.model = EncoderClassifier.from_hparams(
                source=str(folder.resolve()), savedir=options.get("savedir"),
                overrides=overrides, run_opts=run_opts)
            self.weights_source = package_source(folder, None, "speechbrain")
            self.weights_sha256 = sha256_of(folder / "embedding_model.ckpt")
        elif spec.random_init:
            self.model = EncoderClassifier(modules=_random_modules(self.architecture),
                                           hparams={}, run_opts=run_opts)
            self.weights_source, self.weights_sha256 = "random-init", None
        else:
            raise MissingWeightsError(
                "no SpeechBrain speaker weights ship with any installed package: pass spec.path, "
                "a local folder in SpeechBrain's pretrained layout (hyperparams.yaml + "
                "embedding_model.ckpt, e.g. a copy of speechbrain/spkrec-ecapa-voxceleb), or "
                "random_init=True for random weights of the same architecture (tests only)")
        if self.normalize and not hasattr(self.model.hparams, "mean_var_norm_emb"):
            raise ConfigError("options['normalize'] needs a model whose hyperparams define "
                             "mean_var_norm_emb")
        self.model.eval()
        probe = self._forward([np.zeros(AUDIO_RATE, dtype=np.float32)])
        self.dim = int(probe.shape[1])

    def _forward(self, audios: list[np.ndarray]) -> np.ndarray:
        import torch

        longest = max(len(a) for a in audios)
        batch = torch.zeros(len(audios), longest)
        for k, audio in enumerate(audios):
            batch[k, :len(audio)] = torch.from_numpy(audio)
        lengths = torch.tensor([len(a) / longest for a in audios])
        with torch.inference_mode():
            rows = self.model.encode_batch(batch, lengths, normalize=self.normalize)
        return rows.reshape(len(audios), -1).float().cpu().numpy()

    def embed(self, audios: list[np.ndarray]) -> np.ndarray:
        audios = _check_audios(audios)
        out = np.full((len(audios), self.dim), np.nan, dtype=np.float32)
        usable = [i for i, a in enumerate(audios) if a.size >= self.min_seconds * AUDIO_RATE]
        usable.sort(key=lambda i: len(audios[i]))
        for start in range(0, len(usable), self.batch_size):
            chunk = usable[start:start + self.batch_size]
            out[chunk] = self._forward([audios[i] for i in chunk])
        return out

