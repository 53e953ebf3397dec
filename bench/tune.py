"""A small hyperparameter search on MELD text features, tuned vs untuned in one run.

    .venv/bin/python bench/tune.py                        # 16 trials x up to 8 epochs
    .venv/bin/python bench/tune.py --num-samples 24 --epochs 10 --fresh

The search is `erc tune tune/fusion.yaml` (the shipped space of the default mixer, the
bidirectional GRU: lr, weight decay, dropout, width, window, class weighting, batch size;
``--search tune/fusion-mamba.yaml`` for the paper's Mamba) over frozen all-MiniLM-L6-v2
embeddings of the MELD transcripts (the offline model; computed once and
cached under the erc state dir), searched as `erc tune --select-fraction 0.15` does
(``erc.tune.driver.selection_split``, the protocol of ``erc.train.folds.dev_fold``): trials
train on the MELD train dialogues less a selection slice (15 %), the search maximises
weighted F1 on that slice, and every trial's best-selection model is also scored on the dev
split, which no choice is made on (the search's report split). The first trial is the
untuned default of `erc train fusion` (every option at its default in erc/recipes.py, less
what the search file fixes: its epochs); ASHA never stops it, so it trains the same epochs
as the best tuned trial could.
The bench prints the trials table, then the default's weighted F1 beside the best tuned
one (chosen on the selection slice) on the selection slice and on MELD dev, and the gain of
the search on each, all from the same search (same data, epochs, patience): the dev gain is
the one to quote.

Each configuration is trained once (seed 0): a small difference may be seed noise, which
this bench does not measure. The search folder (default ``runs/bench/tune``) is
resumable; ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from erc import runtime

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--search", default=str(REPO / "tune" / "fusion.yaml"))
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once")
    parser.add_argument("--grace-period", type=int, default=2, help="ASHA: epochs before a stop")
    parser.add_argument("--encoder", default="all-MiniLM-L6-v2")
    parser.add_argument("--select-fraction", type=float, default=0.15,
                        help="MELD train dialogues held out for every choice")
    parser.add_argument("--limit-dialogues", type=int, help="first N dialogues per split")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench" / "tune"))
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args(argv)
    meld = SHARED / "data" / "meld"
    if not meld.is_dir():
        print(f"bench needs {meld} (the MELD transcripts)", file=sys.stderr)
        return 2
    runtime.apply_offline_env()
    from erc.artifacts import load_corpus as load_utterances
    from erc.cli.tune import subset_dialogues
    from erc.recipes import FusionInputs
    from erc.train.loop import HELD_OUT
    from erc.train.vectors import frozen_text_features, resolve_text_encoder, table_fingerprint
    from erc.tune.driver import describe_roles, run_search, selection_split
    from erc.tune.space import METRIC, parse_spec

    data = yaml.safe_load(Path(args.search).read_text())
    data["fixed"] = {**(data.get("fixed") or {}), "epochs": args.epochs, "patience": args.patience}
    data["search"] = {**(data.get("search") or {}), "num_samples": args.num_samples,
                      "max_concurrent_trials": args.concurrency, "include_default": True,
                      "resources_per_trial": {"cpu": 1, "gpu": "auto"},
                      "scheduler": {"type": "asha", "grace_period": args.grace_period,
                                    "reduction_factor": 3}}
    spec = parse_spec(data, args.search)
    table = load_utterances(meld)
    if args.limit_dialogues:
        table = subset_dialogues(table, args.limit_dialogues)
    # as `erc tune --select-fraction`: train / select (a slice of train) / dev (held out)
    table, roles = selection_split(table, args.select_fraction)
    print("[bench] " + describe_roles(table, roles, args.select_fraction), flush=True)
    started = time.time()
    encoder = resolve_text_encoder(args.encoder)
    layers = FusionInputs().text_layers  # as `erc train fusion --text st:...` reads them
    features = {"text": frozen_text_features(encoder, table, layers=layers)}
    feature_spec = {"text": {"kind": "sentence-transformers", "path": encoder, "layers": layers}}
    print(f"[bench] MELD {table.num_rows} utterances (train, selection slice, dev), frozen {args.encoder} "
          f"features in {time.time() - started:.1f} s; {spec.search.num_samples} trials, "
          f"{args.epochs} epochs max, {args.concurrency} at a time", flush=True)
    data_key = f"{table_fingerprint(table)}|{roles}|{sorted(feature_spec.items())}"
    started = time.time()
    try:
        outcome = run_search(spec, table, args.out, features=features, feature_spec=feature_spec,
                             roles=roles, data_key=data_key, fresh=args.fresh, verbose=0,
                             command=f"erc train fusion {meld} --text st:{args.encoder} "
                                     f"--text-only --config {Path(args.out) / 'best_config.yaml'} "
                                     f"--out runs/meld/fusion-tuned")
    finally:
        runtime.shutdown()
    seconds = time.time() - started
    print("\n" + outcome.table + "\n")
    for line in outcome.summary:
        print(line)
    best, default = outcome.best, outcome.default
    if best is None or default is None or default.get(METRIC) is None:
        print("[bench] no comparison: the default or every tuned trial failed", file=sys.stderr)
        return 1
    if best.get(HELD_OUT) is None or default.get(HELD_OUT) is None:
        print("[bench] no held-out figure for the default or the best trial", file=sys.stderr)
        return 1
    mixer = spec.defaults()["mixer"]  # the search file's, else erc train fusion's default
    print(f"\nMELD weighted F1 (frozen {args.encoder} + {mixer} fusion, {args.epochs} epochs max, "
          f"{len(outcome.rows)} trials, {seconds / 60:.1f} min); chosen on the selection slice")
    print(f"                   {'selection':>9}  {'dev':>7}")
    for name, row in (("untuned default", default), ("best tuned", best)):
        print(f"  {name:<16} {row[METRIC]:9.4f}  {row[HELD_OUT]:7.4f}  ({row['trial_id']}, "
              f"{row['status']}, {row['epochs_run']} epochs)")
    gain = {"selection": best[METRIC] - default[METRIC], "dev": best[HELD_OUT] - default[HELD_OUT]}
    print(f"  {'tuned - default':<16} {gain['selection']:+9.4f}  {gain['dev']:+7.4f}  "
          f"(dev: the search's gain on dialogues it chose nothing on)")
    summary = {"default": default, "best": best, "gain_selection": gain["selection"],
               "gain_dev": gain["dev"], "trials": len(outcome.rows), "seconds": seconds,
               "epochs": args.epochs, "out": str(outcome.out_dir)}
    (Path(args.out) / "bench.json").write_text(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
