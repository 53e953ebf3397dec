"""The main job on corpora a user brings on day one: a transcript-only manifest (no media)
runs through every stage on text alone, and its report reads right in a real browser;
missing model weights stop it with what to do."""

import csv
import json
import re
import subprocess
import sys

import pytest

from erc.report import MIN_JUDGED
from tests.browser import chromium_or_skip, load_page

ROWS = {"neutral": "The meeting is at noon.", "joy": "This is wonderful news!",
        "anger": "Stop doing that right now!", "sadness": "I miss her so much."}


# The test split is large enough to judge an accuracy on, the dev split is not.
DIALOGUES = {"train": 6, "dev": 2, "test": MIN_JUDGED // 4}


def _manifest(folder):
    emotions = list(ROWS)
    rows = []
    for split, dialogues in DIALOGUES.items():
        for d in range(dialogues):
            for turn in range(4):
                emotion = emotions[(d + turn) % 4]
                rows.append({"dialogue_id": f"{split}{d}", "speaker": "AB"[turn % 2],
                             "text": ROWS[emotion], "emotion": emotion, "split": split})
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path, len(rows)


def _run(config, cwd, *options, timeout=600):
    return subprocess.run([sys.executable, "-m", "erc.cli", "run", "--config", str(config),
                           *options], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_until_stops_before_building_the_stages_after_it(tmp_path):
    """`--until ingest` on a fresh folder: the later stages, whose inputs do not exist
    yet, are not even planned."""
    manifest, n = _manifest(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\ncorpus: {{path: {manifest.name}}}\n")
    done = _run(config, tmp_path, "--until", "ingest", timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "run" / "corpus" / "utterances.parquet").is_file()
    assert not (tmp_path / "run" / "features").exists()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """`erc run --verbose` on a transcript-only manifest: (finished process, run folder,
    utterances)."""
    folder = tmp_path_factory.mktemp("text-only")
    manifest, n = _manifest(folder)
    config = folder / "run.yaml"
    config.write_text(f"output_dir: {folder / 'run'}\ncorpus: {{path: {manifest.name}}}\n"
                      "train: {epochs: 2}\n")
    done = _run(config, folder, "--verbose")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done, folder / "run", n


@pytest.mark.slow
def test_a_corpus_without_media_trains_on_text_alone(text_run):
    done, run, n = text_run
    assert f"rows in {n}, rows out {n}: ok 0, text_only {n}, failed 0" in done.stdout
    assert "speaker: no embeddings" in done.stdout and "face: no embeddings" in done.stdout
    assert "modalities: text" in done.stdout
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert metrics["n"] == DIALOGUES["test"] * 4
    assert (run / "report.html").is_file()
    # The default text tokens: the pass's last four layers of MiniLM, as `erc train fusion`.
    fusion = json.loads((run / "train" / "model" / "config.json").read_text())
    assert fusion["features"]["text"]["column"] == "text_layers"
    assert fusion["config"]["dims"]["text"] == 4 * 384
    # The default fusion model: with or without speaker pooling, the better on dev kept
    choice = json.loads((run / "train" / "candidates.json").read_text())
    assert fusion["config"]["speaker_pool"] is (choice["chosen"] == "speaker-pool")
    assert re.search(rf"kept {choice['chosen']}, (the better|the first of equals: a tie) on dev",
                     done.stdout)
    # dev's figure is not a held-out one (training chose on it); test's is
    assert re.search(r"\] dev \(training chose on it: an optimistic figure, not a held-out "
                     r"one\)\n", done.stdout)
    assert re.search(r"\] test\n", done.stdout)


@pytest.mark.slow
def test_verbose_prints_what_the_log_keeps_without_colour(text_run):
    """With --verbose the console gets Ray's records and its workers' output (which
    otherwise go to run.log only); off a terminal, no colour codes either way."""
    done, run, _ = text_run
    console = done.stdout + done.stderr
    assert re.search(r" INFO ray\.data\S*: Execution plan of Dataset", console)
    assert re.search(r"\(RayTrainWorker pid=\d+\) \[train\] epoch 1: loss", console)
    assert "\x1b[" not in console
    log = (run / "run.log").read_text()
    assert "Execution plan of Dataset" in log and "\x1b[" not in log
    assert done.stdout.strip().splitlines()[-1] in log  # the log has what the console had


@pytest.mark.slow
def test_report_reads_right_in_a_real_browser(text_run, tmp_path):
    """The main report and the QC report load in headless Chromium without a console error
    and with every image rendered; the stage notes are words, not Python dicts; the dev
    split (8 utterances) carries the too-small banner, the test split (100) does not."""
    chromium_or_skip()
    _, run, n = text_run
    for page, images in ((run / "report.html", 5), (run / "qc" / "report.html", 3)):
        shown = load_page(page, tmp_path / f"chromium-{page.parent.name}",
                          screenshot=page.with_suffix(".png"))
        assert shown.console_errors == [], (page, shown.console_errors)
        assert len(shown.images) >= images, shown.images
        assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 for i in shown.images), shown.images
        assert page.with_suffix(".png").stat().st_size > 10_000
    html = (run / "report.html").read_text()
    assert "{'" not in html and "'}" not in html
    assert "0 set aside; per split: dev 8, test 100, train 24" in html
    assert f"0 with every modality, {n} text only, 0 failed" in html
    dev, test = html.split("<h3>dev:")[1].split("<h3>test:")
    assert "Too small to judge accuracy" in dev and "Too small to judge accuracy" not in test
    chose = "Training chose its epoch (and candidate) on this split"  # dev: not held out
    assert chose in dev and chose not in test
    assert "dev: accuracy" in html and "(training chose on it: optimistic)" in html
    assert "Too small to judge accuracy.</b> Of labelled utterances, dev has 8:" in html
    for heading in ("Per split", "Per emotion", "Per speaker"):
        assert f"<h3>{heading}</h3>" in html


@pytest.mark.slow
def test_the_main_job_fine_tunes_the_text_encoder_before_fusion(tmp_path):
    """``train.text_tokens: both``: a text stage fine-tunes MiniLM on the training split
    (window inputs), the fusion model reads its vectors beside the pass's frozen ones, a
    re-run skips both, and the dry run lists the stage."""
    manifest, _ = _manifest(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'run'}\ncorpus: {{path: {manifest.name}}}\n"
        "train:\n  epochs: 2\n  text_tokens: both\n  choose_speaker_pool: false\n"
        "  text_training: {epochs: 1, inputs: window, future_turns: 2, max_length: 64}\n")
    done = _run(config, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "run"
    assert "[5/8 text] all-MiniLM-L6-v2 fine-tuned for emotion on Ray Train (window inputs)" in done.stdout
    text = json.loads((run / "text" / "model" / "config.json").read_text())
    assert text["config"]["inputs"] == "window" and text["config"]["future_turns"] == 2
    fusion = json.loads((run / "train" / "model" / "config.json").read_text())
    assert fusion["features"]["text"] == {"kind": "finetuned", "path": str(run / "text" / "model")}
    assert fusion["features"]["text2"] == {"kind": "parquet", "path": str(run / "features"),
                                           "column": "text_layers"}
    assert fusion["config"]["dims"]["text"] == 384  # MiniLM's width
    assert fusion["config"]["dims"]["text2"] == 4 * 384  # its last four layers
    assert fusion["config"]["modalities"][:2] == ["text", "text2"]
    assert json.loads((run / "eval-test" / "metrics.json").read_text())["n"] == DIALOGUES["test"] * 4
    again = _run(config, tmp_path, "--dry-run")
    assert re.search(r"text\s+up to date", again.stdout) and re.search(r"train\s+up to date", again.stdout)


def test_missing_weights_stop_the_job_with_what_to_do(tmp_path):
    manifest, _ = _manifest(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'run'}\ncorpus: {{path: {manifest.name}}}\n"
        "preprocess:\n  overrides: {text: {path: /nonexistent/minilm}}\n")
    done = _run(config, tmp_path, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "the weights path given for sentence-transformers" in done.stderr
    assert "/nonexistent/minilm" in done.stderr and "Traceback" not in done.stderr


def test_a_split_the_corpus_lacks_is_not_blamed_on_qc(tmp_path):
    """With QC off, a dev split (or an eval split) the corpus does not have was reported as
    'no utterances after QC'; the message now says the corpus has no such split and names
    the ones it has."""
    import pyarrow.parquet as pq

    from erc.errors import InputError
    from erc.recipes import load_run_config
    from erc.schema import utterance_table
    from erc.stages.main import steps

    config = load_run_config(None, {"output_dir": str(tmp_path / "run"), "qc": {"enabled": False}})
    rows = [{"utterance_id": f"c/{split}/d/{t}", "corpus": "c", "split": split, "dialogue_id": "d",
             "turn": t, "speaker": "A", "text": "hi", "emotion": "joy"}
            for split in ("train", "test") for t in range(2)]
    (tmp_path / "run" / "corpus").mkdir(parents=True)
    pq.write_table(utterance_table(rows), tmp_path / "run" / "corpus" / "utterances.parquet")
    with pytest.raises(InputError) as raised:
        [step.stage.name for step in steps(config, say=lambda line: None)]
    assert "after QC" not in str(raised.value), raised.value
    assert "split 'dev': no such split in the corpus (splits there: test, train)" in str(raised.value)


def test_a_split_qc_emptied_says_which_checks_set_it_aside(tmp_path):
    """A split whose every utterance QC set aside was reported as 'no utterances after QC',
    with no word of why; the message now counts the first failed check of each."""
    import pyarrow.parquet as pq

    from erc.errors import InputError
    from erc.recipes import load_run_config
    from erc.schema import problem_table, utterance_table
    from erc.stages.main import steps

    config = load_run_config(None, {"output_dir": str(tmp_path / "run"),
                                    "train": {"modalities": ["text"]}})
    rows = [{"utterance_id": f"c/{split}/d/{t}", "corpus": "c", "split": split, "dialogue_id": "d",
             "turn": t, "speaker": "A", "text": "hi", "emotion": "joy"}
            for split in ("train", "dev") for t in range(3)]
    for folder in ("corpus", "qc"):
        (tmp_path / "run" / folder).mkdir(parents=True)
    pq.write_table(utterance_table(rows), tmp_path / "run" / "corpus" / "utterances.parquet")
    pq.write_table(utterance_table(rows[:3]), tmp_path / "run" / "qc" / "utterances.parquet")
    pq.write_table(problem_table([
        {"corpus": "c", "split": "dev", "source": "x", "utterance_id": r["utterance_id"],
         "reason": "qc_rejected", "detail": detail}
        for r, detail in zip(rows[3:], ["alignment:misaligned, face:no_face", "face:no_face",
                                        "alignment:misaligned"])]), tmp_path / "run" / "qc" / "problems.parquet")
    with pytest.raises(InputError) as raised:
        [step.stage.name for step in steps(config, say=lambda line: None)]
    assert (f"split 'dev': QC set aside every utterance of it (3: alignment:misaligned 2, "
            f"face:no_face 1; {tmp_path / 'run' / 'qc' / 'problems.parquet'} lists each)") \
        in str(raised.value), raised.value


def test_a_corpus_whose_every_row_is_set_aside_stops_after_the_ingest(tmp_path):
    """Every data line with a comma the header lacks: the ingest kept nothing, and the job
    ran preprocessing and QC on nothing to stop at the adapters with 'no feature rows'. It
    now stops after the ingest, saying why the rows were set aside."""
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("dialogue_id,speaker,text\nd,Ann,Hi,\nd,Bob,Yo,\n")
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\n"
                      f"corpus: {{path: {manifest.name}, check_media: false}}\n")
    done = _run(config, tmp_path, timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert ("the ingest kept no utterance: all 2 input row(s) were set aside "
            "(bad_field_count 2)") in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "features").exists()


def test_the_qc_and_evaluate_lines_count_every_row_of_a_split(tmp_path):
    """The main job printed dev 12 at the ingest and n=11 at the evaluation of dev, with no
    word anywhere of the dev row QC set aside (nor of how many rows QC kept): the counts it
    printed did not add up. QC's line now counts its kept and set-aside rows per split, and
    an evaluation's line its unlabelled rows and the rows set aside before scoring."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erc.stages.base import StageResult
    from erc.stages.main import Step, _describe
    from erc.stages.qc import QCStage
    from erc.stages.train import EvaluateStage

    pq.write_table(pa.table({"split": ["dev"] * 3 + ["train"] * 2,
                             "keep": [True, True, False, True, False]}),
                   tmp_path / "decisions.parquet")
    qc = _describe(Step("qc", QCStage(), None, {}, tmp_path),
                   StageResult("qc", tmp_path, False, {}, 1.0, {}))
    assert "5 utterances, 3 kept, 2 set aside (dev 1, train 1)" in qc, qc
    summary = {"split": "dev", "accuracy": 0.5, "weighted_f1": 0.5, "macro_f1": 0.5, "n": 2,
               "n_unlabelled": 1, "set_aside": {"qc_rejected": 1}}
    line = _describe(Step("evaluate", EvaluateStage(), None, {}, tmp_path),
                     StageResult("evaluate", tmp_path, False, summary, 1.0, {}))
    assert "(n=2, too few to judge accuracy, 1 unlabelled, 1 set aside (qc_rejected 1))" in line


def test_the_main_job_says_which_reference_photos_qc_left_out(tmp_path):
    """`erc run` with qc.face_references printed nothing of a photo left out (no face, two
    faces) or of one that matches none of its speaker's clips, which set them all aside:
    only `erc qc` said so. The qc line now carries the same notes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from erc.stages.base import StageResult
    from erc.stages.main import Step, _describe
    from erc.stages.qc import QCStage

    pq.write_table(pa.table({"split": ["train"] * 3, "keep": [False, False, False]}),
                   tmp_path / "decisions.parquet")
    face = {"reference_photos_unused": ["refs/Ann.jpg: no face found"],
            "references_matching_no_clip": {"Bob": 3}}
    line = _describe(Step("qc", QCStage(), None, {}, tmp_path),
                     StageResult("qc", tmp_path, False, {"face": face}, 1.0, {}))
    assert "face references: 1 photo(s) not used" in line and "refs/Ann.jpg: no face found" in line
    assert "matching none of their speaker's clips" in line and "'Bob' (0 of 3)" in line, line


def test_the_preprocess_summary_is_printed_once(tmp_path):
    """The main job printed the preprocessing pass's summary (rows in and out, the stage
    table, the models) twice: the pass printed it as it ended, and the stage's line after
    it repeated it, indented. The stage's line is now only its state."""
    from erc.stages.base import StageResult
    from erc.stages.main import Step, _describe
    from erc.stages.preprocess import PreprocessStage

    summary = {"rows_in": 2, "rows_out": 2, "status": {"ok": 2}, "failures": {},
               "partitions": {"total": 1, "written": 1, "skipped": 0},
               "this_run": {"rows": 0}, "models": []}
    line = _describe(Step("preprocess", PreprocessStage(), None, {}, tmp_path),
                     StageResult("preprocess", tmp_path, False, summary, 2.0, {}))
    assert line == "  preprocess done in 2.0 s", line


@pytest.mark.parametrize("dev_split, select_fraction, chosen", [
    ("dev", None, "valid"), ("test", None, "test"), ("dev", 0.15, None)])
def test_the_report_marks_the_split_training_chose_on(tmp_path, dev_split, select_fraction, chosen):
    """The report marked dev (or valid) whatever train.dev_split named: with
    `-o train.dev_split=test` it called test's figure held out and valid's optimistic."""
    import dataclasses

    from erc.recipes import RunConfig
    from erc.report import _evaluate_rows

    config = RunConfig(output_dir=str(tmp_path))
    config.train.recipe.splits.dev_split = dev_split
    config.train.recipe.splits.select_fraction = select_fraction
    for split in ("valid", "test"):
        (tmp_path / f"eval-{split}").mkdir()
        (tmp_path / f"eval-{split}" / "metrics.json").write_text(json.dumps(
            {"accuracy": 0.5, "weighted_f1": 0.5, "macro_f1": 0.5, "n": 200, "per_class": {}}))
    run = {"config": dataclasses.asdict(config), "ingest": {"splits": {"train": {}, "valid": {}}},
           "evaluations": [str(tmp_path / "eval-valid"), str(tmp_path / "eval-test")],
           "train": {"chosen_on": "dev" if select_fraction is None else "selection slice"}}
    line = _evaluate_rows(run)[0][3]
    marked = [part.split(":")[0] for part in line.split("; ") if "training chose on it" in part]
    assert marked == ([chosen] if chosen else []), line
