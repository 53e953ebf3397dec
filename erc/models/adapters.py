"""Identity -> emotion adapters (the paper's identity-based transfer learning).

An identity embedding (a speaker vector, a face vector) is made for telling people apart,
not emotions. An adapter is a small MLP ``in -> 256 -> 128 -> classes`` trained to predict
emotion from identity embeddings on a unimodal emotion corpus; its 128-d hidden layer
(after the activation) is the adapted, emotion-aware representation the fusion model reads.

- speaker adapter: speaker embeddings of RAVDESS (or any labelled speech corpus);
- face adapter: face embeddings of CK+48 (or any folder ``<label>/<group>_*.png``).

Inputs are L2-normalised first (identity embedders differ in scale; dlib's rows are not
unit vectors). Training holds out whole groups (actors, subjects) for early stopping, so
the adapter is chosen on people it has not seen. ``in_dim`` comes from the embeddings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from erc import io
from erc.errors import InputError
from erc.recipes import AdapterConfig, AdapterTraining


class Adapter(nn.Module):
    kind = "adapter"
    config_class = AdapterConfig

    def __init__(self, config: AdapterConfig):
        super().__init__()
        self.config = config
        self.encoder = nn.Sequential(
            nn.Linear(config.in_dim, config.hidden), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.out_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.out_dim, config.n_classes))

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=-1) if self.config.normalize_input else x

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_dim) identity embeddings -> (n, out_dim) adapted representations."""
        return self.encoder(self._prepare(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.adapt(x))


@torch.no_grad()
def adapt_vectors(adapter: Adapter, vectors: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """NumPy convenience: adapted representations of ``vectors`` (rows with NaN stay NaN)."""
    adapter.eval()
    vectors = np.asarray(vectors, dtype=np.float32)
    out = np.full((len(vectors), adapter.config.out_dim), np.nan, dtype=np.float32)
    ok = np.isfinite(vectors).all(1)
    rows = np.flatnonzero(ok)
    for i in range(0, len(rows), batch_size):
        idx = rows[i: i + batch_size]
        out[idx] = adapter.adapt(torch.from_numpy(vectors[idx])).numpy()
    return out


@torch.no_grad()
def predict(adapter: Adapter, vectors: np.ndarray) -> np.ndarray:
    adapter.eval()
    return adapter(torch.from_numpy(np.asarray(vectors, np.float32))).argmax(1).numpy()


def train_adapter(vectors: np.ndarray, labels: Sequence[str], groups: Sequence[str],
                  modality: str, label_set: list[str] | None = None,
                  config: dict | None = None, training: AdapterTraining | None = None
                  ) -> tuple[Adapter, dict]:
    """Trains an adapter on identity ``vectors`` (n, d) with emotion ``labels``; ``groups``
    (speaker / subject ids) decide the held-out people for early stopping. Rows with NaN
    (no embedding) are skipped. Returns the adapter (best held-out epoch) and its history."""
    training = training or AdapterTraining()
    vectors = np.asarray(vectors, dtype=np.float32)
    keep = np.isfinite(vectors).all(1)
    vectors = vectors[keep]
    labels = [l for l, k in zip(labels, keep) if k]
    groups = np.asarray([g for g, k in zip(groups, keep) if k])
    label_set = label_set or sorted(set(labels))
    index = {l: i for i, l in enumerate(label_set)}
    y = np.asarray([index[l] for l in labels], dtype=np.int64)
    rng = np.random.default_rng(training.seed)
    unique = np.unique(groups)
    n_val = max(1, int(round(training.val_groups * len(unique)))) if len(unique) > 1 else 0
    val_groups = set(rng.permutation(unique)[:n_val].tolist())
    val = np.isin(groups, list(val_groups))
    train = ~val if val.any() else np.ones(len(y), dtype=bool)
    torch.manual_seed(training.seed)
    cfg = AdapterConfig(modality=modality, in_dim=vectors.shape[1], n_classes=len(label_set),
                        labels=list(label_set), **(config or {}))
    adapter = Adapter(cfg)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=training.lr,
                                  weight_decay=training.weight_decay)
    counts = np.bincount(y[train], minlength=len(label_set)).astype(np.float64)
    weights = torch.tensor(np.where(counts > 0, counts.sum() / (len(label_set) * np.maximum(counts, 1)), 0.0),
                           dtype=torch.float32)
    x_train, y_train = torch.from_numpy(vectors[train]), torch.from_numpy(y[train])
    x_val, y_val = torch.from_numpy(vectors[val]), y[val]
    best, best_state, bad, history = -1.0, None, 0, []
    for epoch in range(training.epochs):
        adapter.train()
        order = torch.from_numpy(rng.permutation(len(y_train)))
        for i in range(0, len(order), training.batch_size):
            idx = order[i: i + training.batch_size]
            loss = nn.functional.cross_entropy(adapter(x_train[idx]), y_train[idx], weight=weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if val.any():
            adapter.eval()
            with torch.no_grad():
                acc = float((adapter(x_val).argmax(1).numpy() == y_val).mean())
        else:
            acc = float(epoch)  # nothing held out: keep the last epoch
        history.append({"epoch": epoch, "loss": float(loss.item()), "val_accuracy": acc})
        if acc > best:
            best, bad = acc, 0
            best_state = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
        else:
            bad += 1
            if bad >= training.patience:
                break
    adapter.load_state_dict(best_state)
    adapter.eval()
    return adapter, {"history": history, "best_val_accuracy": best if val.any() else None,
                     "val_groups": sorted(map(str, val_groups)), "n_train": int(train.sum()),
                     "n_val": int(val.sum())}


# -- saved adapters: the model and the data it was trained on ---------------------------------

TRAINING_SET = "training_set.npz"  # beside the weights: lets an adapter be retrained resized


def save_adapter(directory: str | Path, adapter: Adapter, vectors: np.ndarray,
                 labels: Sequence[str], groups: Sequence[str], metrics: dict | None = None,
                 extra: dict | None = None, training: AdapterTraining | None = None) -> Path:
    """Saves the adapter (``save_model``) with its training set (vectors, labels, groups and
    training settings), so a search over adapter sizes can retrain it (``resized_adapter``)."""
    from erc.models.checkpoint import save_model

    directory = save_model(directory, adapter, metrics=metrics, extra=extra)
    with io.atomic_path(directory / TRAINING_SET) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, vectors=np.asarray(vectors, np.float32),
                            labels=np.asarray(list(labels), dtype=str),
                            groups=np.asarray(list(map(str, groups)), dtype=str),
                            training=np.asarray(json.dumps(asdict(training or AdapterTraining()))))
    return io.seal(directory)


def resized_adapter(directory: str | Path, hidden: int | None = None,
                    out_dim: int | None = None) -> tuple[Adapter, bool]:
    """(adapter, retrained): the adapter saved in ``directory`` with hidden size ``hidden``
    and output size ``out_dim`` (None: its own): the saved one when the sizes are its own,
    else one retrained on its saved training set with the same labels and training
    settings."""
    from erc.models.checkpoint import load_model

    directory = Path(directory)
    saved = load_model(directory)
    cfg = saved.config
    hidden, out_dim = hidden or cfg.hidden, out_dim or cfg.out_dim
    if (hidden, out_dim) == (cfg.hidden, cfg.out_dim):
        return saved, False
    if not (directory / TRAINING_SET).is_file():
        raise InputError(
            f"{directory}: no {TRAINING_SET}, so the adapter cannot be retrained with other "
            f"sizes; train it again (`erc train adapter ...` or `erc run`) to save it")
    with np.load(directory / TRAINING_SET) as data:
        vectors, labels, groups = data["vectors"], data["labels"].tolist(), data["groups"].tolist()
        training = AdapterTraining(**json.loads(str(data["training"])))
    adapter, _ = train_adapter(vectors, labels, groups, cfg.modality, list(cfg.labels),
                               config={"hidden": int(hidden), "out_dim": int(out_dim),
                                       "dropout": cfg.dropout,
                                       "normalize_input": cfg.normalize_input},
                               training=training)
    return adapter, True


# -- unimodal emotion corpora -> identity embeddings --------------------------------------------

def _cache_file(kind: str, record: dict, items: list[str]) -> Path:
    from erc.home import state_dir

    key = hashlib.sha256(repr((kind, sorted(record.items()), items)).encode()).hexdigest()[:16]
    folder = state_dir() / "cache" / "adapter_embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{kind}-{key}.npy"


def speech_embeddings(table, embedder, batch_size: int = 16, cache: bool = True
                      ) -> tuple[np.ndarray, list[str], list[str]]:
    """(vectors, emotions, speakers) of the labelled utterances of an utterance table,
    decoding each one's audio (``audio_path`` or ``media_path``) at 16 kHz."""
    from erc.media.decode import DecodeSettings, decode_utterance

    rows = [r for r in table.to_pylist() if r.get("emotion")]
    items = [r["utterance_id"] for r in rows]
    record = embedder.record().to_dict() if hasattr(embedder, "record") else {"name": type(embedder).__name__}
    path = _cache_file("speech", {k: str(v) for k, v in record.items()}, items)
    if cache and path.is_file():
        vectors = np.load(path)
    else:
        settings = DecodeSettings(expect_video=False)
        vectors = np.full((len(rows), embedder.dim), np.nan, dtype=np.float32)
        for i in range(0, len(rows), batch_size):
            chunk = rows[i: i + batch_size]
            audios, where = [], []
            for j, r in enumerate(chunk):
                decoded = decode_utterance(r.get("media_path"), r.get("audio_path"),
                                           r.get("start_s"), r.get("end_s"), settings)
                if decoded.audio is not None and decoded.reason is None:
                    audios.append(decoded.audio)
                    where.append(i + j)
            if audios:
                vectors[where] = embedder.embed(audios)
        if cache:
            io.write_npy(path, vectors)
    return vectors, [r["emotion"] for r in rows], [r["speaker"] for r in rows]


def image_folder_items(root: str | Path, exts: tuple[str, ...] = (".png", ".jpg", ".jpeg")
                       ) -> tuple[list[Path], list[str], list[str]]:
    """Images of ``root/<label>/<group>_*.ext`` (CK+48: ``anger/S010_004_00000017.png``,
    subject S010): paths, labels, groups."""
    root = Path(root)
    paths, labels, groups = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in sorted(folder.iterdir()):
            if image.suffix.lower() in exts and not image.name.startswith("."):
                paths.append(image)
                labels.append(folder.name)
                groups.append(image.name.split("_")[0])
    if not paths:
        raise InputError(f"{root}: no images in <label>/ folders")
    return paths, labels, groups


def face_crop_embeddings(paths: list[Path], embedder, batch_size: int = 64, upscale: int = 150,
                         cache: bool = True) -> np.ndarray:
    """Embeddings of face crops (the whole image is the face box). Small crops (CK+48 is
    48x48) are upscaled to ``upscale`` pixels first, the size embedders align faces to."""
    from PIL import Image

    record = embedder.record().to_dict() if hasattr(embedder, "record") else {"name": type(embedder).__name__}
    path = _cache_file(f"faces{upscale}", {k: str(v) for k, v in record.items()},
                       [str(p) for p in paths])
    if cache and path.is_file():
        return np.load(path)
    out = np.full((len(paths), embedder.dim), np.nan, dtype=np.float32)
    for i in range(0, len(paths), batch_size):
        frames = []
        for p in paths[i: i + batch_size]:
            image = Image.open(p).convert("RGB")
            if upscale and max(image.size) < upscale:
                image = image.resize((upscale, upscale), Image.BICUBIC)
            frames.append(np.asarray(image))
        boxes = [[(0.0, 0.0, float(f.shape[1]), float(f.shape[0]))] for f in frames]
        for j, rows in enumerate(embedder.embed(frames, boxes)):
            out[i + j] = rows[0]
    if cache:
        io.write_npy(path, out)
    return out
