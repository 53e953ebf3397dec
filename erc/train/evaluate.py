"""Evaluate a trained model (text or fusion), or an ensemble of them, on any split of any
corpus. An ensemble averages its models' class probabilities: models of one architecture
trained with different seeds (``erc train ... --seed N``) disagree on the turns they are
unsure of, and their average is steadier than any one of them.

Writes to ``out_dir``: ``metrics.json`` (accuracy, weighted F1, macro F1, per-class
P/R/F1/support, confusion matrix, per-speaker breakdown), ``confusion.png`` and
``predictions.parquet`` (one row per utterance: id, dialogue, speaker, true and predicted
label, the probability of every class, and the modalities it had no vector for: a fusion
model reads those as its learned *missing* embedding; ``metrics.json`` counts them).

A label of the split that the model does not predict (one its training data never had,
e.g. IEMOCAP's ``excited`` for a model trained without it) is scored as a class of its
own that every prediction misses: its utterances count wrong in accuracy and the F1s,
``metrics.json`` names them (``unseen_labels``) and adds the scores of the utterances
whose label the model predicts (``on_model_labels``). A label written otherwise in case or
spaces ('Joy ' for 'joy') is the model's label. The split's input rows set aside before
scoring (by the reader or the ingest: empty transcripts, unknown labels, ...) are counted
per reason (``set_aside``): ``n`` + ``n_unlabelled`` + those are the split's input rows.
A split without a labelled utterance is predicted, not scored: its accuracy and F1s are
null, not 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from erc import io
from erc.errors import InputError
from erc.schema import problem_reasons

SCORES = ("accuracy", "weighted_f1", "macro_f1")  # null in metrics.json when n is 0
LABEL_COLUMNS = ("emotion", "emotions", "label", "labels")  # names a label column goes by


@dataclass
class Evaluation:
    metrics: dict
    predictions: pa.Table
    out_dir: Path | None


def predict_split(model_dir: str | Path, table: pa.Table, split: str, device: str | None = None,
                  features: str | Path | None = None):
    """(probabilities (n, C), y_true (n,), ids, speakers, labels, missing, truth) of
    ``split``; y_true: index in labels (-1: no label, or one the model does not predict);
    missing: per utterance, the modalities the model read without a vector; truth: its
    label (as the model spells it, ``in_model_labels``) or None. ``features``: the feature
    folder of ``table``'s corpus, read for the speaker and face vectors instead of the one
    the model was trained with (whose utterance ids another corpus may share); ``device``:
    where torch runs (default the GPU when torch sees one, ``erc.backends.base.pick_device``)."""
    import torch

    from erc.backends.base import pick_device
    from erc.models.checkpoint import load_model, read_config
    from erc.train.data import build_dialogue_data, build_text_data
    from erc.train.tasks import FusionTask, TextTask
    from erc.train.vectors import load_features, with_feature_folder

    device = pick_device(device)
    saved = read_config(model_dir)
    model = load_model(model_dir, device)
    labels = model.config.labels  # checked on load: n_classes distinct names
    roles = {"eval": split}  # a predict-only task: no train split
    table = in_model_labels(table, labels)
    if saved["kind"] == "text":
        from erc.models.text import load_tokenizer

        if features is not None:  # it reads its tokens alone: a folder given would go unread
            raise InputError(f"--features {features}: {model_dir} is a text model, it reads no "
                             f"speaker or face vectors")

        cfg = model.config
        data = build_text_data(table, load_tokenizer(cfg.encoder), cfg, roles, labels=labels)
        task = TextTask({"model": cfg.to_dict()}, data, None)
        vectors = {}  # the text model reads its tokens, never a missing embedding
    elif saved["kind"] == "fusion":
        spec = saved.get("features")
        if not spec:
            raise InputError(f"{model_dir}: the model does not record its feature spec")
        if features is not None:
            spec = with_feature_folder(spec, features)
        unread = [m for m in model.config.modalities if m not in spec]
        if unread:  # an edited config.json: the model reads a modality it has no source of
            raise InputError(f"{model_dir}: the model reads {', '.join(unread)} but its feature "
                             f"spec names no source of it")
        features = load_features(spec, table, split)
        vectors = {m: features[m] for m in model.config.modalities}
        # a modality of which the corpus has no vector at all is read as missing everywhere
        data = build_dialogue_data(table, vectors, roles, labels=labels, dims=model.config.dims)
        task = FusionTask({"model": model.config.to_dict()}, data, None)
    else:
        raise InputError(f"{model_dir}: cannot evaluate a {saved['kind']} model on a corpus")
    logits, y, ids, speakers = task.predict(model, "eval", torch.device(device))
    logits = logits - logits.max(1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    missing = [[m for m, found in vectors.items() if u not in found] for u in ids]
    emotion = dict(zip(table.column("utterance_id").to_pylist(),
                       table.column("emotion").to_pylist()))
    truth = [emotion.get(u) or None for u in ids]
    return probs, y, ids, speakers, labels, missing, truth


def in_model_labels(table: pa.Table, labels: Sequence[str]) -> pa.Table:
    """``table`` with each emotion that is one of ``labels`` written otherwise (in case or
    spaces: 'Joy ' for 'joy') spelt as the model spells it; another emotion written several
    ways spelt one way (the first in sorted order), one class that the model does not
    predict."""
    from erc.train.data import label_key

    spelling = {label_key(label): label for label in labels}
    emotions = table.column("emotion").to_pylist()
    for e in sorted({e for e in emotions if e}):
        spelling.setdefault(label_key(e), e)
    mapped = [spelling[label_key(e)] if e else e for e in emotions]
    if mapped == emotions:
        return table
    index = table.schema.get_field_index("emotion")
    return table.set_column(index, table.schema.field(index),
                            pa.array(mapped, table.schema.field(index).type))


def label_like_columns(table: pa.Table, split: str) -> dict[str, int]:
    """The columns of ``split``'s rows kept in ``meta`` whose name is a label column's
    (``Emotion``, ``label``) with their count of values: a manifest reads its labels from
    ``emotion`` alone, so a file of such a column reads as unlabelled, every turn predicted
    and none scored, unless this is said."""
    from erc.train.data import label_key

    found: Counter = Counter()
    rows = table.filter(pa.compute.equal(table.column("split"), split)).column("meta")
    for meta in rows.to_pylist():
        for key, value in meta or ():
            if label_key(key).replace(" ", "_") in LABEL_COLUMNS and value and value.strip():
                found[key] += 1
    return dict(sorted(found.items()))


def predict_ensemble(model_dirs: Sequence[str | Path], table: pa.Table, split: str,
                     device: str | None = None, features: str | Path | None = None):
    """``predict_split`` of several models, their probabilities averaged. The models must
    predict the same labels for the same utterances."""
    from erc.models.checkpoint import read_config

    def predicts(model_dir) -> list[str] | None:  # None: a config without, refused on load
        return read_config(model_dir)["config"].get("labels")

    labels = predicts(model_dirs[0])
    for other in model_dirs[1:]:  # checked first: each model alone may be refused otherwise
        if predicts(other) != labels:
            raise InputError(f"{other}: predicts {predicts(other)}; {model_dirs[0]} predicts "
                             f"{labels}: not one ensemble")
    probs, y, ids, speakers, labels, missing, truth = predict_split(model_dirs[0], table, split,
                                                                    device, features)
    for other in model_dirs[1:]:
        more, _, other_ids, _, other_labels, more_missing, _ = predict_split(other, table, split,
                                                                             device, features)
        if other_labels != labels or other_ids != ids:
            raise InputError(f"{other}: predicts {other_labels} for {len(other_ids)} utterances; "
                             f"{model_dirs[0]} predicts {labels} for {len(ids)}: not one ensemble")
        probs = probs + more
        missing = [sorted({*a, *b}) for a, b in zip(missing, more_missing)]
    return probs / len(model_dirs), y, ids, speakers, labels, missing, truth


def evaluate(model_dir: str | Path | Sequence[str | Path], table: pa.Table, split: str,
             out_dir: str | Path | None = None, device: str | None = None,
             title: str | None = None, problems: pa.Table | None = None,
             features: str | Path | None = None) -> Evaluation:
    """Metrics and predictions of a model folder, or of a list of them (an ensemble).
    ``problems``: the input rows set aside before ``table`` (``erc.schema``'s problem
    table), counted per reason for ``split`` in the metrics (``set_aside``); ``features``:
    as for ``predict_split``."""
    from erc.train.metrics import classification_metrics, per_group, plot_confusion

    model_dirs = [model_dir] if isinstance(model_dir, (str, Path)) else list(model_dir)
    probs, _, ids, speakers, labels, missing, truth = predict_ensemble(model_dirs, table, split,
                                                                        device, features)
    pred = probs.argmax(1)
    # Every labelled utterance is scored: one whose label the model does not predict (a
    # label its training data never had) is a class of its own that every prediction misses.
    unseen = Counter(t for t in truth if t is not None and t not in labels)
    scored = list(labels) + sorted(unseen)
    index = {label: i for i, label in enumerate(scored)}
    y = np.asarray([index[t] if t is not None else -1 for t in truth], dtype=np.int64)
    labelled = y >= 0
    metrics = classification_metrics(y[labelled], pred[labelled], scored)
    if not labelled.any():  # predictions only: a score of nothing is none, not 0.0
        metrics.update(dict.fromkeys(SCORES))
        if unread := label_like_columns(table, split):
            metrics["label_columns_unread"] = unread
    metrics["per_speaker"] = per_group(y[labelled], pred[labelled],
                                       np.asarray(speakers)[labelled], scored)
    metrics.update({"split": split, "model": str(model_dirs[0]) if len(model_dirs) == 1 else
                    [str(m) for m in model_dirs], "n_unlabelled": int((~labelled).sum()),
                    "n_missing": dict(sorted(Counter(m for row in missing for m in row).items()))})
    if reasons := problem_reasons(problems, (split,)):  # rows that never reached the model:
        metrics["set_aside"] = dict(reasons.most_common())  # n + n_unlabelled + these
    if reasons := problem_reasons(problems, (None,)):  # rows whose split column went unread:
        metrics["set_aside_split_unknown"] = dict(reasons.most_common())  # this split's, maybe
    if unseen:  # the scores above count them wrong; these leave them out
        known = labelled & (y < len(labels))
        alone = classification_metrics(y[known], pred[known], labels)
        metrics["unseen_labels"] = dict(sorted(unseen.items()))
        metrics["on_model_labels"] = {"n": alone["n"],  # of none of them: no score, not 0
                                      **{k: alone[k] if alone["n"] else None for k in SCORES}}
    dialogue = dict(zip(table.column("utterance_id").to_pylist(),
                        table.column("dialogue_id").to_pylist()))
    predictions = pa.table({
        "utterance_id": ids,
        "dialogue_id": [dialogue.get(u) for u in ids],
        "speaker": speakers,
        "true": truth,
        "predicted": [labels[i] for i in pred],
        **{f"p_{label}": probs[:, i].astype(np.float32) for i, label in enumerate(labels)},
        "missing": pa.array(missing, pa.list_(pa.string())),
    })
    if out_dir is not None:
        out_dir = Path(out_dir)
        io.write_json(out_dir / "metrics.json", metrics)
        io.write_parquet(out_dir / "predictions.parquet", predictions)
        name = (Path(model_dirs[0]).name if len(model_dirs) == 1
                else f"ensemble of {len(model_dirs)}")
        scores = (f"acc {metrics['accuracy']:.3f}, wF1 {metrics['weighted_f1']:.3f}"
                  if metrics["n"] else "no labelled utterance")
        plot_confusion(metrics["confusion"], scored, out_dir / "confusion.png",
                       title or f"{name} on {split}: {scores}")
    return Evaluation(metrics=metrics, predictions=predictions, out_dir=out_dir)
