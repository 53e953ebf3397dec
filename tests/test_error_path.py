"""One error path: an expected failure (bad input, option or config; an unwritable or
foreign output; a storage error) is one line ``erc: error: ...`` saying what and where,
exit status 2; anything else is a bug: its traceback, a request to report it, status 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from erc.cli import main
from tests.conftest import REPO


def _csv(tmp_path: Path) -> Path:
    path = tmp_path / "m.csv"
    path.write_text("dialogue_id,speaker,text\nd,Ann,Hi.\n")
    return path


def _erc(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "erc.cli", *argv], cwd=REPO, text=True,
                          capture_output=True, timeout=300)


def test_expected_failures_of_a_real_process_are_one_line(tmp_path):
    """The console script as a user runs it: stderr holds exactly the one line."""
    corpus = _csv(tmp_path)
    (tmp_path / "a-file").write_text("mine")
    cases = {
        "--out is a file": (["corpus", "ingest", str(corpus), "--out", str(tmp_path / "a-file")],
                            "a-file"),
        "--out below a file": (["corpus", "ingest", str(corpus), "--out",
                                str(tmp_path / "a-file" / "sub")], "a-file"),
        "bad -o": (["corpus", "ingest", str(corpus), "-o", "labels=joy"], "labels"),
        "unknown flag": (["qc", "features", "--frobnicate"], "--frobnicate"),
        "missing input": (["corpus", "summary", str(tmp_path / "nowhere")], "nowhere"),
        "bare storage URI": (["corpus", "ingest", str(corpus), "--out", "gs://"], "gs://"),
    }
    for name, (argv, where) in cases.items():
        done = _erc(*argv)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (name, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("erc: error: "), (name, done.stderr)
        assert where in lines[0], (name, lines[0])


def test_an_unreachable_store_is_one_line_and_names_no_secret(tmp_path, capsys):
    uri = "s3://AKIDKEY:SHHSECRET@bucket/runs/x?endpoint_override=127.0.0.1:1&scheme=http"
    assert main(["corpus", "ingest", str(_csv(tmp_path)), "--out", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("erc: error: s3://***@bucket/runs/x") and len(err.splitlines()) == 1, err
    assert "SHHSECRET" not in err and "AKIDKEY" not in err
    assert main(["corpus", "summary", uri.replace("runs/x", "runs/y")]) == 2  # as an input
    err = capsys.readouterr().err
    assert "cannot reach it" in err and "SHHSECRET" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder without write permission")
def test_an_unwritable_output_folder_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["corpus", "ingest", str(_csv(tmp_path)), "--out", str(locked / "corpus")]) == 2
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err.strip()
    assert "Permission denied" in err and str(locked) in err and len(err.splitlines()) == 1


def test_an_erc_home_that_cannot_be_a_folder_is_one_line(tmp_path):
    """ERC_HOME naming a file (or a folder erc cannot create) was a traceback, even for --help."""
    home = tmp_path / "home"
    home.write_text("a file\n")
    env = {k: v for k, v in os.environ.items()  # erc then puts these under ERC_HOME
           if k not in ("MPLCONFIGDIR", "YOLO_CONFIG_DIR", "TILELANG_CACHE_DIR")}
    for argv in (["--help"], ["corpus", "formats"]):
        done = subprocess.run([sys.executable, "-m", "erc.cli", *argv], cwd=REPO, text=True,
                              capture_output=True, timeout=120, env={**env, "ERC_HOME": str(home)})
        assert done.returncode == 2, done.stderr[-2000:]
        assert done.stderr.startswith(f"erc: error: {home}: ") and "ERC_HOME" in done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr


def test_bad_command_lines_name_the_option(capsys):
    for argv, fragment in ((["run", "-o", "train.epochs"], "-o 'train.epochs'"),
                           (["run", "--from", "nowhere"], "--from"),
                           (["train", "fusion"], "corpus"),
                           (["evaluate"], "required"),
                           (["tune", "fusion", "x", "--num-samples", "many"], "--num-samples"),
                           # a count of 0 was "no limit" (a full search) or a search on no CPU
                           (["tune", "fusion", "x", "--out", "y", "--limit-dialogues", "0"],
                            "--limit-dialogues: expected a whole number >= 1"),
                           (["tune", "fusion", "x", "--out", "y", "--num-cpus", "0"], "--num-cpus"),
                           (["tune", "fusion", "x", "--out", "y", "--cpus-per-trial", "-1"],
                            "--cpus-per-trial: expected a finite number > 0"),
                           (["preprocess", "x", "--limit", "0"], "--limit")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err, (argv, err)
        assert "usage:" not in err



def test_a_run_slice_of_no_stage_the_config_runs_is_refused(tmp_path, capsys):
    """--from qc --until qc with QC off (or --from/--until text with frozen text tokens)
    started Ray, ran nothing and exited 0; the dry run planned every stage whatever
    --from/--until said."""
    out = str(tmp_path / "run")
    assert main(["run", "--dry-run", "--out", out, "--from", "qc", "--until", "qc",
                 "-o", "qc.enabled=false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("erc: error: --from qc --until qc: no stage this config runs"), err
    assert main(["run", "--dry-run", "--out", out, "--until", "preprocess"]) == 0
    plan = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "left out (--from/--until)" in plan["qc"] and "left out" not in plan["ingest"]


def test_a_flag_another_kind_of_input_has_is_refused_not_ignored(tmp_path, capsys):
    """--format of no format erc reads passed wherever the corpus was an ingest folder;
    a speaker adapter's --test-groups (a face adapter's held-out subjects) was ignored."""
    corpus = tmp_path / "corpus"
    assert main(["corpus", "ingest", str(_csv(tmp_path)), "--out", str(corpus)]) == 0
    capsys.readouterr()
    for argv, fragment in (
            (["evaluate", str(tmp_path), str(corpus), "--format", "friends"],
             "argument --format: invalid choice: 'friends'"),
            (["train", "fusion", str(corpus), "--out", str(tmp_path / "f"), "--format", "friends"],
             "argument --format: invalid choice: 'friends'"),
            (["train", "adapter", "speaker", str(corpus), "--out", str(tmp_path / "a"),
              "--test-groups", "Ann"], "test_groups ['Ann']: a speaker adapter holds out")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("erc: error: ") and fragment in err, (argv, err)
    assert not (tmp_path / "a").exists()


def test_an_empty_path_is_refused_not_taken_as_not_given(tmp_path, capsys, monkeypatch):
    """--config "" (an unset shell variable) ran the shipped sample; --out "" wrote where the
    default goes (ingest: runs/<name>/corpus) or into the working folder (train, tune)."""
    monkeypatch.chdir(tmp_path)
    csv = _csv(tmp_path)
    for argv in (["run", "--dry-run", "--config", ""], ["corpus", "ingest", str(csv), "--out", ""],
                 ["train", "fusion", str(tmp_path), "--out", " "]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("erc: error: ") and "expected a path, got '" in err, (argv, err)
    assert list(tmp_path.iterdir()) == [csv]


def test_fusion_inputs_given_to_a_text_search_are_refused_not_ignored(tmp_path, capsys):
    """erc tune text ... --text-only --speaker-adapter DIR searched on, reading neither."""
    assert main(["tune", "text", str(_csv(tmp_path)), "--out", str(tmp_path / "search"),
                 "--text-only", "--speaker-adapter", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("erc: error: --speaker-adapter, --text-only: inputs of a fusion search"), err
    assert not (tmp_path / "search").exists()

def test_control_characters_from_the_input_keep_the_error_on_one_line(tmp_path, capsys):
    """A file name, mapping key or column name holding a newline or an ESC is shown as
    Python writes it (\\n, \\x1b): the error stays one line and drives no terminal."""
    corpus = tmp_path / "bad\nname.csv"
    corpus.write_text("speaker,text\nAnn,Hi.\n")
    mapping = tmp_path / "map.yaml"
    mapping.write_text('columns:\n  "text\\n\\e[31m": text\n')
    for argv, fragment in (([str(corpus)], "bad\\nname.csv"),
                           ([str(_csv(tmp_path)), "--mapping", str(mapping)],
                            "columns.text\\n\\x1b[31m: not a field")):
        assert main(["corpus", "ingest", *argv, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("erc: error: "), err
        assert fragment in err and "\x1b" not in err, err


def test_a_bug_is_a_traceback_with_a_request_to_report(tmp_path, monkeypatch, capsys):
    import erc.cli.corpus as corpus_cli

    def broken(args):
        raise ZeroDivisionError("while reading s3://AKIDKEY:SHHSECRET@bucket/x")

    monkeypatch.setattr(corpus_cli, "cmd_formats", broken)
    assert main(["corpus", "formats"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert "this is a bug in erc" in err and "please report it" in err
    assert "SHHSECRET" not in err and "s3://***@bucket/x" in err


def test_an_os_error_naming_a_path_is_expected(tmp_path, capsys):
    folder = tmp_path / "not-a-corpus"
    folder.mkdir()
    assert main(["corpus", "summary", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("erc: error: ") and "not-a-corpus" in err and len(err.splitlines()) == 1


def test_an_utterance_table_of_the_wrong_types_is_one_line(tmp_path):
    """A table with erc's column names but numbers where text belongs went on to the text
    encoder, whose ValueError was a traceback; a 64-bit turn or a large string is cast."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest

    from erc.artifacts import read_utterances
    from erc.errors import InputError

    columns = {"utterance_id": ["u0", "u1"], "corpus": ["c", "c"], "split": ["train", "train"],
               "dialogue_id": ["d", "d"], "turn": pa.array([0, 1], pa.int64()),
               "speaker": pa.array(["A", "B"], pa.large_string()), "text": ["Hi.", "Yo."],
               "emotion": ["joy", None], "media_path": [None, None], "audio_path": [None, None],
               "start_s": pa.array([0, 1], pa.int64()), "end_s": [None, 2.0]}
    path = tmp_path / "utterances.parquet"
    pq.write_table(pa.table(columns), path)
    table = read_utterances(path)
    assert (table.schema.field("turn").type, table.schema.field("speaker").type) == (pa.int32(), pa.string())
    for column, values, words in [("text", [1, 2], "column text holds int64 values, not string"),
                                  ("turn", ["0", "1"], "column turn holds string values"),
                                  ("turn", [0, 2**40], "column turn: Integer value"),
                                  ("speaker", ["A", None], "column speaker has 1 empty values")]:
        pq.write_table(pa.table({**columns, column: values}), path)
        with pytest.raises(InputError, match=words):
            read_utterances(path)


