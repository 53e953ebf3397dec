"""``erc train text|fusion|adapter`` and ``erc evaluate``.

    erc train text CORPUS --encoder all-MiniLM-L6-v2 --out runs/meld/text
    erc train fusion CORPUS --text finetuned:runs/meld/text/model --out runs/meld/fusion
    erc train fusion CORPUS --text finetuned:runs/meld/text/model --second-text st:all-MiniLM-L6-v2 \\
        --text-only --out runs/meld/fusion-both
    erc train fusion CORPUS --text st:all-MiniLM-L6-v2 --features runs/meld/features \\
        --speaker-adapter runs/adapters/speaker/model --face-adapter runs/adapters/face/model
    erc train adapter speaker ../shared/assets/speech/ravdess16k --out runs/adapters/speaker
    erc train adapter face ../shared/assets/faces/ckplus48 --out runs/adapters/face
    erc evaluate runs/meld/fusion/model CORPUS --split dev --out runs/meld/eval-dev
    erc evaluate runs/meld/fusion-seed*/model CORPUS --out runs/meld/eval-ensemble   # ensemble

CORPUS is an ingest output folder, an ``utterances.parquet`` or any corpus erc reads.
Training runs on Ray Train (``--address`` / RAY_ADDRESS for a cluster, else an embedded
Ray); the same command with the same ``--out`` skips a finished run and resumes an
interrupted one.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from erc.cli.common import add_recipe, add_run_options, output_beside, recipe
from erc.recipes import AdapterRecipe, FusionInputs, FusionRecipe, TextRecipe
from erc.settings import path_flag
from erc.stages.base import execute


def _print_trained(summary: dict, out: Path, skipped: bool) -> None:
    from erc.stages.train import kept_candidate, refit_said
    from erc.train.data import chosen_on

    best = summary["best"]
    state = "up to date, not retrained: " if skipped else ""
    print(f"{state}best epoch {best['epoch'] + 1}: {chosen_on(summary)} accuracy "
          f"{best['dev_accuracy']:.4f}, weighted "
          f"F1 {best['dev_weighted_f1']:.4f}, macro F1 {best['dev_macro_f1']:.4f} "
          f"({summary['epochs']} epochs run)")
    if kept := kept_candidate(summary):
        print(f"{kept}; each in {out / 'candidates'}")
    if refit := refit_said(summary):
        print(refit)
    print(f"model: {out / 'model'}\nray run: {summary['run_path']}")


def cmd_train_text(args) -> int:
    from erc.stages.main import interrupts
    from erc.stages.train import TextJob, TextStage
    from erc.train.vectors import resolve_text_encoder

    text = recipe(TextRecipe, args, args.recipe_options, section="train.text_training")
    encoder = resolve_text_encoder(text.encoder)
    with interrupts("train-text"):  # Ctrl-C: Ray Train's handler would exit 1 (or 0), silent
        result = execute(TextStage(args.address), TextJob(text, args.format),
                         {"utterances": args.corpus, "encoder": encoder}, args.out,
                         force=args.force, overwrite=args.overwrite)
    _print_trained(result.summary, Path(args.out), result.skipped)
    return 0


def cmd_train_fusion(args) -> int:
    from erc.settings import validate
    from erc.stages.main import interrupts
    from erc.stages.train import FusionJob, FusionStage
    from erc.train.vectors import feature_spec, spec_paths

    fusion = recipe(FusionRecipe, args, args.recipe_options, section="train")
    inputs = validate(FusionInputs, {o.name: getattr(args, o.name) for o in args.input_options
                                     if hasattr(args, o.name)}, "options")
    spec = feature_spec(inputs)
    with interrupts("train"):  # Ctrl-C: Ray Train's handler would exit 1 (or 0), silent
        result = execute(FusionStage(args.address), FusionJob(fusion, spec, args.format),
                         {"utterances": args.corpus, **spec_paths(spec)}, args.out,
                         force=args.force, overwrite=args.overwrite)
    _print_trained(result.summary, Path(args.out), result.skipped)
    return 0


def cmd_train_adapter(args) -> int:
    from erc.errors import ConfigError
    from erc.stages.train import UnimodalAdapterJob, UnimodalAdapterStage

    settings = recipe(AdapterRecipe, args, args.recipe_options, section="train.adapter_training")
    # each modality holds out its own way; the other's setting was ignored silently
    if args.modality == "speaker" and settings.test_groups:
        raise ConfigError(f"test_groups {settings.test_groups}: a speaker adapter holds out the "
                          f"splits other than train_split ({settings.train_split!r}); "
                          f"test_groups (subjects held out) is a face adapter's")
    if args.modality == "face" and settings.train_split != "train":
        raise ConfigError(f"train_split {settings.train_split!r}: a face adapter's folder has no "
                          f"splits; hold out subjects with test_groups")
    result = execute(UnimodalAdapterStage(), UnimodalAdapterJob(args.modality, settings, args.format),
                     {"corpus": args.corpus}, args.out, force=args.force,
                     overwrite=args.overwrite)
    test = result.summary.get("test")
    if test:
        print(f"held-out accuracy {test['accuracy']:.4f}, weighted F1 {test['weighted_f1']:.4f} "
              f"(n={test['n']})")
    print(f"adapter ({args.modality}, {result.summary['in_dim']} -> {result.summary['out_dim']}): "
          f"{Path(args.out) / 'model'}")
    return 0


def _check_split(table, split: str, corpus: str, problems=None) -> None:
    """InputError naming the splits the corpus has when it has no split ``split`` (nor,
    for ``dev``, one of its other names), and the reasons its rows were set aside when
    ``problems`` (the rows set aside reading it) holds that split's every row."""
    from erc.errors import InputError
    from erc.schema import problem_reasons, said_reasons
    from erc.train.data import DEV_NAMES

    present = sorted({s for s in table.column("split").to_pylist() if s is not None})
    if split in present or (split == "dev" and any(name in present for name in DEV_NAMES)):
        return
    names = DEV_NAMES if split == "dev" else (split,)
    set_aside = problem_reasons(problems, names)
    if set_aside:
        raise InputError(f"{corpus}: every input row of split {split!r} was set aside, "
                         f"nothing to evaluate ({sum(set_aside.values())} rows: "
                         f"{said_reasons(set_aside)}; `erc corpus ingest` lists each with its "
                         f"line in problems.parquet)")
    wanted = f"{split!r} (nor valid, val or validation)" if split == "dev" else repr(split)
    has = f"its splits are {', '.join(present)}" if present else "it has no splits"
    raise InputError(f"{corpus}: the corpus has no split {wanted}; {has} (choose one with --split)")


