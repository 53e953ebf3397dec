"""What a person sees while erc runs, and what a run's log file keeps: the one home of
that policy.

- erc's own lines (``print``) go to the console, and to the run's log file while one is
  open (``run_log``): the file holds everything the console shows, and more.
- Log records of Ray and other libraries go to the log file from INFO up; the console
  shows erc's warnings and everyone's errors, or every record from INFO up with
  ``verbose``. Ray Data's execution plans, resource budgets and progress records are INFO.
- Output of Ray's worker processes, which Ray forwards to this process, goes to the log
  file; the console shows it with ``verbose``, and erc's own progress lines among it
  (``[train] epoch ...``) on a terminal or when no run log is open (a stage command run
  alone), not in the main job's log or pipe, which gets one line per stage instead; erc's
  warnings from inside workers (``[erc] warning: ...``) always.
- ``verbose`` comes from ``erc run --verbose`` or ERC_VERBOSE=1 (any command, Ray jobs).
- Progress: on a terminal Ray Data draws its progress display (a bar per operator: rows,
  throughput, time), which stays out of the log file; off a terminal it logs progress
  records instead, which go to the log file only, so a log or pipe gets erc's few lines
  per stage.
- No ANSI colour codes when the output is not a terminal, and none in the log file.
- No credential: every line that reaches the console or the log file goes through
  ``erc.redaction.redact`` (a storage URI's ``KEY:SECRET@`` and secret query parameters).

One C++ line of Ray's core worker ("core_worker.cc: Actor ... has constructor arguments in
the object store") is written to the process's stderr below Python and stays on the console.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import yaml

from erc import io
from erc.redaction import redact

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_REDRAW = re.compile(r"\x1b\[[0-9;]*[ABJK]|\x1b\[\?25[hl]")  # cursor moves: a live display
_ERC_PROGRESS = re.compile(r"\[(train|tune)\] ")  # erc's lines printed inside Ray workers
_ERC_WARNING = re.compile(r"\[erc\] warning: ")  # erc's warnings from inside Ray workers: always shown

# Ray Data's logger, for RAY_DATA_LOGGING_CONFIG: its records still reach Ray's session
# log (ray-data.log), and propagate to this module's handler instead of Ray's console one.
# INFO, not Ray's DEBUG: in a worker, propagated DEBUG records would be printed (a line
# per map task) and forwarded here.
RAY_DATA_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"ray": {"format": "%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"}},
    "handlers": {"file": {"class": "ray.data._internal.logging.SessionFileHandler",
                          "formatter": "ray", "filename": "ray-data.log"}},
    "loggers": {"ray.data": {"level": "INFO", "handlers": ["file"], "propagate": True}},
}


class _State:
    active = False  # setup() ran: a command line, not a library caller
    verbose = False
    log: _LogFile | None = None
    hidden_warnings = 0


_state = _State()


def setup(verbose: bool = False) -> None:
    """Applies the policy to this process. Call it before Ray is imported (Ray Data reads
    its logging config at import, Ray's processes inherit the environment at start)."""
    _state.active = True
    _state.verbose = verbose or os.environ.get("ERC_VERBOSE") == "1"
    for name in ("stdout", "stderr"):  # whatever prints, erc's or a library's
        if getattr(sys, name) is None:  # started with it closed (erc ... >&-): nobody reads it
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
        if not isinstance(getattr(sys, name), _Redacting):
            _escape_unencodable(getattr(sys, name))
            stream = _Redacting(getattr(sys, name))
            setattr(sys, name, stream)
            atexit.register(stream.finish)  # a last word a flush held back
    if sys.stdout.isatty():
        # Ray Data's newer display: a bar per operator with rows, throughput and time.
        os.environ.setdefault("RAY_DATA_ENABLE_RICH_PROGRESS_BARS", "1")
        os.environ.setdefault("RAY_TQDM", "0")
    else:
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        # Hugging Face's bars (transformers' "Loading weights" as a model loads): a bar of
        # carriage returns in a pipe or log file, one per model load.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(_ray_data_logging_file()))
    if "ray" in sys.modules:  # imported before the policy (a library caller, a test)
        _route_ray_loggers()
    if "ray.data" in sys.modules:  # Ray Data read its logging config at import
        from logging import config as logging_config

        logging_config.dictConfig(RAY_DATA_LOGGING)
    root = logging.getLogger()
    if not any(isinstance(h, _Router) for h in root.handlers):
        root.addHandler(_Router())
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def _escape_unencodable(stream) -> None:
    """A console that cannot show a character (PYTHONIOENCODING=ascii, a C locale's
    terminal) gets it escaped (``\\xef``), as Python's stderr does, instead of failing the
    command on the first non-ASCII path or name."""
    if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="backslashreplace")


