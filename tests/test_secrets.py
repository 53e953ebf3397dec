"""No credential from a storage URI is printed or written: erc.redaction guards the console,
the run log, log records, tracebacks and every text file erc writes; Ray gets storage as a
filesystem object. The end-to-end test runs commands against the loopback S3 server with
credentials in the URIs (``s3://KEY:SECRET@bucket/...`` and ``?access_key=&secret_key=``)
and searches every output for them."""

from __future__ import annotations

import io as io_module
import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from erc import io
from erc.redaction import redact, redact_data
from tests.conftest import REPO, S3_BUCKET


def test_every_form_of_credential_is_redacted():
    assert redact("s3://AKID:SHH@bucket/x") == "s3://***@bucket/x"
    assert redact("gs://token@bucket/x and s3://u:p@b/y") == "gs://***@bucket/x and s3://***@b/y"
    assert redact("s3://b/x?access_key=AKID&secret_key=SHH&region=eu") == \
        "s3://b/x?access_key=***&secret_key=***&region=eu"
    assert redact("s3://b/x?session_token=T&endpoint_override=127.0.0.1:9000") == \
        "s3://b/x?session_token=***&endpoint_override=127.0.0.1:9000"
    assert redact("https://h/f?X-Amz-Signature=abc&X-Amz-Credential=def") == \
        "https://h/f?X-Amz-Signature=***&X-Amz-Credential=***"
    assert redact("no uri here: a=b") == "no uri here: a=b"
    # A secret with "/" in it (AWS secrets have them); userinfo without its "scheme://" (a
    # library's message, a URI folded into a path); an address that is no secret
    assert redact("s3://AKID:SH/H@bucket/x") == "s3://***@bucket/x"
    assert redact("nothing answers at user:SHH@127.0.0.1:1") == "nothing answers at ***@127.0.0.1:1"
    assert redact("media /c/s3:/AKID:SH/H@bucket/clip.mp4 does not exist") == \
        "media /c/***@bucket/clip.mp4 does not exist"
    assert redact("write to joe@example.com at 12:30") == "write to joe@example.com at 12:30"
    assert redact_data({"storage": "s3://k:s@b/x", "n": [1, "s3://k:s@b/y"]}) == \
        {"storage": "s3://***@b/x", "n": [1, "s3://***@b/y"]}


def test_a_secret_with_an_unencoded_at_sign_is_redacted_whole():
    # The userinfo runs to the last "@" of the URI: the host follows it
    assert redact("s3://AKIA:se@cret@bucket/path") == "s3://***@bucket/path"
    assert redact("copy 's3://AKIA:s@c/r@et@bucket/a' to s3://K:S@b2/c") == \
        "copy 's3://***@bucket/a' to s3://***@b2/c"
    assert redact("media /c/s3:/AKIA:se@cret@bucket/clip.mp4 does not exist") == \
        "media /c/***@bucket/clip.mp4 does not exist"
    # ...and stops at the URI's end: other URIs and addresses on the line stay as they are
    assert redact("s3://K:S@b/x,s3://K2:S2@c/y mail joe@example.com") == \
        "s3://***@b/x,s3://***@c/y mail joe@example.com"
    assert redact('["s3://K:S@b/x", "joe@example.com"]') == '["s3://***@b/x", "joe@example.com"]'


def test_a_secret_parameter_after_any_separator_is_redacted():
    # report.html escapes "&" as "&amp;": the parameter then follows a ";"
    from erc.markup import esc

    uri = "s3://b/x?endpoint_override=h:9000&secret_key=SHH&token=TOK"
    assert "SHH" not in redact(esc(uri)) and "TOK" not in redact(esc(uri))
    assert redact("s3://b/x?a=1;token=TOK") == "s3://b/x?a=1;token=***"
    assert redact("https://h/cb#access_token=TOK") == "https://h/cb#access_token=***"


def test_a_redacted_parameter_keeps_the_quote_and_punctuation_after_it(tmp_path):
    # The value ran to the next space: a manifest quoting such a URI was no longer JSON
    uri = "s3://b/x?secret_key=SHH&token=TOK"
    path = io.write_json(tmp_path / "manifest.json", {"corpus": uri, "rows": 3})
    assert json.loads(path.read_text()) == {"corpus": "s3://b/x?secret_key=***&token=***",
                                            "rows": 3}
    assert redact(f"'{uri}'") == "'s3://b/x?secret_key=***&token=***'"
    assert redact(f"{uri}: cannot open it ({uri}).") == \
        "s3://b/x?secret_key=***&token=***: cannot open it (s3://b/x?secret_key=***&token=***)."