def cmd_evaluate(args) -> int:
    from erc.train.metrics import format_table

    if args.json:  # stdout holds the JSON alone: what the work says goes to stderr
        with contextlib.redirect_stdout(sys.stderr):
            metrics, out, split, skipped = _evaluate(args)
        print(json.dumps({k: v for k, v in metrics.items() if k != "confusion"}, indent=2))
        return 0
    metrics, out, split, skipped = _evaluate(args)
    # What was scored, first: the figures below name neither the model nor the split.
    print(f"{args.model[0]}" if len(args.model) == 1 else
          f"ensemble of {len(args.model)} models (class probabilities averaged)",
          f"on split {split} of {args.corpus}")
    if set_aside := metrics.get("set_aside"):  # input rows in no prediction, never scored
        from erc.artifacts import set_aside_listed

        # a corpus read as it is (not an ingest output) has no problems.parquet to point at
        print(f"{split}: {sum(set_aside.values()):,} input rows set aside before scoring, not in "
              f"predictions.parquet (" + ", ".join(f"{r} {n}" for r, n in set_aside.items())
              + f"; {set_aside_listed(args.corpus, args.format)})")
    if unknown := metrics.get("set_aside_split_unknown"):  # of this split or another: said
        print(f"{split}: {sum(unknown.values()):,} more input rows set aside whose split could not "
              f"be read (" + ", ".join(f"{r} {n}" for r, n in unknown.items())
              + "), of this split or another: in no split's count")
    if not metrics["n"]:  # predictions only: scores of nothing would read as 0.000
        print(f"{split}: no labelled utterance, nothing scored; predictions for "
              f"{metrics['n_unlabelled']:,} utterances in {out / 'predictions.parquet'}")
        for column, n in metrics.get("label_columns_unread", {}).items():
            print(f"{split}: its column {column!r} ({n:,} values) was not read as labels: a "
                  f"manifest's labels are its column 'emotion' (or name another with a "
                  f"mapping, columns: {{emotion: {column}}}; `erc corpus inspect` suggests one)")
    else:
        print(format_table(metrics))
        if metrics["n_unlabelled"]:  # predicted, not scored: n + these + set aside = input rows
            print(f"{split}: {metrics['n_unlabelled']:,} utterances without a label, predicted "
                  f"but not scored (in predictions.parquet, column true empty)")
        if unseen := metrics.get("unseen_labels"):
            alone = metrics["on_model_labels"]
            print("labels the model does not predict, their utterances counted wrong above: "
                  + ", ".join(f"{label} {n}" for label, n in unseen.items())
                  + (f"; without them: accuracy {alone['accuracy']:.4f}, weighted F1 "
                     f"{alone['weighted_f1']:.4f}, macro F1 {alone['macro_f1']:.4f} "
                     f"(n={alone['n']})" if alone["n"] else
                     "; no labelled utterance has a label the model predicts (another "
                     "corpus's labels? rename them at ingest with label_map)"))
        top = list(metrics["per_speaker"].items())[:8]
        print("per speaker (largest): " + ", ".join(
            f"{s} {m['accuracy']:.2f} (n={m['n']})" for s, m in top))
        if metrics.get("n_missing"):  # read as the learned missing embedding
            print("utterances without a vector: " + ", ".join(
                f"{modality} {n}" for modality, n in metrics["n_missing"].items())
                + " (read as the learned missing embedding; column missing of predictions.parquet)")
            if metrics["n_missing"].get("text") == metrics["n"] + metrics["n_unlabelled"]:
                # Every kept row has a text: none found is a feature folder made before this
                # split was in the corpus (a test file placed since), or another corpus's.
                print(f"no utterance of {split} has a text vector in the feature folder the "
                      f"model reads, so every prediction is made without its text: preprocess "
                      f"this corpus (`erc preprocess CORPUS --out F`) and pass `--features F`")
        print(f"outputs in {out}: metrics.json, predictions.parquet, confusion.png"
              + (" (up to date)" if skipped else ""))
    return 0


