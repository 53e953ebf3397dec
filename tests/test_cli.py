"""The erc command line: help everywhere, ingest with summary and resume, clear errors,
and the main job on the shipped sample."""

import json
import re
import subprocess
import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from erc.cli import build_parser, main
from tests.browser import chromium_or_skip, load_page
from tests.conftest import REPO, shared_path

COMMANDS = [[], ["run"], ["corpus"], ["corpus", "ingest"], ["corpus", "summary"],
            ["corpus", "formats"], ["corpus", "inspect"], ["models"], ["models", "list"],
            ["models", "fetch"],
            ["preprocess"], ["qc"], ["train"], ["train", "text"], ["train", "fusion"],
            ["train", "adapter"], ["evaluate"], ["tune"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "erc")
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(command + ["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: erc") and len(out.splitlines()) > 3


def test_console_script_is_installed():
    erc = REPO / ".venv" / "bin" / "erc"
    exe = str(erc) if erc.exists() else "erc"
    done = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("erc ")
    for module in ("erc", "erc.cli"):  # python -m erc too, where the script is not on PATH
        done = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                              text=True, cwd=REPO)
        assert done.returncode == 0 and done.stdout.startswith("erc "), (module, done.stderr)


def test_ingest_meld_prints_summary_and_resumes(tmp_path, capsys):
    meld = shared_path("data", "meld")
    out = tmp_path / "meld"
    assert main(["corpus", "ingest", str(meld), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    # one set aside: dialogue 369 is Ross's "!" alone, no word and (no media root) no media
    assert "11,098 input rows -> 11,097 utterances kept, 1 set aside" in text
    assert "train       9,988      1,037" in text and "dev         1,109        114" in text
    assert "7 emotions" in text
    table = pq.read_table(out / "utterances.parquet")
    assert table.num_rows == 11097
    stamp = (out / "utterances.parquet").stat().st_mtime_ns

    assert main(["corpus", "ingest", str(meld), "--out", str(out)]) == 0
    assert "up to date, nothing recomputed" in capsys.readouterr().out
    assert (out / "utterances.parquet").stat().st_mtime_ns == stamp  # no work done twice

    assert main(["corpus", "summary", str(out)]) == 0
    assert "11,098 input rows" in capsys.readouterr().out


def test_ingest_of_a_manifest_file_writes_by_default_under_its_stem(tmp_path, monkeypatch, capsys):
    """`erc corpus ingest my_corpus/manifest.csv` without --out wrote runs/manifest.csv/corpus
    (a folder named as a CSV file); its help promised runs/<corpus folder name>/corpus. A
    file now writes runs/<its stem>/corpus, the name the reader gives the corpus."""
    (tmp_path / "my_corpus").mkdir()
    (tmp_path / "my_corpus" / "manifest.csv").write_text("dialogue_id,speaker,text\nd1,a,hello\n")
    monkeypatch.chdir(tmp_path)
    assert main(["corpus", "ingest", "my_corpus/manifest.csv"]) == 0
    assert "runs/manifest/corpus/utterances.parquet" in capsys.readouterr().out
    assert (tmp_path / "runs" / "manifest" / "corpus" / "utterances.parquet").is_file()
    assert not (tmp_path / "runs" / "manifest.csv").exists()


def test_ingest_json_summary_adds_up(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"dialogue_id,speaker,text,emotion\n"
                         b"d1,a,hello,joy\nd1,b,\x81\x8d,joy\nd1,,no speaker,joy\nd2,a,fine,anger\n")
    assert main(["corpus", "ingest", str(manifest), "--out", str(tmp_path / "o"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["input_rows"] == 4 and summary["kept"] == 2 and summary["problems"] == 2
    assert summary["problems_by_reason"] == {"bad_encoding": 1, "missing_field": 1}
    assert summary["kept"] + summary["problems"] == summary["input_rows"]


def test_the_summary_escapes_control_characters_of_names(tmp_path, capsys):
    """A speaker, split or emotion holding a newline or an ESC is printed as Python writes
    it (\\n, \\x1b): it neither breaks the summary's lines nor drives the terminal."""
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b'dialogue_id,speaker,text,emotion,split\n'
                         b'd,"Ann\nSmith",Hi,joy,train\n'
                         b'd,\x1b[31mRed\x1b[0m,Ho,"sad\ness",te\x1bst\n'
                         b'd,Cy,\x81\x8d,joy,train\n')
    out = tmp_path / "o"
    assert main(["corpus", "ingest", str(manifest), "--out", str(out)]) == 0
    assert main(["corpus", "summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "\x1b" not in text
    assert "Ann\\nSmith 1, \\x1b[31mRed\\x1b[0m 1" in text
    assert "sad\\ness" in text and "te\\x1bst" in text


def test_the_summary_of_a_damaged_ingest_folder_is_one_line_and_adds_up(tmp_path, capsys):
    """`erc corpus summary` on a folder whose problems.parquet was damaged or replaced was a
    traceback; without its manifest it said "0 input rows -> 2 utterances kept"."""
    import pyarrow as pa

    manifest = tmp_path / "m.csv"
    manifest.write_text("dialogue_id,speaker,text\nd,Ann,Hi.\nd,Bob,Yo.\nd,,No one.\n")
    out = tmp_path / "o"
    assert main(["corpus", "ingest", str(manifest), "--out", str(out)]) == 0
    (out / "manifest.json").unlink()
    capsys.readouterr()
    assert main(["corpus", "summary", str(out)]) == 0
    assert "3 input rows -> 2 utterances kept, 1 set aside" in capsys.readouterr().out
    good = (out / "problems.parquet").read_bytes()
    for damage, words in [(b"junk", "not a readable Parquet table"), (None, "not a problem table")]:
        if damage is None:
            pq.write_table(pa.table({"x": [1]}), out / "problems.parquet")
        else:
            (out / "problems.parquet").write_bytes(damage)
        assert main(["corpus", "summary", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("erc: error: ") and words in err and len(err.splitlines()) == 1, err
    (out / "problems.parquet").write_bytes(good)
    assert main(["corpus", "ingest", str(manifest), "--out", str(out), "--force"]) == 0
    pq.write_table(pq.read_table(out / "utterances.parquet").slice(0, 1), out / "utterances.parquet")
    capsys.readouterr()
    assert main(["corpus", "summary", str(out)]) == 2
    assert "manifest counts 3 input rows, its tables 1 kept + 1 problem rows" in capsys.readouterr().err


def test_clear_errors_exit_2(tmp_path, capsys):
    assert main(["corpus", "ingest", str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("speaker,text\na,hi\n")
    assert main(["corpus", "ingest", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "missing column(s) dialogue_id" in capsys.readouterr().err
    (tmp_path / "cfg.yaml").write_text("corpus:\n  pth: x\n")
    assert main(["run", "--config", str(tmp_path / "cfg.yaml")]) == 2
    assert "unknown key 'pth'" in capsys.readouterr().err


@pytest.mark.slow
def test_main_job_on_the_shipped_sample(tmp_path):
    """`erc run` as the README runs it, in a subprocess: embedded Ray, sample corpus, every
    stage from ingest to the report; a second run recomputes nothing."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "erc.cli", "run", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "embedded ray on 127.0.0.1" in done.stdout
    assert "84 input rows -> 84 utterances kept, 0 set aside" in done.stdout
    table = pq.read_table(out / "corpus" / "utterances.parquet")
    assert table.num_rows == 84 and set(table.column("split").to_pylist()) == {"train", "dev", "test"}

    from erc.artifacts import read_features

    features = read_features(out / "features")
    assert features.column("utterance_id").to_pylist() == sorted(table.column("utterance_id").to_pylist())
    decisions = pq.read_table(out / "qc" / "decisions.parquet")
    kept = pq.read_table(out / "qc" / "utterances.parquet")
    assert decisions.num_rows == 84 and kept.num_rows == sum(decisions.column("keep").to_pylist())
    for split in ("dev", "test"):
        metrics = json.loads((out / f"eval-{split}" / "metrics.json").read_text())
        assert metrics["n"] == kept.filter(pc.equal(kept.column("split"), split)).num_rows
        assert (out / f"eval-{split}" / "confusion.png").stat().st_size > 0
    report = (out / "report.html").read_text()
    assert "Quality control" in report and "Training" in report and "Evaluation" in report
    assert report.count("data:image/png;base64,") >= 3  # curves + two confusion matrices
    assert str(out / "report.html") in done.stdout
    assert "Too small to judge accuracy" in report  # 11 dev and 14 test utterances
    # Ray's records and its workers' output go to run.log, not to the console.
    console = done.stdout + done.stderr
    assert not re.search(r"\bINFO\b", console) and "Execution plan" not in console, console
    assert "pid=" not in console and "\x1b[" not in console
    log = (out / "run.log").read_text()
    assert re.search(r" INFO ray\.data\S*: Execution plan of Dataset", log)
    assert re.search(r"\(RayTrainWorker pid=\d+\) \[train\] epoch 1: loss", log)
    assert "Autoscaler status" not in log  # Ray prints its events, not its status every 5 s
    chromium_or_skip()
    shown = load_page(out / "report.html", tmp_path / "chromium", screenshot=out / "report.png")
    assert shown.console_errors == [] and len(shown.images) >= 5
    assert all(image["width"] > 0 for image in shown.images), shown.images

    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    record = json.loads((out / "run.json").read_text())
    assert [s["skipped"] for s in record["stages"].values()] == [True] * 7, record["stages"]
    for stage in ("ingest", "preprocess", "qc", "adapters"):
        assert f"{stage} up to date" in again.stdout


def test_an_unreachable_cluster_is_a_clear_error(tmp_path, capsys):
    """A wrong --address fails fast with what to check, not a traceback."""
    from tests.test_runtime import _no_ray_connected

    _no_ray_connected()
    code = main(["run", "--out", str(tmp_path / "run"), "--address", "127.0.0.1:1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in err and "RAY_ADDRESS" in err


def test_output_read_by_a_reader_that_stops_early_is_no_traceback():
    """`erc ... | head` closes the pipe early: erc stops quietly, as Unix tools do (exit
    status 141), instead of printing a traceback that calls it a bug in erc."""
    for command in (["corpus", "formats"], ["run", "--dry-run"]):
        process = subprocess.Popen([sys.executable, "-m", "erc.cli", *command], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        process.stdout.close()  # the reader is gone before erc writes its first line
        err = process.stderr.read().decode()
        assert process.wait(timeout=60) == 141, err
        assert err == "", err