def test_a_long_word_is_redacted_in_one_pass():
    # Words an outside input can hold (a mangled path, a base64 blob): each pattern scans
    # them once; tried from every character they took minutes. A child process bounds it.
    code = """if True:
        from erc.redaction import redact
        words = ["a" * 200000 + "@", "?key=" * 40000, "x?" * 100000 + "a:b@c", "a:/" * 66000 + "@"]
        print([len(redact(w)) for w in words])"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, text=True,
                          capture_output=True, timeout=60)
    assert done.stdout.strip() == str([200001, 8, 5, 4]), done.stderr[-2000:]


def test_files_erc_writes_hold_no_credential(tmp_path):
    io.write_json(tmp_path / "manifest.json", {"inputs": {"corpus": "s3://AKID:SHH@b/c"}})
    io.write_text(tmp_path / "report.html", "<code>s3://b/c?secret_key=SHH</code>")
    for path in tmp_path.iterdir():
        assert "SHH" not in path.read_text() and "***" in path.read_text()


def test_problem_rows_quote_no_credential(tmp_path):
    from erc.corpus import read_corpus

    (tmp_path / "m.csv").write_text(
        "dialogue_id,speaker,text,media\n"
        "d,Ann,Hi.,s3://AKID:SHH@bucket/clip.mp4\nd,Bob,Hey.,https://u:SHH2@host/clip.mp4\n")
    problems = read_corpus(tmp_path / "m.csv").problems
    assert problems.num_rows == 2
    assert "SHH" not in json.dumps(problems.to_pylist()) and "AKID" not in json.dumps(problems.to_pylist())


def test_rows_kept_without_their_media_quote_no_credential(tmp_path):
    """With keep_missing_media the rows are kept, and the path each named stays in meta:
    it held the URI's keys, which problems.parquet masks."""
    from erc.corpus import read_corpus

    (tmp_path / "m.csv").write_text(
        "dialogue_id,speaker,text,media\n"
        "d,Ann,Hi.,s3://AKID:SHH@bucket/clip.mp4\nd,Bob,Hey.,https://h/clip.mp4?sig=SHH2\n")
    kept = read_corpus(tmp_path / "m.csv", options={"keep_missing_media": True}).utterances
    meta = [dict(m) for m in kept.column("meta").to_pylist()]
    assert [m["missing_media"].rsplit("/", 2)[-2:] for m in meta] == \
        [["***@bucket", "clip.mp4"], ["h", "clip.mp4?sig=***"]]
    assert "SHH" not in json.dumps(meta) and "AKID" not in json.dumps(meta)


# An AWS key pair as a URI holds them: a value cut to a preview before its "@" hid nothing
_LONG_KEYS = "s3://AKIAFAKEACCESSKEY01:FAKEsecretVALUE0123456789abcdefXYZ@bucket/clip.mp4"


def test_a_value_cut_short_quotes_no_credential(tmp_path):
    """Messages and problem rows quote a value cut to a preview, and `erc corpus inspect`
    its columns' examples: the credential is masked before the cut, which left its start."""
    from erc.corpus import read_corpus
    from erc.corpus.inspect import format_inspection, inspect_corpus
    from erc.errors import preview

    assert preview(_LONG_KEYS, 40) == "'s3://***@bucket/clip.mp4'"
    assert preview(_LONG_KEYS * 2, 40) == "'s3://***@bucket/clip.mp4s3://***@buc..."
    (tmp_path / "m.csv").write_text(
        "dialogue_id,speaker,text,emotion,media,start,end\n"
        f"d,Ann,Hi.,joy,{_LONG_KEYS},{_LONG_KEYS},2.0\nd,Bob,Hey.,anger,,0.0,1.0\n")
    problems = json.dumps(read_corpus(tmp_path / "m.csv").problems.to_pylist())
    printed = format_inspection(inspect_corpus(tmp_path / "m.csv"))
    assert "bad_time" in problems and "s3://***@bucket" in printed
    for text in (problems, printed):
        assert "AKIAFAKE" not in text and "FAKEsecret" not in text