def test_a_damaged_feature_part_is_one_line(tmp_path, capsys):
    from erc.artifacts import read_features
    from erc.errors import InputError

    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "part-00000.parquet").write_bytes(b"junk\n")
    with pytest.raises(InputError, match="part-00000.parquet: not a readable Parquet table"):
        read_features(tmp_path / "features")


@pytest.mark.parametrize("manifest", [b"{not json", b"\xff\xfe garbage", b"[1, 2]",
                                      b'{"partitions": 5}', b'{"partitions": [{"name": "x"}]}',
                                      b'{"partitions": [{"file": "../features/part-00000.parquet"}]}'])
def test_a_damaged_feature_manifest_is_one_line(tmp_path, capsys, manifest):
    """A feature folder's manifest that is not JSON, or lists its parts wrongly, was a
    JSONDecodeError, KeyError or TypeError traceback in every reader of the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erc.schema import utterance_table

    pq.write_table(utterance_table([{"utterance_id": "u0", "corpus": "c", "split": "train",
                                     "dialogue_id": "d0", "turn": 0, "speaker": "A"}]),
                   tmp_path / "utterances.parquet")
    features = tmp_path / "features"
    features.mkdir()
    pq.write_table(pa.table({"utterance_id": ["u0"], "status": ["ok"]}),
                   features / "part-00000.parquet")
    (features / "manifest.json").write_bytes(manifest)
    assert main(["qc", str(features), "--utterances", str(tmp_path), "--out",
                 str(tmp_path / "qc")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("erc: error: "), err
    assert str(features / "manifest.json") in err


def test_a_feature_column_of_another_type_names_its_part(tmp_path):
    """A part whose column holds another type was a pyarrow traceback where the parts were
    joined or the rows built."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erc.artifacts import read_features
    from erc.errors import InputError

    features = tmp_path / "features"
    features.mkdir()
    pq.write_table(pa.table({"utterance_id": ["u0"], "status": ["ok"],
                             "speaker_embedding": [[0.5, 0.5]]}), features / "part-00000.parquet")
    pq.write_table(pa.table({"utterance_id": ["u1"], "status": ["ok"],
                             "speaker_embedding": ["x"]}), features / "part-00001.parquet")
    with pytest.raises(InputError, match=r"part-00001.parquet: column 'speaker_embedding' holds "
                                         r"string"):
        read_features(features)
    pq.write_table(pa.table({"utterance_id": ["u1"], "status": ["ok"],
                             "speaker_embedding": [[1.0, 0.0]]}), features / "part-00001.parquet")
    table = read_features(features)  # float64 vectors are read as the schema's float32
    assert table.num_rows == 2 and table.schema.field("speaker_embedding").type == pa.list_(pa.float32())


