"""Stages and their one fingerprint mechanism: an unchanged re-run recomputes nothing; a
changed setting or upstream output recomputes exactly the stages downstream of it; the
dry run says the same without running anything; output folders are erc's own."""

from __future__ import annotations

import json

import pytest

from erc.errors import BusyError, OwnershipError
from erc.recipes import load_run_config
from erc.stages.base import Stage, StageContext, content_fingerprint, execute
from tests.conftest import lock_held_elsewhere
from tests.test_main_job import _manifest

ORDER = ["corpus", "features", "qc", "adapters", "train", "eval-dev", "eval-test", "report"]


def _ran(record: dict) -> list[str]:
    stages = {**record["stages"]}
    ran = [name for name in ORDER[:-1] if name in stages and not stages[name]["skipped"]]
    return ran + (["report"] if record.get("report_ran") else [])


@pytest.mark.slow
def test_a_change_recomputes_exactly_the_stages_downstream_of_it(ray_local, tmp_path):
    from erc.stages.main import plan, run_main

    manifest, _ = _manifest(tmp_path)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(f"output_dir: {tmp_path / 'run'}\ncorpus: {{path: {manifest.name}}}\n"
                           # one model per training (the choice is tested in test_main_job)
                           "train: {epochs: 2, choose_speaker_pool: false}\n")

    def run(overrides: dict | None = None) -> list[str]:
        config = load_run_config(config_file, overrides)
        report = tmp_path / "run" / "manifest.json"
        before = report.read_text() if report.is_file() else None
        record = run_main(config, say=lambda _message: None)
        record["report_ran"] = report.read_text() != before
        return _ran(record)

    assert run() == ORDER  # the first run computes everything
    assert run() == []  # an unchanged re-run recomputes nothing
    # a training setting: the model, its evaluations and the report
    assert [r[0] for r in plan(load_run_config(config_file, {"train": {"epochs": 3}}))
            if r[2] != "up to date"] == ["train", "evaluate", "evaluate", "report"]
    assert run({"train": {"epochs": 3}}) == ["train", "eval-dev", "eval-test", "report"]
    # a preprocessing setting that changes the feature files: the stages that read them;
    # the evaluations only if the retrained model's folder differs (it is trained afresh, not
    # resumed from checkpoints of other inputs: its metrics hold new timings)
    model = tmp_path / "run" / "train" / "model"
    before = content_fingerprint(model)
    changed = {"train": {"epochs": 3}, "preprocess": {"partition_rows": 7}}
    ran = run(changed)
    evaluations = ["eval-dev", "eval-test"] if content_fingerprint(model) != before else []
    assert ran == ["features", "qc", "adapters", "train", *evaluations, "report"]
    # a QC threshold that keeps the same utterances: QC and the report, nothing in between
    stricter = {**changed, "qc": {"alignment": {"lev_threshold": 0.4}}}
    assert run(stricter) == ["qc", "report"]
    # an upstream input: an edited transcript in the corpus file
    manifest.write_text(manifest.read_text().replace("I miss her so much.", "I miss him so much.", 1))
    assert run(stricter) == ORDER
    assert run(stricter) == []


class _Echo(Stage):
    name = "echo"
    inputs = ("source",)
    results = ("copy.txt",)

    def run(self, ctx: StageContext) -> dict:
        text = ctx.inputs["source"].read_text()
        (ctx.out / "copy.txt").write_text(text)
        return {"chars": len(text)}


