"""``erc qc``: quality-control decisions and report for a feature table.

    erc qc runs/x/features --utterances runs/x/corpus --out runs/x/qc
    erc qc FEATURES --utterances DIR --rule length_aware --speaker-apply labels
    erc qc FEATURES --utterances DIR --face-references photos/      # <speaker>/*.jpg
"""

from __future__ import annotations

from pathlib import Path

from erc.cli.common import add_recipe, add_run_options, recipe
from erc.qc.decisions import QCConfig
from erc.settings import expand_path


def cmd_qc(args) -> int:
    from erc.qc.report import report_data
    from erc.stages.base import execute
    from erc.stages.qc import QCStage

    features = Path(args.features)
    # The defaults sit beside the features folder, also when one of its parts is given.
    run = (features if features.is_dir() else features.parent).parent
    utterances = Path(args.utterances) if args.utterances else run / "corpus"
    out = Path(args.out) if args.out else run / "qc"
    config = recipe(QCConfig, args, args.recipe_options, section="qc")
    result = execute(QCStage(), config, {"features": features, "utterances": utterances}, out,
                     force=args.force, overwrite=args.overwrite)
    import pyarrow.parquet as pq

    data = report_data(pq.read_table(out / "decisions.parquet"), result.summary)
    state = "up to date, nothing recomputed" if result.skipped else "done"
    print(f"qc {state}: {data['input']} utterances, {data['kept']} kept, {data['removed']} removed")
    for reason, count in data["removed_by_first_reason"].items():
        print(f"  {reason:32} {count:7d}")
    print("failures per check: " + ", ".join(f"{c} {v}" for c, v in data["failed_by_check"].items()))
    unused = data["face"].get("reference_photos_unused", [])
    if unused:
        print(f"face references: {len(unused)} photo(s) not used (all in report.json)")
        for line in unused[:5]:
            print(f"  {line}")
    no_speaker = data["face"].get("references_for_no_speaker", [])
    if no_speaker:
        print(f"face references for no speaker of the corpus: {', '.join(map(repr, no_speaker[:5]))}"
              + (f" and {len(no_speaker) - 5} more" if len(no_speaker) > 5 else ""))
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
    print(f"outputs in {out}: decisions.parquet, utterances.parquet (kept), relabels.csv, "
          "report.html, report.json")
    return 0


def register(commands) -> None:
    qc = commands.add_parser(
        "qc", help="quality control: alignment, face and speaker checks, relabelling, report",
        description="Decides, for every utterance of an utterance table, whether its features "
                    "pass audio-text alignment, face verification and speaker identity checks; "
                    "writes decisions.parquet (every utterance), utterances.parquet (the kept "
                    "view), relabels.csv and report.html/json. Nothing is deleted.")
    qc.add_argument("features", type=expand_path, help="feature folder (part-*.parquet) of the preprocessing pass")
    qc.add_argument("--utterances", type=expand_path, help="folder holding utterances.parquet, or the file "
                                         "(default: FEATURES/../corpus)")
    qc.add_argument("--out", type=expand_path, help="output folder (default: FEATURES/../qc)")
    qc.set_defaults(recipe_options=add_recipe(qc, QCConfig, title="quality control settings"))
    add_run_options(qc, address=False)
    qc.set_defaults(func=cmd_qc)
