"""What the training loop trains: a task builds its model from a config, yields each
worker's share of every global batch, computes the loss, and predicts a split.

- ``text``: the context text encoder (``erc.models.text``), one unit = one utterance.
- ``fusion``: the fusion model and its baselines (``erc.models.fusion``) on per-utterance
  feature tokens, one unit = one dialogue.

Loss: cross-entropy with class weights ``(N / (C n_c)) ** power`` from the training split
(power 0.5 by default: rare classes such as MELD fear and disgust count more, without
giving up weighted F1), normalised by the weight of the whole global batch so that N
workers compute the same gradient as one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from erc.errors import ConfigError


def class_weights(y: np.ndarray, n_classes: int, power: float) -> np.ndarray:
    y = y[y >= 0]
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0) ** power
    return (weights / weights[counts > 0].mean()).astype(np.float32)


def _global_batches(n: int, batch_size: int, world: int, rng: np.random.Generator,
                    order: list[list[int]] | None = None) -> list[list[int]]:
    batches = order if order is not None else [
        b.tolist() for b in np.array_split(rng.permutation(n), max(1, -(-n // batch_size)))]
    return [b for b in batches if len(b) >= world]


# -- text -----------------------------------------------------------------------------------

@dataclass
class TextData:
    labels: list[str]
    pad_id: int
    cls_id: int | None = None  # start and separator ids (window inputs are packed from them)
    sep_id: int | None = None
    # split -> {"rows": [(ids, start, end)], "y": int64 (-1 = unlabelled), "ids": [...], "speakers": [...]}
    # (window inputs: the train split also has "dialogues": [(turn token ids, y)])
    splits: dict[str, dict] = field(default_factory=dict)
    dev_split: str = "dev"  # the split the dev role reads ("select": a slice of train)


class TextTask:
    """One unit = one utterance's input; with window inputs one unit of training = one
    window of consecutive turns, every labelled turn in it a target."""

    def __init__(self, config: dict, data: TextData, train):
        self.config, self.data, self.labels = config, data, data.labels
        self.train = data.splits.get("train")  # None: a task that only predicts
        self.windows = config["model"].get("inputs", "target") == "window"
        if self.train is not None:
            self.train_index = np.flatnonzero(self.train["y"] >= 0)
            self.n_train = (len(self._windows(np.random.default_rng(0))) if self.windows
                            else len(self.train_index))
            self.weights = torch.from_numpy(class_weights(
                self.train["y"], len(self.labels), config.get("class_weight_power", 0.5)))

    def build_model(self):
        from erc.models.text import ContextTextClassifier, TextModelConfig

        return ContextTextClassifier(TextModelConfig(**self.config["model"]))

    def steps_per_epoch(self, batch_size: int, world: int) -> int:
        return -(-self.n_train // batch_size)

    def _windows(self, rng) -> list[tuple[tuple, np.ndarray]]:
        """This epoch's windows with a labelled turn: ((ids, spans), y of its turns); every
        dialogue's first window ends at a random turn."""
        from erc.models.text import pack_windows

        model = self.config["model"]
        max_turns = model["context_turns"] + 1 + model["future_turns"]
        out = []
        for turns, y in self.train["dialogues"]:
            first = int(rng.integers(1, max_turns + 1))
            for seq, spans, index in pack_windows(turns, model["max_length"], self.data.cls_id,
                                                  self.data.sep_id, max_turns, first):
                if (y[index] >= 0).any():
                    out.append(((seq, spans), y[index]))
        return out

    def train_batches(self, rng, batch_size, rank, world) -> Iterator:
        from erc.models.text import length_batches

        if self.windows:
            windows = self._windows(rng)
            rows, ys = [w[0] for w in windows], [w[1] for w in windows]
            index = np.arange(len(windows))
        else:
            rows, ys = self.train["rows"], None
            index = self.train_index
        lengths = [len(rows[i][0]) for i in index]
        for batch in _global_batches(len(index), batch_size, world, rng,
                                     length_batches(lengths, batch_size, rng)):
            units = index[np.asarray(batch)]
            if ys is None:
                y_all, y_mine = self.train["y"][units], self.train["y"][units[rank::world]]
            else:
                y_all = np.concatenate([ys[i] for i in units])
                y_mine = np.concatenate([ys[i] for i in units[rank::world]])
            norm = float(self.weights[torch.from_numpy(y_all[y_all >= 0])].sum())
            yield {"rows": [rows[i] for i in units[rank::world]], "y": torch.from_numpy(y_mine),
                   "norm": max(norm, 1e-6) / world}

    def loss(self, model, batch, device):
        from erc.models.text import collate

        inputs = {k: v.to(device) for k, v in collate(batch["rows"], self.data.pad_id).items()}
        logits = model(**inputs)
        losses = F.cross_entropy(logits, batch["y"].to(device), weight=self.weights.to(device),
                                 ignore_index=-1, reduction="sum")
        return losses / batch["norm"]

    @torch.no_grad()
    def embed_and_predict(self, model, split: str, device, batch_size: int = 64):
        """(embeddings, logits) of every utterance of ``split``, in the split's order."""
        from erc.models.text import collate, length_batches

        model.eval()
        part = self.data.splits[split]
        rows = part["rows"]
        emb = np.zeros((len(rows), model.dim), dtype=np.float32)
        logits = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
        for batch in length_batches([len(r[0]) for r in rows], batch_size, None):
            inputs = {k: v.to(device) for k, v in collate([rows[i] for i in batch],
                                                          self.data.pad_id).items()}
            e = model.embed(**inputs)
            emb[batch] = e.float().cpu().numpy()
            logits[batch] = model.head(e).float().cpu().numpy()
        return emb, logits

    def predict(self, model, split: str, device):
        part = self.data.splits[split]
        _, logits = self.embed_and_predict(model, split, device)
        return logits, part["y"], part["ids"], part["speakers"]