def _evaluate(args) -> tuple[dict, Path, str, bool]:
    """(metrics, output folder, split, whether it was up to date) of ``erc evaluate``."""
    from erc.artifacts import load_corpus_and_problems
    from erc.train.data import resolve_roles

    table, problems = load_corpus_and_problems(args.corpus, args.format)
    _check_split(table, args.split, args.corpus, problems)
    split = resolve_roles(table, {"dev": args.split})["dev"]
    if args.out:
        return _evaluate_into(args, Path(args.out), split, (table, problems))
    # beside the (first) model, also one given by a storage URI
    from erc import io

    folder = f"eval-{io.path_part(split)}"  # a split named "../x" stays beside the model
    with output_beside(args, "model", Path(args.model[0]).parent / folder, folder) as out:
        return _evaluate_into(args, out, split, (table, problems))


def _evaluate_into(args, out: Path, split: str, corpus: tuple) -> tuple[dict, Path, str, bool]:
    """``_evaluate`` into ``out``; ``corpus``: the (table, problems) of ``args.corpus``,
    read once."""
    from erc.errors import OwnershipError
    from erc.stages.train import EvalJob, EvaluateStage

    for model in args.model:  # results there would change the model (another stage's output)
        if Path(model).resolve() in out.resolve().parents:
            raise OwnershipError(f"{out}: is inside the model folder {model}; its results would "
                                 f"change that model for whatever reads it (a retraining "
                                 f"refuses to replace it); choose an output folder outside it")
    job = EvalJob(split, args.format, n_models=len(args.model))
    result = execute(EvaluateStage(corpus), job,
                     {"utterances": args.corpus, "features": args.features,
                      **EvaluateStage.model_inputs(args.model)}, out,
                     force=args.force, overwrite=args.overwrite)
    return json.loads((out / "metrics.json").read_text()), out, split, result.skipped


