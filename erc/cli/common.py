"""What every command shares: recipe options (``--config``, ``-o``, generated flags), the
run options (``--address``, ``--force``, ``--overwrite``) and reading a recipe back from
the parsed arguments."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from erc.errors import ConfigError, preview
from erc.settings import (
    Option,
    add_arguments,
    by_option,
    given,
    load_yaml,
    merge,
    parse_override,
    path_flag,
    tree,
    validate,
)


def count(text: str) -> int:
    """An option that counts something (trials, CPUs, dialogues): a whole number >= 1
    (0 read as "no limit" or as nothing to run, silently)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def positive(text: str) -> float:
    """An option that is a share of a resource (CPUs per trial): a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def add_recipe(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = (),
               title: str | None = "settings", config_help: str | None = None,
               overrides: bool = True) -> list[Option]:
    """``--config FILE``, ``-o KEY=VALUE`` and a flag for every setting of recipe ``cls``."""
    parser.add_argument(
        "--config", metavar="FILE", type=path_flag,
        help=config_help or "YAML of settings: a run config (its section for this command) or "
                            "just this command's keys (e.g. the best_config.yaml of erc tune)")
    if overrides:
        parser.add_argument("-o", "--set", dest="setting_overrides", action="append", default=[],
                            type=parse_override, metavar="KEY=VALUE",
                            help="override one setting, as in the config file (repeatable; "
                                 "e.g. -o lr=3e-4)")
    added = add_arguments(parser, cls, skip=skip, title=title)
    if any(option.name == "storage" for option in added):
        parser.set_defaults(takes_storage=True)  # Ray's own storage URI: erc.storage leaves it
    return added


def recipe(cls, args: argparse.Namespace, added: list[Option], section: str | None = None,
           base: dict | None = None, flags: dict | None = None) -> Any:
    """The recipe the command runs: its defaults, then ``base``, the config file (its
    ``section`` when the file is a run config), the ``-o`` overrides and the flags given
    (``flags``: settings from the command's own flags, which the file does not override)."""
    from erc.recipes import section_data

    data = dict(base or {})
    if getattr(args, "config", None):
        raw = load_yaml(args.config)
        from_file = section_data(raw, section) if section else raw
        # A list or a scalar where settings belong is the user's mistake, not a crash of merge.
        if from_file is not None and not isinstance(from_file, dict):
            inside = f" {section}:" if from_file is not raw else ""
            raise ConfigError(f"{args.config}:{inside} expected a mapping of settings, got "
                              f"{preview(from_file)}")
        data = merge(data, from_file or {})
    data = merge(data, tree(getattr(args, "setting_overrides", []) or []))
    data = merge(data, by_option(cls, given(args, added)))
    data = merge(data, flags or {})
    try:
        return validate(cls, data, "command line")
    except ConfigError:
        if getattr(args, "config", None):  # a mistake in the file names the file (and section)
            validate(cls, from_file, f"{args.config}: {section}" if from_file is not raw
                     else str(args.config))
        raise


def file_section(cls, path: str | None, section: str) -> Any:
    """Recipe ``cls`` from the ``section`` of a run config file (defaults when there is no
    file, or the file is a bare section of another command)."""
    from erc.recipes import SECTIONS

    data = load_yaml(path) if path else None
    if isinstance(data, dict) and data and set(data) <= set(SECTIONS) | {"output_dir"}:
        return validate(cls, data.get(section), f"{path}: {section}")
    return validate(cls, None)


def check_shared_output(path: str, what: str) -> None:
    """ConfigError when a job submitted with `ray job submit` would write ``path`` (``what``
    names its setting) relative to its working directory: the job's temporary copy of
    --working-dir on the head node, gone with it (jobs/_job.py checks --out and --storage;
    a config's output folder is read here)."""
    from erc import runtime, storage

    if runtime.submitted_job() and not storage.is_uri(path) and not Path(path).is_absolute():
        raise ConfigError(f"{what} {path}: a submitted job needs a storage URI (s3://...) or an "
                          f"absolute path on storage every node shares; a relative one lands in "
                          f"the job's temporary copy of --working-dir on the head node")


def add_run_options(parser: argparse.ArgumentParser, *, address: bool = True) -> None:
    if address:
        parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, "
                                              "else an embedded Ray on 127.0.0.1)")
    parser.add_argument("--force", action="store_true", help="recompute even if up to date")
    add_overwrite(parser)


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``, the same for every command that writes an output folder (erc.io)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an output folder that holds files erc did not write "
                             "(they stay; a file of yours where erc writes stops the command)")


def progress_printer(quiet: bool = False):
    return (lambda _message: None) if quiet else (lambda message: print(message, flush=True))


@contextlib.contextmanager
def output_beside(args: argparse.Namespace, option: str, local: Path, name: str,
                  of_folder: bool = False) -> Iterator[Path]:
    """A command's default output folder ``name`` beside its input ``option`` (the first,
    of several): ``local`` when the user gave a path; for a storage URI, ``name`` beside
    that URI (``of_folder``: beside the folder holding the URI's file, as for a local one),
    written through a local copy and uploaded; never into erc's local copy of the input, a
    cache no one reads."""
    from erc import storage
    from erc.home import state_dir

    def first(namespace):
        value = getattr(namespace, option)
        return value[0] if isinstance(value, list) else value

    given = first(getattr(args, "as_given", args))
    if not storage.is_uri(given):
        yield local
        return
    if of_folder and not Path(first(args)).is_dir():  # the URI names a file of a folder
        given = storage.beside_uri(given, "")
    uri = storage.beside_uri(given, name)
    with storage.staged_output(uri, state_dir()) as folder:
        yield folder
    print(f"results: {storage.redact(uri)}")