def test_meta_columns_quote_no_credential(tmp_path):
    """A manifest's columns that map to no field are kept in meta, as they are but for a
    credential in them."""
    from erc.corpus import read_corpus

    (tmp_path / "m.csv").write_text(
        "dialogue_id,speaker,text,emotion,source_url\n"
        "d,Ann,Hi.,joy,https://user:SHH@host/a\nd,Bob,Hey.,anger,https://host/b?token=SHH2\n")
    meta = [dict(m) for m in read_corpus(tmp_path / "m.csv").utterances.column("meta").to_pylist()]
    assert [m["source_url"] for m in meta] == ["https://***@host/a", "https://host/b?token=***"]


def test_a_secret_parameter_named_percent_encoded_is_redacted():
    # erc reads the query with parse_qsl, which decodes "secret%5Fkey" to secret_key
    assert redact("s3://b/x?access_key=AKID&secret%5Fkey=SHH&scheme=http") == \
        "s3://b/x?access_key=***&secret%5Fkey=***&scheme=http"
    assert redact("s3://b/x?%61ccess_key=AKID&secret_%6Bey=SHH") == \
        "s3://b/x?%61ccess_key=***&secret_%6Bey=***"
    assert redact("s3://b/x?a=1;token=TOK&b=2") == "s3://b/x?a=1;token=***&b=2"
    assert redact("s3://b/x?a%20b=1&c=2") == "s3://b/x?a%20b=1&c=2"


def test_a_quote_inside_a_uri_s_password_is_redacted():
    """"'" may stand in a URI's password (pyarrow opens s3://minio:Pa'ss@bucket); a '"'
    makes it invalid, and the error refusing it quotes it."""
    assert redact("results: s3://minio:Pa'ssw0rd@bucket/x") == "results: s3://***@bucket/x"
    assert redact("""s3://minio:Pa"ss@b/x: cannot open it ('s3://minio:Pa"ss@b/x' ...)""") == \
        "s3://***@b/x: cannot open it ('s3://***@b/x' ...)"
    # a quote that closes a URI still ends it
    assert redact("'s3://K:S@b/x', 'joe@example.com'") == "'s3://***@b/x', 'joe@example.com'"
    assert redact('"s3://K:S@b/x":"joe@example.com"') == '"s3://***@b/x":"joe@example.com"'
    assert redact("it's joe@example.com's") == "it's joe@example.com's"


def test_a_search_with_keys_in_its_storage_uri_is_refused(s3_store, tmp_path):
    """Ray Tune pickles its storage's filesystem, keys included, into tuner.pkl and its
    experiment state: a search given such a storage URI stops before anything is written."""
    from erc.errors import ConfigError
    from erc.tune.driver import run_search

    for storage in ("s3://AKID:SHH@b/runs/tune/ray", "s3://b/runs/tune/ray?access_key=AKID&secret_key=SHH"):
        with pytest.raises(ConfigError) as refused:
            run_search(None, None, tmp_path / "tune", storage=storage)
        message = str(refused.value)
        assert "tuner.pkl" in message and "SHH" not in message and "AKID" not in message
        assert not (tmp_path / "tune").exists()


def test_console_and_run_log_hold_no_credential(tmp_path, capsys):
    from erc import console

    console.setup()
    with console.run_log(tmp_path / "run.log"):
        print("[storage] s3://AKID:SHH@bucket/x: uploading")
        logging.getLogger("erc.test").error("failed on s3://b/x?secret_key=SHH")
        logging.getLogger("ray.train").info("storage_path s3://AKID:SHH@bucket/ray")
    captured = capsys.readouterr()
    log = (tmp_path / "run.log").read_text()
    for text in (captured.out, captured.err, log):
        assert "SHH" not in text and "AKID" not in text
    assert "s3://***@bucket/x" in log and "secret_key=***" in captured.err + log
    assert "storage_path s3://***@bucket/ray" in log  # a library's record, in the log only