def add_format(parser) -> None:
    """``--format`` of a command that reads a corpus (a name of no format was ignored
    silently where the corpus was an ingest folder)."""
    from erc.corpus import FORMATS

    parser.add_argument("--format", choices=sorted(FORMATS),
                        help="corpus format when reading a corpus (default: detected)")


def _common(parser) -> None:
    parser.add_argument("corpus", type=path_flag, help="ingest folder, utterances.parquet or a corpus erc reads")
    parser.add_argument("--out", required=True, type=path_flag, help="output folder (same folder = resume)")
    add_format(parser)
    add_run_options(parser)


def register(commands) -> None:
    """``train`` (text, fusion, adapter) and ``evaluate``."""
    from erc.settings import add_arguments

    train = commands.add_parser("train", help="train models on Ray Train",
                                description="Train the text encoder, the fusion model (or a "
                                            "baseline) or an identity adapter.")
    kinds = train.add_subparsers(dest="train_command", required=True, metavar="MODEL")

    text = kinds.add_parser("text", help="fine-tune a text encoder for emotion, with context",
                            description="Fine-tunes a sentence-transformers / Hugging Face "
                                        "encoder on the train split with past turns as context.")
    _common(text)
    text.set_defaults(func=cmd_train_text, recipe_options=add_recipe(text, TextRecipe))

    fusion = kinds.add_parser("fusion", help="train the fusion model (GRU, Mamba or transformer over the dialogue)",
                              description="Trains the fusion model on per-utterance tokens: text "
                                          "(+ adapted speaker and face vectors).")
    _common(fusion)
    inputs = add_arguments(fusion, FusionInputs, title="inputs")
    fusion.set_defaults(func=cmd_train_fusion, input_options=inputs,
                        recipe_options=add_recipe(fusion, FusionRecipe))

    adapter = kinds.add_parser("adapter", help="train an identity -> emotion adapter",
                               description="Embeds a unimodal emotion corpus with the profile's "
                                           "identity model and trains the adapter MLP.")
    adapter.add_argument("modality", choices=["speaker", "face"])
    adapter.add_argument("corpus", type=path_flag, help="speech: a corpus erc reads (RAVDESS); face: a folder "
                                        "<label>/<group>_*.png (CK+48)")
    adapter.add_argument("--out", required=True, type=path_flag)
    add_format(adapter)
    add_run_options(adapter, address=False)
    adapter.set_defaults(func=cmd_train_adapter, recipe_options=add_recipe(adapter, AdapterRecipe))

    evaluate = commands.add_parser("evaluate", help="evaluate a trained model on a split",
                                   description="Accuracy, weighted / macro F1, per-class and "
                                               "per-speaker metrics, confusion matrix, predictions; "
                                               "of one model or of an ensemble (several models).")
    evaluate.add_argument("model", nargs="+", type=path_flag, help="model folder (OUT/model of erc train); "
                          "several: an ensemble (their class probabilities averaged)")
    evaluate.add_argument("corpus", type=path_flag, help="ingest folder, utterances.parquet or a corpus erc reads")
    evaluate.add_argument("--split", default="dev", help="split to evaluate (dev falls back to "
                                                         "valid/val when the corpus has no dev)")
    add_format(evaluate)
    evaluate.add_argument("--features", type=path_flag, help="feature folder of this corpus (`erc preprocess`), "
                          "read for the speaker and face vectors (and the text vectors of a model "
                          "of `erc run`) instead of the folder the "
                          "model was trained with (default: that folder, which holds only "
                          "the training corpus's utterances)")
    evaluate.add_argument("--out", type=path_flag, help="default: MODEL/../eval-SPLIT (of the first MODEL)")
    evaluate.add_argument("--json", action="store_true")
    add_run_options(evaluate, address=False)
    evaluate.set_defaults(func=cmd_evaluate)
