"""Classification metrics of emotion predictions: accuracy, weighted and macro F1,
per-class precision / recall / F1 / support, the confusion matrix, a per-speaker
breakdown, and the confusion-matrix plot. Plain NumPy (checked against scikit-learn in
the tests), so a Ray worker needs nothing more."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows are true labels, columns predictions."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int],
                           labels: Sequence[str]) -> dict:
    """Accuracy, weighted F1, macro F1 (over classes present in y_true or y_pred, as
    scikit-learn does), per-class P/R/F1/support, and the confusion matrix."""
    n = len(labels)
    matrix = confusion(y_true, y_pred, n)
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(1).astype(np.float64)
    predicted = matrix.sum(0).astype(np.float64)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = support.sum()
    present = (support + predicted) > 0
    return {
        "n": int(total),
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "weighted_f1": float((f1 * support).sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {label: {"precision": float(precision[i]), "recall": float(recall[i]),
                              "f1": float(f1[i]), "support": int(support[i])}
                      for i, label in enumerate(labels)},
        "confusion": matrix.tolist(),
        "labels": list(labels),
    }


def per_group(y_true: Sequence[int], y_pred: Sequence[int], groups: Sequence[str],
              labels: Sequence[str], min_count: int = 1) -> dict[str, dict]:
    """Accuracy, weighted F1 and count per group (speaker), largest groups first."""
    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    out = {}
    names, counts = np.unique(groups, return_counts=True)
    for name in names[np.argsort(-counts, kind="stable")]:
        mask = groups == name
        if mask.sum() < min_count:
            continue
        m = classification_metrics(y_true[mask], y_pred[mask], labels)
        out[str(name)] = {"n": m["n"], "accuracy": m["accuracy"], "weighted_f1": m["weighted_f1"]}
    return out


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """Row-normalised confusion matrix with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    # Labels and title are the corpus's text, not mathtext: a label with two "$" in it is
    # drawn as written.
    with matplotlib.rc_context({"text.parse_math": False}):
        return _plot_confusion(np.asarray(matrix), labels, Path(path), title)


def _plot_confusion(matrix: np.ndarray, labels: Sequence[str], path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    norm = _safe_div(matrix.astype(np.float64), matrix.sum(1, keepdims=True).astype(np.float64))
    size = max(4.0, 0.7 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{matrix[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center",
                    fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    from erc import io

    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def format_table(metrics: dict) -> str:
    """Per-class table of a metrics dict, for printing."""
    lines = [f"{'class':12} {'P':>6} {'R':>6} {'F1':>6} {'n':>6}"]
    for label, m in metrics["per_class"].items():
        lines.append(f"{label:12} {m['precision']:6.3f} {m['recall']:6.3f} {m['f1']:6.3f} {m['support']:6d}")
    lines.append(f"accuracy {metrics['accuracy']:.4f}  weighted F1 {metrics['weighted_f1']:.4f}  "
                 f"macro F1 {metrics['macro_f1']:.4f}  (n={metrics['n']})")
    return "\n".join(lines)