def test_fingerprints_follow_content_not_paths_or_times(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("hello")
    first = execute(_Echo(), {"n": 1}, {"source": source}, tmp_path / "out")
    assert not first.skipped and first.summary == {"chars": 5}
    assert execute(_Echo(), {"n": 1}, {"source": source}, tmp_path / "out").skipped
    source.write_text("hello")  # rewritten, same bytes
    assert execute(_Echo(), {"n": 1}, {"source": source}, tmp_path / "out").skipped
    assert not execute(_Echo(), {"n": 2}, {"source": source}, tmp_path / "out").skipped
    source.write_text("hello!")
    assert not execute(_Echo(), {"n": 2}, {"source": source}, tmp_path / "out").skipped
    (tmp_path / "out" / "copy.txt").write_text("tampered")  # a result changed by hand
    assert not execute(_Echo(), {"n": 2}, {"source": source}, tmp_path / "out").skipped
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert content_fingerprint(tmp_path / "out") == manifest["content"]
    assert list(manifest["files"]) == ["copy.txt"]


def test_a_stage_never_writes_its_results_over_its_inputs(tmp_path):
    """`erc evaluate MODEL --out MODEL --overwrite` replaced the model's metrics.json with
    the evaluation's: an output folder that is an input, or that holds an input file under
    a name the stage writes, is refused before anything is written, --overwrite or not."""
    from erc.errors import InputError

    model = tmp_path / "model"
    model.mkdir()
    (model / "copy.txt").write_text("the model's own")
    with pytest.raises(InputError, match="is echo's input source"):
        execute(_Echo(), {}, {"source": model}, model / ".." / "model", overwrite=True)
    source = tmp_path / "users" / "copy.txt"  # a file named like a result, in the output folder
    source.parent.mkdir()
    source.write_text("mine")
    with pytest.raises(InputError, match="would write its copy.txt over this file it reads"):
        execute(_Echo(), {}, {"source": source}, source.parent, overwrite=True)
    assert (model / "copy.txt").read_text() == "the model's own" and source.read_text() == "mine"
    assert sorted(p.name for p in model.iterdir()) == ["copy.txt"]
    assert sorted(p.name for p in source.parent.iterdir()) == ["copy.txt"]
    other = tmp_path / "users" / "in.txt"  # any other name there is read, not written over
    other.write_text("x")
    assert execute(_Echo(), {}, {"source": other}, tmp_path / "users" / "out").summary == {"chars": 1}


def test_output_folders_are_claimed_and_locked(tmp_path):
    from erc import io

    source = tmp_path / "in.txt"
    source.write_text("x")
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OwnershipError, match="holds files erc did not write"):
        execute(_Echo(), {}, {"source": source}, foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    execute(_Echo(), {}, {"source": source}, foreign, overwrite=True)  # adopted on request
    assert (foreign / "notes.txt").read_text() == "mine"

    with lock_held_elsewhere(tmp_path / "busy"):
        with pytest.raises(BusyError, match="another erc run is writing"):
            execute(_Echo(), {}, {"source": source}, tmp_path / "busy", force=True)
    with io.locked(tmp_path / "busy"):  # within one process the lock nests
        execute(_Echo(), {}, {"source": source}, tmp_path / "busy", force=True)
    with pytest.raises(OwnershipError):
        io.remove_owned(tmp_path / "theirs-too", "x")


def test_the_dry_run_lists_the_stages_the_config_runs_and_no_other(tmp_path):
    """A dry run before the first run listed every stage erc has (a text fine-tune, QC and
    adapters the config turned off among them), each "waiting" with an error about a file
    not written yet; the run itself numbered its stages out of all eight."""
    from erc.stages.main import configured_stages, plan

    manifest, _ = _manifest(tmp_path)
    text_only = load_run_config(None, {"output_dir": str(tmp_path / "run"),
                                       "corpus": {"path": str(manifest)}, "qc": {"enabled": False},
                                       "train": {"modalities": ["text"]}})
    rows = plan(text_only)
    assert [r[0] for r in rows] == configured_stages(text_only) == [
        "ingest", "preprocess", "train", "evaluate", "report"]
    assert [r[2] for r in rows] == ["not run yet"] + ["runs if ingest changes its output"] + \
        ["runs after ingest"] * 3
    default = load_run_config(None, {"output_dir": str(tmp_path / "run"),
                                     "corpus": {"path": str(manifest)}})
    assert configured_stages(default) == ["ingest", "preprocess", "qc", "adapters", "train",
                                          "evaluate", "report"]
    assert "text" in configured_stages(load_run_config(None, {"train": {"text_tokens": "both"}}))


def test_the_dry_run_of_an_interrupted_preprocess_says_what_it_keeps(ray_local, tmp_path):
    """A preprocessing pass stopped part-way (whole part files, no record yet) was planned
    as "not run yet", though the run resumes from its finished partitions: it now says how
    many are done and how many it computes, and the run computes those only."""
    from erc.stages.main import plan, run_main

    manifest, n = _manifest(tmp_path)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(f"output_dir: {tmp_path / 'run'}\ncorpus: {{path: {manifest.name}}}\n"
                           "preprocess: {partition_rows: 40}\n")
    config = load_run_config(config_file)
    run_main(config, last="preprocess", say=lambda _message: None)
    features = tmp_path / "run" / "features"
    parts = sorted(features.glob("part-*.parquet"))
    assert len(parts) == -(-n // 40) > 2
    (features / "manifest.json").unlink()  # what a pass killed after its first parts leaves
    for part in parts[2:]:
        part.unlink()
    rows = {stage: state for stage, _, state in plan(config)}
    assert rows["ingest"] == "up to date"
    assert rows["preprocess"] == (f"interrupted: 2 of {len(parts)} partitions done, "
                                  f"{len(parts) - 2} to compute")
    record = run_main(config, last="preprocess", say=lambda _message: None)
    assert record["stages"]["features"]["summary"]["partitions"] == {
        "total": len(parts), "written": len(parts) - 2, "skipped": 2}
    assert {stage: state for stage, _, state in plan(config)}["preprocess"] == "up to date"


def test_a_writer_killed_mid_write_leaves_no_scratch_file_after_the_next_run(tmp_path):
    """A process killed with SIGKILL while writing (a driver mid-partition) left its
    .part-NNNNN.parquet.<pid>-<hex>.tmp in the folder for good: no run removed it. The next
    run to lock the folder removes it; a live writer's file, and what a folder of erc's
    inside holds (its own run cleans it), stay."""
    import os
    import signal
    import subprocess
    import sys

    from erc import io

    source = tmp_path / "in.txt"
    source.write_text("x")
    out = tmp_path / "out"
    execute(_Echo(), {}, {"source": source}, out)
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom erc import io\n"
         "with io.atomic_path(sys.argv[1]) as tmp:\n"
         "    tmp.write_bytes(b'half a part')\n    print('written', flush=True)\n"
         "    time.sleep(60)\n", str(out / "part-00000.parquet")],
        stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "written\n"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    [left] = [p.name for p in out.iterdir() if p.name.startswith(".part-")]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / f".copy.txt.{live.pid}-0123abcd.tmp").write_text("being written")
        inner = io.claim(out / "inner")
        (inner / f".x.{writer.pid}-0123abcd.tmp").write_text("its own run's to clean")
        assert execute(_Echo(), {}, {"source": source}, out).skipped
        names = {p.name for p in out.iterdir()}
        assert left not in names and not (out / "part-00000.parquet").exists()
        assert f".copy.txt.{live.pid}-0123abcd.tmp" in names
        assert (inner / f".x.{writer.pid}-0123abcd.tmp").is_file()
        with io.locked(inner):
            assert not list(inner.glob("*.tmp"))
    finally:
        live.kill()
        live.wait()


