"""Accuracy on real data, side by side from one run: the floor baseline, our models and
the paper's figures, on MELD (train -> dev) and IEMOCAP text (train -> valid); and the
identity adapters (speaker on RAVDESS by actor, face on CK+48 by subject), raw vs adapted.

    .venv/bin/python bench/accuracy.py                      # everything (long on a CPU)
    .venv/bin/python bench/accuracy.py --corpora meld --no-adapters
    .venv/bin/python bench/accuracy.py --encoder all-mpnet-base-v2
    .venv/bin/python bench/accuracy.py --corpora iemocap --no-adapters --seeds 5 \
        --frozen all-MiniLM-L6-v2 all-mpnet-base-v2

Rows, per corpus (all text-only: the corpora here have transcripts, no media):
- floor: frozen sentence embeddings (all-MiniLM-L6-v2) of the turn and its two previous
  turns, concatenated, + logistic regression;
- frozen + Mamba: the Mamba fusion model on frozen embeddings (dialogue context) of each
  ``--frozen`` encoder (all-MiniLM-L6-v2 by default; all-mpnet-base-v2 after
  ``erc models fetch all-mpnet-base-v2``);
- fine-tuned encoder (context): the text encoder fine-tuned with past turns as context,
  its own classification head (the text-only model);
- fine-tuned + Mamba / + transformer / + Mamba no-context: the fusion model and its
  baselines on the fine-tuned encoder's utterance vectors;
- with ``--seeds N``, for each fusion row: the mean over seeds 0..N-1 and the ensemble of
  those N models (``erc evaluate`` with N model folders averages their probabilities);
- mixed ensemble: the fine-tuned text model with one model of each frozen + Mamba row
  (``erc evaluate TEXT_MODEL FROZEN_MODEL ...``): context read two ways, inside the
  encoder's input and by Mamba over frozen vectors; with ``--seeds N`` also its mean over
  the frozen rows' seeds (the text model is the same in each);
- paper: Wang & Beigi's reported figures (their QC-filtered MELD; their own splits).

Every fusion row stops early on the split it reports (dev / valid), as ``erc train`` does
with its ``--dev-split``: the corpora here have no third split to select on.

Every trained model is cached under the erc state dir (``~/.cache/erc/bench``) keyed by
its configuration: a second run re-evaluates cached models and trains only what is
missing; the table says which rows came from the cache. Fine-tuning MiniLM for 3 epochs
on 2 CPU cores took 25 min on MELD and 26 min on IEMOCAP (MPNet: several times that): run it
in the background (``nice``), once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from erc import runtime
from erc.home import state_dir

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPORA = {"meld": (SHARED / "data" / "meld", "dev"),
           "iemocap": (SHARED / "data" / "iemocap_text", "valid")}
PAPER = {  # (accuracy, weighted F1) in %, None where not reported
    "meld": [("paper: text only (MPNet-v2 fine-tuned)", 58.1, None),
             ("paper: trimodal Mamba fusion", 64.8, 61.5)],
    "iemocap": [("paper: trimodal Mamba fusion", 74.3, 74.1)],
}
TARGET = {"meld": 0.58, "iemocap": 0.60}
SHORT = {"all-MiniLM-L6-v2": "minilm", "all-mpnet-base-v2": "mpnet"}


def floor_baseline(table, features, dev_split: str) -> dict:
    """Frozen embeddings of the turn + its 2 previous turns (zeros before the dialogue
    starts) -> logistic regression."""
    from sklearn.linear_model import LogisticRegression

    from erc.train.data import dialogues, label_list
    from erc.train.metrics import classification_metrics

    labels = label_list(table)

    def xy(split):
        xs, ys = [], []
        for d in dialogues(table, split):
            vectors = [features[u] for u in d["ids"]]
            for i, emotion in enumerate(d["emotions"]):
                if emotion is None:
                    continue
                ctx = [vectors[i - k] if i - k >= 0 else np.zeros_like(vectors[i]) for k in (1, 2)]
                xs.append(np.concatenate([vectors[i], *ctx]))
                ys.append(labels.index(emotion))
        return np.asarray(xs), np.asarray(ys)

    x_train, y_train = xy("train")
    x_dev, y_dev = xy(dev_split)
    model = LogisticRegression(max_iter=3000).fit(x_train, y_train)
    return classification_metrics(y_dev, model.predict(x_dev), labels)


def ensemble_metrics(predictions: list) -> dict:
    """Metrics of the ensemble of models whose evaluations wrote ``predictions`` (their class
    probabilities averaged, as ``erc evaluate M1 M2 ...`` does; nothing predicted again)."""
    from erc.train.metrics import classification_metrics

    tables = [p.sort_by("utterance_id") for p in predictions]
    columns = [c for c in tables[0].column_names if c.startswith("p_")]
    labels = [c[2:] for c in columns]
    true = tables[0].column("true").to_pylist()
    labelled = np.asarray([t is not None for t in true])
    y = np.asarray([labels.index(t) for t in true if t is not None])
    probs = np.mean([np.stack([t.column(c).to_numpy() for c in columns], 1) for t in tables], 0)
    return classification_metrics(y, probs[labelled].argmax(1), labels)


def mean_metrics(scores: list[dict]) -> dict:
    return {key: float(np.mean([m[key] for m in scores]))
            for key in ("accuracy", "weighted_f1", "macro_f1")}


def smaller_ensembles(predictions: list) -> list[float]:
    """Weighted F1 of the ensembles of the first 2, 3, ..., N-1 models."""
    return [ensemble_metrics(predictions[:k])["weighted_f1"] for k in range(2, len(predictions))]


def hold_out(table, n_dialogues: int, seed: int = 0):
    """The train split with ``n_dialogues`` of its dialogues (a seeded draw) moved to a
    'holdout' split: scores on dialogues no choice was made on (the dev split is dropped)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    train = table.filter(pc.equal(table.column("split"), "train"))
    dialogues = sorted(set(train.column("dialogue_id").to_pylist()))
    held = set(np.random.default_rng(seed).choice(dialogues, n_dialogues, replace=False).tolist())
    split = ["holdout" if d in held else "train" for d in train.column("dialogue_id").to_pylist()]
    return train.set_column(train.schema.get_field_index("split"), "split", pa.array(split))


