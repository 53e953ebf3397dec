"""The ``erc`` command line.

    erc run [--config FILE]                  the main job (default: the shipped sample)
    erc corpus ingest PATH [--format F] ...  any corpus -> utterances.parquet + summary
    erc corpus inspect PATH                  an unknown manifest's columns + a suggested mapping
    erc corpus summary DIR                   re-print the summary of an ingested corpus
    erc corpus formats                       the corpus formats erc reads
    erc models list|fetch                    the model of each role, where its weights are
    erc preprocess UTTERANCES ...            decode + ASR + faces + speaker + text features
    erc qc FEATURES [--utterances DIR] ...   alignment, face and speaker checks, report
    erc train text|fusion|adapter / erc evaluate MODEL CORPUS   training and metrics
    erc tune SEARCH CORPUS --out DIR         hyperparameter search (Ray Tune + Optuna)
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Callable

import yaml

from erc import __version__, console, runtime, storage
from erc.config import ConfigError, CorpusConfig, load_config
from erc.corpus import FORMATS, CorpusError

SAMPLE_CONFIG = "sample.yaml"


def _parse_option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.replace("-", "_"), yaml.safe_load(value)


def _print_ingest(outcome, as_json: bool) -> None:
    from erc.pipeline.ingest import PROBLEMS, UTTERANCES
    from erc.summary import format_summary

    if as_json:
        print(json.dumps(outcome.summary, indent=2))
        return
    state = "up to date, nothing recomputed" if outcome.skipped else f"done in {outcome.seconds:.1f} s"
    print(format_summary(outcome.summary))
    print(f"\ningest {state}:\n  {outcome.output_dir / UTTERANCES}\n  {outcome.output_dir / PROBLEMS}")


def cmd_ingest(args) -> int:
    from erc.pipeline.ingest import run_ingest

    options = dict(args.option or [])
    if args.media_root:
        options["media_root"] = str(Path(args.media_root).resolve())
    if args.split:
        options["splits"] = args.split
    if args.mapping:
        options["mapping"] = str(Path(args.mapping).resolve())
    config = CorpusConfig(path=args.path, format=args.format, options=options,
                          check_media=args.check_media, max_clip_seconds=args.max_clip_seconds)
    out = Path(args.out) if args.out else Path("runs") / Path(args.path).resolve().name / "corpus"
    outcome = run_ingest(config, out, force=args.force, ray_address=args.address)
    _print_ingest(outcome, args.json)
    return 0


def cmd_inspect(args) -> int:
    from erc.corpus.inspect import format_inspection, inspect_corpus, mapping_yaml

    inspection = inspect_corpus(Path(args.path))
    print(format_inspection(inspection) + "\n\nsuggested mapping:\n\n" + mapping_yaml(inspection))
    if args.write:
        Path(args.write).write_text(mapping_yaml(inspection), encoding="utf-8")
        print(f"written to {args.write}: edit it, then erc corpus ingest {args.path} --mapping {args.write}")
    return 0


def cmd_summary(args) -> int:
    from erc.pipeline.ingest import load_result
    from erc.summary import format_summary, problems_preview, summarise

    result = load_result(Path(args.dir))
    print(format_summary(summarise(result)))
    if result.problems.num_rows:
        print("\nfirst problems:\n" + problems_preview(result.problems))
    return 0


def cmd_formats(args) -> int:
    for name, (_, _, description) in FORMATS.items():
        print(f"{name:14} {description}")
    return 0


def cmd_run(args) -> int:
    config_path = args.config or resources.files("erc") / "configs" / SAMPLE_CONFIG
    config = load_config(Path(str(config_path)))
    if args.out:
        config.output_dir = args.out
    if args.address:
        config.ray.address = args.address
    if args.storage:
        config.train.storage = args.storage
    # URIs from the config file (those given as options are local copies already)
    if storage.is_uri(config.corpus.path):
        config.corpus.path = str(storage.stage_input(config.corpus.path, runtime.state_dir()))
    if storage.is_uri(config.output_dir):
        uri = config.output_dir
        config.train.storage = config.train.storage or storage.join_uri(uri, storage.RAY_STORAGE)
        with storage.staged_output(uri, runtime.state_dir(), exclude=(storage.RAY_STORAGE,)) as local:
            config.output_dir = str(local)
            code = _run_main_job(config, config_path, args.force)
        print(f"results: {uri}")
        return code
    return _run_main_job(config, config_path, args.force)


def _run_main_job(config, config_path, force: bool) -> int:
    from erc.backends.base import MissingWeightsError
    from erc.pipeline.main_job import RUN_LOG, run_main

    with console.run_log(Path(config.output_dir) / RUN_LOG) as log:
        print(f"erc {__version__}: main job, config {config_path}")
        where = runtime.connect(config.ray.address, num_cpus=config.ray.num_cpus,
                                num_gpus=config.ray.num_gpus, dashboard=config.ray.dashboard)
        print(f"[ray] {where}")
        try:
            run_main(config, force=force)
        except MissingWeightsError as err:
            print(f"erc: error: {err}", file=sys.stderr)
            return 2
        print(f"\nreport: {(Path(config.output_dir) / 'report.html').resolve()}\nlog: {log.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erc", description="Multimodal emotion recognition in conversations, on Ray.")
    parser.add_argument("--version", action="version", version=f"erc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run the main job (default: the shipped sample corpus, embedded Ray)",
        description="Runs the main job from a YAML config: ingest, preprocess (decode, "
                    "Whisper, faces, speaker and text embeddings), quality control, identity "
                    "adapters, fusion training and evaluation, then writes report.html. "
                    "Without --config it runs on the sample corpus shipped with erc. Each "
                    "stage skips work that is up to date, so a second run is quick and an "
                    "interrupted one resumes.")
    run.add_argument("--config", help="YAML run config (default: the sample's)")
    run.add_argument("--out", help="output folder (overrides output_dir of the config)")
    run.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else embedded)")
    run.add_argument("--storage", help="where Ray Train keeps checkpoints (default OUT/train/ray; "
                     "on a multi-node cluster a shared folder or s3://...)")
    run.add_argument("--force", action="store_true", help="recompute even up-to-date outputs")
    run.add_argument("--verbose", action="store_true", dest="console_verbose",
                     help="also print Ray's INFO records, execution plans and worker output "
                          "(OUT/run.log always has them)")
    run.set_defaults(func=cmd_run)

    corpus = commands.add_parser("corpus", help="read corpora into the utterance table",
                                 description="Read corpora into the canonical utterance table.")
    corpus_cmds = corpus.add_subparsers(dest="corpus_command", required=True, metavar="COMMAND")

    ingest = corpus_cmds.add_parser(
        "ingest", help="read a corpus, write utterances.parquet and problems.parquet",
        description="Reads a corpus (MELD, IEMOCAP, RAVDESS or a manifest), writes "
                    "utterances.parquet and problems.parquet (every row set aside, with its "
                    "reason), and prints counts per split, emotion and speaker.")
    ingest.add_argument("path", help="corpus folder or manifest file")
    ingest.add_argument("--format", choices=sorted(FORMATS), help="corpus format (default: detected)")
    ingest.add_argument("--out", help="output folder (default: runs/<corpus folder name>/corpus)")
    ingest.add_argument("--media-root", help="folder of the media (MELD: the MELD.Raw folder)")
    ingest.add_argument("--mapping", metavar="FILE",
                        help="manifest mapping (YAML): files, column names and templates, label "
                             "map (`erc corpus inspect` suggests one)")
    ingest.add_argument("--split", action="append", help="only this split (repeatable)")
    ingest.add_argument("--option", "-o", action="append", type=_parse_option, metavar="KEY=VALUE",
                        help="reader option, e.g. -o keep_missing_media=true, "
                             "-o 'actor_splits={train: 1-20, test: 21-24}' (repeatable)")
    ingest.add_argument("--check-media", action="store_true",
                        help="open every media file on Ray; unreadable / overlong ones are set aside")
    ingest.add_argument("--max-clip-seconds", type=float, default=60.0,
                        help="with --check-media: longer clips are mis-cut (default 60)")
    ingest.add_argument("--address", help="Ray cluster address for --check-media (default: embedded)")
    ingest.add_argument("--force", action="store_true", help="recompute even if up to date")
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON")
    ingest.set_defaults(func=cmd_ingest)

    inspect = corpus_cmds.add_parser(
        "inspect", help="show an unknown manifest's columns and suggest a mapping for it",
        description="Reads a CSV, JSON Lines or Parquet manifest (or a folder of them), prints "
                    "its columns with example values and a suggested mapping file (files per "
                    "split, dialogue id, speaker, text, emotion, times, label map) to edit and "
                    "pass to `erc corpus ingest --mapping`.")
    inspect.add_argument("path", help="manifest file or folder of manifest files")
    inspect.add_argument("--write", metavar="FILE", help="also write the suggested mapping to FILE")
    inspect.set_defaults(func=cmd_inspect)

    summary = corpus_cmds.add_parser("summary", help="print the summary of an ingested corpus",
                                     description="Prints counts and problems of an ingest output.")
    summary.add_argument("dir", help="folder holding utterances.parquet")
    summary.set_defaults(func=cmd_summary)

    formats = corpus_cmds.add_parser("formats", help="list the corpus formats erc reads",
                                     description="Lists the corpus formats erc reads.")
    formats.set_defaults(func=cmd_formats)

    # Each stage owns its subcommands; they import their heavy libraries only when run.
    from erc import models_cli
    from erc.pipeline import preprocess
    from erc.qc import cli as qc_cli
    from erc.train import cli as train_cli
    from erc.tune import cli as tune_cli

    for stage in (models_cli, preprocess, qc_cli, train_cli, tune_cli):
        stage.register(commands)
    return parser


def _dispatch(build: Callable[[], argparse.ArgumentParser], argv: list[str] | None) -> int:
    """Parses and runs a command; user errors print one line and exit 2, not a traceback.
    Storage URIs among the arguments (s3://...) are replaced by local copies, outputs
    uploaded as the command goes (erc.storage); ``--storage`` stays Ray's own URI."""
    runtime.apply_offline_env()  # before anything imports Ray or a model library
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build()
    takes_storage = hasattr(parser.parse_args(argv), "storage")

    def run(local_argv: list[str]) -> int:
        args = parser.parse_args(local_argv)
        console.setup(verbose=getattr(args, "console_verbose", False))
        return args.func(args)

    try:
        return storage.run_with_uris(run, argv, runtime.state_dir(),
                                     storage_option="--storage" if takes_storage else None)
    except (CorpusError, ConfigError, FileNotFoundError, ValueError, storage.StorageError,
            runtime.ClusterUnreachable) as err:
        print(f"erc: error: {err}", file=sys.stderr)
        return 2
    finally:
        runtime.shutdown()


def main(argv: list[str] | None = None) -> int:
    return _dispatch(build_parser, argv)


def stage_main(register, argv: list[str] | None = None) -> int:
    """The commands one stage module registers, without the rest of the command line
    (what the entrypoints in jobs/ run)."""
    def build() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog="erc")
        register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
        return parser

    return _dispatch(build, argv)


if __name__ == "__main__":
    sys.exit(main())
