"""Job inputs and outputs at storage URIs (erc.storage): a local folder mirrored to a
folder at a URI, on the local filesystem (file://) and on an S3 server on loopback."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from erc.storage import (
    INDEX,
    Mirror,
    StorageError,
    is_uri,
    join_uri,
    open_uri,
    run_with_uris,
    stage_input,
)
from tests.conftest import REPO, S3_BUCKET


@pytest.fixture(params=["file", "s3"])
def base_uri(request, tmp_path) -> str:
    """A fresh remote folder: on the local filesystem or in the loopback S3 bucket."""
    if request.param == "file":
        return f"file://{tmp_path / 'remote'}"
    request.getfixturevalue("s3_store")
    return f"s3://{S3_BUCKET}/{uuid.uuid4().hex[:8]}"


def _remote(uri: str) -> dict[str, bytes]:
    import pyarrow.fs as pafs

    fs, root = open_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    files = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                files[info.path[len(root) + 1:]] = f.read()
    return files


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_uris_are_told_from_paths():
    assert is_uri("s3://bucket/runs/x") and is_uri("gs://b/x") and is_uri("file:///tmp/x")
    assert not is_uri("/mnt/erc/runs") and not is_uri("runs/x")
    assert not is_uri("ray://head:10001") and not is_uri("http://127.0.0.1:8265")
    assert join_uri("s3://b/x/?endpoint_override=h:9000&scheme=http", "ray") == \
        "s3://b/x/ray?endpoint_override=h:9000&scheme=http"


def test_mirror_uploads_downloads_and_deletes(base_uri, tmp_path):
    uri = f"{base_uri}/features"
    job = tmp_path / "job"
    _write(job / "summary.json", b'{"rows": 2}')
    _write(job / "parts" / "part-00000.parquet", b"PAR1 rows")
    _write(job / "parts" / ".part-00001.parquet.tmp", b"half written")  # never uploaded
    writer = Mirror(uri, job)
    assert writer.push() == 2
    assert _remote(uri) == {"summary.json": b'{"rows": 2}', "parts/part-00000.parquet": b"PAR1 rows"}
    assert writer.push() == 0  # nothing changed, nothing sent

    reader = Mirror(uri, tmp_path / "other-node")
    assert reader.pull() == 2
    assert (reader.local / "parts" / "part-00000.parquet").read_bytes() == b"PAR1 rows"
    assert reader.pull() == 0  # up to date: nothing downloaded again

    time.sleep(1.1)  # S3 times to the second: a rewrite must differ from the last upload
    _write(job / "summary.json", b'{"rows": 3}')  # same size, new content
    (job / "parts" / "part-00000.parquet").unlink()
    assert writer.push() == 2  # one upload, one delete
    assert reader.pull() == 1
    assert (reader.local / "summary.json").read_bytes() == b'{"rows": 3}'
    assert not (reader.local / "parts" / "part-00000.parquet").exists()

    # a local file the URI does not hold is dropped: the URI is the authority
    _write(reader.local / "stray.txt", b"x")
    reader.pull()
    assert not (reader.local / "stray.txt").exists()


def test_inputs_are_staged_once(base_uri, tmp_path):
    table = pa.table({"utterance_id": ["a", "b"], "text_embedding": [[0.1, 0.2], [0.3, 0.4]]})
    source = tmp_path / "features"
    source.mkdir()
    pq.write_table(table, source / "features.parquet")
    Mirror(f"{base_uri}/corpus", source).push()

    folder = stage_input(f"{base_uri}/corpus", tmp_path / "cache")
    assert folder.name == "corpus"
    one = stage_input(f"{base_uri}/corpus/features.parquet", tmp_path / "cache")
    assert one.name == "features.parquet" and pq.read_table(one).equals(table)
    stamp = one.stat().st_mtime_ns
    assert stage_input(f"{base_uri}/corpus/features.parquet", tmp_path / "cache") == one
    assert one.stat().st_mtime_ns == stamp  # not downloaded again
    with pytest.raises(StorageError, match="no such file or folder"):
        stage_input(f"{base_uri}/nothing-here", tmp_path / "cache")


def test_run_with_uris_stages_inputs_and_outputs(base_uri, tmp_path):
    """A job's arguments: inputs replaced by local copies (also inside ``parquet:URI#col``),
    the output worked on locally and uploaded, Ray's storage set to a URI beside it, and
    what the job wrote before failing uploaded too."""
    source = tmp_path / "source"
    pq.write_table(pa.table({"utterance_id": ["a"]}), _touch(source / "utterances.parquet"))
    pq.write_table(pa.table({"utterance_id": ["a"], "x": [[1.0]]}), source / "features.parquet")
    Mirror(f"{base_uri}/corpus", source).push()
    seen = {}

    def job(argv):
        seen["argv"] = argv
        out = Path(argv[argv.index("--out") + 1])
        _write(out / "model" / "model.safetensors", b"weights")
        if "--fail" in argv:
            raise RuntimeError("the job broke")
        _write(out / "history.json", b"[]")
        return 0

    argv = [f"{base_uri}/corpus/utterances.parquet", "--text",
            f"parquet:{base_uri}/corpus/features.parquet#x", "--out", f"{base_uri}/fusion",
            "--epochs", "2"]
    assert run_with_uris(job, argv, tmp_path / "cache", storage_option="--storage") == 0
    got = seen["argv"]
    assert Path(got[0]).is_file() and pq.read_table(got[0]).column("utterance_id").to_pylist() == ["a"]
    path, _, column = got[2].removeprefix("parquet:").partition("#")
    assert Path(path).is_file() and column == "x"
    assert not is_uri(got[4]) and Path(got[4]).name == "fusion"
    assert got[-2:] == ["--storage", f"{base_uri}/fusion/ray"]
    assert _remote(f"{base_uri}/fusion") == {"model/model.safetensors": b"weights",
                                             "history.json": b"[]"}

    with pytest.raises(RuntimeError, match="the job broke"):
        run_with_uris(job, ["--out", f"{base_uri}/broken", "--fail"], tmp_path / "cache")
    assert _remote(f"{base_uri}/broken") == {"model/model.safetensors": b"weights"}


def test_an_output_given_as_a_setting_is_staged_as_an_output(base_uri, tmp_path):
    """``-o output_dir=URI`` is the command's output, as ``--out URI`` is (it was fetched as an
    input: "no such file", or the results written into the input cache and never uploaded);
    ``-o storage=URI`` is Ray's own storage, left a URI as ``--storage`` is."""
    seen = {}

    def job(argv):
        seen["argv"] = argv
        out = Path(argv[argv.index("-o") + 1].partition("=")[2])
        _write(out / "history.json", b"[]")
        return 0

    cache = tmp_path / "cache"
    uri = f"{base_uri}/run"
    assert run_with_uris(job, ["-o", f"output_dir={uri}"], cache, storage_option="--storage") == 0
    key, _, local = seen["argv"][1].partition("=")
    assert key == "output_dir" and Path(local).is_relative_to(cache / "staging")
    assert seen["argv"][2:] == ["--storage", f"{uri}/ray"]
    assert _remote(uri) == {"history.json": b"[]"}
    assert not (cache / "inputs").exists()
    # --set=KEY=VALUE too; a section's output_dir is an output but not where Ray's storage goes
    argv = [f"--set=preprocess.output_dir={base_uri}/features", "-o", f"train.storage={base_uri}/ray"]
    assert run_with_uris(lambda a: seen.update(argv=a) or 0, argv, cache, storage_option="--storage") == 0
    assert seen["argv"][0].startswith(f"--set=preprocess.output_dir={cache / 'staging'}")
    assert seen["argv"][1:] == ["-o", f"train.storage={base_uri}/ray"]