# -- fusion ---------------------------------------------------------------------------------

@dataclass
class DialogueData:
    labels: list[str]
    modalities: list[str]  # e.g. ["text", "speaker", "face"]
    dims: dict[str, int]
    # split -> list of dialogues: {"features": {m: (T, d) float32}, "present": {m: (T,) bool},
    #                              "y": (T,) int64 (-1 = unlabelled), "ids": [...], "speakers": [...]}
    splits: dict[str, list[dict]] = field(default_factory=dict)
    dev_split: str = "dev"  # the split the dev role reads ("select": a slice of train)


def collate_dialogues(dialogues: list[dict], modalities: list[str], dims: dict[str, int]) -> dict:
    """Pads dialogues to the longest: features (B, T, d) per modality, present (B, T) per
    modality, valid (B, T), y (B, T) with -1 on padding and unlabelled turns, roles (B, T)
    each turn's speaker by order of appearance in its dialogue (``speaker_order``)."""
    from erc.models.fusion import dialogue_key, speaker_order

    length = max(len(d["y"]) for d in dialogues)
    batch = {"features": {}, "present": {}}
    for m in modalities:
        feats = np.zeros((len(dialogues), length, dims[m]), dtype=np.float32)
        present = np.zeros((len(dialogues), length), dtype=bool)
        for i, d in enumerate(dialogues):
            t = len(d["y"])
            feats[i, :t] = d["features"][m]
            present[i, :t] = d["present"][m]
        batch["features"][m] = torch.from_numpy(feats)
        batch["present"][m] = torch.from_numpy(present)
    y = np.full((len(dialogues), length), -1, dtype=np.int64)
    valid = np.zeros((len(dialogues), length), dtype=bool)
    roles = np.zeros((len(dialogues), length), dtype=np.int64)
    for i, d in enumerate(dialogues):
        y[i, : len(d["y"])] = d["y"]
        valid[i, : len(d["y"])] = True
        roles[i, : len(d["y"])] = speaker_order(d.get("speakers") or [None] * len(d["y"]))
    batch["y"] = torch.from_numpy(y)
    batch["valid"] = torch.from_numpy(valid)
    batch["roles"] = torch.from_numpy(roles)
    batch["dialogue"] = torch.tensor([dialogue_key(d["ids"][0]) for d in dialogues],
                                     dtype=torch.float64)
    return batch


