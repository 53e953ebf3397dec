"""--overwrite replaces only what erc wrote: a file of the user's where erc writes a result
stops the run with its name, in a folder erc adopts and in one it adopted before; and the
command line's own mistakes (a command that is not one, a split the corpus lacks) read
plainly."""

from __future__ import annotations

import pytest

from erc import io
from erc.cli import main
from erc.errors import OwnershipError
from tests.test_ownership import corpus_csv, digests, plant, refused, saved_fusion_model


@pytest.fixture
def model_and_corpus(tmp_path):
    return str(saved_fusion_model(tmp_path)), str(tmp_path / "utterances.parquet")


def test_evaluate_with_overwrite_leaves_the_users_metrics_in_place(model_and_corpus, tmp_path,
                                                                   capsys):
    """`erc evaluate ... --out DIR --overwrite` replaced DIR/metrics.json, the user's own
    file, without a word; now it stops before evaluating and names it. Once it is moved
    away erc adopts the folder, and replaces its own results on later runs."""
    model, corpus = model_and_corpus
    users = tmp_path / "mine"
    users.mkdir()
    before = plant(users, {"metrics.json": b'{"my": "results"}', "notes.txt": b"my notes"})
    argv = ["evaluate", model, corpus, "--out", str(users), "--overwrite"]
    refused(argv, capsys, str(users / "metrics.json"), "erc did not write",
            "--overwrite replaces only erc's own files", "move it out")
    assert digests(users) == before and sorted(p.name for p in users.iterdir()) == [
        "metrics.json", "notes.txt"]  # left as found: no marker, no lock
    (users / "metrics.json").rename(tmp_path / "my-metrics.json")
    assert main(argv) == 0
    assert main([*argv, "--force"]) == 0  # its own results: replaced
    capsys.readouterr()
    assert (users / "notes.txt").read_bytes() == b"my notes"
    assert b'"accuracy"' in (users / "metrics.json").read_bytes()