def test_erc_run_writes_to_an_output_dir_given_by_o(s3_store, tmp_path, capsys, monkeypatch):
    """``erc run -o output_dir=s3://...`` writes its results there, a new prefix or one an
    earlier run wrote (resumed from there), as ``erc run --out s3://...`` does."""
    from erc.cli import main

    monkeypatch.setenv("ERC_HOME", str(tmp_path / "home"))
    (tmp_path / "m.csv").write_text("dialogue_id,speaker,text\nd,Ann,Hi.\nd,Bob,Yo.\n")
    (tmp_path / "run.yaml").write_text(f"output_dir: {tmp_path / 'local'}\n"
                                       "corpus: {path: m.csv, format: manifest}\nray: {num_cpus: 1}\n")
    uri = f"s3://{S3_BUCKET}/run-{uuid.uuid4().hex[:8]}"
    argv = ["run", "--config", str(tmp_path / "run.yaml"), "-o", f"output_dir={uri}", "--until", "ingest"]
    assert main(argv) == 0
    assert f"results: {uri}" in capsys.readouterr().out
    assert {"corpus/utterances.parquet", "run.json", ".erc"} <= set(_remote(uri))
    assert main(argv) == 0  # the prefix exists now: resumed from it, written to it again
    out = capsys.readouterr().out
    assert "up to date" in out and f"results: {uri}" in out
    assert not (tmp_path / "local").exists() and not (tmp_path / "home" / "inputs").exists()


