"""The ``erc`` command line.

    erc run [--config FILE] [--from S] [--until S] [--dry-run]   the main job
    erc corpus ingest|inspect|summary|formats                     corpora -> utterance table
    erc preprocess UTTERANCES --out DIR                           the Ray Data pass
    erc qc FEATURES --utterances DIR --out DIR                    quality control
    erc train text|fusion|adapter CORPUS --out DIR                training on Ray Train
    erc evaluate MODEL... CORPUS --split S                        metrics of a model / ensemble
    erc tune SEARCH CORPUS --out DIR                              Ray Tune + Optuna
    erc models list|fetch                                         weights of each model role

Every command's options come from the recipe it runs (``erc.recipes``): ``--config FILE``
(a run config, or just the command's section), ``-o key=value`` overrides and the
generated ``--option`` flags, in that order of precedence. One error path: an expected
failure (bad input, option or config; an unwritable or foreign output; a storage or
cluster error) prints one line ``erc: error: ...`` and exits with status 2; anything else
is a bug in erc and prints its traceback with a request to report it (status 1). An
output pipe closed by its reader (``erc ... | head``) ends the command quietly (status 141).
"""

from __future__ import annotations

import argparse
import sys
import traceback

from erc import __version__

COMMANDS = ("run", "corpus", "preprocess", "qc", "train", "tune", "models")


class Parser(argparse.ArgumentParser):
    """argparse, with a bad command line reported on erc's one error path (one line, exit
    status 2) instead of a usage block. Options are written in full: an abbreviation
    (``--ou`` for ``--out``) would pass by ``erc.storage``, which stages the value of
    ``--out`` as an output, and make an output URI an input."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # subcommand parsers are of this class too
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        from erc.errors import ConfigError

        # erc's error path puts "erc: error: " before the message: the parser's name is
        # said after it only for a subcommand ("train fusion: argument ...")
        where = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        raise ConfigError(f"{where}{message}{_suggestion(message)} (see {self.prog} --help)")


# Names of erc's stages and actions that are not commands of their own: what runs each
NOT_COMMANDS = {"ingest": "did you mean 'corpus ingest'?", "inspect": "did you mean 'corpus inspect'?",
                "adapter": "did you mean 'train adapter'?", "adapters": "did you mean 'train adapter'?",
                "fetch": "did you mean 'models fetch'?",
                "report": "the report is the last stage of 'erc run' (report.html in its output folder)"}


def _suggestion(message: str) -> str:
    """For an invalid choice (a mistyped command), the closest valid one, as ``; did you
    mean ...?``; for a stage that is no command of its own, the command that runs it."""
    import difflib
    import re

    found = re.match(r"argument (\S+): invalid choice: '(.*)' \(choose from (.*)\)$", message)
    if not found:
        return ""
    argument, given, listed = found.groups()
    if argument == "COMMAND" and given in NOT_COMMANDS:
        return f"; {NOT_COMMANDS[given]}"
    choices = [choice.strip().strip("'") for choice in listed.split(",")]
    close = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = Parser(
        prog="erc", description="Multimodal emotion recognition in conversations, on Ray.")
    parser.add_argument("--version", action="version", version=f"erc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"erc.cli.{name}").register(commands)
    return parser


def _expected(err: BaseException) -> bool:
    from erc.errors import ErcError

    if isinstance(err, ErcError):
        return True
    # The OS refusing a path the user gave (a file where a folder should be, no permission).
    return isinstance(err, OSError) and getattr(err, "filename", None) is not None


def _message(err: BaseException) -> str:
    """The message on one line (a multiline error's on its own lines): what it quotes of
    the input (a file name, a mapping key, a column name) with control characters escaped,
    so a newline cannot break the line nor an ESC drive the terminal."""
    from erc.errors import printable

    if isinstance(err, OSError) and getattr(err, "filename", None) is not None:
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err)
    if getattr(err, "multiline", False):
        return "\n".join(map(printable, text.split("\n")))
    return printable(text)


def _stdout_closed() -> bool:
    """Whether the standard output is a pipe its reader has closed; if so it is pointed at
    /dev/null, where what is still buffered goes when the interpreter flushes it on exit."""
    import os
    import select

    try:
        fd = sys.__stdout__.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not any(events & select.POLLERR for _, events in poller.poll(0)):
            return False
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
        return True
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test's capture)
        return False


def _check_nul(argv: list[str]) -> None:
    """ConfigError naming the first argument that holds a NUL character. A shell cannot
    pass one (the OS ends an argument there) but a caller of ``main`` can, and no path,
    name or label holds one: the OS call given it raised ValueError, a traceback."""
    from erc.errors import ConfigError, preview

    for index, arg in enumerate(argv):
        if "\0" in arg:
            after = f" (after {argv[index - 1]})" if index and argv[index - 1].startswith("-") else ""
            raise ConfigError(f"command line: argument {preview(arg, 200)}{after} holds a NUL "
                              f"character (no path, name or label does)")


def main(argv: list[str] | None = None) -> int:
    """Parses and runs a command. Storage URIs among the arguments (s3://...) are replaced
    by local copies, outputs uploaded as the command goes (``erc.storage``)."""
    from erc import console, runtime, storage
    from erc.home import state_dir

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        _check_nul(argv)
        runtime.apply_offline_env()  # before anything imports Ray or a model library
        runtime.check_submitted_job(argv)
        parser = build_parser()
        probe = parser.parse_args(argv)
        takes_storage = getattr(probe, "takes_storage", False)

        def run(local_argv: list[str]) -> int:
            args = parser.parse_args(local_argv)
            args.as_given = probe  # storage URIs where the user gave them (what a command names)
            console.setup(verbose=getattr(args, "console_verbose", False))
            return args.func(args)

        return storage.run_with_uris(run, argv, state_dir(),
                                     storage_option="--storage" if takes_storage else None)
    except KeyboardInterrupt:
        print("erc: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if isinstance(err, BrokenPipeError) and _stdout_closed():
            # the reader of the output went away (erc ... | head): stop as Unix tools do,
            # with no traceback and nothing left to flush into the closed pipe
            return 141  # 128 + SIGPIPE
        err = runtime.error_inside(err) or err  # an erc error a Ray worker raised
        if _expected(err):
            print(f"erc: error: {storage.redact(_message(err))}", file=sys.stderr)
            return 2
        print(storage.redact(traceback.format_exc()), end="", file=sys.stderr)
        print(f"erc: internal error ({type(err).__name__}): this is a bug in erc {__version__}; "
              "please report it with the traceback above", file=sys.stderr)
        return 1
    finally:
        runtime.shutdown()

