"""``erc corpus ingest|summary|formats``: corpora into the canonical utterance table."""

from __future__ import annotations

import json
from pathlib import Path

from erc.cli.common import add_recipe, add_run_options, recipe
from erc.errors import InputError
from erc.recipes import CorpusConfig
from erc.settings import path_flag, tree


def _reader_option(text: str):
    """``-o KEY=VALUE`` of a reader option: VALUE reads as in a mapping file (a label
    ``yes`` is the text written, not true)."""
    from erc.corpus.mapping import parse_reader_option

    return parse_reader_option(text)


def cmd_ingest(args) -> int:
    from erc.artifacts import PROBLEMS, UTTERANCES
    from erc.stages.base import execute
    from erc.stages.ingest import IngestStage
    from erc.summary import format_summary

    options = tree(args.reader_options)  # a reader option given twice is an error
    if args.media_root:
        options["media_root"] = str(_resolved(args.media_root, "--media-root"))
    if args.split:
        options["splits"] = args.split
    if args.mapping is not None:
        if not args.mapping.strip():  # "" resolves to the working folder
            raise InputError("--mapping: expected a mapping file (YAML), got ''")
        options["mapping"] = str(_resolved(args.mapping, "--mapping"))
    flags = {"options": options, **({"format": args.format} if args.format else {})}
    config = recipe(CorpusConfig, args, args.recipe_options, section="corpus", flags=flags)
    corpus = _resolved(args.path, "corpus path")
    config.path = str(corpus)
    # The default beside the working folder, named as the reader names the corpus: a folder
    # by its name, a manifest file by its stem (not runs/manifest.csv/corpus).
    named = corpus.name if corpus.is_dir() else corpus.stem
    out = Path(args.out) if args.out else Path("runs") / named / "corpus"
    if args.address:
        from erc import runtime

        runtime.connect(args.address)
    result = execute(IngestStage(), config, {}, out, force=args.force, overwrite=args.overwrite,
                     say=print)
    if args.json:
        print(json.dumps(result.summary, indent=2))
        return 0
    state = "up to date, nothing recomputed" if result.skipped else f"done in {result.seconds:.1f} s"
    print(format_summary(result.summary))
    print(f"\ningest {state}:\n  {out / UTTERANCES}\n  {out / PROBLEMS}")
    return 0


def _resolved(path: str, what: str) -> Path:
    """``path`` made absolute, its links followed; a link loop is an InputError."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as err:  # RuntimeError: Python 3.11's symlink loop
        raise InputError(f"{what} {path}: cannot be followed ({err})") from None


def cmd_inspect(args) -> int:
    from erc import io
    from erc.corpus.inspect import format_inspection, inspect_corpus, mapping_yaml

    inspection = inspect_corpus(Path(args.path))
    write = Path(args.write) if args.write else None
    if write and write.exists() and any(write.samefile(file) for file, _, _ in inspection.files):
        raise InputError(f"{args.write}: is a manifest file inspected; write the mapping to "
                         f"another file")
    if write and write.is_dir():  # replacing it fails, naming a temporary file
        raise InputError(f"{args.write}: is a folder; name the mapping file to write")
    print(format_inspection(inspection) + "\n\nsuggested mapping:\n\n" + mapping_yaml(inspection))
    if args.write:
        io.write_new_text(args.write, mapping_yaml(inspection), overwrite=args.overwrite)
        print(f"written to {args.write}: edit it, then erc corpus ingest {args.path} --mapping {args.write}")
    return 0


def cmd_summary(args) -> int:
    from erc.stages.ingest import load_result
    from erc.summary import format_summary, problems_preview, summarise

    result = load_result(Path(args.dir))
    print(format_summary(summarise(result)))
    if result.problems.num_rows:
        print("\nfirst problems:\n" + problems_preview(result.problems))
    return 0


def cmd_formats(args) -> int:
    import yaml

    from erc.corpus import FORMATS
    from erc.settings import options

    for name, format in FORMATS.items():
        print(f"{name:14} {format.description}")
        for option in options(format.options):
            default = yaml.safe_dump(option.default, default_flow_style=True).strip()
            print(f"{'':16}-o {option.name}={default.removesuffix(chr(10) + '...')}  {option.help}")
    return 0


def register(commands) -> None:
    from erc.corpus import FORMATS

    corpus = commands.add_parser("corpus", help="read corpora into the utterance table",
                                 description="Read corpora into the canonical utterance table.")
    sub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="COMMAND")

    ingest = sub.add_parser(
        "ingest", help="read a corpus, write utterances.parquet and problems.parquet",
        description="Reads a corpus (MELD, IEMOCAP, RAVDESS, DailyDialog or a manifest), writes "
                    "utterances.parquet and problems.parquet (every row set aside, with its "
                    "reason), and prints counts per split, emotion and speaker.")
    ingest.add_argument("path", type=path_flag, help="corpus folder or manifest file")
    ingest.add_argument("--out", type=path_flag, help="output folder (default: runs/NAME/corpus, NAME the "
                        "corpus folder's name or a manifest file's name without its extension)")
    ingest.add_argument("--media-root", type=path_flag, help="folder of the media (MELD: the MELD.Raw folder)")
    ingest.add_argument("--mapping", metavar="FILE", type=path_flag,
                        help="manifest mapping (YAML): files, column names and templates, label "
                             "map (`erc corpus inspect` suggests one)")
    ingest.add_argument("--split", action="append", help="only this split (repeatable)")
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON")
    ingest.add_argument("--format", choices=sorted(FORMATS), help="corpus format (default: detected)")
    ingest.add_argument("-o", "--option", dest="reader_options", action="append", default=[],
                        type=_reader_option, metavar="KEY=VALUE",
                        help="reader option, e.g. -o keep_missing_media=true, "
                             "-o 'actor_splits={train: 1-20, test: 21-24}' (repeatable)")
    added = add_recipe(ingest, CorpusConfig, skip=("path", "options", "format"), overrides=False)
    ingest.set_defaults(recipe_options=added)
    add_run_options(ingest)
    ingest.set_defaults(func=cmd_ingest)

    inspect = sub.add_parser(
        "inspect", help="show an unknown manifest's columns and suggest a mapping for it",
        description="Reads a CSV (any delimiter), JSON Lines, JSON or Parquet manifest (or a "
                    "folder of them), prints its columns with example values (a nested "
                    "object's keys as conv.id) and a suggested mapping file (files per split, "
                    "delimiter, records of a JSON document, dialogue id, speaker, text, "
                    "emotion, turn, times and their unit, label map) to edit and pass to "
                    "`erc corpus ingest --mapping`.")
    inspect.add_argument("path", type=path_flag, help="manifest file or folder of manifest files")
    inspect.add_argument("--write", metavar="FILE", type=path_flag, help="also write the suggested mapping to FILE")
    inspect.add_argument("--overwrite", action="store_true",
                         help="replace FILE when it exists (an edited mapping is lost)")
    inspect.set_defaults(func=cmd_inspect)

    summary = sub.add_parser("summary", help="print the summary of an ingested corpus",
                             description="Prints counts and problems of an ingest output.")
    summary.add_argument("dir", type=path_flag, help="folder holding utterances.parquet")
    summary.set_defaults(func=cmd_summary)

    formats = sub.add_parser("formats", help="list the corpus formats erc reads",
                             description="Lists the corpus formats erc reads.")
    formats.set_defaults(func=cmd_formats)

