"""Recipes: the steps from an utterance table to trained models, each resumable and cached.

- ``finetune_text``: fine-tune a text encoder for emotion with past-turn context (Ray Train).
- ``text_features``: the fine-tuned encoder's 768/384-d utterance vectors (the fusion
  model's text tokens), cached as Parquet beside the model.
- ``frozen_text_features``: sentence-transformers embeddings of the transcripts (the cheap
  option, also the floor baseline's input), cached under the erc state dir.
- ``train_fusion``: the Mamba fusion model or a baseline on per-utterance tokens (Ray Train).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from erc.train.data import build_dialogue_data, build_text_data, resolve_roles
from erc.train.loop import TrainConfig, TrainOutcome, fit


def table_fingerprint(table: pa.Table,
                      columns: tuple[str, ...] = ("utterance_id", "speaker", "text", "emotion",
                                                  "split")) -> str:
    digest = hashlib.sha256()
    for name in columns:
        digest.update("\x1f".join(map(str, table.column(name).to_pylist())).encode())
    return digest.hexdigest()[:16]


def finetune_text(table: pa.Table, encoder: str, out_dir: str | Path, train: TrainConfig,
                  roles: Mapping[str, str] | None = None, context_turns: int = 8,
                  max_length: int = 96, speaker_names: bool = True, freeze_layers: int = 0,
                  class_weight_power: float = 0.5, address: str | None = None,
                  pooling: str = "target_mean", future_turns: int = 0) -> TrainOutcome:
    from erc.models.text import TextModelConfig, load_tokenizer

    tokenizer = load_tokenizer(encoder)
    data = build_text_data(table, tokenizer, context_turns, max_length, roles,
                           speaker_names=speaker_names, future_turns=future_turns)
    model = TextModelConfig(encoder=str(Path(encoder).resolve()), n_classes=len(data.labels),
                            labels=data.labels, context_turns=context_turns,
                            future_turns=future_turns,
                            max_length=max_length, speaker_names=speaker_names,
                            freeze_layers=freeze_layers, pooling=pooling)
    return fit("text", {"model": model.to_dict(), "class_weight_power": class_weight_power},
               data, train, out_dir, address=address)


def text_features(model_dir: str | Path, table: pa.Table, splits: list[str] | None = None,
                  batch_size: int = 64) -> dict[str, np.ndarray]:
    """{utterance_id: vector} of a fine-tuned text model over ``splits`` (default all),
    cached in ``model_dir/features-<table fingerprint>.parquet``."""
    import torch

    from erc.models.checkpoint import load_model
    from erc.models.text import load_tokenizer
    from erc.train.tasks import TextTask

    model_dir = Path(model_dir)
    splits = splits or sorted(set(table.column("split").to_pylist()))
    cache = model_dir / f"features-{table_fingerprint(table)}-{'-'.join(splits)}.parquet"
    if cache.is_file():
        t = pq.read_table(cache)
        return {u: np.asarray(v, np.float32) for u, v in
                zip(t.column("utterance_id").to_pylist(), t.column("text_embedding").to_pylist())}
    model = load_model(model_dir)
    cfg = model.config
    tokenizer = load_tokenizer(cfg.encoder)
    data = build_text_data(table, tokenizer, cfg.context_turns, cfg.max_length,
                           roles={s: s for s in splits}, labels=cfg.labels,
                           speaker_names=cfg.speaker_names, future_turns=cfg.future_turns)
    task = TextTask({"model": cfg.to_dict()}, data, None)
    ids, vectors = [], []
    for split in splits:
        emb, _ = task.embed_and_predict(model, split, torch.device("cpu"), batch_size)
        ids.extend(data.splits[split]["ids"])
        vectors.extend(emb)
    pq.write_table(pa.table({"utterance_id": ids,
                             "text_embedding": [v.tolist() for v in vectors]}), cache)
    return dict(zip(ids, vectors))


def frozen_text_features(model_path: str, table: pa.Table, batch_size: int = 64,
                         cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Sentence-transformers embeddings of each transcript (no context, encoder frozen),
    cached by the utterances' ids and texts only (a fold that reassigns splits reuses them)."""
    from erc.runtime import state_dir

    cache_dir = Path(cache_dir) if cache_dir else state_dir() / "cache" / "text_embeddings"
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{Path(model_path).resolve()}|"
                         f"{table_fingerprint(table, ('utterance_id', 'text'))}".encode())
    cache = cache_dir / f"{Path(model_path).name}-{key.hexdigest()[:16]}.parquet"
    if cache.is_file():
        t = pq.read_table(cache)
        return {u: np.asarray(v, np.float32) for u, v in
                zip(t.column("utterance_id").to_pylist(), t.column("text_embedding").to_pylist())}
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device="cpu")
    ids = table.column("utterance_id").to_pylist()
    texts = [t or "" for t in table.column("text").to_pylist()]
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                           show_progress_bar=False).astype(np.float32)
    pq.write_table(pa.table({"utterance_id": ids,
                             "text_embedding": [v.tolist() for v in vectors]}), cache)
    return dict(zip(ids, vectors))


def resolve_text_encoder(name_or_path: str) -> str:
    """A text encoder folder: a path as given, else a sentence-transformers model name found
    by the model registry (registry package, erc's model cache, Hugging Face cache)."""
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser().resolve())
    from erc.backends.base import ModelSpec
    from erc.backends.registry import resolve

    spec = resolve(ModelSpec(role="text", backend="sentence-transformers", name=name_or_path),
                   download=False)
    return str(spec.path)


