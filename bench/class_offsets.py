"""Per-class offsets fitted on the selection split, scored on the held-out dialogues: does
moving each class's decision threshold to what the selection split prefers carry to other
dialogues? (bench/RESULTS.md: it does not; the default keeps the model's probabilities.)

    .venv/bin/python bench/class_offsets.py iemocap --seeds 3
    .venv/bin/python bench/class_offsets.py meld --row bi-gru --seeds 3

It reads the models ``bench/accuracy.py`` trained for ``--row`` (trained now if missing,
as that bench trains them), and for each fold and seed: adds one offset per class to the
model's log-probabilities, chosen by coordinate search to maximise weighted F1 on the
fold's selection split, and prints the selection and test weighted F1 before and after.
"""

from __future__ import annotations

import argparse
import sys

import accuracy as bench  # bench/accuracy.py: the folds, rows and their cached models
import numpy as np

GRID = np.linspace(-1.5, 1.5, 31)  # offsets tried for each class, in log-probability
ROUNDS = 3  # passes over the classes


def weighted_f1(log_probs, y, labels, offsets) -> float:
    from erc.train.metrics import classification_metrics

    return classification_metrics(y, (log_probs + offsets).argmax(1), labels)["weighted_f1"]


def fit_offsets(log_probs: np.ndarray, y: np.ndarray, labels: list[str]) -> np.ndarray:
    """The offsets that maximise weighted F1 on (log_probs, y), one class at a time."""
    offsets = np.zeros(log_probs.shape[1])
    best = weighted_f1(log_probs, y, labels, offsets)
    for _ in range(ROUNDS):
        for c in range(len(offsets)):
            for value in GRID:
                trial = offsets.copy()
                trial[c] = value
                score = weighted_f1(log_probs, y, labels, trial)
                if score > best + 1e-9:
                    best, offsets = score, trial
    return offsets


def main(argv: list[str] | None = None) -> int:
    from erc import runtime
    from erc.artifacts import load_corpus
    from erc.home import state_dir
    from erc.recipes import FusionInputs
    from erc.train.evaluate import predict_ensemble
    from erc.train.folds import protocol_folds
    from erc.train.vectors import frozen_text_features, resolve_text_encoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", choices=list(bench.CORPORA))
    parser.add_argument("--row", default=bench.DEFAULT_ROW,
                        choices=[*bench.ROWS, *bench.CHOICE_ROWS])
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args(argv)
    # the settings bench/accuracy.py trains with (its models' cache keys)
    args.encoder, args.layers, args.epochs, args.patience = "all-MiniLM-L6-v2", FusionInputs().text_layers, 20, 4
    args.batch_size, args.select_fraction, args.cpus = 8, 0.15, 2
    if not bench.SHARED.is_dir():
        print(f"bench needs {bench.SHARED} (real corpora)", file=sys.stderr)
        return 2
    runtime.apply_offline_env()
    path, protocol = bench.CORPORA[args.corpus]
    table = load_corpus(path)
    encoder = resolve_text_encoder(args.encoder)
    models = bench.Models(args.corpus, args, state_dir() / "bench" / "folds", encoder,
                          frozen_text_features(encoder, table, layers=args.layers))
    before, after = [], []
    try:
        for fold in protocol_folds(table, protocol, select_fraction=args.select_fraction):
            for seed in range(args.seeds):
                model = models.get(args.row, fold, seed) / "model"
                scored = {}
                for split in ("select", "test"):
                    probs, y, _, _, labels, *_ = predict_ensemble([model], fold.table, split)
                    scored[split] = (np.log(probs[y >= 0] + 1e-9), y[y >= 0])
                offsets = fit_offsets(*scored["select"], labels)
                none = np.zeros_like(offsets)
                s0, s1 = (weighted_f1(*scored["select"], labels, o) for o in (none, offsets))
                t0, t1 = (weighted_f1(*scored["test"], labels, o) for o in (none, offsets))
                before.append(t0)
                after.append(t1)
                print(f"{fold.name} seed {seed}: selection {s0:.3f} -> {s1:.3f}, test {t0:.3f} -> "
                      f"{t1:.3f}; offsets {' '.join(f'{o:+.1f}' for o in offsets)}", flush=True)
    finally:
        runtime.shutdown()
    print(f"{args.corpus} {args.row}: test weighted F1 {np.mean(before):.3f} -> {np.mean(after):.3f} "
          f"(mean over folds and seeds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