def test_a_credential_written_in_pieces_is_redacted(tmp_path, capsys):
    from erc import console

    console.setup()
    with console.run_log(tmp_path / "run.log"):
        print("[storage] s3://AKID:SH", end="")  # one line in two writes
        print("H@bucket/x: uploading")
        sys.stderr.write("s3://b/x?secret_key=SH")
        sys.stderr.write("H 50%\rs3://b/x?secret_key=SHH 100%\r\n")  # a bar redrawn in place
        print("left open: s3://AKID:S", end="")
        print("HH@bucket/y", end="")  # the block's end writes the rest of the line
    print("s3://AKID:S", end="", flush=True)  # a flush holds back what may go on...
    print("HH@bucket/z", end="")
    sys.stdout.finish()  # ...which the process's exit writes whole
    captured = capsys.readouterr()
    log = (tmp_path / "run.log").read_text()
    for text in (captured.out, captured.err, log):
        assert "SHH" not in text and "AKID" not in text
    assert "[storage] s3://***@bucket/x: uploading\n" in captured.out
    assert captured.out.endswith("left open: s3://***@bucket/ys3://***@bucket/z")
    assert "s3://b/x?secret_key=*** 50%\rs3://b/x?secret_key=*** 100%\r\n" in captured.err
    assert "s3://b/x?secret_key=*** 100%\n" in log and "left open: s3://***@bucket/y\n" in log


def test_a_progress_bar_is_written_at_once():
    from erc import console

    stream = io_module.StringIO()
    out = console._Redacting(stream)
    out.write("\rbar 10%")
    out.write("\rbar 50%\r")  # a carriage return ends a line: the bar is not held back
    assert stream.getvalue() == "\rbar 10%\rbar 50%\r"
    out.write("\rbar 60% 0:00:03")
    out.flush()  # a bar drawn without ending its line shows at its flush
    assert stream.getvalue().endswith("\rbar 60% 0:00:03")
    out.write("\rwaiting for s3://K:S")
    assert stream.getvalue().endswith("0:00:03\r")  # held until its line ends...
    out.flush()
    assert stream.getvalue().endswith("\rwaiting for ")  # ...a flush writes all but the
    out.write("ECRET@bucket/x")  # word that may be a credential's first part
    out.flush()
    assert stream.getvalue().endswith("\rwaiting for ")
    for unfinished in (" K:S", " b/x?secret_key=S", " x@"):
        out.write(unfinished)
        out.flush()
    out.finish()
    assert stream.getvalue().endswith("\rwaiting for s3://***@bucket/x K:S b/x?secret_key=*** x@")
    assert "ECRET" not in stream.getvalue()


def test_ray_gets_storage_without_credentials_in_its_path(s3_store):
    from erc.storage import ray_storage

    path, filesystem = ray_storage(f"s3://AKID:SHH@{S3_BUCKET}/runs/x/ray")
    assert path == f"{S3_BUCKET}/runs/x/ray" and filesystem is not None
    assert ray_storage("runs/x/ray")[1] is None


def _erc(*argv: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "erc.cli", *argv], cwd=REPO, text=True,
                          capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _remote_files(prefix: str) -> dict[str, bytes]:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(f"s3://{S3_BUCKET}/{prefix}")
    files = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as handle:
                files[info.path] = handle.read()
    return files