def test_train_with_overwrite_leaves_the_users_history_in_place(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    assert main(["corpus", "ingest", str(corpus_csv(tmp_path / "raw")), "--out", str(corpus)]) == 0
    capsys.readouterr()
    users = tmp_path / "fusion"
    users.mkdir()
    before = plant(users, {"history.json": b"[my history]", "notes.txt": b"my notes"})
    refused(["train", "fusion", str(corpus), "--text-only", "--out", str(users), "--overwrite"],
            capsys, str(users / "history.json"), "erc did not write", "--overwrite")
    assert digests(users) == before


def test_an_adopted_folder_keeps_the_users_files_for_good(tmp_path):
    """What a folder held when erc adopted it stays the user's: the writer and remove_owned
    refuse it (a run that reaches it late, or a model folder of the user's holding only
    names erc's model files have); a name the user has since removed becomes erc's."""
    users = tmp_path / "mine"
    before = plant(users, {"metrics.json": b"mine", "model/config.json": b"{}",
                           "model/model.safetensors": b"my weights"})
    io.claim(users, overwrite=True)
    with pytest.raises(OwnershipError, match="metrics.json: erc did not write this"):
        io.write_json(users / "metrics.json", {"n": 1})
    with pytest.raises(OwnershipError, match="model: erc did not write this"):
        io.remove_owned(users, "model")
    with pytest.raises(OwnershipError, match="holds files erc did not write"):
        io.check_outputs(users, ("metrics.json", "model/*", "history.json"))
    io.claim(users)  # claimed again, as the next run does: still the user's
    with pytest.raises(OwnershipError, match="metrics.json"):
        io.write_json(users / "metrics.json", {"n": 1})
    assert digests(users) == {**before, **{k: v for k, v in digests(users).items()
                                          if k.startswith(".erc")}}
    (users / "metrics.json").unlink()
    io.claim(users)
    io.write_json(users / "metrics.json", {"n": 1})
    io.claim(users)
    io.write_json(users / "metrics.json", {"n": 2})  # erc's own now: replaced
    io.check_outputs(users, ("metrics.json",))


def test_a_folder_erc_made_is_its_own_to_replace(tmp_path):
    ours = io.claim(tmp_path / "ours")
    io.write_json(ours / "metrics.json", {"n": 1})
    io.check_outputs(ours, ("metrics.json", "model/*"))
    io.write_json(ours / "metrics.json", {"n": 2})


@pytest.mark.parametrize("argv, says", [
    (["report"], "the report is the last stage of 'erc run'"),
    (["evalute"], "did you mean 'evaluate'?"),
    (["ingest"], "did you mean 'corpus ingest'?"),
    (["train", "fusoin", "x"], "train: argument MODEL: invalid choice: 'fusoin'"),
])
def test_a_command_that_is_not_one_is_named_once(argv, says, capsys):
    """`erc report` printed "erc: error: erc: argument COMMAND: ..."."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("erc: error: ") and err.count("erc: error:") == 1, err
    assert not err.startswith("erc: error: erc"), err
    assert says in err and len(err.splitlines()) == 1, err


def test_evaluate_on_a_split_the_corpus_lacks_lists_its_splits(model_and_corpus, tmp_path,
                                                               capsys):
    """It said "split 'nope' (for dev) is not in the table"."""
    model, corpus = model_and_corpus
    refused(["evaluate", model, corpus, "--split", "nope", "--out", str(tmp_path / "e")], capsys,
            "the corpus has no split 'nope'; its splits are dev")
    assert not (tmp_path / "e").exists()


def _run_over_users_history(tmp_path):
    """A run folder the user made, holding train/history.json (where the train stage
    writes) and notes; the run config, and the digests of what the folder holds."""
    run = tmp_path / "run"
    before = plant(run, {"train/history.json": b"[my history]", "notes.txt": b"my notes"})
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {run}\ncorpus: {{path: {corpus_csv(tmp_path / 'raw')}}}\n")
    return run, config, before


def _nothing_computed(run, before) -> None:
    assert digests(run) == before  # not even erc's marker: the folder is as the user left it
    assert not (run / "corpus").exists() and not (run / "features").exists()


def _tree(folder):
    """Every path under ``folder``, folders too: a file by its bytes, a folder as "/"."""
    return {p.relative_to(folder).as_posix(): "/" if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob("*"))}


def test_run_with_overwrite_stops_before_its_first_stage_at_a_users_file(tmp_path):
    """`erc run --overwrite` met the user's train/history.json only as training wrote it,
    after ingest, preprocess and QC had run; now the run names it before ingest starts."""
    from erc.recipes import load_run_config
    from erc.stages.main import run_main

    run, config, before = _run_over_users_history(tmp_path)
    with pytest.raises(OwnershipError) as refusal:
        run_main(load_run_config(config), overwrite=True, say=lambda _line: None)
    assert f"{run / 'train' / 'history.json'}: erc did not write this" in str(refusal.value)
    assert "--overwrite replaces only erc's own files" in str(refusal.value)
    _nothing_computed(run, before)


def test_the_run_command_names_a_users_file_in_a_later_stages_folder(tmp_path, capsys):
    """The same through the command line: one line, before Ray starts or run.log opens."""
    run, config, before = _run_over_users_history(tmp_path)
    refused(["run", "--config", str(config), "--overwrite"], capsys,
            str(run / "train" / "history.json"), "erc did not write",
            "--overwrite replaces only erc's own files")
    _nothing_computed(run, before)
    assert not (run / "run.log").exists()


@pytest.mark.parametrize("users_file", ["train/history.json", "run.json", "report.html"])
def test_a_refused_run_with_overwrite_leaves_the_folder_exactly_as_it_was(tmp_path, capsys,
                                                                          users_file):
    """`erc run --overwrite` refused over a file of the user's (in a stage's folder or where
    the run itself writes) still adopted the folder first: .erc and .erc-foreign.json were
    left among the user's files. Every check now comes before anything is written."""
    run = tmp_path / "run"
    plant(run, {users_file: b"mine", "notes.txt": b"my notes", "empty/.keep": b""})
    (run / "empty" / ".keep").unlink()  # an empty folder of the user's counts too
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {run}\ncorpus: {{path: {corpus_csv(tmp_path / 'raw')}}}\n")
    before = _tree(run)
    refused(["run", "--config", str(config), "--overwrite"], capsys,
            str(run / users_file), "erc did not write")
    assert _tree(run) == before


def test_a_stage_in_a_folder_adopted_before_names_the_users_file_before_it_computes(tmp_path):
    """A folder adopted by an earlier --overwrite run keeps the user's files: a later
    stage there, --overwrite or not, stops before it computes (base.execute checks)."""
    from erc.stages.base import Stage, execute

    class Writes(Stage):
        name = "writes"
        results = ("metrics.json",)

        def run(self, ctx):
            raise AssertionError("computed with a file of the user's in the way")

    users = tmp_path / "mine"
    plant(users, {"metrics.json": b"mine"})
    for overwrite in (True, False):
        with pytest.raises(OwnershipError, match="metrics.json: erc did not write this"):
            execute(Writes(), {}, {}, users, overwrite=overwrite, say=lambda _line: None)
        io.claim(users, overwrite=True)  # adopted: the second round runs without --overwrite
    assert (users / "metrics.json").read_bytes() == b"mine"


