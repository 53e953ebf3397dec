"""Speaker backends: Resemblyzer speaker verification on real RAVDESS actors (figures printed
with ``-s``), its silence handling, and SpeechBrain x-vector / ECAPA through random weights and
through a local folder in SpeechBrain's pretrained layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from erc.backends.base import AUDIO_RATE, MissingWeightsError, ModelSpec, sha256_of
from erc.backends.speaker import ResemblyzerEmbedder, SpeechBrainEmbedder
from tests.conftest import shared_path

pytestmark = pytest.mark.slow

CLIPS_PER_ACTOR = 6  # every 10th file of an actor: neutral, calm, sad, angry, fearful, disgust


def read_audio(path: Path) -> np.ndarray:
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32")
    assert rate == AUDIO_RATE and audio.ndim == 1
    return audio


@pytest.fixture(scope="module")
def ravdess() -> tuple[list[np.ndarray], np.ndarray]:
    root = shared_path("assets", "speech", "ravdess16k")
    audios, actors = [], []
    for actor in sorted(root.glob("Actor_*")):
        for path in sorted(actor.glob("*.flac"))[::10][:CLIPS_PER_ACTOR]:
            audios.append(read_audio(path))
            actors.append(actor.name)
    assert len(audios) == 18 * CLIPS_PER_ACTOR
    return audios, np.array(actors)


@pytest.fixture(scope="module")
def resemblyzer() -> ResemblyzerEmbedder:
    return ResemblyzerEmbedder(ModelSpec("speaker", "resemblyzer", "ge2e"), device="cpu")


def verification_figures(rows: np.ndarray, labels: np.ndarray) -> dict:
    """Nearest-neighbour speaker accuracy, EER and best balanced accuracy over all pairs."""
    from sklearn.metrics import roc_curve

    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    similarity = unit @ unit.T
    upper = np.triu_indices(len(rows), 1)
    scores, same = similarity[upper], (labels[:, None] == labels[None])[upper]
    np.fill_diagonal(similarity, -np.inf)
    nearest = labels[similarity.argmax(axis=1)] == labels
    fpr, tpr, _ = roc_curve(same, scores)
    k = int(np.argmin(np.abs((1 - tpr) - fpr)))
    return {"nn_accuracy": float(nearest.mean()), "eer": float((fpr[k] + 1 - tpr[k]) / 2),
            "best_balanced_accuracy": float(((tpr + 1 - fpr) / 2).max()),
            "same_pairs": int(same.sum()), "different_pairs": int((~same).sum()),
            "chance_nn": float((np.sum(labels == labels[0]) - 1) / (len(labels) - 1))}


# -- Resemblyzer --------------------------------------------------------------------------

def test_resemblyzer_tells_ravdess_actors_apart(ravdess, resemblyzer):
    audios, actors = ravdess
    rows = resemblyzer.embed(audios)
    assert rows.shape == (len(audios), 256) and rows.dtype == np.float32
    assert np.isfinite(rows).all()
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    figures = verification_figures(rows, actors)
    print(f"\nResemblyzer on RAVDESS, 18 actors x {CLIPS_PER_ACTOR} clips of mixed emotions: "
          f"nearest-neighbour speaker accuracy {figures['nn_accuracy']:.3f} (chance "
          f"{figures['chance_nn']:.3f}), EER {figures['eer']:.3f}, best balanced accuracy "
          f"{figures['best_balanced_accuracy']:.3f} over {figures['same_pairs']} same / "
          f"{figures['different_pairs']} different pairs")
    assert figures["nn_accuracy"] >= 0.5  # chance is 5/107
    assert figures["eer"] <= 0.3
    assert figures["best_balanced_accuracy"] >= 0.7


def test_resemblyzer_batched_rows_equal_embed_utterance(ravdess, resemblyzer):
    from resemblyzer import preprocess_wav

    audios, _ = ravdess
    picked = [audios[0], audios[7], audios[50]]
    rows = resemblyzer.embed(picked)
    for audio, row in zip(picked, rows):
        reference = resemblyzer.model.embed_utterance(preprocess_wav(audio))
        assert np.allclose(row, reference, atol=1e-5)


def test_resemblyzer_silence_and_short_audio_give_nan_rows(ravdess, resemblyzer):
    audios, _ = ravdess
    rng = np.random.default_rng(0)
    batch = [
        np.zeros(3 * AUDIO_RATE, np.float32),  # digital silence
        np.zeros(0, np.float32),  # nothing
        (1e-3 * rng.standard_normal(2 * AUDIO_RATE)).astype(np.float32),  # faint noise, no voice
        audios[0][: AUDIO_RATE // 8],  # 0.125 s
        audios[0],  # a real utterance in the same batch
    ]
    rows = resemblyzer.embed(batch)
    assert rows.shape == (5, 256)
    assert np.isnan(rows[:4]).all()
    assert np.isfinite(rows[4]).all()
    assert np.allclose(rows[4], resemblyzer.embed([audios[0]])[0], atol=1e-6)
    assert resemblyzer.embed([]).shape == (0, 256)
    with pytest.raises(ValueError, match="1-D"):
        resemblyzer.embed([np.zeros((2, AUDIO_RATE), np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        resemblyzer.embed([np.full(AUDIO_RATE, np.nan, np.float32)])


def test_resemblyzer_record_and_random_init(ravdess):
    import resemblyzer

    packaged = Path(resemblyzer.__file__).parent / "pretrained.pt"
    record = ResemblyzerEmbedder(ModelSpec("speaker", "resemblyzer", "ge2e")).record()
    assert record.source == "package:Resemblyzer==0.1.4"
    assert record.sha256 == sha256_of(packaged) and record.dim == 256
    by_path = ResemblyzerEmbedder(ModelSpec("speaker", "resemblyzer", "ge2e", path=str(packaged)))
    assert by_path.record() == record  # the registry passes the packaged file as a path
    random = ResemblyzerEmbedder(ModelSpec("speaker", "resemblyzer", "ge2e", random_init=True))
    assert random.record().source == "random-init" and random.record().sha256 is None
    audios, _ = ravdess
    trained = ResemblyzerEmbedder(ModelSpec("speaker", "resemblyzer", "ge2e")).embed(audios[:1])
    assert not np.allclose(random.embed(audios[:1]), trained, atol=1e-3)
    with pytest.raises(MissingWeightsError, match="spec.path"):
        ResemblyzerEmbedder(ModelSpec("speaker", "resemblyzer", "ge2e", path="/nonexistent.pt"))


# -- SpeechBrain --------------------------------------------------------------------------

@pytest.mark.parametrize("backend, dim", [("speechbrain-xvector", 512), ("speechbrain-ecapa", 192)])
def test_speechbrain_random_init_shapes(ravdess, backend, dim):
    audios, _ = ravdess
    embedder = SpeechBrainEmbedder(ModelSpec("speaker", backend, backend, random_init=True),
                                   device="cpu")
    assert embedder.dim == dim
    batch = [audios[0][: 2 * AUDIO_RATE], audios[1][: AUDIO_RATE], np.zeros(400, np.float32),
             audios[2][: 3 * AUDIO_RATE // 2]]
    rows = embedder.embed(batch)
    assert rows.shape == (4, dim) and rows.dtype == np.float32
    assert np.isfinite(rows[[0, 1, 3]]).all() and np.isnan(rows[2]).all()  # 0.025 s: too short
    # a padded utterance in a batch matches the same utterance alone
    alone = embedder.embed([batch[1]])[0]
    cosine = alone @ rows[1] / np.linalg.norm(alone) / np.linalg.norm(rows[1])
    assert cosine > 0.99
    record = embedder.record()
    assert (record.source, record.sha256, record.dim) == ("random-init", None, dim)
    assert record.version == "1.1.2"


# The layout of speechbrain/spkrec-xvect-voxceleb's hyperparams.yaml: its pretrained_path names
# the hub repository, which the backend points at the local folder.
XVECTOR_HPARAMS = """\
n_mels: 24
pretrained_path: speechbrain/spkrec-xvect-voxceleb
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: !ref <n_mels>
    activation: !name:torch.nn.LeakyReLU
    tdnn_blocks: 5
    tdnn_channels: [512, 512, 512, 512, 1500]
    tdnn_kernel_sizes: [5, 3, 3, 1, 1]
    tdnn_dilations: [1, 2, 3, 1, 1]
    lin_neurons: 512
mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
"""


def test_speechbrain_loads_a_local_pretrained_folder(ravdess, tmp_path):
    import torch

    audios, _ = ravdess
    random = SpeechBrainEmbedder(ModelSpec("speaker", "speechbrain-xvector", "xvector",
                                           random_init=True))
    folder = tmp_path / "spkrec-xvect-voxceleb"
    folder.mkdir()
    (folder / "hyperparams.yaml").write_text(XVECTOR_HPARAMS)
    torch.save(random.model.mods.embedding_model.state_dict(), folder / "embedding_model.ckpt")
    loaded = SpeechBrainEmbedder(ModelSpec("speaker", "speechbrain-xvector",
                                           "spkrec-xvect-voxceleb", path=str(folder),
                                           options={"trust_model_code": True}))  # we wrote it
    assert loaded.dim == 512
    batch = [audios[0][: 2 * AUDIO_RATE], audios[3][: AUDIO_RATE]]
    assert np.allclose(loaded.embed(batch), random.embed(batch), atol=1e-4)  # same weights
    record = loaded.record()
    assert record.source == f"path:{folder.resolve()}"
    assert record.sha256 == sha256_of(folder / "embedding_model.ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["embedding_model.ckpt", "hyperparams.yaml"]


def test_speechbrain_without_weights_says_what_to_pass(tmp_path):
    with pytest.raises(MissingWeightsError, match="spec.path"):
        SpeechBrainEmbedder(ModelSpec("speaker", "speechbrain-ecapa", "spkrec-ecapa-voxceleb"))
    with pytest.raises(MissingWeightsError, match="hyperparams.yaml"):
        SpeechBrainEmbedder(ModelSpec("speaker", "speechbrain-ecapa", "ecapa", path=str(tmp_path)))
    with pytest.raises(ValueError, match="architecture"):
        SpeechBrainEmbedder(ModelSpec("speaker", "speechbrain", "mystery", random_init=True))