@pytest.mark.slow
def test_no_secret_in_any_output_of_runs_against_the_store(s3_store, tmp_path):
    import os

    from erc.storage import Mirror

    prefix = uuid.uuid4().hex[:8]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "m.csv").write_text("dialogue_id,speaker,text,emotion\n" + "".join(
        f"d{i // 4},{'Ann' if i % 2 else 'Bob'},Line number {i}.,{'joy' if i % 3 else 'anger'}\n"
        for i in range(24)))
    Mirror(f"s3://{S3_BUCKET}/{prefix}/corpus", corpus).push()

    secrets = ("KEYINURI", "SECRETINURI", "KEYINQUERY", "SECRETINQUERY")
    userinfo = f"s3://KEYINURI:SECRETINURI@{S3_BUCKET}/{prefix}"
    query = "?access_key=KEYINQUERY&secret_key=SECRETINQUERY"
    config = tmp_path / "run.yaml"
    config.write_text(f"corpus: {{path: '{userinfo}/corpus/m.csv'}}\n"
                      "qc: {enabled: false}\ntrain: {enabled: false}\n")  # ingest, then report
    outputs = [
        _erc("corpus", "ingest", f"{userinfo}/corpus/m.csv", "--out", f"{userinfo}/ingest-a"),
        _erc("corpus", "ingest", f"s3://{S3_BUCKET}/{prefix}/corpus/m.csv{query}",
             "--out", f"s3://{S3_BUCKET}/{prefix}/ingest-b{query}"),
        _erc("corpus", "summary", f"s3://{S3_BUCKET}/{prefix}/ingest-b{query}"),
        _erc("run", "--config", str(config), "--until", "ingest", "--out", f"{userinfo}/run",
             "--storage", f"s3://{S3_BUCKET}/{prefix}/run/ray{query}"),
        _erc("run", "--config", str(config), "--from", "report", "--out", f"{userinfo}/run"),
    ]
    printed = "\n".join(done.stdout + done.stderr for done in outputs)
    assert "s3://***@" in printed and "secret_key=***" in printed  # printed, redacted
    remote = _remote_files(prefix)
    written = {name for name in remote if not name.endswith(("m.csv",))}
    for expected in ("ingest-a/manifest.json", "ingest-b/manifest.json", "run/run.log",
                     "run/run.json", "run/report.html", "run/corpus/manifest.json"):
        assert f"{S3_BUCKET}/{prefix}/{expected}" in written, sorted(written)
    # erc's local copies of the store (staged inputs and outputs) too
    local = {str(p): p.read_bytes() for p in Path(os.environ["ERC_HOME"]).rglob("*")
             if p.is_file() and p.stat().st_size < 50 << 20}
    for secret in secrets:
        assert secret not in printed, secret
        for name, data in {**remote, **local}.items():
            assert secret.encode() not in data, (secret, name)
    record = json.loads(remote[f"{S3_BUCKET}/{prefix}/run/run.json"])
    assert "***" in record["config"]["train"]["recipe"]["loop"]["storage_path"]  # recorded, redacted


def test_the_value_of_a_secret_environment_variable_is_redacted(monkeypatch, tmp_path):
    """A library's message may quote a key it was given from the environment."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijkl")
    monkeypatch.setenv("MY_DB_PASSWORD", "minioadmin")  # too short to tell from a name
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path))  # a path: no secret
    monkeypatch.setenv("KEYBOARD_LAYOUT", "dvorak-international")  # not a secret's name
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "dvorak-international")  # where a secret is
    text = (f"signature mismatch for wJalrXUtnFEMI/K7MDENG, token hf_abcdefghijkl, pw minioadmin, "
            f"creds {tmp_path}, layout dvorak-international")
    assert redact(text) == (f"signature mismatch for ***, token ***, pw minioadmin, creds {tmp_path}, "
                            f"layout dvorak-international")
    monkeypatch.delenv("HF_TOKEN")
    assert redact("token hf_abcdefghijkl") == "token hf_abcdefghijkl"  # read at each call


# A driver that trains with its checkpoints at a URI holding credentials, the URI also on
# its command line; what Ray then holds is printed: the job table's entrypoints, Ray
# Train's recorded runs (its state API, on here as the dashboard turns it on) and every
# file of the session folder (logs of Ray's processes and workers), read before shutdown
# removes it.
_TRAINING_DRIVER = """
import json, os, sys
from pathlib import Path
os.environ["RAY_TRAIN_ENABLE_STATE_TRACKING"] = "1"
from erc import runtime
from erc.models.fusion import FusionConfig
from erc.train.loop import TrainConfig, fit
from tests.test_train import dialogue_data
storage, out = sys.argv[1:]
runtime.connect(num_cpus=2)
import ray
from ray.train.v2._internal.state.state_actor import get_state_actor
data = dialogue_data()
model = FusionConfig(modalities=["text"], dims={"text": 12}, labels=data.labels, n_classes=3,
                     d_state=8, dropout=0.0, window=2).to_dict()
fit("fusion", {"model": model, "class_weight_power": 0.5}, data,
    TrainConfig(name="t", storage_path=storage, epochs=1, batch_size=8, num_workers=1,
                cpus_per_worker=1), out)
