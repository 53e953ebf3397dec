"""``erc qc``: quality-control decisions and report for a feature table.

    erc qc runs/x/features --utterances runs/x/corpus --out runs/x/qc
    erc qc FEATURES --utterances DIR --rule length_aware --speaker-apply labels
    erc qc FEATURES --utterances DIR --face-references photos/      # <speaker>/*.jpg
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from erc.cli.common import add_recipe, add_run_options, output_beside, recipe
from erc.qc.decisions import QCConfig
from erc.settings import path_flag


def _beside_features(args, run: Path, name: str) -> Path:
    """The input folder ``name`` beside the features: ``run / name``, or, for features given
    by a storage URI, a local copy of the folder ``name`` beside that URI."""
    from erc import storage
    from erc.home import state_dir

    given = getattr(args, "as_given", args).features
    if not storage.is_uri(given):
        return run / name
    folder = given if Path(args.features).is_dir() else storage.beside_uri(given, "")
    return storage.stage_input(storage.beside_uri(folder, name), state_dir())


def cmd_qc(args) -> int:
    from erc.qc.report import reference_notes, report_data
    from erc.stages.base import execute
    from erc.stages.qc import QCStage

    features = Path(args.features)
    # The defaults sit beside the features folder, also when one of its parts is given
    # (beside the URI the user gave, not erc's local copy of it).
    run = (features if features.is_dir() else features.parent).parent
    utterances = Path(args.utterances) if args.utterances else _beside_features(args, run, "corpus")
    config = recipe(QCConfig, args, args.recipe_options, section="qc")
    with contextlib.nullcontext(Path(args.out)) if args.out else output_beside(
            args, "features", run / "qc", "qc", of_folder=True) as out:
        result = execute(QCStage(), config, {"features": features, "utterances": utterances},
                         out, force=args.force, overwrite=args.overwrite)
    import pyarrow.parquet as pq

    data = report_data(pq.read_table(out / "decisions.parquet"), result.summary)
    state = "up to date, nothing recomputed" if result.skipped else "done"
    print(f"qc {state}: {data['input']} utterances, {data['kept']} kept, {data['removed']} removed")
    for reason, count in data["removed_by_first_reason"].items():
        print(f"  {reason:32} {count:7d}")
    print("failures per check: " + ", ".join(f"{c} {v}" for c, v in data["failed_by_check"].items()))
    for line in reference_notes(data["face"]):
        print(line)
    reviewed = data["relabels"].get("reviewed") or {}
    unknown = [*reviewed.get("unknown_utterances", []), *reviewed.get("unknown_speakers", [])]
    if unknown:
        print(f"relabels: {len(unknown)} line(s) name no utterance or speaker of the table "
              f"(ignored): {', '.join(map(repr, unknown[:5]))}{', ...' if len(unknown) > 5 else ''}")
    if data["relabels"]["proposed"]:
        print(f"relabel proposals: {data['relabels']['proposed']} "
              f"(applied {data['relabels']['applied']}), see {out / 'relabels.csv'}")
    for finding in data["relabels"]["label_findings"]:
        print(f"  {finding['detail']}")
    print(f"outputs in {out}: decisions.parquet, utterances.parquet (kept), problems.parquet "
          "(set aside), relabels.csv, report.html, report.json")
    return 0


def register(commands) -> None:
    qc = commands.add_parser(
        "qc", help="quality control: alignment, face and speaker checks, relabelling, report",
        description="Decides, for every utterance of an utterance table, whether its features "
                    "pass audio-text alignment, face verification and speaker identity checks; "
                    "writes decisions.parquet (every utterance), utterances.parquet (the kept "
                    "view), relabels.csv and report.html/json. Nothing is deleted.")
    qc.add_argument("features", type=path_flag, help="feature folder (part-*.parquet) of the preprocessing pass")
    qc.add_argument("--utterances", type=path_flag, help="folder holding utterances.parquet, or the file "
                                         "(default: FEATURES/../corpus)")
    qc.add_argument("--out", type=path_flag, help="output folder (default: FEATURES/../qc)")
    qc.set_defaults(recipe_options=add_recipe(qc, QCConfig, title="quality control settings"))
    add_run_options(qc, address=False)
    qc.set_defaults(func=cmd_qc)
