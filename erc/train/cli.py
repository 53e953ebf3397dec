"""``erc train`` and ``erc evaluate``: ``register(commands)`` adds them to the argparse
subparsers of the ``erc`` command line.

    erc train text CORPUS --encoder all-MiniLM-L6-v2 --out runs/meld/text
    erc train fusion CORPUS --text finetuned:runs/meld/text/model --out runs/meld/fusion
    erc train fusion CORPUS --text st:all-MiniLM-L6-v2 --features runs/meld/features \\
        --speaker-adapter runs/adapters/speaker/model --face-adapter runs/adapters/face/model
    erc train adapter speaker ../shared/assets/speech/ravdess16k --out runs/adapters/speaker
    erc train adapter face ../shared/assets/faces/ckplus48 --out runs/adapters/face
    erc evaluate runs/meld/fusion/model CORPUS --split dev --out runs/meld/eval-dev
    erc evaluate runs/meld/fusion-seed*/model CORPUS --out runs/meld/eval-ensemble   # ensemble

CORPUS is an ingest output folder, an ``utterances.parquet`` or any corpus erc reads.
Training runs on Ray Train (``--address`` / RAY_ADDRESS for a cluster, else an embedded
Ray); running the same command again with the same ``--out`` resumes an interrupted run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


NULL_AS_ZERO = ("window", "d_model")  # options whose None (FusionConfig) is 0 on the command line


def _option(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.replace("-", "_"), yaml.safe_load(value)


def apply_config_file(args) -> None:
    """Options from ``--config FILE``: YAML whose keys are the command's option names
    (``lr``, ``d_state``, ``class_weight_power``, ...), as ``erc tune`` writes its
    ``best_config.yaml``. An option given on the command line (a value other than its
    default) wins; the file fills in the rest. Unknown keys are an error."""
    from erc.config import ConfigError

    path = getattr(args, "config", None)
    if not path:
        return
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value")
    actions = {a.dest: a for a in args.options_parser._actions
               if a.dest not in ("help", "config", "corpus", "out")}
    unknown = sorted(k for k in data if str(k).replace("-", "_") not in actions)
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {', '.join(map(str, unknown))}; "
                          f"known: {', '.join(sorted(actions))}")
    for key, value in data.items():
        action = actions[str(key).replace("-", "_")]
        if getattr(args, action.dest) != action.default:
            continue  # given on the command line
        if value is None and action.dest in NULL_AS_ZERO:
            value = 0  # null in the file: all turns / the token width, spelt 0 on the command line
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise ConfigError(f"{path}: {key} must be true or false, got {value!r}")
        elif value is not None and action.type is not None:
            try:
                value = ([action.type(v) for v in value] if isinstance(value, list)
                         else action.type(value))
            except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
                raise ConfigError(f"{path}: {key}: {err}") from None
        if value is not None and action.choices is not None and any(
                v not in action.choices for v in (value if isinstance(value, list) else [value])):
            raise ConfigError(f"{path}: {key} must be one of {', '.join(map(str, action.choices))}, "
                              f"got {value!r}")
        setattr(args, action.dest, value)


def _roles(args) -> dict:
    return {"train": args.train_split, "dev": args.dev_split}


def _train_config(args, default_lr: float, default_epochs: int, default_batch: int):
    from erc.train.loop import TrainConfig

    out = Path(args.out).resolve()
    return TrainConfig(
        name=args.name or out.name, storage_path=args.storage or str(out / "ray"),
        epochs=args.epochs or default_epochs, batch_size=args.batch_size or default_batch,
        lr=args.lr or default_lr, patience=args.patience, seed=args.seed,
        num_workers=args.workers, cpus_per_worker=args.cpus_per_worker, use_gpu=args.gpu,
        max_failures=args.max_failures, weight_decay=args.weight_decay)


def _print_outcome(outcome) -> None:
    best = outcome.best
    print(f"best epoch {best['epoch']}: dev accuracy {best['dev_accuracy']:.4f}, weighted F1 "
          f"{best['dev_weighted_f1']:.4f}, macro F1 {best['dev_macro_f1']:.4f} "
          f"({len(outcome.history)} epochs run)")
    print(f"model: {outcome.model_dir}\nray run: {outcome.run_path}")


def parse_feature(text: str, modality: str) -> dict:
    """``finetuned:DIR`` | ``st:MODEL`` | ``parquet:PATH[#column]`` -> feature spec item."""
    kind, sep, rest = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KIND:VALUE for --{modality}, got {text!r}")
    if kind == "finetuned":
        return {"kind": "finetuned", "path": str(Path(rest).resolve())}
    if kind in ("st", "sentence-transformers"):
        from erc.train.recipes import resolve_text_encoder

        return {"kind": "sentence-transformers", "path": resolve_text_encoder(rest)}
    if kind == "parquet":
        path, _, column = rest.partition("#")
        return {"kind": "parquet", "path": str(Path(path).resolve()),
                "column": column or f"{modality}_embedding"}
    raise argparse.ArgumentTypeError(f"unknown feature kind {kind!r} (finetuned, st, parquet)")


def cmd_train_text(args) -> int:
    from erc.train.data import load_utterances
    from erc.train.recipes import finetune_text, resolve_text_encoder

    apply_config_file(args)
    table = load_utterances(args.corpus, format=args.format)
    train = _train_config(args, 5e-5, 5, 16)
    outcome = finetune_text(table, resolve_text_encoder(args.encoder), args.out, train,
                            roles=_roles(args), context_turns=args.context_turns,
                            max_length=args.max_length, speaker_names=not args.no_speaker_names,
                            freeze_layers=args.freeze_layers,
                            class_weight_power=args.class_weight_power, address=args.address,
                            pooling=args.pooling, future_turns=args.future_turns)
    _print_outcome(outcome)
    return 0


def cmd_train_fusion(args) -> int:
    from erc.train.data import load_utterances
    from erc.train.recipes import train_fusion

    apply_config_file(args)
    table = load_utterances(args.corpus, format=args.format)
    spec = {"text": parse_feature(args.text, "text")}
    if args.features and not args.text_only:
        path = str(Path(args.features).resolve())
        spec["speaker"] = {"kind": "parquet", "path": path, "column": "speaker_embedding"}
        spec["face"] = {"kind": "faces", "path": path}
        if args.speaker_adapter:
            spec["speaker"]["adapter"] = str(Path(args.speaker_adapter).resolve())
        if args.face_adapter:
            spec["face"]["adapter"] = str(Path(args.face_adapter).resolve())
        for modality in args.drop or []:
            spec.pop(modality, None)
    if args.adapter_hidden or args.adapter_out:
        from erc.train.recipes import resize_adapters

        spec, _ = resize_adapters(spec, args.adapter_hidden, args.adapter_out,
                                  Path(args.out) / "adapters")
    options = {"mixer": args.mixer, "isolate_turns": args.no_context}
    # Options not given take FusionConfig's defaults; 0 means None (all turns, token width).
    given = {"window": args.window, "d_model": args.d_model, "bidirectional": args.bidirectional,
             "speaker_roles": args.speaker_roles, "d_state": args.d_state,
             "d_conv": args.d_conv, "expand": args.expand, "dropout": args.dropout}
    options.update({k: None if k in NULL_AS_ZERO and v == 0 else v
                    for k, v in given.items() if v is not None})
    train = _train_config(args, 1e-3, 20, 8)
    outcome = train_fusion(table, spec, args.out, train, options, roles=_roles(args),
                           class_weight_power=args.class_weight_power, address=args.address)
    _print_outcome(outcome)
    return 0


def cmd_train_adapter(args) -> int:
    from erc.backends.registry import load_backend, profile_specs
    from erc.models import adapters
    from erc.train.metrics import classification_metrics

    overrides = {}
    role = "speaker" if args.modality == "speaker" else "face_embed"
    if args.backend or args.weights:
        overrides[role] = {k: v for k, v in (("backend", args.backend), ("path", args.weights)) if v}
    spec = profile_specs(args.profile, overrides)[role]
    embedder = load_backend(spec)
    if args.modality == "speaker":
        from erc.train.data import load_utterances

        table = load_utterances(args.corpus, format=args.format)
        split = table.column("split").to_pylist()
        vectors, labels, groups = adapters.speech_embeddings(table, embedder)
        rows = [r for r, e in zip(split, table.column("emotion").to_pylist()) if e]
        train_mask = [s == args.train_split for s in rows]
    else:
        paths, labels, groups = adapters.image_folder_items(args.corpus)
        vectors = adapters.face_crop_embeddings(paths, embedder)
        held = set(args.test_groups or [])
        train_mask = [g not in held for g in groups]
    import numpy as np

    train_mask = np.asarray(train_mask)
    label_set = sorted(set(labels))
    train_rows = (vectors[train_mask], [l for l, m in zip(labels, train_mask) if m],
                  [g for g, m in zip(groups, train_mask) if m])
    adapter, info = adapters.train_adapter(*train_rows, args.modality, label_set)
    metrics = {"train": info}
    if (~train_mask).any():
        test = ~train_mask
        ok = np.isfinite(vectors[test]).all(1)
        y = np.asarray([label_set.index(l) for l, m in zip(labels, test) if m])[ok]
        pred = adapters.predict(adapter, vectors[test][ok])
        metrics["test"] = classification_metrics(y, pred, label_set)
        print(f"held-out accuracy {metrics['test']['accuracy']:.4f}, weighted F1 "
              f"{metrics['test']['weighted_f1']:.4f} (n={len(y)})")
    out = adapters.save_adapter(Path(args.out) / "model", adapter, *train_rows, metrics=metrics,
                                extra={"embedder": embedder.record().to_dict()})
    print(f"adapter ({args.modality}, {adapter.config.in_dim} -> {adapter.config.out_dim}): {out}")
    return 0


def cmd_evaluate(args) -> int:
    from erc.train.data import load_utterances, resolve_roles
    from erc.train.evaluate import evaluate
    from erc.train.metrics import format_table

    table = load_utterances(args.corpus, format=args.format)
    split = resolve_roles(table, {"dev": args.split})["dev"]
    out = Path(args.out) if args.out else Path(args.model[0]).parent / f"eval-{split}"
    result = evaluate(args.model, table, split, out)
    if len(args.model) > 1:
        print(f"ensemble of {len(args.model)} models (class probabilities averaged)")
    if args.json:
        print(json.dumps({k: v for k, v in result.metrics.items() if k != "confusion"}, indent=2))
    else:
        print(format_table(result.metrics))
        top = list(result.metrics["per_speaker"].items())[:8]
        print("per speaker (largest): " + ", ".join(
            f"{s} {m['accuracy']:.2f} (n={m['n']})" for s, m in top))
        print(f"outputs in {out}: metrics.json, predictions.parquet, confusion.png")
    return 0


def _common(parser, lr_help: str) -> None:
    parser.add_argument("corpus", help="ingest folder, utterances.parquet or a corpus erc reads")
    parser.add_argument("--out", required=True, help="output folder (same folder = resume)")
    parser.add_argument("--config", help="YAML of options (keys: option names, e.g. the "
                        "best_config.yaml of `erc tune`); options on the command line win")
    parser.add_argument("--format", help="corpus format when reading a corpus (default: detected)")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--dev-split", default="dev", help="split for early stopping (default "
                        "dev; valid/val when the corpus has no dev)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch (split across workers)")
    parser.add_argument("--lr", type=float, help=lr_help)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--patience", type=int, default=4, help="early stopping on dev weighted F1")
    parser.add_argument("--class-weight-power", type=float, default=0.5,
                        help="class weights (N / (C n_c)) ** power; 0 = unweighted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP)")
    parser.add_argument("--cpus-per-worker", type=int, default=1)
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--max-failures", type=int, default=0)
    parser.add_argument("--name", help="run name (default: the --out folder's name)")
    parser.add_argument("--storage", help="where Ray Train keeps checkpoints (default OUT/ray; "
                        "on a multi-node cluster a shared folder or s3://...)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else embedded)")


def register(commands) -> None:
    """Adds ``train`` (text, fusion, adapter) and ``evaluate`` to ``commands``."""
    train = commands.add_parser("train", help="train models on Ray Train",
                                description="Train the text encoder, the fusion model (or a "
                                            "baseline) or an identity adapter.")
    kinds = train.add_subparsers(dest="train_command", required=True, metavar="MODEL")

    text = kinds.add_parser("text", help="fine-tune a text encoder for emotion, with context",
                            description="Fine-tunes a sentence-transformers / Hugging Face "
                                        "encoder on the train split with past turns as context.")
    _common(text, "learning rate (default 5e-5)")
    text.add_argument("--encoder", default="all-MiniLM-L6-v2",
                      help="model folder or name the registry finds (all-MiniLM-L6-v2, "
                           "all-mpnet-base-v2 after `erc models fetch`)")
    text.add_argument("--context-turns", type=int, default=8, help="past turns in the input")
    text.add_argument("--future-turns", type=int, default=0,
                      help="future turns in the input (default 0: causal, for streaming)")
    text.add_argument("--max-length", type=int, default=96)
    text.add_argument("--no-speaker-names", action="store_true")
    text.add_argument("--freeze-layers", type=int, default=0)
    text.add_argument("--pooling", choices=["target_mean", "target_max", "cls"],
                      default="target_mean", help="utterance vector: mean / max over the "
                      "target's tokens, or the [CLS] output (default target_mean)")
    text.set_defaults(func=cmd_train_text, options_parser=text)

    fusion = kinds.add_parser("fusion", help="train the Mamba fusion model or a baseline",
                              description="Trains the fusion model on per-utterance tokens: text "
                                          "(+ adapted speaker and face vectors).")
    _common(fusion, "learning rate (default 1e-3)")
    fusion.add_argument("--text", required=True,
                        help="finetuned:MODEL_DIR | st:MODEL (frozen) | parquet:PATH[#column]")
    fusion.add_argument("--features", help="feature table folder (speaker_embedding, faces)")
    fusion.add_argument("--speaker-adapter", help="adapter model folder for speaker vectors")
    fusion.add_argument("--face-adapter", help="adapter model folder for face vectors")
    fusion.add_argument("--adapter-hidden", type=int,
                        help="hidden size of the adapters (default: theirs); other sizes "
                             "retrain them on their saved training set into OUT/adapters")
    fusion.add_argument("--adapter-out", type=int,
                        help="output size of the adapters, i.e. their token width (default: theirs)")
    fusion.add_argument("--drop", action="append", choices=["speaker", "face"],
                        help="leave a modality out (ablation)")
    fusion.add_argument("--text-only", action="store_true", help="text tokens only (baseline)")
    fusion.add_argument("--mixer", choices=["mamba", "transformer", "gru", "none"],
                        default="mamba")
    fusion.add_argument("--bidirectional", action=argparse.BooleanOptionalAction,
                        help="every turn sees the whole dialogue (batch use, the default); "
                             "--no-bidirectional: causal, a turn sees only its past (streaming)")
    fusion.add_argument("--speaker-roles", type=int, help="learned speaker-role embeddings "
                        "(speakers by order of appearance in the dialogue; 0: none)")
    fusion.add_argument("--window", type=int, help="turns whose mixer outputs the classifier "
                        "averages (1: the turn's own; 0: all turns up to it)")
    fusion.add_argument("--no-context", action="store_true", help="every turn alone (baseline)")
    # Defaults of the model's options: erc.models.fusion.FusionConfig (one home).
    fusion.add_argument("--d-model", type=int, help="model width (0: the token width, the paper's)")
    fusion.add_argument("--d-state", type=int, help="Mamba state size (the paper: 64)")
    fusion.add_argument("--d-conv", type=int, help="Mamba convolution width")
    fusion.add_argument("--expand", type=int, help="Mamba expansion")
    fusion.add_argument("--dropout", type=float)
    fusion.set_defaults(func=cmd_train_fusion, options_parser=fusion)

    adapter = kinds.add_parser("adapter", help="train an identity -> emotion adapter",
                               description="Embeds a unimodal emotion corpus with the profile's "
                                           "identity model and trains the adapter MLP.")
    adapter.add_argument("modality", choices=["speaker", "face"])
    adapter.add_argument("corpus", help="speech: a corpus erc reads (RAVDESS); face: a folder "
                                        "<label>/<group>_*.png (CK+48)")
    adapter.add_argument("--out", required=True)
    adapter.add_argument("--format")
    adapter.add_argument("--train-split", default="train",
                         help="speech: split to train on; the others are held out")
    adapter.add_argument("--test-groups", nargs="*", help="face: subject ids held out for testing")
    adapter.add_argument("--profile", default="offline", help="model profile (offline, paper)")
    adapter.add_argument("--backend", help="identity backend override (resemblyzer, dlib, facenet...)")
    adapter.add_argument("--weights", help="weights path for the identity backend")
    adapter.set_defaults(func=cmd_train_adapter)

    evaluate = commands.add_parser("evaluate", help="evaluate a trained model on a split",
                                   description="Accuracy, weighted / macro F1, per-class and "
                                               "per-speaker metrics, confusion matrix, predictions; "
                                               "of one model or of an ensemble (several models).")
    evaluate.add_argument("model", nargs="+", help="model folder (OUT/model of erc train); "
                          "several: an ensemble (their class probabilities averaged)")
    evaluate.add_argument("corpus", help="ingest folder, utterances.parquet or a corpus erc reads")
    evaluate.add_argument("--split", default="dev")
    evaluate.add_argument("--format")
    evaluate.add_argument("--out", help="default: MODEL/../eval-SPLIT (of the first MODEL)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(func=cmd_evaluate)


def main(argv: list[str] | None = None) -> int:
    """``erc train ...`` / ``erc evaluate ...`` alone (what jobs/train.py and jobs/evaluate.py run)."""
    from erc.cli import stage_main

    return stage_main(register, argv)