def test_a_models_options_are_in_its_partitions_fingerprint():
    """An option of a model (-o overrides.asr.options.beam_size=1) made the stage run, but
    every partition stayed "up to date": features of the old options served as the new
    ones'. Without options, the fingerprint is the one parts made before were given."""
    from erc.pipeline.preprocess import fingerprint, plan
    from erc.recipes import PreprocessConfig
    from erc.schema import utterance_table
    from erc.settings import validate

    table = utterance_table([{"utterance_id": f"u{i}", "corpus": "toy", "split": "train",
                              "dialogue_id": "d", "turn": i, "speaker": "A", "text": f"line {i}",
                              "emotion": "neutral"} for i in range(3)])
    base = plan(table, PreprocessConfig())
    assert base.fingerprints == [fingerprint(base.parts[0], base.settings, [base.records["text"]])]
    options = validate(PreprocessConfig, {"overrides": {"text": {"options": {"batch": 8}}}})
    assert plan(table, options).fingerprints != base.fingerprints


def test_an_output_folder_inside_an_input_folder_is_not_part_of_its_fingerprint(tmp_path):
    """A folder input without a manifest (data/ holding utterances.parquet) is fingerprinted
    by its files: an erc output folder put inside it (data/features, data/run) changed the
    input's fingerprint with every run, so the stage writing there was never up to date."""
    from erc import io
    from erc.stages.base import content_fingerprint

    data = tmp_path / "data"
    data.mkdir()
    (data / "utterances.parquet").write_bytes(b"table")
    before = content_fingerprint(data)
    with io.claimed(data / "run") as out:
        (out / "model.bin").write_bytes(b"weights")
    (data / "run" / "nested").mkdir()
    (data / "run" / "nested" / "more.bin").write_bytes(b"more")
    assert content_fingerprint(data) == before
    (data / "notes.txt").write_text("the user's own file")  # what the input holds: counted
    assert content_fingerprint(data) != before
    (data / "other").mkdir()
    (data / "other" / "x.csv").write_text("a folder erc did not create: counted")
    assert content_fingerprint(data) != before