def _fusion_model(tmp_path: Path, vectors: list[list[float]], emotions: list[str | None]):
    """An utterance table of one dialogue (split ``test``), a feature file of its text
    vectors and an untrained fusion model over them that predicts a / b / c."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erc.models.checkpoint import save_model
    from erc.models.fusion import FusionConfig, FusionModel
    from erc.schema import utterance_table

    ids = [f"c/test/d0/{t}" for t in range(len(emotions))]
    rows = [{"utterance_id": u, "corpus": "c", "split": "test", "dialogue_id": "d0", "turn": t,
             "speaker": "AB"[t % 2], "text": "hi", "emotion": e}
            for t, (u, e) in enumerate(zip(ids, emotions))]
    pq.write_table(utterance_table(rows), tmp_path / "utterances.parquet")
    pq.write_table(pa.table({"utterance_id": ids, "text_embedding": vectors}),
                   tmp_path / "features.parquet")
    labels = ["a", "b", "c"]
    spec = {"text": {"kind": "parquet", "path": str(tmp_path / "features.parquet"),
                     "column": "text_embedding"}}
    model = save_model(tmp_path / "model", FusionModel(FusionConfig(
        modalities=["text"], dims={"text": 4}, labels=labels, n_classes=3, d_state=4)),
        extra={"task": "fusion", "labels": labels, "features": spec})
    return model, tmp_path / "utterances.parquet"



def test_a_model_of_another_kind_where_a_text_model_or_adapter_goes_is_one_line(tmp_path, capsys):
    """--text finetuned:DIR (or --speaker-adapter DIR) naming a fusion model's folder failed
    reading the settings a text model (an adapter) has: an internal AttributeError."""
    import numpy as np

    from erc.errors import InputError
    from erc.train.vectors import adapt_features

    (tmp_path / "m").mkdir()
    model, _ = _fusion_model(tmp_path / "m", [[0.1] * 4] * 2, ["a", "b"])
    corpus, _ = _train_corpus(tmp_path, "a")
    assert main(["train", "fusion", str(corpus), "--text", f"finetuned:{model}",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"erc: error: {model}: holds a model of kind 'fusion', not a fine-tuned "
                          f"text model"), err
    with pytest.raises(InputError, match="holds a model of kind 'fusion', not a speaker adapter"):
        adapt_features({"speaker": {"u": np.zeros(4, np.float32)}}, {"speaker": {"adapter": str(model)}})


def test_feature_folder_options_where_no_folder_is_read_are_refused(tmp_path, capsys):
    """--text-only with --features (or an adapter, or --drop), and an adapter without
    --features, trained on text alone, the options ignored silently."""
    _, corpus = _fusion_model(tmp_path, [[0.1] * 4] * 2, ["a", "b"])
    for given, said in ((["--text-only", "--features", str(tmp_path)],
                         "--text-only reads no feature folder: leave out --features"),
                        (["--speaker-adapter", str(tmp_path)],
                         "--speaker-adapter: the speaker and face vectors come from a feature folder")):
        assert main(["train", "fusion", str(corpus), "--out", str(tmp_path / "run"), *given]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"erc: error: {said}"), (given, err)

def test_evaluate_scores_labels_the_model_does_not_predict_as_errors(tmp_path, capsys):
    """A split labelled ``zzz`` (and ``A `` for ``a``) for a model of a / b / c stopped with
    an error: no way to score a corpus with an emotion the training data never had. Now
    every utterance is scored, ``zzz`` a class every prediction misses, named in the metrics
    beside the scores without it; ``A `` is the model's ``a``, ``zzz  `` the split's ``zzz``."""
    import pyarrow.parquet as pq
    from sklearn.metrics import accuracy_score, f1_score

    emotions = ["a", "zzz", None, "A ", "b", "zzz  ", "c"]
    model, corpus = _fusion_model(tmp_path, [[0.1 * t, 1.0, -0.2 * t, 0.3] for t in range(7)],
                                  emotions)
    assert main(["evaluate", str(model), str(corpus), "--split", "test",
                 "--out", str(tmp_path / "eval")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.startswith(f"{model} on split test of {corpus}\n")  # what was scored
    assert "labels the model does not predict, their utterances counted wrong above: zzz 2" in out
    predictions = pq.read_table(tmp_path / "eval" / "predictions.parquet").to_pylist()
    assert [p["true"] for p in predictions] == ["a", "zzz", None, "a", "b", "zzz", "c"]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    true = [p["true"] for p in predictions if p["true"]]
    predicted = [p["predicted"] for p in predictions if p["true"]]
    assert metrics["n"] == 6 and metrics["n_unlabelled"] == 1  # 6 + 1: every row
    assert metrics["accuracy"] == pytest.approx(accuracy_score(true, predicted))
    assert metrics["weighted_f1"] == pytest.approx(f1_score(true, predicted, average="weighted"))
    assert metrics["macro_f1"] == pytest.approx(f1_score(true, predicted, average="macro"))
    assert metrics["per_class"]["zzz"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert metrics["unseen_labels"] == {"zzz": 2}
    known = [(t, p) for t, p in zip(true, predicted) if t != "zzz"]
    assert metrics["on_model_labels"]["n"] == 4
    assert metrics["on_model_labels"]["accuracy"] == pytest.approx(
        accuracy_score(*zip(*known)))


def test_evaluate_predicts_every_row_of_a_split_without_labels(tmp_path, capsys):
    import pyarrow.parquet as pq

    model, corpus = _fusion_model(tmp_path, [[0.1] * 4] * 3, [None, None, None])
    assert main(["evaluate", str(model), str(corpus), "--split", "test",
                 "--out", str(tmp_path / "eval")]) == 0
    predictions = pq.read_table(tmp_path / "eval" / "predictions.parquet")
    assert predictions.num_rows == 3 and predictions.column("true").null_count == 3
    out = capsys.readouterr().out  # no scores of nothing (an accuracy of 0.000)
    assert "test: no labelled utterance, nothing scored; predictions for 3 utterances" in out
    assert "0.000" not in out


def test_a_split_named_as_a_path_is_evaluated_into_a_folder_beside_the_model(tmp_path, capsys):
    """The evaluation's folder is named after the split, a value of the data: a split
    "../../x" wrote its metrics two folders above the model's, "held/out" one below."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "m").mkdir()
    model, corpus = _fusion_model(tmp_path / "m", [[0.1] * 4] * 2, ["a", "b"])
    table = pq.read_table(corpus)
    for split in ("../../x", "held/out"):
        table = table.set_column(table.schema.get_field_index("split"), "split",
                                 pa.array([split] * table.num_rows))
        pq.write_table(table, corpus)
        assert main(["evaluate", str(model), str(corpus), "--split", split]) == 0, capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "m").iterdir() if p.name.startswith("eval-")) == [
        "eval-.._.._x", "eval-held_out"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # nothing written above it


def test_evaluate_says_when_no_utterance_has_a_text_vector(tmp_path, capsys):
    """A model of `erc run` reads its text vectors from the run's feature folder: a test
    file placed beside the corpus after the run has none there, and every turn was scored
    without its text (0.14 against 0.53 on a MELD test file) with only a count to say so."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    model, corpus = _fusion_model(tmp_path, [[0.1] * 4] * 3, ["a", "b", "c"])
    pq.write_table(pa.table({"utterance_id": ["c/dev/d9/0"], "text_embedding": [[0.1] * 4]}),
                   tmp_path / "features.parquet")  # the folder holds another split alone
    assert main(["evaluate", str(model), str(corpus), "--split", "test",
                 "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "utterances without a vector: text 3" in out
    assert "no utterance of test has a text vector in the feature folder the model reads" in out


def test_evaluate_counts_the_rows_of_the_split_set_aside_before_scoring(tmp_path, capsys):
    """Rows of the evaluated split that the reader sets aside (no transcript, a bad turn)
    were in neither predictions.parquet nor metrics.json: n said 3 where the file held 5.
    Now metrics.json counts them per reason, read from a corpus or an ingest output, and
    n + n_unlabelled + set_aside is the split's input rows."""
    model, _ = _fusion_model(tmp_path, [[0.1] * 4] * 4, ["a", "b", None, "c"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test.csv").write_text(
        "utterance_id,dialogue_id,turn,speaker,text,emotion\n"
        "c/test/d0/0,d0,0,A,hi,a\n"
        "c/test/d0/1,d0,1,B,,b\n"          # no transcript, no media: set aside
        "c/test/d0/2,d0,2,A,hi,\n"
        "c/test/d0/3,d0,3,B,hi,c\n"
        "c/test/d0/4,d0,x,A,hi,a\n")       # a turn that is no number: set aside
    assert main(["corpus", "ingest", str(corpus), "--format", "manifest",
                 "--out", str(tmp_path / "ingest")]) == 0, capsys.readouterr().err
    for name, source, given in (("raw", corpus, ["--format", "manifest"]),
                                ("ingest", tmp_path / "ingest", [])):
        capsys.readouterr()
        assert main(["evaluate", str(model), str(source), "--split", "test", *given,
                     "--out", str(tmp_path / f"eval-{name}")]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        metrics = json.loads((tmp_path / f"eval-{name}" / "metrics.json").read_text())
        assert metrics["set_aside"] == {"missing_field": 1, "bad_turn": 1}, (name, metrics)
        assert metrics["n"] + metrics["n_unlabelled"] + sum(metrics["set_aside"].values()) == 5
        assert "test: 2 input rows set aside before scoring, not in predictions.parquet" in out
        assert "(n=2)" in out  # and the unlabelled row it predicted is said, not left out
        assert "test: 1 utterances without a label, predicted but not scored" in out, out


def test_evaluate_reads_a_raw_corpus_once(tmp_path, capsys):
    """`erc evaluate MODEL CORPUS` on a corpus erc reads (not an ingest output) read it
    twice, for the split check and again for the scoring: the reader's note on the rows it
    set aside printed twice. It is read once."""
    model, _ = _fusion_model(tmp_path, [[0.1] * 4] * 2, ["a", "b"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test.csv").write_text("utterance_id,dialogue_id,turn,speaker,text,emotion\n"
                                     "c/test/d0/0,d0,0,A,hi,a\nc/test/d0/1,d0,1,B,,b\n"
                                     "c/test/d0/2,d0,2,A,hi,b\n")
    assert main(["evaluate", str(model), str(corpus), "--format", "manifest", "--split", "test",
                 "--out", str(tmp_path / "eval")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.count("1 of 3 input rows set aside by the reader") == 1, out
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 2


def test_evaluate_on_a_split_whose_every_row_was_set_aside_says_why(tmp_path, capsys):
    """A test file whose every row the reader set aside read as a corpus without that
    split ("its splits are train"), as if the file had not been found."""
    model, _ = _fusion_model(tmp_path, [[0.1] * 4] * 2, ["a", "b"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    header = "utterance_id,dialogue_id,turn,speaker,text,emotion\n"
    (corpus / "train.csv").write_text(header + "c/train/d0/0,d0,0,A,hi,a\n")
    (corpus / "test.csv").write_text(header + "c/test/d0/0,d0,0,A,,a\nc/test/d0/1,d0,1,B,,b\n")
    assert main(["evaluate", str(model), str(corpus), "--format", "manifest", "--split", "test",
                 "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "every input row of split 'test' was set aside" in err
    assert "2 rows: missing_field 2" in err, err


def test_evaluate_json_prints_the_metrics_alone(tmp_path, capsys):
    """`erc evaluate M1 M2 CORPUS --json` printed the reader's note on rows set aside and
    the ensemble line before the JSON on stdout, which no JSON reader then parsed."""
    model, _ = _fusion_model(tmp_path, [[0.1] * 4] * 2, ["a", "b"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test.csv").write_text("utterance_id,dialogue_id,turn,speaker,text,emotion\n"
                                     "c/test/d0/0,d0,0,A,hi,a\nc/test/d0/1,d0,1,B,,b\n")
    assert main(["evaluate", str(model), str(model), str(corpus), "--format", "manifest",
                 "--split", "test", "--out", str(tmp_path / "eval"), "--json"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert metrics["n"] == 1 and metrics["set_aside"] == {"missing_field": 1}
    assert "set aside by the reader" in captured.err and "ensemble" not in captured.out


def test_evaluate_reads_the_speaker_vectors_of_the_corpus_it_scores(tmp_path, capsys):
    """A fusion model over speaker vectors read them, on any corpus, from the feature folder
    it was trained with: another corpus's utterances had none there (each read as missing)
    or, under the same ids, another utterance's. ``--features`` names the scored corpus's."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erc.artifacts import read_utterances
    from erc.io import copy_file
    from erc.models.checkpoint import save_model
    from erc.models.fusion import FusionConfig, FusionModel
    from erc.train.evaluate import predict_split

    _, corpus = _fusion_model(tmp_path, [[0.1, 0.2, 0.3, 0.4]] * 3, ["a", "b", "c"])
    ids = [f"c/test/d0/{t}" for t in range(3)]
    folders = {}
    for name, id_list, scale in (("trained", ["other/0", "other/1"], 1.0), ("scored", ids, -3.0)):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        pq.write_table(pa.table({"utterance_id": id_list, "speaker_embedding": [
            (scale * np.arange(1, 7) * (i + 1)).tolist() for i in range(len(id_list))]}),
            folders[name] / "part-00000.parquet")
    labels = ["a", "b", "c"]

    def model(folder, name):
        spec = {"text": {"kind": "parquet", "path": str(tmp_path / "features.parquet"),
                         "column": "text_embedding"},
                "speaker": {"kind": "parquet", "path": str(folder), "column": "speaker_embedding"}}
        return save_model(tmp_path / name, FusionModel(FusionConfig(
            modalities=["text", "speaker"], dims={"text": 4, "speaker": 6}, labels=labels,
            n_classes=3, d_state=4)), extra={"task": "fusion", "labels": labels, "features": spec})

    trained = model(folders["trained"], "model-trained")
    assert main(["evaluate", str(trained), str(corpus), "--split", "test",
                 "--out", str(tmp_path / "eval-before")]) == 0
    assert json.loads((tmp_path / "eval-before" / "metrics.json").read_text())["n_missing"] == {
        "speaker": 3}
    assert main(["evaluate", str(trained), str(corpus), "--split", "test", "--features",
                 str(folders["scored"]), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n_missing"] == {}
    same = model(folders["scored"], "model-scored")  # its weights, recorded with that folder
    copy_file(trained / "model.safetensors", same / "model.safetensors")
    expected, *_ = predict_split(same, read_utterances(corpus), "test")
    got = pq.read_table(tmp_path / "eval" / "predictions.parquet").select(
        [f"p_{label}" for label in labels]).to_pandas().to_numpy()
    assert np.allclose(got, expected, atol=1e-6)

    (tmp_path / "text-only").mkdir()
    text_only, _ = _fusion_model(tmp_path / "text-only", [[0.1] * 4] * 3, ["a", "b", "c"])
    capsys.readouterr()
    assert main(["evaluate", str(text_only), str(corpus), "--split", "test", "--features",
                 str(folders["scored"]), "--out", str(tmp_path / "eval-text")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "reads no speaker or face vectors" in err, err


def test_evaluate_scores_a_corpus_without_any_vector_of_a_modality(tmp_path, capsys):
    """A corpus without media (its feature folder holds no speaker vector at all), scored by
    a model over text and speaker vectors with ``--features``, stopped with 'no speaker
    features at all', though the model reads a turn without a vector as its learned missing
    embedding (as it did for the same corpus without ``--features``). Every turn is now
    scored and counted as missing its speaker vector."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erc.models.checkpoint import save_model
    from erc.models.fusion import FusionConfig, FusionModel

    _, corpus = _fusion_model(tmp_path, [[0.1] * 4] * 3, ["a", "b", "c"])
    folders = {name: tmp_path / name for name in ("trained", "scored")}
    for folder in folders.values():
        folder.mkdir()
    pq.write_table(pa.table({"utterance_id": ["other/0"], "status": ["ok"],
                             "speaker_embedding": [[0.2] * 6]}),
                   folders["trained"] / "part-00000.parquet")
    pq.write_table(pa.table({"utterance_id": [f"c/test/d0/{t}" for t in range(3)],
                             "status": ["text_only"] * 3}), folders["scored"] / "part-00000.parquet")
    labels = ["a", "b", "c"]
    spec = {"text": {"kind": "parquet", "path": str(tmp_path / "features.parquet"),
                     "column": "text_embedding"},
            "speaker": {"kind": "parquet", "path": str(folders["trained"]),
                        "column": "speaker_embedding"}}
    model = save_model(tmp_path / "model", FusionModel(FusionConfig(
        modalities=["text", "speaker"], dims={"text": 4, "speaker": 6}, labels=labels,
        n_classes=3, d_state=4)), extra={"task": "fusion", "labels": labels, "features": spec})
    assert main(["evaluate", str(model), str(corpus), "--split", "test", "--features",
                 str(folders["scored"]), "--out", str(tmp_path / "eval")]) == 0, \
        capsys.readouterr().err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["n_missing"] == {"speaker": 3}


def test_evaluate_reads_the_text_vectors_of_the_feature_folder_it_is_given(tmp_path, capsys):
    """A model of the main job reads its text vectors from its feature folder too (column
    text_layers). ``--features`` moved only the speaker and face vectors: the text of the
    scored corpus was still looked up in the training corpus's folder, every turn's missing
    there (or another utterance's under the same id); and a text-only model of the main job
    (a corpus without media) refused ``--features`` outright."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erc.models.checkpoint import save_model
    from erc.models.fusion import FusionConfig, FusionModel

    _, corpus = _fusion_model(tmp_path, [[0.1] * 4] * 3, ["a", "b", "c"])
    ids = [f"c/test/d0/{t}" for t in range(3)]
    folders = {}
    for name, id_list in (("trained", ["other/0", "other/1"]), ("scored", ids)):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        pq.write_table(pa.table({"utterance_id": id_list, "status": ["ok"] * len(id_list),
                                 "text_layers": [[0.1 * (i + 1)] * 4 for i in range(len(id_list))],
                                 "speaker_embedding": [[0.2] * 6] * len(id_list)}),
                       folders[name] / "part-00000.parquet")
    (folders["trained"] / "manifest.json").write_text('{"stage": "preprocess", "fingerprint": "f"}')
    labels = ["a", "b", "c"]
    trained = str(folders["trained"])
    for name, modalities in (("trimodal", {"text": 4, "speaker": 6}), ("text-only", {"text": 4})):
        spec = {"text": {"kind": "parquet", "path": trained, "column": "text_layers"},
                "speaker": {"kind": "parquet", "path": trained, "column": "speaker_embedding"}}
        spec = {m: spec[m] for m in modalities}  # as the main job's feature_spec writes it
        model = save_model(tmp_path / name, FusionModel(FusionConfig(
            modalities=list(modalities), dims=modalities, labels=labels, n_classes=3, d_state=4)),
            extra={"task": "fusion", "labels": labels, "features": spec})
        assert main(["evaluate", str(model), str(corpus), "--split", "test", "--features",
                     str(folders["scored"]), "--out", str(tmp_path / f"eval-{name}")]) == 0, \
            capsys.readouterr().err
        metrics = json.loads((tmp_path / f"eval-{name}" / "metrics.json").read_text())
        assert metrics["n"] == 3 and metrics["n_missing"] == {}, (name, metrics["n_missing"])


def test_vectors_of_different_widths_are_one_line(tmp_path, capsys):
    """One short vector in a ``parquet:`` feature file was a numpy broadcast traceback."""
    model, corpus = _fusion_model(tmp_path, [[0.1] * 4, [0.1] * 3, [0.1] * 4], ["a", "b", "c"])
    assert main(["evaluate", str(model), str(corpus), "--split", "test",
                 "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("erc: error: "), err
    assert "features.parquet" in err and "text_embedding" in err and "c/test/d0/1" in err


def _train_corpus(tmp_path: Path, dev_emotion: str | None) -> tuple[Path, Path]:
    """Two one-dialogue splits (train labelled, dev labelled ``dev_emotion``) and a feature
    file of their text vectors."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erc.schema import utterance_table

    rows = [{"utterance_id": f"c/{s}/d0/{t}", "corpus": "c", "split": s, "dialogue_id": "d0",
             "turn": t, "speaker": "AB"[t % 2], "text": "hi",
             "emotion": "ab"[t % 2] if s == "train" else dev_emotion}
            for s in ("train", "dev") for t in range(2)]
    pq.write_table(utterance_table(rows), tmp_path / "utterances.parquet")
    pq.write_table(pa.table({"utterance_id": [r["utterance_id"] for r in rows],
                             "text_embedding": [[0.1] * 4] * len(rows)}),
                   tmp_path / "features.parquet")
    return tmp_path / "utterances.parquet", tmp_path / "features.parquet"


def test_training_refuses_a_dev_split_without_labels(tmp_path, capsys):
    """A dev split without labels trained and "selected" the model by a dev accuracy of 0."""
    corpus, features = _train_corpus(tmp_path, None)
    assert main(["train", "fusion", str(corpus), "--text", f"parquet:{features}",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'dev'" in err and "no labelled" in err, err
    assert not (tmp_path / "run" / "model").exists()


def test_a_feature_column_that_is_not_there_is_named(tmp_path, capsys):
    corpus, features = _train_corpus(tmp_path, "a")
    assert main(["train", "fusion", str(corpus), "--text", f"parquet:{features}#nosuch",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "features.parquet" in err and "'nosuch'" in err, err


def _evaluate_damaged(model, corpus, tmp_path, name, damage, capsys):
    """A copy of ``model`` damaged by ``damage``, and the one error line evaluate gives on it."""
    broken = tmp_path / name
    shutil.copytree(model, broken)
    damage(broken)
    assert main(["evaluate", str(broken), str(corpus), "--split", "test",
                 "--out", str(tmp_path / f"eval-{name}")]) == 2, name
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("erc: error: "), (name, err)
    return broken, err


def test_a_folder_that_holds_no_model_is_named_so(tmp_path, capsys):
    """The output folder of erc train given for its model/ (or a file, or a folder of the
    user's) was refused with the OS's "config.json: No such file or directory"."""
    run = tmp_path / "run"
    run.mkdir()
    model, corpus = _fusion_model(run, [[0.1] * 4] * 3, ["a", "b", "c"])
    (tmp_path / "notes.txt").write_text("mine")
    for given, fragment in ((run, f"{run}: not a model folder (no config.json); the model of "
                                  f"this run is {model}"),
                            (tmp_path / "notes.txt", "not a model folder (no config.json)")):
        assert main(["evaluate", str(given), str(corpus), "--split", "test",
                     "--out", str(tmp_path / "eval")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "eval").exists()


def test_a_model_folder_that_is_not_a_model_is_one_line(tmp_path, capsys):
    """A damaged config.json, damaged weights or the weights of another model were
    tracebacks (JSONDecodeError, SafetensorError, RuntimeError)."""
    import shutil

    from erc.models.checkpoint import save_model
    from erc.models.fusion import FusionConfig, FusionModel

    model, corpus = _fusion_model(tmp_path, [[0.1] * 4] * 3, ["a", "b", "c"])
    other = save_model(tmp_path / "other", FusionModel(FusionConfig(
        modalities=["text"], dims={"text": 6}, labels=["a", "b", "c"], n_classes=3, d_state=4)))
    for name, damage, fragment in (
            ("config", lambda m: (m / "config.json").write_text("{not json"), "config.json"),
            ("weights", lambda m: (m / "model.safetensors").write_bytes(b"junk"),
             "model.safetensors"),
            ("foreign", lambda m: shutil.copy(other / "model.safetensors", m), "model.safetensors")):
        broken, err = _evaluate_damaged(model, corpus, tmp_path, name, damage, capsys)
        assert str(broken / fragment) in err, (name, err)


def test_an_encoder_folder_without_a_tokenizer_is_one_line(tmp_path, capsys):
    """transformers' ValueError on a folder that holds no tokenizer was a traceback."""
    corpus, _ = _train_corpus(tmp_path, "a")
    encoder = tmp_path / "not-an-encoder"
    encoder.mkdir()
    (encoder / "notes.txt").write_text("mine")
    assert main(["train", "text", str(corpus), "--encoder", str(encoder),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("erc: error: "), err
    assert str(encoder) in err and "tokenizer" in err
    assert (encoder / "notes.txt").read_text() == "mine"


def test_an_utterance_with_two_different_vectors_is_named(tmp_path):
    """The same id twice in a feature file: the last row won, silently. Now two equal rows
    are read as one, two different ones are an error naming the id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erc.artifacts import read_vectors
    from erc.errors import InputError

    path = tmp_path / "features.parquet"
    pq.write_table(pa.table({"utterance_id": ["u0", "u1", "u0"],
                             "v": [[0.0, 1.0], [1.0, 1.0], [0.0, 1.0]]}), path)
    assert sorted(read_vectors(path, "v")) == ["u0", "u1"]
    pq.write_table(pa.table({"utterance_id": ["u0", "u1", "u0"],
                             "v": [[0.0, 1.0], [1.0, 1.0], [0.5, 1.0]]}), path)
    with pytest.raises(InputError, match=r"features.parquet: column 'v': utterance 'u0' has "
                                         r"two different vectors"):
        read_vectors(path, "v")
    # A column of text where vectors belong was a ValueError traceback from numpy.
    pq.write_table(pa.table({"utterance_id": ["u0"], "v": [["a", "b"]]}), path)
    with pytest.raises(InputError, match=r"features.parquet: column 'v' holds list<.*string>, "
                                         r"not vectors of numbers"):
        read_vectors(path, "v")


def test_a_model_config_of_another_version_is_one_line(tmp_path, capsys):
    """A config.json with a setting this erc does not know was a TypeError traceback."""
    import json

    model, corpus = _fusion_model(tmp_path, [[0.1] * 4] * 3, ["a", "b", "c"])
    saved = json.loads((model / "config.json").read_text())
    saved["config"]["mixer_layers"] = 2
    (model / "config.json").write_text(json.dumps(saved))
    assert main(["evaluate", str(model), str(corpus), "--split", "test",
                 "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("erc: error: "), err
    assert str(model / "config.json") in err and "mixer_layers" in err, err


def test_tune_refuses_a_dev_split_without_labels_before_ray_starts(tmp_path, capsys):
    """`erc tune` built its data its own way: a dev split without labels searched on a dev
    score of nothing, and a misspelt #column was not named."""
    corpus, features = _train_corpus(tmp_path, None)
    assert main(["tune", "fusion", str(corpus), "--text", f"parquet:{features}",
                 "--out", str(tmp_path / "search")]) == 2
    [err] = _erc_lines(capsys.readouterr().err)
    assert "'dev'" in err and "no labelled" in err, err
    assert not (tmp_path / "search").exists()


def test_tune_names_a_feature_column_that_is_not_there(tmp_path, capsys):
    corpus, features = _train_corpus(tmp_path, "a")
    assert main(["tune", "fusion", str(corpus), "--text", f"parquet:{features}#nosuch",
                 "--num-samples", "1", "--out", str(tmp_path / "search")]) == 2
    [err] = _erc_lines(capsys.readouterr().err)
    assert "features.parquet" in err and "'nosuch'" in err, err


def _erc_lines(err: str) -> list[str]:
    """erc's own lines of stderr: Ray forwards the output of earlier tests' workers late."""
    return [line for line in err.splitlines() if line.startswith("erc") or "Traceback" in line]


def test_rows_a_reader_sets_aside_are_counted_where_a_raw_corpus_is_read(tmp_path, capsys):
    """train, tune and evaluate read a raw corpus without writing problems.parquet: the
    rows its reader set aside vanished from predictions and metrics without a word."""
    from erc.artifacts import load_corpus

    corpus = tmp_path / "m.csv"
    corpus.write_text("dialogue_id,turn,speaker,text\nd,0,Ann,Hi.\nd,x,Bob,Oh.\nd,2,Ann,Yes.\n")
    table = load_corpus(corpus)
    out = capsys.readouterr().out
    assert table.num_rows == 2
    assert "1 of 3 input rows set aside by the reader (bad_turn 1)" in out, out
    assert "problems.parquet" in out


def test_a_parquet_manifest_is_read_as_a_corpus_where_a_corpus_is_read(tmp_path):
    """train, tune and evaluate take "an ingest folder, utterances.parquet or a corpus erc
    reads": a Parquet manifest was taken for an utterance table and refused ("not an
    utterance table, it lacks utterance_id, ..."), where the same rows in a CSV were read."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest

    from erc.artifacts import load_corpus
    from erc.errors import InputError

    rows = {"dialogue_id": ["d", "d"], "speaker": ["Ann", "Bob"], "text": ["Hi.", "Yo."]}
    pq.write_table(pa.table(rows), tmp_path / "m.parquet")
    table = load_corpus(tmp_path / "m.parquet")
    assert table.column("utterance_id").to_pylist() == ["m/train/d/0", "m/train/d/1"]
    pq.write_table(pa.table(rows), tmp_path / "utterances.parquet")  # named as erc's table
    with pytest.raises(InputError, match="not an utterance table, it lacks utterance_id"):
        load_corpus(tmp_path / "utterances.parquet")


def test_evaluate_says_which_rows_had_no_vector(tmp_path, capsys):
    """A row without a feature vector is predicted from the learned missing embedding: it
    is kept, and predictions and metrics now say which rows and how many."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    model, corpus = _fusion_model(tmp_path, [[0.1] * 4] * 3, ["a", "b", "c"])
    pq.write_table(pa.table({"utterance_id": ["c/test/d0/0", "c/test/d0/1"],
                             "text_embedding": [[0.1] * 4] * 2}), tmp_path / "features.parquet")
    assert main(["evaluate", str(model), str(corpus), "--split", "test",
                 "--out", str(tmp_path / "eval")]) == 0
    predictions = pq.read_table(tmp_path / "eval" / "predictions.parquet")
    assert predictions.column("missing").to_pylist() == [[], [], ["text"]]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["n_missing"] == {"text": 1}
    assert "utterances without a vector: text 1" in capsys.readouterr().out


@pytest.mark.parametrize("damage", [b"{not json", b"\xff\xfe", b"[1, 2]", b'{"input": "x"}'])
def test_the_run_report_shows_what_it_can_read(tmp_path, capsys, damage):
    """A damaged record of one stage (QC's report, the training history, an evaluation's
    metrics, a stage manifest) was a traceback that left the run without its report; now it
    costs that section, which says why."""
    from erc.recipes import RunConfig
    from erc.report import write_report

    run = tmp_path / "run"
    for record in ("qc/report.json", "train/history.json", "eval-dev/metrics.json",
                   "features/manifest.json"):
        (run / record).parent.mkdir(parents=True)
        (run / record).write_bytes(damage)
    (run / "corpus").mkdir()
    (run / "corpus" / "manifest.json").write_text('{"fingerprint": "f", "stage": 5}')
    page = write_report(run, RunConfig(output_dir=str(run))).read_text()
    assert page.count("<b>Not shown.</b>") == 3  # QC, training, evaluation
    assert page.count("cannot be read (below)") == 3  # the QC, train and evaluate rows
    assert "<h2>Stages</h2>" in page and "<h2>Outputs</h2>" in page
    err = capsys.readouterr().err
    assert "qc/report.json" in err and "history.json" in err and "metrics.json" in err


def test_face_vectors_are_read_like_every_feature_column(tmp_path):
    """The per-utterance face vectors had a reader of their own: an utterance in two parts
    with different faces took the last one read, and faces of two widths reached the
    model. They are now read through ``read_features``: one row per utterance, one width."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erc.artifacts import face_vectors
    from erc.errors import InputError
    from erc.features import FEATURE_SCHEMA

    def part(folder, name, rows):
        folder.mkdir(exist_ok=True)
        columns = {f.name: [row.get(f.name) for row in rows] for f in FEATURE_SCHEMA}
        pq.write_table(pa.table(columns, schema=FEATURE_SCHEMA), folder / name)

    def face(value, width=4):
        return [{"frame": 0, "time_s": 0.0, "box": [0, 0, 5, 5], "score": 0.9,
                 "embedding": [value] * width}]

    twice = tmp_path / "twice"
    part(twice, "part-00000.parquet", [{"utterance_id": "u0", "status": "ok", "faces": face(1.0)}])
    part(twice, "part-00001.parquet", [{"utterance_id": "u0", "status": "ok", "faces": face(2.0)}])
    with pytest.raises(InputError, match="'u0' has two different feature rows"):
        face_vectors(twice)
    widths = tmp_path / "widths"
    part(widths, "part-00000.parquet", [{"utterance_id": "u0", "status": "ok", "faces": face(1.0)},
                                        {"utterance_id": "u1", "status": "ok",
                                         "faces": face(1.0, width=6)}])
    with pytest.raises(InputError, match="'faces.embedding'"):
        face_vectors(widths)


def test_an_edited_model_config_is_one_line_naming_the_setting(tmp_path, capsys):
    """A config.json whose settings have the wrong type, break their bounds, list labels
    that are not n_classes distinct names, or record a feature spec that is not one, was
    built into a model that failed later with a traceback (TypeError, IndexError, torch's
    RuntimeError, KeyError) or scored with the wrong labels."""
    import json

    model, corpus = _fusion_model(tmp_path, [[0.1] * 4] * 3, ["a", "b", "c"])

    def edit(change):
        def damage(folder):
            saved = json.loads((folder / "config.json").read_text())
            change(saved)
            (folder / "config.json").write_text(json.dumps(saved))
        return damage

    cases = {
        "labels-int": (edit(lambda s: s["config"].update(labels=5)), "labels: Input should be"),
        "labels-more": (edit(lambda s: s["config"].update(labels=["a", "b", "c", "d"])),
                        "are not 3 distinct names"),
        "labels-twice": (edit(lambda s: s["config"].update(labels=["a", "a", "b"])),
                         "are not 3 distinct names"),
        "labels-none": (edit(lambda s: s["config"].update(labels=[])), "[] are not 3 distinct names"),
        "labels-gone": (edit(lambda s: s["config"].pop("labels")), "[] are not 3 distinct names"),
        "classes-negative": (edit(lambda s: s["config"].update(n_classes=-1)), "n_classes: -1"),
        "width-negative": (edit(lambda s: s["config"].update(dims={"text": -4})), "dims.text"),
        "state-zero": (edit(lambda s: s["config"].update(d_state=0)), "d_state"),
        "features-text": (edit(lambda s: s.update(features="x")), "features: expected"),
        "features-other": (edit(lambda s: s.update(features={"face": s["features"]["text"]})),
                           "reads text but its feature spec names no source"),
        "nested": (lambda f: (f / "config.json").write_text("[" * 100_000 + "]" * 100_000),
                   "not a model config"),
    }
    for name, (damage, fragment) in cases.items():
        broken, err = _evaluate_damaged(model, corpus, tmp_path, name, damage, capsys)
        assert str(broken) in err and fragment in err, (name, err)


def test_a_frozen_text_model_folder_that_is_no_model_is_one_line(tmp_path, capsys):
    """sentence-transformers' ValueError on a folder that holds no model was a traceback."""
    corpus, _ = _train_corpus(tmp_path, "a")
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert main(["train", "fusion", str(corpus), "--text", f"st:{folder}", "--text-only",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("erc: error: "), err
    assert f"{folder}: not a sentence-transformers model" in err
    assert not (tmp_path / "run").exists()


def test_a_folder_of_another_stage_given_as_the_utterances_says_so(tmp_path, capsys):
    """`erc train fusion runs/x/features` said only 'features/utterances.parquet: no utterance
    table': the message now says the folder holds another stage's outputs."""
    import json

    from erc.cli import main

    features = tmp_path / "features"
    features.mkdir()
    (features / "manifest.json").write_text(json.dumps({"stage": "preprocess", "fingerprint": "f"}))
    assert main(["train", "fusion", str(features), "--text-only", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{features} holds erc's preprocess outputs, not an utterance table" in err, err
    from erc.artifacts import read_utterances
    from erc.errors import InputError

    with pytest.raises(InputError, match="utterances.parquet: no utterance table \\(give the"):
        read_utterances(tmp_path)  # a folder of no stage: its missing table named


def test_the_report_of_a_run_without_training_shows_no_earlier_runs_results(tmp_path):
    """A run with training off (or other eval splits) on the folder of an earlier run
    showed that run's training curves and evaluations as its own."""
    import json

    from erc.recipes import RunConfig
    from erc.report import write_report
    from erc.settings import validate

    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    (run / "train" / "history.json").write_text(json.dumps(
        [{"epoch": 0, "loss": 1.0, "dev_weighted_f1": 0.5}]))
    metrics = {"accuracy": 0.5, "weighted_f1": 0.5, "macro_f1": 0.5, "n": 200, "per_class": {}}
    for split in ("dev", "extra"):
        (run / f"eval-{split}").mkdir()
        (run / f"eval-{split}" / "metrics.json").write_text(json.dumps(metrics))
    page = write_report(run, RunConfig(output_dir=str(run))).read_text()
    assert "<h2>Training</h2>" in page and "<h3>dev:" in page and "<h3>extra:" not in page
    off = validate(RunConfig, {"output_dir": str(run), "train": {"enabled": False}})
    page = write_report(run, off).read_text()
    assert "<h2>Training</h2>" not in page and "<h2>Evaluation</h2>" not in page


def test_the_parts_of_a_preprocess_run_that_did_not_finish_are_not_read_as_its_features(tmp_path):
    """A preprocess run cut short (a full disk, a kill) leaves some part files in erc's
    folder and no manifest: the readers of a feature folder (training's adapters and
    vectors, ``erc evaluate --features``) took those parts for the features, and every
    utterance of the parts not yet written read as one without vectors, silently. QC
    already refused such a folder; now every reader does, saying what it is."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erc import io
    from erc.artifacts import read_features
    from erc.errors import InputError

    features = io.claim(tmp_path / "features")
    pq.write_table(pa.table({"utterance_id": ["u0"], "status": ["ok"],
                             "speaker_embedding": [[0.5, 0.5]]}), features / "part-00000.parquet")
    with pytest.raises(InputError, match="did not finish"):
        read_features(features)
    theirs = tmp_path / "theirs"  # a folder of part files of the user's is read as it is
    theirs.mkdir()
    (features / "part-00000.parquet").rename(theirs / "part-00000.parquet")
    assert read_features(theirs).num_rows == 1


def test_evaluate_points_at_the_list_of_the_rows_set_aside_that_exists(tmp_path, capsys):
    """The rows set aside before scoring were said to be listed in "problems.parquet beside
    the utterance table" also for a corpus read as it is, which has no such file. A corpus
    read as it is points at `erc corpus ingest`; an ingest output names its own file."""
    model, _ = _fusion_model(tmp_path, [[0.1] * 4] * 2, ["a", "b"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test.csv").write_text("utterance_id,dialogue_id,turn,speaker,text,emotion\n"
                                     "c/test/d0/0,d0,0,A,hi,a\nc/test/d0/1,d0,1,B,,b\n")
    assert main(["corpus", "ingest", str(corpus), "--format", "manifest",
                 "--out", str(tmp_path / "ingest")]) == 0, capsys.readouterr().err
    for name, source, given, listed in (
            ("raw", corpus, ["--format", "manifest"], "`erc corpus ingest` lists each"),
            ("ingest", tmp_path / "ingest", [], f"{tmp_path / 'ingest' / 'problems.parquet'} "
                                                "lists each")):
        capsys.readouterr()
        assert main(["evaluate", str(model), str(source), "--split", "test", *given,
                     "--out", str(tmp_path / f"eval-{name}")]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        line = next(s for s in out.splitlines() if "set aside before scoring" in s)
        assert listed in line and "beside the utterance table" not in line, (name, line)


def test_a_split_without_labels_is_predicted_not_scored_as_zero(tmp_path, capsys):
    """A test file without an emotion column (predictions wanted) wrote accuracy 0.0 and
    F1s of 0.0 into metrics.json and `--json`, as if every turn were wrong, and the run's
    console line and report said "accuracy 0.000". Its scores are null, and said so."""
    import dataclasses

    from erc.recipes import RunConfig
    from erc.report import _evaluate_rows, _evaluation_section
    from erc.stages.base import StageResult
    from erc.stages.main import Step, _describe
    from erc.stages.train import EvaluateStage

    model, corpus = _fusion_model(tmp_path, [[0.1] * 4] * 2, [None, None])
    out = tmp_path / "eval-test"
    assert main(["evaluate", str(model), str(corpus), "--split", "test", "--out", str(out),
                 "--json"]) == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text())
    for m in (printed, metrics):
        assert (m["n"], m["n_unlabelled"]) == (0, 2)
        assert m["accuracy"] is None and m["weighted_f1"] is None and m["macro_f1"] is None
    summary = {k: metrics[k] for k in ("split", "accuracy", "weighted_f1", "macro_f1", "n",
                                       "n_unlabelled")}
    line = _describe(Step("evaluate", EvaluateStage(), None, {}, out),
                     StageResult("evaluate", out, False, summary, 1.0, {}))
    assert "test: no labelled utterance, nothing scored; 2 predicted" in line, line
    run = {"config": dataclasses.asdict(RunConfig(output_dir=str(tmp_path))),
           "evaluations": [str(out)], "train": {"chosen_on": "dev"}}
    assert "test: no labelled utterance, 2 predicted" in _evaluate_rows(run)[0][3]
    assert "no labelled utterance, nothing scored (2 predicted)" in _evaluation_section(tmp_path, run)


def test_evaluate_counts_a_json_line_that_reads_as_nothing_in_its_split(tmp_path, capsys):
    """A line of a JSON Lines file that is no JSON was set aside with no split (the file
    takes the split option, read from the rows that parse): `erc evaluate` counted it in
    no split, so n + n_unlabelled + set_aside fell one short of the file's rows."""
    model, _ = _fusion_model(tmp_path, [[0.1] * 4] * 2, ["a", "b"])
    corpus = tmp_path / "dialogues.jsonl"
    corpus.write_text('{"dialogue_id": "d0", "speaker": "A", "text": "hi", "emotion": "a"}\n'
                      '{"dialogue_id": "d0", "speaker": "B", "text": "yo"}\n'
                      "not json\n")
    assert main(["evaluate", str(model), str(corpus), "--split", "train",
                 "--out", str(tmp_path / "eval")]) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["set_aside"] == {"malformed_row": 1}, metrics
    assert metrics["n"] + metrics["n_unlabelled"] + sum(metrics["set_aside"].values()) == 3
    assert "train: 1 input rows set aside before scoring" in capsys.readouterr().out


def test_evaluate_says_when_a_label_column_goes_by_another_name(tmp_path, capsys):
    """A test file whose labels are in a column `Emotion` (or `label`) read as unlabelled:
    that column went to meta, and `erc evaluate` said only "no labelled utterance", the
    labels lost without a word. It names the column and how to read it."""
    model, _ = _fusion_model(tmp_path, [[0.1] * 4] * 2, ["a", "b"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test.csv").write_text("dialogue_id,speaker,text,Emotion\n"
                                     "d0,A,hi,a\nd0,B,yo,b\nd0,A,so,\n")
    assert main(["evaluate", str(model), str(corpus), "--format", "manifest", "--split", "test",
                 "--out", str(tmp_path / "eval")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "test: no labelled utterance, nothing scored" in out
    assert "its column 'Emotion' (2 values) was not read as labels" in out, out
    assert "columns: {emotion: Emotion}" in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["label_columns_unread"] == {"Emotion": 2}


def test_evaluate_on_labels_the_model_never_predicts_scores_none_without_them(tmp_path, capsys):
    """A test file whose every label is one the model does not predict (another corpus's,
    or numbers) printed "without them: accuracy 0.0000, ... (n=0)", a score of nothing
    that reads as a model wrong on every turn. It says no label is the model's."""
    model, _ = _fusion_model(tmp_path, [[0.1] * 4] * 2, ["a", "b"])
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "test.csv").write_text("dialogue_id,speaker,text,emotion\nd0,A,hi,3\nd0,B,yo,1\n")
    assert main(["evaluate", str(model), str(corpus), "--format", "manifest", "--split", "test",
                 "--out", str(tmp_path / "eval")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "no labelled utterance has a label the model predicts" in out, out
    assert "(n=0)" not in out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["unseen_labels"] == {"1": 1, "3": 1}
    assert metrics["on_model_labels"] == {"n": 0, "accuracy": None, "weighted_f1": None,
                                          "macro_f1": None}


def test_a_row_whose_split_column_went_unread_is_counted_apart_not_in_train(tmp_path, capsys):
    """A test row of a file with a split column whose quote was left open (its split value
    swallowed) was set aside under the default split, train: the test split's counts fell
    one short and train's held a row it never had. Its split is unknown, and said."""
    model, _ = _fusion_model(tmp_path, [[0.1] * 4] * 2, ["a", "b"])
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("dialogue_id,speaker,text,emotion,split\n"
                      "d0,A,hi,a,test\n"
                      'd0,B,"open quote,b,test\n'
                      "d0,A,yo,b,test\n")
    assert main(["evaluate", str(model), str(corpus), "--split", "test",
                 "--out", str(tmp_path / "eval")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 2 and "set_aside" not in metrics, metrics
    assert metrics["set_aside_split_unknown"] == {"unterminated_quote": 1}
    assert "test: 1 more input rows set aside whose split could not be read" in out, out
