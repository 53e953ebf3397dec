"""``erc preprocess``: the Ray Data pass over an ingested corpus's media."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from erc.cli.common import (
    add_recipe,
    add_run_options,
    check_shared_output,
    count,
    file_section,
    output_beside,
    recipe,
)
from erc.recipes import PreprocessConfig
from erc.settings import path_flag


def _default_out(utterances: str) -> Path:
    path = Path(utterances).resolve()
    folder = path if path.is_dir() else path.parent
    return folder.parent / "features"


def cmd_preprocess(args) -> int:
    from erc.recipes import RayConfig
    from erc.stages.base import execute
    from erc.stages.preprocess import PreprocessStage

    config = recipe(PreprocessConfig, args, args.recipe_options, section="preprocess")
    ray = file_section(RayConfig, args.config, "ray")
    if args.address:
        ray.address = args.address
    say = (lambda _message: None) if args.json else print
    chosen = args.out or config.output_dir
    if chosen and not args.out:
        check_shared_output(chosen, "preprocess.output_dir")
    with contextlib.nullcontext(Path(chosen)) if chosen else output_beside(
            args, "utterances", _default_out(args.utterances), "features", of_folder=True) as out:
        result = execute(PreprocessStage(ray, limit=args.limit), config,
                         {"utterances": args.utterances}, out, force=args.force,
                         overwrite=args.overwrite, say=say)
    if args.json:
        print(json.dumps(result.summary, indent=2))
    elif result.skipped:
        from erc.pipeline.preprocess import format_summary

        print(format_summary(result.summary))
        print(f"\npreprocess up to date, nothing recomputed: {out}")
    else:
        print(f"\npreprocess done in {result.seconds:.1f} s: {out / 'part-*.parquet'}, "
              f"{out / 'manifest.json'}")
    return 0


def register(commands) -> None:
    parser = commands.add_parser(
        "preprocess", help="decode media, run Whisper, faces, speaker and text models once",
        description="The preprocessing pass on Ray Data: decodes each utterance's audio and "
                    "sampled frames, transcribes it (Whisper), detects and embeds every face, "
                    "embeds the speaker and the corpus transcript, and writes "
                    "part-*.parquet and manifest.json (resumable: finished partitions are "
                    "skipped; an unchanged corpus with unchanged settings is not touched).")
    parser.add_argument("utterances", type=path_flag, help="folder holding utterances.parquet (from `erc corpus "
                                           "ingest`), or the parquet file")
    parser.add_argument("--out", type=path_flag, help="folder for the feature parts (default: the config's, "
                                      "else 'features' beside the utterance folder)")
    parser.add_argument("--limit", type=count, help="only the first N utterances (by id)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    added = add_recipe(parser, PreprocessConfig, skip=("output_dir",),
                       config_help="YAML run config (its preprocess: and ray: sections) or "
                                   "just the preprocess settings")
    parser.set_defaults(recipe_options=added)
    add_run_options(parser)
    parser.set_defaults(func=cmd_preprocess)
