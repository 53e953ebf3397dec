"""The main job on corpora a user brings on day one: a transcript-only manifest (no media)
runs through every stage on text alone; missing model weights stop it with what to do."""

import csv
import json
import subprocess
import sys

import pytest

ROWS = {"neutral": "The meeting is at noon.", "joy": "This is wonderful news!",
        "anger": "Stop doing that right now!", "sadness": "I miss her so much."}


def _manifest(folder):
    emotions = list(ROWS)
    rows = []
    for split, dialogues in (("train", 6), ("dev", 2), ("test", 2)):
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


def _run(config, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "erc.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.mark.slow
def test_a_corpus_without_media_trains_on_text_alone(tmp_path):
    manifest, n = _manifest(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\ncorpus: {{path: {manifest.name}}}\n"
                      "train: {epochs: 2}\n")
    done = _run(config, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"rows in {n}, rows out {n}: ok 0, text_only {n}, failed 0" in done.stdout
    assert "speaker: no embeddings" in done.stdout and "face: no embeddings" in done.stdout
    assert "modalities: text" in done.stdout
    metrics = json.loads((tmp_path / "run" / "eval-test" / "metrics.json").read_text())
    assert metrics["n"] == 8
    assert (tmp_path / "run" / "report.html").is_file()


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