def _files_and_times(folder) -> dict:
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _read_only_mount(monkeypatch, folder) -> None:
    """``folder`` as on a read-only mount (root writes into a folder that chmod made
    read-only, so that is not enough): no write access, and opening a file there to
    write fails with EROFS, as erc's lock did."""
    import errno
    import os

    inside = str(folder.resolve())
    access, open_ = os.access, os.open

    def under(path) -> bool:
        return os.path.abspath(os.fspath(path)).startswith(inside)

    def fake_access(path, mode, *args, **kwargs):
        return False if mode & os.W_OK and under(path) else access(path, mode, *args, **kwargs)

    def fake_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return open_(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "access", fake_access)
    monkeypatch.setattr(os, "open", fake_open)


def test_an_up_to_date_stage_on_a_read_only_disk_writes_nothing(tmp_path, monkeypatch):
    """A finished output folder on a read-only mount failed on taking its lock: an up to
    date stage has nothing to write, so it reads its result without the lock."""
    source = tmp_path / "in.txt"
    source.write_text("hello")
    out = tmp_path / "out"
    execute(_Echo(), {"n": 1}, {"source": source}, out)
    before = _files_and_times(out)
    _read_only_mount(monkeypatch, out)
    again = execute(_Echo(), {"n": 1}, {"source": source}, out)
    assert again.skipped and again.summary == {"chars": 5}
    assert _files_and_times(out) == before
    with pytest.raises(OSError, match="Read-only file system"):  # one that must write, can't
        execute(_Echo(), {"n": 2}, {"source": source}, out)


def test_a_finished_run_on_a_read_only_disk_writes_nothing(tmp_path, monkeypatch, capsys):
    """`erc run` again on a finished run folder that is read-only: every stage up to date,
    so it says so and writes nothing (no lock, run.log or run.json); a stage that would
    run is an error naming it."""
    import subprocess
    import sys

    from erc.cli import main

    manifest, _ = _manifest(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\ncorpus: {{path: {manifest.name}}}\n")
    argv = ["run", "--config", str(config), "--until", "ingest"]
    done = subprocess.run([sys.executable, "-m", "erc.cli", *argv], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "run"
    before = _files_and_times(run)
    _read_only_mount(monkeypatch, run)
    assert main(argv) == 0
    said = capsys.readouterr()
    assert "read-only and every stage up to date: nothing written" in said.out, said
    assert "ingest      up to date" in said.out
    assert _files_and_times(run) == before
    assert main([*argv, "-o", "corpus.options.split=dev"]) == 2
    assert "is read-only, and stage ingest would write there (changed: its settings)" in \
        capsys.readouterr().err
    assert _files_and_times(run) == before


@pytest.mark.parametrize("features", ["run/corpus", "run", "run/eval-test"])
def test_a_features_folder_of_another_stage_stops_the_run_before_it_starts(tmp_path, capsys,
                                                                            features):
    """`-o preprocess.output_dir=` the ingest's folder (or the run's own, where the report
    goes): the run ingested, then stopped at the preprocess stage (or, the run's own
    folder, at the report, after all the training); now it stops before it writes anything."""
    from erc.cli import main

    manifest, _ = _manifest(tmp_path)
    code = main(["run", "-o", f"corpus.path={manifest}", "--out", str(tmp_path / "run"),
                 "-o", f"preprocess.output_dir={tmp_path / features}"])
    err = capsys.readouterr().err
    assert code == 2 and f"{tmp_path / features}: the output folder of both the " in err, err
    assert "each stage writes a folder of its own" in err
    assert not (tmp_path / "run").exists()