session = Path(ray._private.worker._global_node.get_session_dir_path())
print(json.dumps({
    "entrypoints": [job["Entrypoint"] for job in ray._private.state.jobs()],
    "train_runs": repr(ray.get(get_state_actor().get_train_runs.remote())),
    "session_files": {str(p): p.read_bytes().decode(errors="replace")
                      for p in session.rglob("*") if p.is_file() and not p.is_symlink()},
}))
runtime.shutdown()
"""


@pytest.mark.slow
def test_ray_holds_no_credential_of_a_driver_s_uris(s3_store, tmp_path):
    import os

    prefix = uuid.uuid4().hex[:8]
    storage = f"s3://KEYFORRAY:SECRETFORRAY@{S3_BUCKET}/{prefix}/ray"
    done = subprocess.run([sys.executable, "-c", _TRAINING_DRIVER, storage, str(tmp_path / "out")],
                          cwd=REPO, text=True, capture_output=True, timeout=600,
                          env={**os.environ, **s3_store})
    assert done.returncode == 0, done.stderr[-3000:]
    held = json.loads(done.stdout.strip().splitlines()[-1])
    # the driver's entrypoint is there, its credential masked
    assert any(f"s3://{'*' * len('KEYFORRAY:SECRETFORRAY')}@{S3_BUCKET}" in entry
               for entry in held["entrypoints"]), held["entrypoints"]
    assert f"{prefix}/ray" in held["train_runs"]  # the run is recorded, with its storage
    assert held["session_files"]  # Ray's logs were read
    written = {str(p): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    written.update(_remote_files(prefix))  # Ray Train's folder in the store
    assert any("/ray/" in name for name in written)
    for secret in ("KEYFORRAY", "SECRETFORRAY"):
        assert secret not in done.stdout + done.stderr, secret
        for name, text in held["session_files"].items():
            assert secret not in text, (secret, name)
        for name, data in written.items():
            assert secret.encode() not in data, (secret, name)


def test_a_submitted_job_with_a_credential_on_its_command_line_is_refused(tmp_path):
    """`ray job submit` keeps the entrypoint as typed (its job table, the dashboard): a
    URI with credentials in it is refused before the job does anything with it, and the
    message says where the keys go instead, never quoting them."""
    env = {"PATH": "/usr/bin:/bin", "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_EC2_METADATA_DISABLED": "true"}
    for command in ([sys.executable, "-m", "erc.cli", "corpus", "summary", "s3://AKID:SHH@b/x"],
                    [sys.executable, str(REPO / "jobs" / "train.py"), "fusion", "/mnt/erc/c",
                     "--out", "s3://b/x?access_key=AKID&secret_key=SHH"]):
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.startswith("erc: error: ") and "AWS_SECRET_ACCESS_KEY" in done.stderr
        assert "SHH" not in done.stderr + done.stdout and "AKID" not in done.stderr + done.stdout


def _submitted_with(monkeypatch, env_vars: dict, metadata: dict | None = None) -> None:
    """The driver's view of a job `ray job submit` started: its supervisor passes the
    job's runtime env and metadata (its own keys and --metadata-json's) in this variable."""
    metadata = {"job_submission_id": "raysubmit_Ab12Cd34Ef56Gh78",
                "job_name": "raysubmit_Ab12Cd34Ef56Gh78", **(metadata or {})}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR",
                       json.dumps({"runtime_env": {"env_vars": env_vars}, "metadata": metadata}))


def test_a_submitted_job_with_a_secret_in_its_runtime_env_is_refused(monkeypatch):
    from erc.errors import ConfigError
    from erc.runtime import check_submitted_job

    secrets = {"AWS_SECRET_ACCESS_KEY": "short", "HF_TOKEN": "hf_abcdefghijklmnop"}
    _submitted_with(monkeypatch, {**secrets, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError) as refused:
        check_submitted_job(["corpus", "summary", "s3://b/x"])
    message = str(refused.value)
    assert "AWS_SECRET_ACCESS_KEY, HF_TOKEN" in message and "AWS_SHARED_CREDENTIALS_FILE" in message
    assert not any(value in message for value in secrets.values())
    # where a secret is, an endpoint, erc's own variables: nothing Ray should not keep
    _submitted_with(monkeypatch, {"AWS_SHARED_CREDENTIALS_FILE": "/mnt/erc/aws-credentials",
                                  "RAY_AUTH_TOKEN_PATH": "/mnt/erc/token", "HF_TOKEN": "",
                                  "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"})
    check_submitted_job(["corpus", "summary", "s3://b/x"])
    # the runtime env every erc job is submitted with (docs/cluster.md)
    from erc.settings import load_yaml

    _submitted_with(monkeypatch, load_yaml(REPO / "jobs" / "runtime_env.yaml")["env_vars"])
    check_submitted_job(["corpus", "summary", "s3://b/x"])


def test_a_submitted_job_with_a_credential_in_an_env_var_value_or_its_metadata_is_refused(
        monkeypatch):
    """A URI's keys are a credential whatever the variable holding them is called, and Ray
    keeps a job's metadata (--metadata-json) as it keeps its runtime env."""
    from erc.errors import ConfigError
    from erc.runtime import check_submitted_job
    from erc.settings import load_yaml

    erc_env = load_yaml(REPO / "jobs" / "runtime_env.yaml")["env_vars"]
    _submitted_with(monkeypatch, {**erc_env, "DATA_URL": "s3://AKID:SHH@b/x"})
    with pytest.raises(ConfigError) as refused:
        check_submitted_job(["corpus", "summary", "s3://b/x"])
    message = str(refused.value)
    assert "env_vars hold DATA_URL:" in message and "AWS_SHARED_CREDENTIALS_FILE" in message
    assert "SHH" not in message and "AKID" not in message

    for metadata, named in (({"source": "s3://b/x?access_key=AKID&secret_key=SHH"}, "source"),
                            ({"api_key": "SHH"}, "api_key"),
                            ({"note": "SHH", "s3://AKID:SHH@b/x": "input"}, "s3://***@b/x")):
        _submitted_with(monkeypatch, erc_env, metadata)
        with pytest.raises(ConfigError) as refused:
            check_submitted_job(["corpus", "summary", "s3://b/x"])
        message = str(refused.value)
        assert f"metadata holds a secret or credential in {named}:" in message, message
        assert "--metadata-json" in message and "AWS_SHARED_CREDENTIALS_FILE" in message
        assert "SHH" not in message and "AKID" not in message
    # what metadata is for, and erc's own runtime env: accepted
    _submitted_with(monkeypatch, erc_env, {"owner": "ana", "corpus": "s3://b/meld/corpus",
                                           "api_key": "", "job_name": "preprocess-meld"})
    check_submitted_job(["corpus", "summary", "s3://b/x"])


