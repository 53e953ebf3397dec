"""``erc run``: the main job (``erc.stages.main``) from a run config."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from erc.cli.common import add_run_options, check_shared_output
from erc.settings import merge, path_flag, tree

SAMPLE_CONFIG = "sample.yaml"


def _override(text: str):
    """``-o SECTION.KEY=VALUE``; reader options (``corpus.options.label_map``) read as a
    mapping file reads them."""
    from erc.corpus.mapping import parse_run_override

    return parse_run_override(text)


def cmd_run(args) -> int:
    from erc import __version__, storage
    from erc.errors import ConfigError
    from erc.home import state_dir
    from erc.recipes import load_run_config
    from erc.stages import main as main_job
    from erc.stages.main import STAGES, configured_stages, selected

    if args.first and args.last and STAGES.index(args.first) > STAGES.index(args.last):
        # no stage is both at or after --from and at or before --until: nothing would run
        raise ConfigError(f"--from {args.first} comes after --until {args.last}: no stage "
                          f"would run (stages in order: {', '.join(STAGES)})")
    config_path = args.config or str(resources.files("erc") / "configs" / SAMPLE_CONFIG)
    given = [(key, value) for key, value in (("output_dir", args.out), ("train.storage", args.storage))
             if value]
    overrides = merge(tree(args.set_overrides), tree(given))  # a flag wins over -o, as elsewhere
    config = load_run_config(Path(config_path), overrides)
    if not config.corpus.path.strip():  # a blank path is the working folder: not a corpus to guess
        raise ConfigError(f"{config_path}: corpus.path is empty; set it to the corpus folder or "
                          f"manifest file (or -o corpus.path=PATH)")
    if (args.first or args.last) and not any(selected(stage, args.first, args.last)
                                             for stage in configured_stages(config)):
        # every stage in the slice is one this config does not run: the run did nothing
        sliced = " ".join(f"{flag} {stage}" for flag, stage in (("--from", args.first),
                                                               ("--until", args.last)) if stage)
        raise ConfigError(f"{sliced}: no stage this config runs is in that slice (it runs: "
                          f"{', '.join(configured_stages(config))})")
    if args.address:
        config.ray.address = args.address
    check_shared_output(config.output_dir, "output_dir")  # the sample's is runs/sample
    if storage.is_uri(config.corpus.path):
        config.corpus.path = str(storage.stage_input(config.corpus.path, state_dir()))
    if args.dry_run:
        if storage.is_uri(config.output_dir):  # planned on what the store holds, not the URI as a path
            local = storage.pulled_output(config.output_dir, state_dir(), exclude=(storage.RAY_STORAGE,))
            config.output_dir = str(local.local)
        print(f"erc {__version__}: main job, config {config_path} (dry run: nothing runs)")
        for stage, folder, state in main_job.plan(config, args.first, args.last):
            print(f"  {stage:11} {state:52} {folder}")
        return 0
    if storage.is_uri(config.output_dir):
        uri = config.output_dir
        for loop in (config.train.recipe.loop, config.train.text_training.loop):
            loop.storage_path = loop.storage_path or storage.join_uri(uri, storage.RAY_STORAGE)
        with storage.staged_output(uri, state_dir(), exclude=(storage.RAY_STORAGE,)) as local:
            config.output_dir = str(local)
            code = _run(config, config_path, args)
        print(f"results: {storage.redact(uri)}")
        return code
    return _run(config, config_path, args)


def _run(config, config_path, args) -> int:
    from erc import __version__, console, io, runtime
    from erc.stages.main import RUN_LOG, Interrupted, check_run_outputs, run_main

    if not args.force and io.owned(config.output_dir) and io.read_only(config.output_dir):
        return _finished_read_only(config, config_path, args)
    # before the log opens (a run.log of the user's is not appended to) and Ray starts
    check_run_outputs(config, args.first, args.last, args.overwrite)
    io.claim(config.output_dir, overwrite=args.overwrite)
    with io.locked(config.output_dir), console.run_log(Path(config.output_dir) / RUN_LOG) as log:
        print(f"erc {__version__}: main job, config {config_path}")
        ray = config.ray
        print(f"[ray] {runtime.connect(ray.address, ray.num_cpus, ray.num_gpus, ray.dashboard)}")
        try:
            record = run_main(config, force=args.force, first=args.first, last=args.last,
                              overwrite=args.overwrite)
        except Interrupted as err:  # run.json records it; the next run resumes
            print(f"erc: {err}", file=sys.stderr)
            return 130
        if "report" in record["outputs"]:
            print(f"\nreport: {Path(record['outputs']['report']).resolve()}")
        print(f"log: {log.resolve()}")
    return 0


def _finished_read_only(config, config_path, args) -> int:
    """A run folder erc cannot write (a read-only mount or copy): when every stage is up to
    date there is nothing to write, so the run writes nothing (no lock, run.log or
    run.json) and starts no Ray; a stage that would run is an error naming it."""
    from erc import __version__
    from erc.errors import OwnershipError
    from erc.stages.main import plan, selected

    rows = plan(config, args.first, args.last)
    stale = [(stage, state) for stage, _, state in rows
             if selected(stage, args.first, args.last) and state != "up to date"]
    if stale:
        stage, state = stale[0]
        raise OwnershipError(f"{config.output_dir}: is read-only, and stage {stage} would write "
                             f"there ({state}); make it writable or choose another --out")
    print(f"erc {__version__}: main job, config {config_path} (the output folder is read-only "
          f"and every stage up to date: nothing written)")
    for stage, folder, state in rows:
        print(f"  {stage:11} {state:52} {folder}")
    report = Path(config.output_dir) / "report.html"
    if selected("report", args.first, args.last) and report.is_file():
        print(f"\nreport: {report.resolve()}")
    return 0


def register(commands) -> None:
    from erc.stages.main import STAGES

    run = commands.add_parser(
        "run", help="run the main job (default: the shipped sample corpus, embedded Ray)",
        description="Runs the main job from a YAML run config: ingest, preprocess (decode, "
                    "Whisper, faces, speaker and text embeddings), quality control, identity "
                    "adapters, fusion training and evaluation, then writes report.html. "
                    "Without --config it runs on the sample corpus shipped with erc. Each "
                    "stage skips work that is up to date (same settings and inputs), so a "
                    "second run is quick, an interrupted one resumes, and a changed setting "
                    "recomputes exactly the stages it affects (see --dry-run).")
    run.add_argument("--config", type=path_flag, help="YAML run config (default: the sample's)")
    run.add_argument("-o", "--set", dest="set_overrides", action="append", default=[],
                     type=_override, metavar="SECTION.KEY=VALUE",
                     help="override a setting of the config, e.g. -o train.epochs=5 "
                          "-o qc.alignment.rule=length_aware (repeatable)")
    run.add_argument("--out", type=path_flag, help="output folder (overrides output_dir of the config)")
    run.add_argument("--storage", type=path_flag, help="where Ray Train keeps checkpoints (default "
                     "OUT/train/ray, each of the fusion model's two candidates OUT/train/candidates/NAME/ray; "
                     "on a multi-node cluster a shared folder or s3://...)")
    run.add_argument("--from", dest="first", choices=STAGES, metavar="STAGE",
                     help=f"start at this stage (its inputs must exist): {', '.join(STAGES)}")
    run.add_argument("--until", dest="last", choices=STAGES, metavar="STAGE",
                     help="stop after this stage")
    run.add_argument("--dry-run", action="store_true",
                     help="print which stages are up to date and why the others would run")
    run.add_argument("--verbose", action="store_true", dest="console_verbose",
                     help="also print Ray's INFO records, execution plans and worker output "
                          "(OUT/run.log always has them)")
    add_run_options(run)
    run.set_defaults(func=cmd_run, takes_storage=True)