def _cached_or_train(model_dir: Path, train, label: str):
    """(model_dir, from_cache, seconds): train() unless model_dir holds a model."""
    if (model_dir / "model.safetensors").is_file():
        return model_dir, True, 0.0
    started = time.time()
    print(f"  training {label} ...", flush=True)
    outcome = train()
    return outcome.model_dir, False, time.time() - started


def corpus_rows(name: str, args, bench_dir: Path) -> list[dict]:
    from erc.train.data import load_utterances, resolve_roles
    from erc.train.evaluate import evaluate
    from erc.train.loop import TrainConfig
    from erc.train.recipes import (finetune_text, frozen_text_features, resolve_text_encoder,
                                   text_features, train_fusion)

    path, dev = CORPORA[name]
    table = load_utterances(path)
    dev = resolve_roles(table, {"train": "train", "dev": dev})["dev"]
    prefix = name  # of the cached models' folders
    if args.holdout:
        table, dev = hold_out(table, args.holdout), "holdout"
        prefix = f"{name}-holdout{args.holdout}"
        print(f"  scoring on {args.holdout} train dialogues held out (not the {name} dev split)")
    rows = []

    def row(model: str, metrics: dict, note: str = "") -> None:
        rows.append({"corpus": name, "model": model, "accuracy": metrics["accuracy"],
                     "weighted_f1": metrics["weighted_f1"], "macro_f1": metrics["macro_f1"],
                     "note": note})
        print(f"  {model:48} acc {metrics['accuracy']:.4f}  wF1 {metrics['weighted_f1']:.4f}  "
              f"mF1 {metrics['macro_f1']:.4f}  {note}", flush=True)

    floor_encoder = resolve_text_encoder("all-MiniLM-L6-v2")
    frozen = frozen_text_features(floor_encoder, table)
    row("floor: frozen MiniLM + 2 turns + LogReg", floor_baseline(table, frozen, dev))

    def fusion(tag: str, spec: dict, features: dict, options: dict, lr: float) -> tuple[list, list]:
        """The row of seed 0; with --seeds N also the mean over N seeds and their ensemble.
        Returns the model folders and the predictions of seeds 0..N-1."""
        model_dirs, scores, predictions = [], [], []
        for seed in range(args.seeds):
            out = bench_dir / (f"{prefix}-{tag}" if seed == 0 else f"{prefix}-{tag}-seed{seed}")
            cfg = TrainConfig(name=out.name, storage_path=str(bench_dir / "ray"),
                              epochs=args.fusion_epochs, batch_size=8, lr=lr, patience=3,
                              cpus_per_worker=args.cpus, seed=seed)
            model_dir, cached, seconds = _cached_or_train(
                out / "model", lambda: train_fusion(table, spec, out, cfg, options,
                                                    roles={"train": "train", "dev": dev},
                                                    features=features), f"{tag} (seed {seed})")
            result = evaluate(model_dir, table, dev, out / f"eval-{dev}")
            note = "cached" if cached else f"trained in {seconds:.0f} s"
            if seed == 0:
                row(tag, result.metrics, note)
            else:
                print(f"    seed {seed}: wF1 {result.metrics['weighted_f1']:.4f} ({note})", flush=True)
            model_dirs.append(model_dir)
            scores.append(result.metrics)
            predictions.append(result.predictions)
        if args.seeds > 1:
            spread = np.std([m["weighted_f1"] for m in scores])
            row(f"{tag}, mean of {args.seeds} seeds", mean_metrics(scores),
                f"wF1 sd {spread:.3f}: " + " ".join(f"{m['weighted_f1']:.3f}" for m in scores))
            ensemble = evaluate(model_dirs, table, dev,
                                bench_dir / f"{prefix}-{tag}-ensemble{args.seeds}" / f"eval-{dev}")
            smaller = smaller_ensembles(predictions)
            row(f"{tag}, ensemble of {args.seeds} seeds", ensemble.metrics,
                "probabilities averaged" + (f"; of seeds 0-1 .. 0-{args.seeds - 2}: "
                                            + " ".join(f"{f:.3f}" for f in smaller)
                                            if smaller else ""))
        return model_dirs, predictions

    def mixed_ensemble_rows(text_dir: Path, text_predictions, short: str,
                            frozen_runs: list) -> None:
        """The fine-tuned text model and one model of each frozen + Mamba row (seed k):
        models that read the dialogue differently (context inside the encoder's input vs
        Mamba over frozen vectors), so their errors differ more than seeds of one model."""
        members = (f"mixed: {short} text + frozen "
                   + "/".join(SHORT.get(n, Path(n).name) for n in args.frozen) + "+mamba")
        ensemble = evaluate([text_dir] + [dirs[0] for dirs, _ in frozen_runs], table, dev,
                            bench_dir / f"{prefix}-mixed-ensemble" / f"eval-{dev}")
        row(members, ensemble.metrics, "probabilities averaged; frozen rows' seed 0")
        if args.seeds > 1:
            scores = [ensemble_metrics([text_predictions] + [preds[k] for _, preds in frozen_runs])
                      for k in range(args.seeds)]
            f1s = [m["weighted_f1"] for m in scores]
            row(f"mixed, mean over seeds 0-{args.seeds - 1}", mean_metrics(scores),
                f"frozen rows' seed k with the text model; wF1 min {min(f1s):.3f} "
                f"sd {np.std(f1s):.3f}: " + " ".join(f"{f:.3f}" for f in f1s))

    frozen_runs = []  # (model folders, predictions) of each frozen row, by seed
    for frozen_name in args.frozen:
        frozen_encoder = resolve_text_encoder(frozen_name)
        vectors = (frozen if frozen_encoder == floor_encoder
                   else frozen_text_features(frozen_encoder, table))
        frozen_spec = {"text": {"kind": "sentence-transformers", "path": frozen_encoder}}
        frozen_runs.append(fusion(f"frozen-{SHORT.get(frozen_name, Path(frozen_encoder).name)}+mamba",
                                  frozen_spec, {"text": vectors}, {"mixer": "mamba"}, 1e-3))

    encoder = resolve_text_encoder(args.encoder)
    short = SHORT.get(args.encoder, Path(encoder).name)
    text_out = bench_dir / f"{prefix}-{short}-ctx"
    text_cfg = TrainConfig(name=text_out.name, storage_path=str(bench_dir / "ray"),
                           epochs=args.finetune_epochs, batch_size=16, lr=args.finetune_lr,
                           patience=2, cpus_per_worker=args.cpus, warmup_ratio=0.06)
    if not (text_out / "model" / "model.safetensors").is_file() and args.no_finetune:
        print(f"  (no fine-tuned {short} model cached in {text_out}; --no-finetune: skipped)")
        return rows
    model_dir, cached, seconds = _cached_or_train(
        text_out / "model", lambda: finetune_text(
            table, encoder, text_out, text_cfg, roles={"train": "train", "dev": dev},
            context_turns=8, max_length=96), f"fine-tuned {short}")
    history = json.loads((text_out / "history.json").read_text()) if (text_out / "history.json").is_file() else []
    result = evaluate(model_dir, table, dev, text_out / f"eval-{dev}")
    note = ("cached" if cached else f"trained in {seconds:.0f} s") + (
        f", {len(history)} epochs" if history else "")
    row(f"fine-tuned {short} (8 past turns), text-only", result.metrics, note)
    if frozen_runs:
        mixed_ensemble_rows(model_dir, result.predictions, short, frozen_runs)

    tuned = text_features(model_dir, table, ["train", dev])
    tuned_spec = {"text": {"kind": "finetuned", "path": str(model_dir)}}
    for tag, options in ((f"{short}-ft+mamba", {"mixer": "mamba", "dropout": 0.3}),
                         (f"{short}-ft+transformer", {"mixer": "transformer", "dropout": 0.3}),
                         (f"{short}-ft+mamba-no-context", {"mixer": "mamba", "dropout": 0.3,
                                                           "isolate_turns": True})):
        fusion(tag, tuned_spec, {"text": tuned}, options, 5e-4)
    return rows


