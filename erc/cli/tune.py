"""``erc tune``: hyperparameter search over ``erc train fusion`` / ``erc train text``.

    erc tune tune/fusion.yaml ../shared/data/meld --text st:all-MiniLM-L6-v2 --out runs/tune/meld-fusion
    erc tune fusion runs/meld/corpus --text finetuned:runs/meld/text/model --out runs/tune/ft-fusion \\
        --num-samples 64 --max-concurrent-trials 8 --address auto
    erc tune text runs/meld/corpus --out runs/tune/meld-text --gpus-per-trial 1
    erc tune fusion ../shared/data/meld --text st:all-MiniLM-L6-v2 --text-only \\
        --select-fraction 0.15 --out runs/tune/meld-select   # choose on train, report on dev

SEARCH is a search file (or the name of one in tune/: fusion, fusion-mamba, text). Running the same
command again with the same --out resumes an interrupted search; a finished one just
rewrites its outputs (--fresh starts over). --out naming a folder of your own files is
refused unless --overwrite, as for every command.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from erc.cli.common import add_overwrite, count, positive
from erc.cli.train import add_format
from erc.recipes import FusionInputs
from erc.settings import add_arguments, given, load_yaml, path_flag, validate


def subset_dialogues(table, limit: int):
    """The first ``limit`` dialogues of every split (in the order they appear)."""
    import pyarrow as pa

    keep, seen = [], {}
    for split, dialogue in zip(table.column("split").to_pylist(),
                               table.column("dialogue_id").to_pylist()):
        chosen = seen.setdefault(split, {})
        if dialogue not in chosen and len(chosen) < limit:
            chosen[dialogue] = True
        keep.append(dialogue in chosen)
    return table.filter(pa.array(keep))


def _overrides(data: dict, args) -> dict:
    """The search file's YAML with the command-line overrides applied (then validated)."""
    data = dict(data or {})
    search, fixed = data.get("search"), data.get("fixed")
    resources = (search or {}).get("resources_per_trial") if isinstance(search, dict) else None
    if any(part is not None and not isinstance(part, dict) for part in (search, fixed, resources)):
        return data  # a section that is not a mapping: parse_spec names it as written
    search = dict(search or {})
    for key in ("num_samples", "max_concurrent_trials", "seed"):
        if getattr(args, key) is not None:
            search[key] = getattr(args, key)
    if args.cpus_per_trial is not None or args.gpus_per_trial is not None:
        resources = dict(resources or {"cpu": 1, "gpu": "auto"})
        if args.cpus_per_trial is not None:
            resources["cpu"] = args.cpus_per_trial
        if args.gpus_per_trial is not None:
            resources["gpu"] = "auto" if args.gpus_per_trial == "auto" else float(args.gpus_per_trial)
        search["resources_per_trial"] = resources
    if args.no_default:
        search["include_default"] = False
    data["search"] = search
    if args.epochs is not None:
        data["fixed"] = {**(data.get("fixed") or {}), "epochs": args.epochs}
    return data


def _gpus(text: str) -> str:
    """--gpus-per-trial: ``auto`` or a number (checked here: argparse names the option)."""
    import argparse

    try:
        if text == "auto" or 0 <= float(text) < float("inf"):  # False for nan
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected a finite number >= 0 or auto, got {text!r}")


def _train_command(args, family: str, out: Path) -> str:
    """The ``erc train`` command of the best config, naming the corpus, inputs and output
    folder as the user gave them (a storage URI, not erc's local copy of it)."""
    from erc.storage import is_uri, join_uri
    from erc.tune.driver import RESULTS

    given = getattr(args, "as_given", args)
    parts = ["erc", "train", family, given.corpus]
    if args.format:
        parts += ["--format", args.format]
    if args.train_split != "train":
        parts += ["--train-split", args.train_split]
    if args.dev_split != "dev":
        parts += ["--dev-split", args.dev_split]
    if args.select_fraction is not None:  # the best trains as the search's trials did
        parts += ["--select-fraction", str(args.select_fraction)]
    if family == "fusion":
        for option in args.input_options:
            value = getattr(given, option.name, None)
            if value is True:
                parts.append(option.cli)
            elif value not in (None, False, []):
                parts += [option.cli, ",".join(value) if isinstance(value, list) else str(value)]
    if is_uri(given.out):
        parts += ["--config", join_uri(given.out, RESULTS["best_config"]), "--out", join_uri(given.out, "best")]
    else:
        parts += ["--config", str(out / RESULTS["best_config"]), "--out", str(out / "best")]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_tune(args) -> int:
    from erc.artifacts import load_corpus
    from erc.errors import ConfigError, ErcError
    from erc.train.vectors import feature_spec, table_fingerprint
    from erc.tune.driver import describe_roles, run_search, search_roles, selection_split
    from erc.tune.space import find_spec, parse_spec

    path = find_spec(args.search)
    raw = load_yaml(path)
    if isinstance(raw, dict) and args.epochs is not None and "epochs" in (raw.get("params") or {}):
        raise ConfigError(f"{path}: epochs is searched (params.epochs): --epochs cannot fix it")
    spec = parse_spec(_overrides(raw, args) if isinstance(raw, dict) else raw, str(path))
    fusion_only = [o.cli for o in args.input_options if hasattr(args, o.name)]
    if spec.family != "fusion" and fusion_only:  # a text search read none of them
        raise ConfigError(f"{', '.join(fusion_only)}: inputs of a fusion search; {path} searches "
                          f"the {spec.family} family")
    table = load_corpus(args.corpus, args.format)
    scope = []  # how the searched data differs from what the train command reads
    if args.limit_dialogues:
        table = subset_dialogues(table, args.limit_dialogues)
        scope.append(f"searched on the first {args.limit_dialogues} dialogues of each split "
                     f"({table.num_rows} utterances)")
    if args.select_fraction is not None:
        table, roles = selection_split(table, args.select_fraction, args.train_split,
                                       args.dev_split, args.report_split)
        reported = f"reported on {roles['report']!r}" if "report" in roles else "no held-out split"
        scope.append(f"chosen on a {args.select_fraction:.0%} dialogue slice of "
                     f"{roles['train']!r}, {reported}")
    else:
        roles = search_roles(table, args.train_split, args.dev_split, args.report_split)
    # The train command below takes --select-fraction too (the same slice), not the subset.
    scope += ["the command trains on every dialogue"] if args.limit_dialogues else []
    note = "; ".join(scope)
    print("[tune] " + describe_roles(table, roles, args.select_fraction), flush=True)
    out = Path(os.path.abspath(args.out))  # a link there is refused, not followed (erc.io)
    inputs = validate(FusionInputs, given(args, args.input_options), "options")
    features = feature_spec(inputs) if spec.family == "fusion" else None
    data_key = f"{table_fingerprint(table)}|{roles}|{sorted((features or {}).items())}"
    outcome = run_search(spec, table, out, feature_spec=features, roles=roles,
                         data_key=data_key, address=args.address, num_cpus=args.num_cpus,
                         storage=args.storage, fresh=args.fresh, verbose=args.verbose,
                         command=_train_command(args, spec.family, out), note=note,
                         overwrite=args.overwrite)
    print("\n" + outcome.table + "\n")
    for line in outcome.summary:
        print(line)
    print("outputs: " + ", ".join(str(p) for p in outcome.files.values()))
    if outcome.best is None:  # a script's next step, `erc train --config`, has no file to read
        error = next((r["error"] for r in outcome.rows if r.get("error")), "")
        raise ErcError(f"no trial scored ({error or 'see trials.csv'}): no best config in "
                       f"{out}; the same command retries the failed trials")
    return 0


