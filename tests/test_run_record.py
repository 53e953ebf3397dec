"""What a run folder says about the run that last wrote it: run.json of a failed run, and
the stage folders its report shows (only this config's, never an earlier run's)."""

import json

import pytest

from erc.recipes import RunConfig
from erc.stages import main as main_job
from erc.stages.base import Stage
from erc.stages.layout import Layout


def _with_text_stage(out) -> RunConfig:
    """A run config whose main job has a text stage (the stage the fake steps run first)."""
    config = RunConfig(output_dir=str(out))
    config.train.text_tokens = "both"
    return config


class _Done(Stage):
    name = "text"
    results = ("done.txt",)

    def run(self, ctx):
        (ctx.out / "done.txt").write_text("ok")
        return {"rows": 1}


class _Broken(Stage):
    name = "train"

    def run(self, ctx):
        raise RuntimeError("loss is nan")


def test_a_failed_run_records_the_stage_that_failed(tmp_path, monkeypatch):
    """A run whose training failed left run.json as the previous (successful, maybe
    other config's) run wrote it, so the folder claimed a finished run. Now run.json says
    which stage failed and why, with what ran before it."""
    out = tmp_path / "run"
    config = _with_text_stage(out)

    def steps(config, say):
        yield main_job.Step("text", _Done(), {}, {}, out / "text")
        yield main_job.Step("train", _Broken(), {}, {}, out / "train")

    monkeypatch.setattr(main_job, "steps", steps)
    with pytest.raises(RuntimeError):
        main_job.run_main(config, say=lambda _line: None)
    record = json.loads((out / "run.json").read_text())
    assert record["failed"] == {"stage": "train", "after": "text", "error": "loss is nan"}
    assert record["stages"]["text"]["summary"] == {"rows": 1}
    assert "report" not in record["outputs"]


class _Peeks(Stage):
    """Reads run.json while it runs: what a run killed there (SIGKILL) leaves."""
    name = "train"
    seen: list = []

    def run(self, ctx):
        _Peeks.seen.append(json.loads((ctx.out.parent / "run.json").read_text()))
        return {}


def test_a_run_killed_midway_leaves_no_earlier_runs_record_standing(tmp_path, monkeypatch):
    """A run killed with SIGKILL (no except clause runs) left run.json as the earlier,
    finished run wrote it: the folder claimed a run that finished. While a run goes on,
    run.json says it has not finished, and the stages it has done."""
    out = tmp_path / "run"
    config = _with_text_stage(out)

    def steps(config, say):
        yield main_job.Step("text", _Done(), {}, {}, out / "text")
        yield main_job.Step("train", _Peeks(), {}, {}, out / "train")

    monkeypatch.setattr(main_job, "steps", steps)
    main_job.run_main(config, say=lambda _line: None)
    assert "failed" not in json.loads((out / "run.json").read_text())
    main_job.run_main(config, force=True, say=lambda _line: None)
    second = _Peeks.seen[-1]
    assert second["failed"] == {"stage": None, "after": "text", "error": main_job.UNFINISHED}
    assert second["stages"]["text"]["summary"] == {"rows": 1}
    assert "failed" not in json.loads((out / "run.json").read_text())


def test_the_report_shows_only_this_configs_stage_folders(tmp_path):
    """`--out` of a run with training and eval splits dev and old, then a run of a config
    with training disabled (or other eval splits): the report listed the earlier run's
    train/ and eval-old/ as this run's outputs."""
    out = tmp_path / "run"
    for name in ("corpus", "features", "qc", "adapters", "text", "train", "eval-dev", "eval-old"):
        (out / name).mkdir(parents=True)
    config = RunConfig(output_dir=str(out))
    config.train.eval_splits = ["dev"]
    assert set(Layout(config).stage_folders()) == {"corpus", "features", "qc", "adapters",
                                                   "train", "eval-dev"}
    config.train.enabled = False
    config.qc.enabled = False
    assert set(Layout(config).stage_folders()) == {"corpus", "features"}


class _TrainsLikeRay(Stage):
    """What Ray Train does with Ctrl-C: its own SIGINT handler (aborts the run, left
    installed after ``fit``), then ``fit`` raises SystemExit(1)."""
    name = "train"

    def run(self, ctx):
        import signal

        signal.signal(signal.SIGINT, lambda signum, frame: None)
        signal.raise_signal(signal.SIGINT)
        raise SystemExit(1)