def attach_to_ray() -> None:
    """Routes Ray's records and its workers' forwarded output through this policy; called
    once Ray is connected. Without ``setup`` (erc used as a library) Ray keeps its own
    console output, warnings and up."""
    if not _state.active:
        logging.getLogger("ray").setLevel(logging.WARNING)
        return
    _route_ray_loggers()
    if _state.verbose:
        return  # Ray prints its workers' output itself (uncoloured off a terminal)
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # another Ray: leave its printing alone
        return
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler("erc_worker_output")
    dispatcher.add_handler("erc_worker_output", _worker_output)


def _route_ray_loggers() -> None:
    """Ray gives its logger a console handler at import: records go through the policy instead."""
    from ray._private.log import PlainRayHandler

    ray_logger = logging.getLogger("ray")
    for handler in [h for h in ray_logger.handlers if isinstance(h, PlainRayHandler)]:
        ray_logger.removeHandler(handler)
    ray_logger.propagate = True
    ray_logger.setLevel(logging.INFO)


def quiet_worker_logs() -> None:
    """Runs in every worker of the embedded Ray: per-report INFO lines of Ray Train and the
    state-API warnings of its placement-group cleaner (the embedded Ray runs without a
    dashboard, hence without a state API) would drown erc's own progress lines."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:  # this module's logger is named after its file, not its module
        from ray.train.v2._internal.execution import context

        logging.getLogger(context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass
    logging.getLogger(
        "ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[Path]:
    """While the block runs, everything this process prints, every log record from INFO
    up and the forwarded output of Ray's workers is appended to ``path``; an exception
    leaving the block is written there with its traceback."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.open_no_link(path, "a", encoding="utf-8") as handle:
        log = _state.log = _LogFile(handle)
        _state.hidden_warnings = 0
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} erc {' '.join(sys.argv[1:])}\n")
        streams = sys.stdout, sys.stderr
        tees = _Tee(streams[0]), _Tee(streams[1])
        sys.stdout, sys.stderr = tees
        try:
            yield path
        except BaseException:
            log.write(traceback.format_exc())
            raise
        finally:
            if _state.hidden_warnings:
                print(f"{_state.hidden_warnings} warning(s) from Ray and other libraries: {path}")
            for tee in tees:  # a line left unended is written, not dropped with its stream
                tee.finish()
            sys.stdout, sys.stderr = streams
            log.finish()
            _state.log = None
            if log.failed is not None:
                print(f"erc: {path}: the log stops early ({log.failed.strerror}); the "
                      f"console showed every line", file=sys.stderr)


def detail(text: str) -> None:
    """Text for the run's log file (the console shows it with ``verbose``): what a person
    looks up, not what they watch."""
    if _state.verbose or not _state.active:
        print(text)
    else:
        _to_file(text + "\n")