def test_evaluate_puts_its_results_beside_a_model_given_as_a_uri(base_uri, tmp_path, capsys,
                                                                 monkeypatch):
    """``erc evaluate URI/model CORPUS`` without --out writes URI/eval-SPLIT, where a local
    model's results go (MODEL/../eval-SPLIT); they went into erc's local copy of the model,
    in its input cache, and were never uploaded."""
    from erc.cli import main
    from tests.test_error_path import _fusion_model

    monkeypatch.setenv("ERC_HOME", str(tmp_path / "home"))
    model, corpus = _fusion_model(tmp_path, [[0.1 * t, 1.0, -0.2 * t, 0.3] for t in range(4)],
                                  ["a", "b", "c", "a"])
    Mirror(f"{base_uri}/fusion/model", model).push()
    assert main(["evaluate", f"{base_uri}/fusion/model", str(corpus), "--split", "test"]) == 0
    assert f"results: {base_uri}/fusion/eval-test" in capsys.readouterr().out
    assert {"metrics.json", "predictions.parquet", "manifest.json"} <= set(_remote(f"{base_uri}/fusion/eval-test"))
    assert not list((tmp_path / "home" / "inputs").rglob("metrics.json"))


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_a_job_with_an_unreachable_uri_says_so(s3_store, tmp_path):
    """A bucket that does not exist: the job entrypoint ends with a message naming it."""
    import os

    env = {**os.environ, **s3_store, "ERC_HOME": str(tmp_path / "erc")}
    done = subprocess.run([sys.executable, "jobs/evaluate.py", "s3://no-such-bucket/fusion/model",
                           "s3://no-such-bucket/corpus", "--out", "s3://no-such-bucket/eval"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "s3://no-such-bucket/fusion/model" in done.stderr and "erc: error:" in done.stderr


def test_a_search_kept_in_s3_resumes_from_there(s3_store, tmp_path):
    """`jobs/tune.py --out s3://...`: Ray Tune keeps the search in the bucket (OUT/ray),
    the tables and plots are uploaded; the same command on a machine without the local
    copy restores the finished search from S3 and runs no trial again. The command of
    best_config.yaml names the corpus and folders at their URIs, not erc's local copies."""
    import json
    import os

    import yaml

    from tests.conftest import shared_path
    from tests.test_tune import SEARCH

    meld = shared_path("data", "meld")
    search = tmp_path / "search.yaml"
    search.write_text(yaml.safe_dump({**SEARCH, "search": {**SEARCH["search"], "num_samples": 2}}))
    uri = f"s3://{S3_BUCKET}/tune-{uuid.uuid4().hex[:8]}"
    corpus = f"{uri}-corpus"
    shutil.copytree(meld, tmp_path / "meld")  # the mirror keeps its index in the local folder
    Mirror(corpus, tmp_path / "meld").push()
    command = [sys.executable, "jobs/tune.py", str(search), corpus, "--out", uri,
               "--limit-dialogues", "10", "--num-cpus", "2", "--verbose", "0"]

    def run(home: Path) -> str:
        env = {**os.environ, "ERC_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=400)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        return done.stdout

    first = run(tmp_path / "first-machine")
    assert f"results: {uri}" in first
    remote = _remote(uri)
    assert {"trials.csv", "best_config.yaml", "report.html"} <= set(remote)
    assert any(name.startswith("ray/search/experiment_state") for name in remote), sorted(remote)
    started = [json.loads(line) for line in remote["trial_starts.jsonl"].decode().splitlines()]
    assert len(started) == 2
    best = remote["best_config.yaml"].decode()
    assert f"erc train fusion {corpus} " in best, best
    assert f"--config {uri}/best_config.yaml --out {uri}/best" in best, best
    assert "staging" not in best and "inputs" not in best, best

    again = run(tmp_path / "second-machine")
    assert "[tune] resuming the search" in again
    restarted = _remote(uri)["trial_starts.jsonl"].decode().splitlines()
    assert len(restarted) == 2  # no trial started again


def test_erc_commands_take_uris(s3_store, sample_manifest, capsys):
    """`erc corpus ingest ... --out s3://...` writes to the bucket; `erc corpus summary
    s3://...` reads it back from there."""
    from erc.cli import main

    uri = f"s3://{S3_BUCKET}/ingest-{uuid.uuid4().hex[:8]}"
    assert main(["corpus", "ingest", str(sample_manifest), "--out", uri]) == 0
    assert f"results: {uri}" in capsys.readouterr().out
    remote = _remote(uri)
    assert {"utterances.parquet", "problems.parquet", "manifest.json", ".erc"} <= set(remote)
    assert ".erc.lock" not in remote  # the lock of the local copy is not a result
    assert main(["corpus", "summary", uri]) == 0
    assert "84" in capsys.readouterr().out  # the sample's utterances, counted from the copy


def test_an_abbreviated_output_option_is_refused_not_read_as_an_input(tmp_path, capsys,
                                                                      monkeypatch):
    """``--ou URI`` was --out to argparse but an input to the staging of URIs: the output
    was written into erc's input cache and never uploaded to the URI."""
    from erc.cli import main

    monkeypatch.setenv("ERC_HOME", str(tmp_path / "home"))
    corpus = tmp_path / "m.csv"
    corpus.write_text("dialogue_id,speaker,text\nd,Ann,Hi.\n")
    remote = tmp_path / "remote"
    remote.mkdir()
    for argv in (["--ou", f"file://{remote}"], [f"--ou=file://{remote}"]):
        assert main(["corpus", "ingest", str(corpus), *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "unrecognized arguments: --ou" in err, err
    assert not list(remote.iterdir()) and not list((tmp_path / "home").rglob("*.parquet"))
    assert main(["run", "--dry", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "unrecognized arguments: --dry" in capsys.readouterr().err


def test_an_output_that_is_almost_a_uri_is_refused_not_made_a_local_folder(tmp_path, capsys,
                                                                          monkeypatch):
    """``S3://b/x`` or ``s3:/b/x`` was taken as a local path: the output went to a folder
    named "S3:" in the working directory, and never to the store."""
    from erc.cli import main

    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "m.csv"
    corpus.write_text("dialogue_id,speaker,text\nd,Ann,Hi.\n")
    # a space in a password leaves no URI pyarrow opens: the message still masks it
    for out in ("S3://bucket/x", "s3:/KEY:SHH@bucket/x", "file:/tmp/x", "--out=GS://b/x",
                "s3://KEY:Pa SHH@bucket/x"):
        argv = [out] if out.startswith("--") else ["--out", out]
        assert main(["corpus", "ingest", str(corpus), *argv]) == 2, out
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "not a storage URI" in err and "SHH" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]


def test_a_uri_with_a_dot_dot_step_is_refused(tmp_path, capsys, monkeypatch):
    """``--out file:///x/remote/..``: the local copy of a URI whose last step is ".." was
    erc's whole folder of local copies, uploaded to the store with every other run's copy."""
    from erc.cli import main

    monkeypatch.setenv("ERC_HOME", str(tmp_path / "home"))
    another = tmp_path / "home" / "staging" / "0123456789abcdef" / "run"
    another.mkdir(parents=True)
    (another / "result.json").write_text("another run's result\n")
    corpus = tmp_path / "m.csv"
    corpus.write_text("dialogue_id,speaker,text\nd,Ann,Hi.\n")
    store = tmp_path / "store"
    (store / "remote").mkdir(parents=True)
    for uri in (f"file://{store}/remote/..", f"file://{store}/remote/./x",
                f"file://{store}/remote/%2E%2E"):
        assert main(["corpus", "ingest", str(corpus), "--out", uri]) == 2, uri
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "'..' step" in err, err
    assert [p.name for p in store.rglob("*")] == ["remote"]
    assert (another / "result.json").read_text() == "another run's result\n"


def test_a_store_error_of_pyarrow_s_own_kind_is_a_storage_error(tmp_path, monkeypatch):
    """pyarrow's Azure filesystem without credentials raises a bare ArrowException, not an
    OSError: it escaped as a bug in erc."""
    import erc.storage

    class NoCredentials:
        def get_file_info(self, *args):
            raise pa.ArrowException("Failed to get token from DefaultAzureCredential")

    monkeypatch.setattr(erc.storage, "open_uri", lambda uri: (NoCredentials(), "c/x"))
    with pytest.raises(StorageError, match=r"abfs://\*\*\*@acc/x: cannot reach it \(Failed"):
        stage_input("abfs://K:SHH@acc/x", tmp_path)
    with pytest.raises(StorageError, match="cannot list it"):
        Mirror("abfs://K:SHH@acc/x", tmp_path / "copy").pull()


def test_a_damaged_index_of_a_local_copy_is_rebuilt(tmp_path):
    """The local copy's index, damaged (a disk fault, an edit), was a traceback on every
    later run against that URI; the copy is now downloaded again."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "a.txt").write_text("a\n")
    local = tmp_path / "copy"
    for damage in ("{not json", "[1, 2]"):
        local.mkdir(exist_ok=True)
        (local / INDEX).write_text(damage)
        assert Mirror(f"file://{remote}", local).pull() == 1, damage
        assert (local / "a.txt").read_text() == "a\n"
        (local / "a.txt").unlink()


def test_a_dry_run_plans_on_what_the_store_holds(tmp_path, capsys, monkeypatch):
    """With a storage URI as the config's output_dir, the dry run took it for a local path: every
    stage "not run yet", folders like ``file:/...`` mangled. It plans on the local copy
    of what the store holds, as the run itself would."""
    from erc.cli import main

    monkeypatch.setenv("ERC_HOME", str(tmp_path / "home"))
    (tmp_path / "m.csv").write_text("dialogue_id,speaker,text\nd,Ann,Hi.\nd,Bob,Yo.\n")
    uri = f"file://{tmp_path / 'remote' / 'run'}"
    (tmp_path / "run.yaml").write_text(f"output_dir: {uri}\ncorpus: {{path: m.csv, format: manifest}}\n"
                                       "ray: {num_cpus: 1}\n")
    argv = ["run", "--config", str(tmp_path / "run.yaml")]
    assert main([*argv, "--until", "ingest"]) == 0
    assert "manifest.json" in {p.name for p in (tmp_path / "remote" / "run" / "corpus").iterdir()}
    capsys.readouterr()
    assert main([*argv, "--dry-run"]) == 0
    plan = capsys.readouterr().out
    corpus = next(line for line in plan.splitlines() if line.strip().startswith("ingest"))
    assert "up to date" in corpus and str(tmp_path / "home" / "staging") in corpus, plan
    assert "file:" not in corpus


def test_preprocess_and_qc_of_uris_write_beside_them_not_into_the_input_cache(tmp_path, capsys,
                                                                             monkeypatch,
                                                                             sample_manifest):
    """``erc preprocess URI/corpus`` and ``erc qc URI/features`` without --out wrote their
    results beside erc's local copy of the input, in its input cache, never uploaded; qc's
    default utterances (the corpus beside the features) was looked for in that cache too.
    Both now write beside the URI, as for a local input (``features``, ``qc``)."""
    from erc.cli import main

    monkeypatch.setenv("ERC_HOME", str(tmp_path / "home"))
    base = f"file://{tmp_path / 'remote'}"
    assert main(["corpus", "ingest", str(sample_manifest), "--out", f"{base}/corpus"]) == 0
    assert main(["preprocess", f"{base}/corpus", "--limit", "2"]) == 0
    assert f"results: {base}/features" in capsys.readouterr().out
    assert {"manifest.json", "part-00000.parquet"} <= set(_remote(f"{base}/features"))
    cache = tmp_path / "home" / "inputs"  # what erc downloaded: the corpus alone so far
    assert not list(cache.rglob("part-00000.parquet"))
    assert main(["qc", f"{base}/features"]) == 0
    assert f"results: {base}/qc" in capsys.readouterr().out
    assert {"decisions.parquet", "utterances.parquet", "problems.parquet"} <= set(_remote(f"{base}/qc"))
    assert not list(cache.rglob("decisions.parquet"))