def test_ctrl_c_during_training_is_recorded_as_an_interrupt(tmp_path, monkeypatch):
    """Ctrl-C while Ray Train trained ended erc with exit status 1 and no word (Ray's
    handler swallowed the KeyboardInterrupt), run.json said the error was '1', and Ray's
    handler stayed installed for the stages after. Now the run ends with Interrupted
    (erc run: one line, exit status 130), run.json records the interrupt, and the SIGINT
    handler of before the stage is back."""
    import signal

    out = tmp_path / "run"
    config = _with_text_stage(out)

    def steps(config, say):
        yield main_job.Step("text", _Done(), {}, {}, out / "text")
        yield main_job.Step("train", _TrainsLikeRay(), {}, {}, out / "train")

    monkeypatch.setattr(main_job, "steps", steps)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as err:
        main_job.run_main(config, say=lambda _line: None)
    assert str(err.value) == "interrupted during train; run again to resume"
    assert signal.getsignal(signal.SIGINT) is before
    record = json.loads((out / "run.json").read_text())
    assert record["failed"] == {"stage": "train", "after": "text", "error": "interrupted"}


@pytest.mark.parametrize("command", ["fusion", "text"])
def test_ctrl_c_during_erc_train_is_an_interrupt(tmp_path, monkeypatch, capsys, command):
    """`erc train fusion|text` interrupted with Ctrl-C while Ray Train trained ended with
    exit status 1 (or 0, when Ray's handler calls sys.exit(0)) and not a word: the main
    job's handling of Ray Train's SIGINT was not the training commands'. Now: one line,
    exit status 130, as for any interrupted command; the SIGINT handler of before is back."""
    import signal

    import erc.cli.train as train_cli
    from erc.cli import main

    def execute(stage, *args, **kwargs):
        return _TrainsLikeRay().run(None)

    monkeypatch.setattr(train_cli, "execute", execute)
    monkeypatch.setattr("erc.train.vectors.resolve_text_encoder", lambda name: name)
    before = signal.getsignal(signal.SIGINT)
    argv = {"fusion": ["--text", f"parquet:{tmp_path / 'vectors.parquet'}"],
            "text": ["--encoder", str(tmp_path / "encoder")]}[command]
    assert main(["train", command, str(tmp_path / "corpus"), *argv,
                 "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip() == "erc: interrupted"
    assert signal.getsignal(signal.SIGINT) is before


def test_a_stage_that_exits_without_ctrl_c_is_not_an_interrupt(tmp_path, monkeypatch):
    out = tmp_path / "run"
    config = RunConfig(output_dir=str(out))

    class _Exits(Stage):
        name = "train"

        def run(self, ctx):
            raise SystemExit(3)

    monkeypatch.setattr(main_job, "steps",
                        lambda config, say: iter([main_job.Step("train", _Exits(), {}, {}, out / "t")]))
    with pytest.raises(SystemExit):
        main_job.run_main(config, say=lambda _line: None)
    assert json.loads((out / "run.json").read_text())["failed"]["error"] == "3"


def test_until_evaluate_evaluates_every_split(tmp_path, monkeypatch):
    """`erc run --until evaluate` stopped after the first evaluation step: of the splits
    dev and test, test was never evaluated, and nothing said so."""
    out = tmp_path / "run"
    config = RunConfig(output_dir=str(out))

    class _Evaluated(_Done):
        name = "evaluate"

    def steps(config, say):
        for split in ("dev", "test"):
            yield main_job.Step("evaluate", _Evaluated(), {}, {}, out / f"eval-{split}")

    monkeypatch.setattr(main_job, "steps", steps)
    record = main_job.run_main(config, say=lambda _line: None, last="evaluate")
    assert "failed" not in record and set(record["stages"]) == {"eval-dev", "eval-test"}


def test_until_stops_before_the_next_step_is_built(tmp_path, monkeypatch):
    """`--until text` built the train step after running text, and building it checks
    inputs the run was told it does not need (a missing dev split failed the run)."""
    out = tmp_path / "run"
    config = _with_text_stage(out)

    def steps(config, say):
        yield main_job.Step("text", _Done(), {}, {}, out / "text")
        raise AssertionError("train step built after --until text")

    monkeypatch.setattr(main_job, "steps", steps)
    record = main_job.run_main(config, say=lambda _line: None, last="text")
    assert "failed" not in record and record["stages"]["text"]["summary"] == {"rows": 1}
