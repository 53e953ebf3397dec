"""The console policy (erc.console): what reaches the console and what only the run's log
file, for erc's lines, log records of Ray and other libraries, and Ray workers' output.
The whole policy on a real run: tests/test_cli.py (the sample) and tests/test_main_job.py
(--verbose)."""

from __future__ import annotations

import logging

import pytest

from erc import console


@pytest.fixture
def policy(monkeypatch, tmp_path):
    """The policy as a command line sets it up (not verbose), with its state restored."""
    monkeypatch.setenv("ERC_VERBOSE", "0")
    for name in ("active", "verbose", "log", "hidden_warnings"):
        monkeypatch.setattr(console._state, name, getattr(console._state, name))
    console.setup(verbose=False)
    return tmp_path / "run.log"


def test_records_by_source_and_level(policy, capsys):
    with console.run_log(policy):
        print("[1/6 ingest] erc's own line")
        logging.getLogger("ray.data._internal.execution.streaming_executor").info(
            "Execution plan of Dataset d: InputDataBuffer -> MapBatches")
        logging.getLogger("ray.data").warning("operator uses a lot of memory")
        logging.getLogger("erc.tune.driver").warning("an erc warning")
        logging.getLogger("ray").error("an error anyone needs to see")
    out, err = capsys.readouterr()
    assert out.splitlines() == ["[1/6 ingest] erc's own line",
                                f"1 warning(s) from Ray and other libraries: {policy}"]
    assert "Execution plan" not in err and "memory" not in err
    assert "WARNING erc.tune.driver: an erc warning" in err
    assert "ERROR ray: an error anyone needs to see" in err
    log = policy.read_text()
    for text in ("erc's own line", "INFO ray.data._internal.execution.streaming_executor: "
                 "Execution plan", "WARNING ray.data: operator uses a lot of memory",
                 "an erc warning", "an error anyone needs to see", "1 warning(s)"):
        assert text in log


def test_verbose_shows_every_record(policy, capsys, monkeypatch):
    monkeypatch.setattr(console._state, "verbose", True)
    with console.run_log(policy):
        logging.getLogger("ray.data").info("Execution plan of Dataset d")
    assert "INFO ray.data: Execution plan of Dataset d" in capsys.readouterr().err
    assert "Execution plan of Dataset d" in policy.read_text()


def test_worker_output_goes_to_the_log(policy, capsys):
    batch = {"pid": 41, "actor_name": "RayTrainWorker", "is_err": False,
             "lines": ["\x1b[36mSetting up process group\x1b[0m",
                       "[train] epoch 0: loss 1.2000 dev acc 0.5000",
                       "Loading weights:   0%|   | 0/9\rLoading weights: 100%|###| 9/9"]}
    with console.run_log(policy):
        console._worker_output(batch)
    assert capsys.readouterr().out == ""  # not a terminal, and the main job's log is open
    log = policy.read_text().splitlines()
    assert "(RayTrainWorker pid=41) Setting up process group" in log  # no colour codes
    assert "(RayTrainWorker pid=41) [train] epoch 0: loss 1.2000 dev acc 0.5000" in log
    assert "(RayTrainWorker pid=41) Loading weights: 100%|###| 9/9" in log  # the bar's last state
    # A stage command run alone (no run log) still shows erc's progress lines.
    console._worker_output(batch)
    assert capsys.readouterr().out == "(RayTrainWorker pid=41) [train] epoch 0: loss 1.2000 dev acc 0.5000\n"


def test_an_exception_leaving_the_run_is_logged(policy):
    with pytest.raises(ZeroDivisionError):
        with console.run_log(policy):
            print("before")
            raise ZeroDivisionError("division by zero")
    log = policy.read_text()
    assert "before" in log and "Traceback" in log and "ZeroDivisionError" in log


def test_log_file_keeps_lines_without_colour_or_redrawn_bars(tmp_path):
    path = tmp_path / "log"
    with open(path, "w") as handle:
        log = console._LogFile(handle)
        for chunk in ("plain\n", "\x1b[1mbold\x1b[0m line\r\n", "bar 10%\rbar 50%", "\rbar 100%\n",
                      "no newline yet"):
            log.write(chunk)
    assert path.read_text() == "plain\nbold line\nbar 100%\n"


def test_a_console_that_cannot_encode_a_character_gets_it_escaped(tmp_path):
    """PYTHONIOENCODING=ascii (or a C locale): a non-ASCII path in a line failed the
    command with a UnicodeEncodeError; it is escaped instead, as on Python's stderr."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = "from erc import console; console.setup(); print('out: /runs/\\u00efng')"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONIOENCODING": "ascii",
                               "ERC_HOME": str(tmp_path)}, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout == b"out: /runs/\\xefng\n"


def test_off_a_terminal_no_model_load_draws_a_progress_bar(tmp_path):
    """`erc tune ... | tee` (or `> log`): transformers drew its "Loading weights" bar, carriage
    returns and all, into the pipe each time the driver or a worker loaded a text model."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("from erc import console; console.setup()\n"
            "from transformers.utils import logging; print(logging.is_progress_bar_enabled())")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**env, "ERC_HOME": str(tmp_path)}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_a_command_started_with_its_output_closed_runs(tmp_path):
    """``erc ... >&-``: Python has no sys.stdout then; the console policy wrapped None and
    the command failed as a bug in erc."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-m", "erc.cli", "corpus", "formats"], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={"PATH": "/usr/bin:/bin", "ERC_HOME": str(tmp_path)}, timeout=120,
                          preexec_fn=lambda: os.close(1))
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]


def test_a_log_the_disk_has_no_room_for_is_said_not_a_traceback(policy, capsys, monkeypatch):
    """The run's log file on a full disk (ENOSPC names no file) stopped the main job with a
    traceback reported as a bug in erc (raised by whatever printed or logged: a Ray Data
    log record, a thread forwarding worker output), and the failing log write of that
    traceback hid it. The log stops there, the console still shows every line, and the
    end of the run says so naming the file: the run's next output on that disk fails
    naming its own file."""
    import errno
    import logging
    import sys
    import threading

    from erc.io import open_no_link

    class Full:  # room for the header only
        def __init__(self, handle):
            self.handle, self.lines = handle, 0

        def write(self, text):
            self.lines += text.count("\n")
            if self.lines > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(text)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(console.io, "open_no_link", lambda *a, **k: Full(open_no_link(*a, **k)))
    stdout = sys.stdout
    with console.run_log(policy):
        print("[1/6 ingest] a line")
        logging.getLogger("ray.data").info("Execution plan of Dataset d")
        thread = threading.Thread(target=lambda: print("[2/6 preprocess] from a thread"))
        thread.start()
        thread.join()
        print("[3/6 qc] and another")
    assert sys.stdout is stdout
    out, err = capsys.readouterr()
    assert out.splitlines() == ["[1/6 ingest] a line", "[2/6 preprocess] from a thread",
                                "[3/6 qc] and another"]
    assert err == (f"erc: {policy}: the log stops early (No space left on device); the "
                   f"console showed every line\n")
    with pytest.raises(ZeroDivisionError):  # the run's own error is the one raised
        with console.run_log(policy):
            raise ZeroDivisionError("division by zero")