def register(commands) -> None:
    """Adds ``tune`` to ``commands``."""
    tune = commands.add_parser(
        "tune", help="hyperparameter search (Ray Tune + Optuna, ASHA), resumable",
        description="Searches the hyperparameters of `erc train fusion` or `erc train text` "
                    "with Ray Tune (OptunaSearch/TPE, ASHA early stopping), maximising the dev "
                    "weighted F1, then quotes the best trial and the untuned default on a "
                    "held-out split (--report-split) nothing was chosen on; with "
                    "--select-fraction it chooses on a slice of the training dialogues and "
                    "reports on dev. Writes trials.csv, "
                    "best_config.yaml (for `erc train ... --config`), history.png, "
                    "importance.png and report.html to --out. The same command with the same "
                    "--out resumes an interrupted search.")
    tune.add_argument("search", type=path_flag, help="search file (YAML), or the name of one in tune/ "
                                     "(fusion, fusion-mamba, text)")
    tune.add_argument("corpus", type=path_flag, help="ingest folder, utterances.parquet or a corpus erc reads")
    tune.add_argument("--out", required=True, type=path_flag, help="output folder (same folder = resume)")
    add_format(tune)
    tune.add_argument("--train-split", default="train")
    tune.add_argument("--dev-split", default="dev", help="split the search maximises weighted "
                      "F1 on (valid/val when the corpus has no dev); with --select-fraction "
                      "the default report split instead")
    tune.add_argument("--report-split", help="held-out split every trial's best-dev model is "
                      "scored on, never chosen on (default: test when the corpus has one; "
                      "with --select-fraction, the dev split)")
    tune.add_argument("--select-fraction", type=float, help="choose on this fraction of the "
                      "--train-split dialogues (a seeded dialogue-level slice), train on the "
                      "rest, and report on the dev split, e.g. 0.15 for a corpus with no test "
                      "split")
    inputs = add_arguments(tune, FusionInputs, title="inputs (fusion)")
    tune.add_argument("--num-samples", type=count, help="trials in all (overrides the file)")
    tune.add_argument("--max-concurrent-trials", type=count, help="trials at once")
    tune.add_argument("--epochs", type=count, help="epochs of every trial (fixed.epochs)")
    tune.add_argument("--seed", type=int, help="the sampler's seed")
    tune.add_argument("--cpus-per-trial", type=positive)
    tune.add_argument("--gpus-per-trial", type=_gpus,
                      help="a number or auto (1 when the cluster has GPUs)")
    tune.add_argument("--no-default", action="store_true",
                      help="do not run the untuned default as trial 0")
    tune.add_argument("--limit-dialogues", type=count,
                      help="only the first N dialogues of each split (a quick search)")
    tune.add_argument("--storage", type=path_flag, help="where Tune keeps the search (default OUT/ray; on a "
                      "multi-node cluster a shared folder or s3://...)")
    tune.add_argument("--fresh", action="store_true", help="discard an earlier search in --out")
    add_overwrite(tune)
    tune.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else embedded)")
    tune.add_argument("--num-cpus", type=count, help="CPUs of the embedded Ray (default: all)")
    tune.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                      help="Tune's progress output (0 silent, 1 status, 2 every result)")
    tune.set_defaults(func=cmd_tune, input_options=inputs, takes_storage=True)