def face_vectors(path: str | Path) -> dict[str, np.ndarray]:
    """One face vector per utterance from the feature table's ``faces`` column: the mean
    embedding of the most confident face of each sampled frame (absent when no face)."""
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    out = {}
    for file in files:
        t = pq.read_table(file, columns=["utterance_id", "faces"])
        for uid, faces in zip(t.column("utterance_id").to_pylist(), t.column("faces").to_pylist()):
            best: dict[int, tuple[float, list]] = {}
            for face in faces or []:
                emb = face.get("embedding")
                if not emb or not np.all(np.isfinite(emb)):
                    continue
                frame, score = face.get("frame", 0), face.get("score") or 0.0
                if frame not in best or score > best[frame][0]:
                    best[frame] = (score, emb)
            if best:
                out[uid] = np.mean([np.asarray(e, np.float32) for _, e in best.values()], axis=0)
    return out


def load_features(spec: Mapping[str, dict], table: pa.Table) -> dict[str, dict[str, np.ndarray]]:
    """Per-modality {utterance_id: vector} from a feature spec (JSON-able, stored with the
    fusion model so evaluation rebuilds the same inputs):

    - ``{"kind": "finetuned", "path": MODEL_DIR}``: a fine-tuned text model's vectors;
    - ``{"kind": "sentence-transformers", "path": MODEL}``: frozen transcript embeddings;
    - ``{"kind": "parquet", "path": FEATURES, "column": "speaker_embedding"}``: a column of
      the feature table (or any Parquet keyed by utterance_id);
    - ``{"kind": "faces", "path": FEATURES}``: per-utterance face vector (``face_vectors``);

    each optionally with ``"adapter": ADAPTER_DIR`` (identity -> adapted 128-d)."""
    return adapt_features(raw_features(spec, table), spec)


def raw_features(spec: Mapping[str, dict], table: pa.Table) -> dict[str, dict[str, np.ndarray]]:
    """Per-modality {utterance_id: vector} of ``spec`` before any adapter (finite rows)."""
    from erc.train.data import read_vectors

    out = {}
    for modality, item in spec.items():
        kind = item["kind"]
        if kind == "finetuned":
            vectors = text_features(item["path"], table)
        elif kind == "sentence-transformers":
            vectors = frozen_text_features(item["path"], table)
        elif kind == "parquet":
            vectors = read_vectors(item["path"], item.get("column", f"{modality}_embedding"))
        elif kind == "faces":
            vectors = face_vectors(item["path"])
        else:
            raise ValueError(f"unknown feature kind {kind!r} for {modality}")
        out[modality] = {u: v for u, v in vectors.items() if np.all(np.isfinite(v))}
    return out


def adapt_features(raw: Mapping[str, dict], spec: Mapping[str, dict],
                   adapters: Mapping | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``raw`` features through the adapters of ``spec`` (or the loaded ``adapters`` given
    per modality, e.g. resized ones); modalities without an adapter pass unchanged."""
    from erc.models.adapters import adapt_vectors
    from erc.models.checkpoint import load_model

    out = {}
    for modality, vectors in raw.items():
        path = spec.get(modality, {}).get("adapter")
        adapter = (adapters or {}).get(modality)
        if adapter is None and path:
            adapter = load_model(path)
        if adapter is not None and vectors:
            ids = list(vectors)
            vectors = dict(zip(ids, adapt_vectors(adapter, np.stack([vectors[u] for u in ids]))))
        out[modality] = vectors
    return out


def resize_adapters(spec: Mapping[str, dict], hidden: int | None, out_dim: int | None,
                    out_dir: str | Path | None = None) -> tuple[dict, dict]:
    """(spec, adapters): the adapters of ``spec`` with sizes ``hidden`` / ``out_dim`` (None:
    their own), retrained where the sizes differ (``resized_adapter``). With ``out_dir``
    retrained ones are saved to ``out_dir/<modality>/model`` and the returned spec points
    there, so the model trained on them rebuilds the same inputs when evaluated."""
    from erc.models.adapters import TRAINING_SET, resized_adapter
    from erc.models.checkpoint import save_model

    spec = {m: dict(item) for m, item in spec.items()}
    adapted = [m for m, item in spec.items() if item.get("adapter")]
    if not adapted:
        raise ValueError("adapter sizes were given but no modality has an adapter "
                         "(--speaker-adapter / --face-adapter)")
    adapters = {}
    for modality in adapted:
        source = Path(spec[modality]["adapter"])
        adapters[modality], retrained = resized_adapter(source, hidden, out_dim)
        if out_dir is not None and retrained:
            saved_as = save_model(Path(out_dir) / modality / "model", adapters[modality],
                                  metrics={"retrained_from": str(source.resolve())})
            shutil.copy2(source / TRAINING_SET, saved_as / TRAINING_SET)
            spec[modality]["adapter"] = str(saved_as.resolve())
    return spec, adapters


def train_fusion(table: pa.Table, feature_spec: Mapping[str, dict], out_dir: str | Path,
                 train: TrainConfig, model_options: dict | None = None,
                 roles: Mapping[str, str] | None = None, class_weight_power: float = 0.5,
                 address: str | None = None, features: Mapping | None = None) -> TrainOutcome:
    """Trains ``FusionModel`` (options: mixer, window, isolate_turns, d_state, ...) on the
    features ``feature_spec`` describes (``features``: already loaded ones)."""
    from erc.models.fusion import FusionConfig

    features = features if features is not None else load_features(feature_spec, table)
    data = build_dialogue_data(table, features, roles)
    model = FusionConfig(modalities=data.modalities, dims=data.dims, labels=data.labels,
                         n_classes=len(data.labels), **(model_options or {}))
    return fit("fusion", {"model": model.to_dict(), "class_weight_power": class_weight_power,
                          "features": dict(feature_spec)},
               data, train, out_dir, address=address)