def _ray_data_logging_file() -> Path:
    from erc.home import state_dir

    path = state_dir() / "ray-data-logging.yaml"
    text = yaml.safe_dump(RAY_DATA_LOGGING, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        from erc import io

        io.write_text(path, text)  # another erc process may be reading it
    return path


def _to_file(text: str) -> None:
    if _state.log is not None:
        _state.log.write(text)


class _LogFile:
    """The log file's side of the output: complete lines, colour codes removed, and a
    carriage return (a progress bar redrawn in place) keeps only what follows it."""

    def __init__(self, handle):
        self.handle, self.pending, self.lock = handle, "", threading.Lock()
        self.failed: OSError | None = None  # a write that failed (a full disk): none after it

    def write(self, text: str) -> None:
        with self.lock:
            # Whole lines are redacted: a URI written in pieces has its secret split.
            text = (self.pending + _ANSI.sub("", text)).replace("\r\n", "\n")
            *lines, pending = text.split("\n")
            # Of a bar redrawn in place, only its last state waits for the line's end.
            self.pending = pending[pending.rfind("\r", 0, len(pending) - 1) + 1:]
            self._put("".join(redact(line.rsplit("\r", 1)[-1]) + "\n" for line in lines))

    def finish(self) -> None:
        """Writes the last line, ended or not."""
        with self.lock:
            line, self.pending = self.pending.rstrip("\r"), ""
            if line:
                self._put(redact(line) + "\n")

    def _put(self, text: str) -> None:
        """Writes ``text``; a log the disk has no room for stops there, and ``run_log`` says
        so when the run ends. It raises nothing: a print, a library's log record or a
        thread forwarding Ray's output that failed would stop the run with a traceback of
        Ray's or of its own; the console still shows every line, and the run's next output
        on that disk fails naming its file."""
        if self.failed is None:
            try:
                self.handle.write(text)
                self.handle.flush()
            except OSError as err:
                self.failed = err
                with contextlib.suppress(OSError):  # its buffer, unwritten, would fail it again
                    self.handle.close()


# A word that may be a credential's first part: a URI ("s3://KEY:SE"), one without its
# scheme ("KEY:SE"; a letter before the ":", unlike a bar's "0:00:03") or a query
# ("x?secret_key=SE").
_UNFINISHED_SECRET = re.compile(r"://|[=@]|[A-Za-z]:")


class _Redacting:
    """A console stream that writes no credential (``erc.redaction.redact``). It redacts
    whole lines, since a URI written in pieces (``print(..., end="")``, a library writing
    part of a line) has its secret split: a line ends at a newline or a carriage return (a
    progress bar redrawn in place is written at once), and the rest of one waits for its
    end. ``flush`` writes that rest but a last word that may be the start of a credential
    (``_UNFINISHED_SECRET``); ``finish``, ``close`` and the process's exit write it all."""

    def __init__(self, stream):
        self.stream, self.pending, self.lock = stream, "", threading.RLock()
        try:  # off a terminal no colour, also where a library colours regardless (Ray's
            self.plain = not stream.isatty()  # "[repeated 2x across cluster]")
        except (AttributeError, ValueError):
            self.plain = True

    def _emit(self, text: str) -> None:
        self.stream.write(redact(_ANSI.sub("", text) if self.plain else text))

    def write(self, text: str) -> int:
        with self.lock:
            pending = self.pending + text
            end = max(pending.rfind("\n"), pending.rfind("\r")) + 1
            self.pending = pending[end:]
            if end:
                self._emit(pending[:end])
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self.lock:
            rest = self.pending
            word = len(rest) - len(re.split(r"\s", rest)[-1])  # where the last word starts
            if _UNFINISHED_SECRET.search(rest, word):
                rest, self.pending = rest[:word], rest[word:]
            else:
                self.pending = ""
            if rest:
                self._emit(rest)
        self.stream.flush()

    def finish(self) -> None:
        """Writes the rest of the line, whatever it ends with."""
        with self.lock:
            rest, self.pending = self.pending, ""
            if rest:
                self._emit(rest)
                self.stream.flush()

    def close(self) -> None:
        self.finish()
        self.stream.close()

    def __getattr__(self, name):  # isatty, fileno, encoding, ...
        return getattr(self.stream, name)


class _Tee(_Redacting):
    """A console stream that also writes to the open log file."""

    def write(self, text: str) -> int:
        if not _REDRAW.search(text):  # a progress display redrawn in place is for the eye
            _to_file(text)
        return super().write(text)


class _Router(logging.Handler):
    """Sends each log record to the log file, and to the console when the policy shows it."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = redact(self.format(record)) + "\n"
        except Exception:
            self.handleError(record)
            return
        if _shown(record):
            stream = sys.stderr.stream if isinstance(sys.stderr, _Tee) else sys.stderr
            stream.write(line)
        elif record.levelno >= logging.WARNING:
            _state.hidden_warnings += 1
        _to_file(line)


def _shown(record: logging.LogRecord) -> bool:
    if _state.verbose or record.levelno >= logging.ERROR:
        return True
    return record.levelno >= logging.WARNING and record.name.split(".")[0] == "erc"


def _worker_output(data: dict) -> None:
    """In place of Ray's printer of its workers' output (without ``verbose``)."""
    from ray._private.worker import filter_autoscaler_events

    who = data.get("actor_name") or data.get("task_name") or ""
    prefix = f"({who + ' ' if who else ''}pid={data.get('pid')}) "
    show_progress = sys.stdout.isatty() or _state.log is None
    stream = sys.stdout.stream if isinstance(sys.stdout, _Tee) else sys.stdout
    lines = data.get("lines", [])
    if data.get("pid") == "autoscaler":  # its events, not its status every 5 s (as Ray does)
        lines = filter_autoscaler_events(lines)
    for line in lines:
        if "__ray_tqdm_magic_token__" in line:  # Ray's distributed tqdm state, not text
            continue
        line = redact(prefix + line.rsplit("\r", 1)[-1])  # a bar redrawn in place: its last state
        _to_file(line + "\n")
        if (show_progress and _ERC_PROGRESS.match(line, len(prefix))) or _ERC_WARNING.match(
                line, len(prefix)):
            stream.write(line + "\n")
            stream.flush()