# A job submitted to an embedded Ray with its dashboard (Ray's Jobs API), a secret in its
# runtime env; what the job's driver printed and what Ray kept of the job are printed.
_SUBMITTING_DRIVER = """
import json, sys, time
from erc import runtime
runtime.connect(num_cpus=1, dashboard=True)
import ray
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient("http://" + ray._private.worker.get_dashboard_url())
for attempt in range(120):  # the node's job agent starts after the dashboard answers
    try:
        job = client.submit_job(entrypoint=f"{sys.executable} -m erc.cli --version",
                                runtime_env={"env_vars": {"HF_TOKEN": sys.argv[1]}})
        break
    except RuntimeError as err:
        if "No available agent" not in str(err):
            raise
        time.sleep(0.5)
deadline = time.monotonic() + 120
while not client.get_job_status(job).is_terminal() and time.monotonic() < deadline:
    time.sleep(0.5)
print(json.dumps({"status": str(client.get_job_status(job)), "logs": client.get_job_logs(job),
                  "kept": repr(client.get_job_info(job))}))
runtime.shutdown()
"""


@pytest.mark.slow
def test_a_job_submitted_with_a_secret_in_its_runtime_env_stops_before_it_runs():
    secret = "hf_SECRETINRUNTIMEENV"
    done = subprocess.run([sys.executable, "-c", _SUBMITTING_DRIVER, secret], cwd=REPO, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    job = json.loads(done.stdout.strip().splitlines()[-1])
    assert secret in job["kept"]  # why: Ray keeps the runtime env's values with the job
    assert job["status"] == "FAILED", job["logs"]
    assert "erc: error: the runtime env's env_vars hold HF_TOKEN" in job["logs"]
    assert "erc 0.1" not in job["logs"] and secret not in job["logs"]


def test_one_uri_typed_whole_is_masked_up_to_its_last_at():
    """A URI known to be one (an option's value): a space in its password no longer ends it."""
    from erc.redaction import redact_uri

    assert redact_uri("s3://KEY:Pa ss/w@rd@bucket/x") == "s3://***@bucket/x"
    assert redact_uri("ftp://u:p q@host/x?token=T") == "ftp://***@host/x?token=***"
    assert redact_uri("s3://bucket/x") == "s3://bucket/x"