def test_a_search_names_a_users_file_in_its_folder_before_its_trials(tmp_path):
    """erc tune in a folder erc adopted for the user stopped only as it wrote its results,
    after every trial; it now stops before Tune starts (a search spec, no table read)."""
    from erc.tune.driver import run_search
    from erc.tune.space import parse_spec

    users = tmp_path / "search"
    plant(users, {"best_config.yaml": b"my best config"})
    io.claim(users, overwrite=True)
    spec = parse_spec({"family": "fusion", "params": {"lr": {"loguniform": [1e-4, 1e-2]}}})
    with pytest.raises(OwnershipError, match="best_config.yaml: erc did not write this"):
        run_search(spec, None, users)
    assert (users / "best_config.yaml").read_bytes() == b"my best config"
    assert not (users / "search.json").exists() and not (users / "ray").exists()


@pytest.mark.parametrize("overwrite", [True, False])
def test_a_file_where_a_later_stages_folder_goes_stops_the_run_before_the_ingest(
        tmp_path, capsys, overwrite):
    """A file named features in the run folder (one of the user's adopted with --overwrite,
    or put in erc's own folder) stopped the run only as preprocess claimed its folder,
    after the whole ingest (and, with --overwrite, having adopted the folder)."""
    run = tmp_path / "run"
    if overwrite:
        plant(run, {"features": b"mine"})
    else:
        io.claim(run)
        (run / "features").write_bytes(b"mine")
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {run}\ncorpus: {{path: {corpus_csv(tmp_path / 'raw')}}}\n")
    before = _tree(run)
    refused(["run", "--config", str(config), "--until", "preprocess"]
            + ["--overwrite"] * overwrite, capsys,
            f"{run / 'features'}: exists and is not a folder")
    assert _tree(run) == before


def _corpus_with_split_folders(folder):
    """A manifest corpus of split folders: train/ (3 rows) and dev/ (2 rows)."""
    return plant(folder, {
        "train/part-0.csv": b"dialogue_id,speaker,text\nd1,A,hello\nd1,B,hi\nd2,A,yes\n",
        "dev/part-0.csv": b"dialogue_id,speaker,text\nd9,A,hello\nd9,B,no\n"})


def test_a_corpus_folder_of_the_users_is_not_adopted_as_an_output(tmp_path, capsys):
    """`--out CORPUS/train --overwrite` (of `erc corpus ingest` or `erc run`) marked the
    corpus's train/ folder as erc's: readers skip erc's output folders inside a corpus,
    so its 3 rows were silently not read (2 input rows, all dev). Refused now, before
    anything is written."""
    corpus = tmp_path / "corpus"
    before = _corpus_with_split_folders(corpus)
    refused(["corpus", "ingest", str(corpus), "--format", "manifest", "--out",
             str(corpus / "train"), "--overwrite"], capsys,
            f"{corpus / 'train'}: a folder of the corpus", "would no longer be read")
    refused(["run", "--out", str(corpus / "train"), "--overwrite", "-o", f"corpus.path={corpus}",
             "-o", "corpus.format=manifest"], capsys, f"{corpus / 'train'}: a folder of the corpus")
    assert digests(corpus) == before and sorted(p.name for p in corpus.iterdir()) == ["dev", "train"]
    assert main(["corpus", "ingest", str(corpus), "--format", "manifest", "--out",
                 str(corpus / "ingested"), "--json"]) == 0  # a new folder inside it: fine
    assert '"input_rows": 5' in capsys.readouterr().out


def test_a_run_into_its_corpus_folder_is_refused_before_it_writes(tmp_path, capsys):
    """`erc run --out CORPUS --overwrite`, the corpus a folder of tables: the run wrote its
    run.json there first, and its ingest then read that as a manifest of the corpus (an
    error after Ray had started; a later run.json or manifest.json read as rows). Refused
    now before anything is written, as the ingest's own folder was."""
    corpus = tmp_path / "corpus"
    before = plant(corpus, {"chat.csv": b"dialogue_id,speaker,text\nd1,A,hello\nd1,B,hi\n"})
    refused(["run", "--out", str(corpus), "--overwrite", "-o", f"corpus.path={corpus}",
             "-o", "corpus.format=manifest"], capsys,
            f"{corpus}: is the corpus folder itself", "one inside the corpus folder works")
    assert digests(corpus) == before and [p.name for p in corpus.iterdir()] == ["chat.csv"]