def adapter_rows(args) -> list[dict]:
    """Emotion from identity embeddings on unseen people: logistic regression on the raw
    embeddings vs the adapter (its head, and logistic regression on its 128-d layer)."""
    from sklearn.linear_model import LogisticRegression

    from erc.backends.registry import load_backend, profile_specs
    from erc.corpus import read_corpus
    from erc.models import adapters
    from erc.train.metrics import classification_metrics

    specs = profile_specs("offline")
    rows = []

    def compare(name, x, labels, groups, test_mask, modality):
        label_set = sorted(set(labels))
        ok = np.isfinite(x).all(1)
        train, test = ok & ~test_mask, ok & test_mask
        y = np.asarray([label_set.index(l) for l in labels])
        unit = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-9)
        raw = LogisticRegression(max_iter=3000).fit(unit[train], y[train]).predict(unit[test])
        adapter, _ = adapters.train_adapter(x[train], [labels[i] for i in np.flatnonzero(train)],
                                            [groups[i] for i in np.flatnonzero(train)],
                                            modality, label_set)
        head = adapters.predict(adapter, x[test])
        adapted = adapters.adapt_vectors(adapter, x)
        lr = LogisticRegression(max_iter=3000).fit(adapted[train], y[train]).predict(adapted[test])
        chance = np.bincount(y[test]).max() / test.sum()
        for model, pred in ((f"raw {x.shape[1]}-d + LogReg", raw), ("adapter (its head)", head),
                            ("adapted 128-d + LogReg", lr)):
            m = classification_metrics(y[test], pred, label_set)
            rows.append({"corpus": name, "model": model, "accuracy": m["accuracy"],
                         "weighted_f1": m["weighted_f1"], "macro_f1": m["macro_f1"],
                         "note": f"n={int(test.sum())}, majority {chance:.3f}"})
            print(f"  {name:22} {model:26} acc {m['accuracy']:.4f}  wF1 {m['weighted_f1']:.4f}",
                  flush=True)

    ravdess = SHARED / "assets" / "speech" / "ravdess16k"
    if ravdess.is_dir():
        table = read_corpus(ravdess, actor_splits={"train": "1-14", "test": "15-18"}).utterances
        embedder = load_backend(specs["speaker"])
        x, labels, groups = adapters.speech_embeddings(table, embedder)
        split = [s for s, e in zip(table.column("split").to_pylist(),
                                   table.column("emotion").to_pylist()) if e]
        compare("ravdess speaker (GE2E)", x, labels, groups,
                np.asarray([s == "test" for s in split]), "speaker")
    ckplus = SHARED / "assets" / "faces" / "ckplus48"
    if ckplus.is_dir():
        paths, labels, groups = adapters.image_folder_items(ckplus)
        embedder = load_backend(specs["face_embed"])
        x = adapters.face_crop_embeddings(paths, embedder)
        subjects = sorted(set(groups))
        held = set(subjects[::5])  # every 5th subject is unseen
        compare("ck+48 face (dlib)", x, labels, groups,
                np.asarray([g in held for g in groups]), "face")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpora", nargs="*", default=list(CORPORA), choices=list(CORPORA))
    parser.add_argument("--encoder", default="all-MiniLM-L6-v2",
                        help="text encoder to fine-tune (all-MiniLM-L6-v2, all-mpnet-base-v2)")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--finetune-lr", type=float, default=6e-5)
    parser.add_argument("--no-finetune", action="store_true",
                        help="use a cached fine-tuned encoder only; never start fine-tuning")
    parser.add_argument("--frozen", nargs="+", default=["all-MiniLM-L6-v2"],
                        help="encoders whose frozen embeddings feed a Mamba fusion row")
    parser.add_argument("--fusion-epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=1,
                        help="train every fusion row with seeds 0..N-1: adds their mean and "
                             "their ensemble (class probabilities averaged)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the training worker")
    parser.add_argument("--holdout", type=int, default=0, metavar="N",
                        help="score on N train dialogues held out (a seeded draw) instead of "
                             "the dev split: a check of choices made on the dev split")
    parser.add_argument("--no-adapters", action="store_true")
    parser.add_argument("--out", default="runs/bench/accuracy.json")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        print(f"bench needs {SHARED} (real corpora)", file=sys.stderr)
        return 2
    runtime.apply_offline_env()
    bench_dir = state_dir() / "bench"
    started = time.time()
    rows = []
    try:
        for name in args.corpora:
            print(f"[{name}]", flush=True)
            rows += corpus_rows(name, args, bench_dir)
        if not args.no_adapters:
            print("[adapters]", flush=True)
            rows += adapter_rows(args)
    finally:
        runtime.shutdown()

    print(f"\n{'corpus':22} {'model':50} {'acc':>6} {'wF1':>6} {'mF1':>6}  note")
    for name in args.corpora:
        for r in [r for r in rows if r["corpus"] == name]:
            print(f"{name:22} {r['model']:50} {r['accuracy']:6.3f} {r['weighted_f1']:6.3f} "
                  f"{r['macro_f1']:6.3f}  {r['note']}")
        for model, acc, wf1 in [] if args.holdout else PAPER[name]:
            print(f"{name:22} {model:50} {acc / 100:6.3f} "
                  f"{'  n/a' if wf1 is None else f'{wf1 / 100:6.3f}'} {'':>6}  reported")
        ours = [r for r in rows if r["corpus"] == name and not r["model"].startswith("floor")]
        floor = next((r for r in rows if r["corpus"] == name and r["model"].startswith("floor")), None)
        if ours and floor and not args.holdout:
            best = max(ours, key=lambda r: r["weighted_f1"])
            verdict = "MET" if best["weighted_f1"] >= TARGET[name] else "NOT MET"
            print(f"{name:22} target wF1 >= {TARGET[name]:.2f}: {verdict} (best ours "
                  f"{best['weighted_f1']:.3f} '{best['model']}', floor {floor['weighted_f1']:.3f})")
    for r in rows:
        if r["corpus"] not in args.corpora:
            print(f"{r['corpus']:22} {r['model']:50} {r['accuracy']:6.3f} {r['weighted_f1']:6.3f} "
                  f"{r['macro_f1']:6.3f}  {r['note']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "seconds": time.time() - started}, indent=2))
    print(f"\n{time.time() - started:.0f} s; rows in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