def _to(batch: dict, device) -> dict:
    return {"features": {m: v.to(device) for m, v in batch["features"].items()},
            "present": {m: v.to(device) for m, v in batch["present"].items()},
            "valid": batch["valid"].to(device), "roles": batch["roles"].to(device),
            "dialogue": batch["dialogue"].to(device)}


def neighbour_memory(dialogues: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(text vectors, label indices, dialogue keys) of the labelled turns with a text
    vector of ``dialogues``: what a fusion model with ``neighbours`` remembers."""
    from erc.models.fusion import dialogue_key

    text, labels, keys = [], [], []
    for d in dialogues:
        kept = (d["y"] >= 0) & d["present"]["text"]
        text.append(d["features"]["text"][kept])
        labels.append(d["y"][kept])
        keys += [dialogue_key(d["ids"][0])] * int(kept.sum())
    return (torch.from_numpy(np.concatenate(text)), torch.from_numpy(np.concatenate(labels)),
            torch.tensor(keys, dtype=torch.float64))


class FusionTask:
    def __init__(self, config: dict, data: DialogueData, train):
        self.config, self.data, self.labels = config, data, data.labels
        self.dialogues = data.splits.get("train")  # None: a task that only predicts
        if self.dialogues is not None:
            self.n_train = len(self.dialogues)
            y = np.concatenate([d["y"] for d in self.dialogues])
            self.weights = torch.from_numpy(class_weights(y, len(self.labels),
                                                          config.get("class_weight_power", 0.5)))

    def build_model(self):
        from erc.models.fusion import FusionConfig, FusionModel

        config = FusionConfig(**self.config["model"])
        model = FusionModel(config)
        if not model.remembers or self.dialogues is None:  # predicting: the saved memory
            return model
        memory = neighbour_memory(self.dialogues)
        if not len(memory[1]):  # no labelled turn with a text vector: none to remember
            print("[train] neighbours: no labelled training turn has a text vector; trained "
                  "without them", flush=True)
            return FusionModel(dataclasses.replace(config, neighbours=0, dialogue_neighbours=0))
        model = FusionModel(dataclasses.replace(config, memory=len(memory[1])))
        model.remember(*memory)
        return model

    def steps_per_epoch(self, batch_size: int, world: int) -> int:
        return -(-self.n_train // batch_size)

    def train_batches(self, rng, batch_size, rank, world) -> Iterator:
        for batch in _global_batches(self.n_train, batch_size, world, rng):
            dialogues = [self.dialogues[i] for i in batch]
            y_all = np.concatenate([d["y"] for d in dialogues])
            y_all = y_all[y_all >= 0]
            norm = float(self.weights[torch.from_numpy(y_all)].sum()) if len(y_all) else 1.0
            mine = dialogues[rank::world]
            out = collate_dialogues(mine, self.data.modalities, self.data.dims)
            out["norm"] = max(norm, 1e-6) / world
            yield out

    def loss(self, model, batch, device):
        logits = model(**_to(batch, device))
        y = batch["y"].to(device)
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                 weight=self.weights.to(device), ignore_index=-1, reduction="sum",
                                 label_smoothing=self.config.get("label_smoothing", 0.0))
        return losses / batch["norm"]

    @torch.no_grad()
    def predict(self, model, split: str, device, batch_size: int = 32):
        model.eval()
        dialogues = self.data.splits[split]
        logits, ys, ids, speakers = [], [], [], []
        for i in range(0, len(dialogues), batch_size):
            chunk = dialogues[i: i + batch_size]
            batch = collate_dialogues(chunk, self.data.modalities, self.data.dims)
            out = model(**_to(batch, device)).float().cpu().numpy()
            for j, d in enumerate(chunk):
                t = len(d["y"])
                logits.append(out[j, :t])
                ys.append(d["y"])
                ids.extend(d["ids"])
                speakers.extend(d["speakers"])
        n_classes = len(self.labels)
        return (np.concatenate(logits) if logits else np.zeros((0, n_classes), np.float32),
                np.concatenate(ys) if ys else np.zeros(0, np.int64), ids, speakers)


TASKS = {"text": TextTask, "fusion": FusionTask}


def make_task(name: str, config: dict, data, train):
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name](config, data, train)
