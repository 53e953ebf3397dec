"""``erc qc``: quality-control decisions and report for a feature table.

    erc qc runs/x/features --utterances runs/x/corpus --out runs/x/qc
    erc qc FEATURES --utterances DIR --rule length_aware --apply-relabel labels
    erc qc FEATURES --utterances DIR --face-refs photos/        # <speaker>/*.jpg

``register(commands)`` adds the subcommand to an argparse subparsers object.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from erc.qc.alignment import COSINES, RULES, AlignmentConfig
from erc.qc.decisions import CHECKS, QCConfig
from erc.qc.faces import FaceConfig
from erc.qc.speakers import SpeakerConfig


def add_options(parser: argparse.ArgumentParser) -> None:
    """The QC settings (shared by ``erc qc`` and bench/qc.py)."""
    a = parser.add_argument_group("alignment (corpus transcript vs Whisper transcript)")
    a.add_argument("--rule", choices=RULES, default=AlignmentConfig.rule,
                   help="calibrated (default): the paper rule, then word errors beyond what "
                        "the corpus's own ASR error explains, truncated and mis-cut clips; "
                        "paper: cosine AND Levenshtein above thresholds; length_aware: "
                        "short transcripts need only one, an empty ASR of one is unverified")
    a.add_argument("--cosine", choices=COSINES, default="words",
                   help="representation of the cosine: bag of words (default) or char 3-grams")
    a.add_argument("--cos-threshold", type=float, default=0.25, help="keep when cosine > this (0.25)")
    a.add_argument("--lev-threshold", type=float, default=0.3,
                   help="keep when normalised Levenshtein similarity > this (0.3)")
    a.add_argument("--short-words", type=int, default=3,
                   help="length_aware: transcripts of at most this many words are short (3)")
    a.add_argument("--min-coverage", type=float, default=0.5,
                   help="incomplete when the ASR recovers less than this share of the "
                        "transcript's words (0.5; 0 disables)")
    a.add_argument("--keep-fillers", action="store_true",
                   help="do not drop um/uh/hmm when normalising")
    f = parser.add_argument_group("faces")
    f.add_argument("--face-threshold", type=float,
                   help="cosine match threshold (default: by embedder, dlib 0.93, facenet 0.5)")
    f.add_argument("--face-refs", metavar="PATH",
                   help="explicit reference faces: a .parquet (speaker, embedding) or a folder of "
                        "photos <speaker>/*.jpg or <speaker>.jpg (embedded with --profile)")
    f.add_argument("--no-face", choices=("drop", "keep"), default="drop",
                   help="utterances where no face is detected (default drop)")
    f.add_argument("--several-candidates", choices=("drop", "keep"), default="keep",
                   help="utterances where several people match the speaker (default keep)")
    f.add_argument("--profile", default="offline",
                   help="model profile that embeds --face-refs photos (the features' one)")
    s = parser.add_argument_group("speakers")
    s.add_argument("--same-person", type=float,
                   help="two label references above this are one person (default: by embedder)")
    s.add_argument("--min-seconds", type=float, default=1.0,
                   help="shorter utterances are not judged by voice (1.0)")
    s.add_argument("--apply-relabel", choices=("none", "labels", "all"), default="none",
                   help="apply proposals: labels = conflated names and aliases, all = also "
                        "single utterances that sound like another speaker (default none)")
    s.add_argument("--relabels", metavar="CSV",
                   help="a reviewed relabels.csv (utterance_id or speaker, proposed_speaker, apply)")
    parser.add_argument("--checks", default=",".join(CHECKS),
                        help=f"checks to run, comma-separated (default {','.join(CHECKS)})")


def build_config(args: argparse.Namespace) -> QCConfig:
    checks = tuple(c.strip() for c in args.checks.split(",") if c.strip())
    return QCConfig(
        alignment=AlignmentConfig(rule=args.rule, cosine=args.cosine,
                                  cos_threshold=args.cos_threshold,
                                  lev_threshold=args.lev_threshold, short_words=args.short_words,
                                  min_coverage=args.min_coverage,
                                  drop_fillers=not args.keep_fillers),
        faces=FaceConfig(threshold=args.face_threshold, no_face=args.no_face,
                         several_candidates=args.several_candidates),
        speakers=SpeakerConfig(same_person=args.same_person,
                               min_seconds=args.min_seconds, apply=args.apply_relabel),
        checks=checks,
        face_references=args.face_refs,
        relabels=args.relabels,
        profile=args.profile,
    )


def cmd_qc(args: argparse.Namespace) -> int:
    from erc.qc.decisions import run_qc
    from erc.qc.report import report_data

    features = Path(args.features)
    utterances = Path(args.utterances) if args.utterances else features.parent / "corpus"
    out = Path(args.out) if args.out else features.parent / "qc"
    try:
        config = build_config(args)
    except ValueError as err:
        raise SystemExit(f"erc qc: error: {err}")
    result = run_qc(features, utterances, out, config, force=args.force)
    data = report_data(result.decisions, result.summary)
    state = "up to date, nothing recomputed" if result.skipped else "done"
    print(f"qc {state}: {data['input']} utterances, {data['kept']} kept, {data['removed']} removed")
    for reason, count in data["removed_by_first_reason"].items():
        print(f"  {reason:32} {count:7d}")
    print("failures per check: " + ", ".join(f"{c} {v}" for c, v in data["failed_by_check"].items()))
    if data["relabels"]["proposed"]:
        print(f"relabel proposals: {data['relabels']['proposed']} "
              f"(applied {data['relabels']['applied']}), see {out / 'relabels.csv'}")
    for finding in data["relabels"]["label_findings"]:
        print(f"  {finding['detail']}")
    print(f"outputs in {out}: decisions.parquet, utterances.parquet (kept), relabels.csv, "
          "report.html, report.json")
    return 0


def register(commands) -> argparse.ArgumentParser:
    """Adds ``qc`` to an argparse subparsers object; returns its parser."""
    qc = commands.add_parser(
        "qc", help="quality control: alignment, face and speaker checks, relabelling, report",
        description="Decides, for every utterance of an utterance table, whether its features "
                    "pass audio-text alignment, face verification and speaker identity checks; "
                    "writes decisions.parquet (every utterance), utterances.parquet (the kept "
                    "view), relabels.csv and report.html/json. Nothing is deleted.")
    qc.add_argument("features", help="feature folder (part-*.parquet) of the preprocessing pass")
    qc.add_argument("--utterances", help="folder holding utterances.parquet, or the file "
                                         "(default: FEATURES/../corpus)")
    qc.add_argument("--out", help="output folder (default: FEATURES/../qc)")
    qc.add_argument("--force", action="store_true", help="recompute even if up to date")
    add_options(qc)
    qc.set_defaults(func=cmd_qc)
    return qc
