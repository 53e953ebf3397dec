"""The training stages: identity adapters on a run's training split, the fusion model, the
context text encoder, a standalone adapter on a unimodal emotion corpus, and evaluation.

Each reads a recipe (``erc.recipes``) and named inputs: the utterance table, and the files
its feature spec names (feature folders, text encoders, adapters), so that a retrained
adapter or recomputed features make the model stale while a moved run folder does not.
Ray Train's checkpoints live in ``OUT/ray`` (or the recipe's storage path): an
interrupted training resumes from them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from erc import io
from erc.errors import ConfigError, InputError
from erc.recipes import AdapterRecipe, AdapterTraining, FusionRecipe, Splits, TextRecipe
from erc.stages.base import Stage, StageContext
from erc.train.data import chosen_on
from erc.train.fitting import CHOICE

IDENTITY = {"speaker": "speaker_embedding", "face": "faces"}  # modality -> feature column
MODEL_RESULTS = ("model/*", "history.json", "curves.png")


def _without_paths(spec: dict) -> dict:
    """A feature spec without its paths: what they hold enters the fingerprint as inputs."""
    return {m: {k: v for k, v in item.items() if k not in ("path", "adapter")}
            | {"adapter": bool(item.get("adapter"))} for m, item in spec.items()}


def identity_vectors(features: Path, modality: str) -> dict[str, np.ndarray]:
    from erc.artifacts import face_vectors, read_vectors

    return face_vectors(features) if modality == "face" else read_vectors(features, IDENTITY[modality])


# -- adapters on the run's training split ----------------------------------------------------

@dataclass
class AdapterJob:
    modalities: list[str]  # the identity modalities (speaker, face) to adapt
    training: AdapterTraining = field(default_factory=AdapterTraining)
    train_split: str = "train"
    select_fraction: float | None = None  # the fusion model's selection slice: left out here too


class AdaptersStage(Stage):
    name = "adapters"
    inputs = ("utterances", "features")
    results = ("*/model/*",)
    version = 2  # 2: an adapter's labels are those of its training rows (none only other splits have)
    description = "identity -> emotion adapters (speaker, face) on the training split"

    def run(self, ctx: StageContext) -> dict:
        from erc.artifacts import read_utterances
        from erc.models.adapters import save_adapter, train_adapter

        job: AdapterJob = ctx.config
        table = read_utterances(ctx.inputs["utterances"])
        if job.select_fraction is not None:  # what the fusion model chooses on: not learnt from
            from erc.train.fitting import training_table

            table, _ = training_table(table, Splits(train_split=job.train_split,
                                                    select_fraction=job.select_fraction))
        split = table.column("split").to_pylist()
        ids = table.column("utterance_id").to_pylist()
        emotions = table.column("emotion").to_pylist()
        speakers = table.column("speaker").to_pylist()
        summary = {}
        for modality in job.modalities:
            vectors = identity_vectors(ctx.inputs["features"], modality)
            rows = [i for i, u in enumerate(ids)
                    if split[i] == job.train_split and emotions[i] and u in vectors]
            if (ctx.out / modality / "model").exists():
                io.remove_owned(ctx.out, f"{modality}/model")
            if len(rows) < 4 or len({emotions[i] for i in rows}) < 2:
                summary[modality] = {"skipped": f"{len(rows)} labelled training utterances with a "
                                                f"{modality} embedding"}
                ctx.say(f"  {modality} adapter skipped: {summary[modality]['skipped']} (raw "
                        f"embeddings go into the fusion model)")
                continue
            train_rows = (np.stack([vectors[ids[i]] for i in rows]), [emotions[i] for i in rows],
                          [speakers[i] for i in rows])
            adapter, info = train_adapter(*train_rows, modality, sorted(set(train_rows[1])),
                                          training=job.training)
            save_adapter(ctx.out / modality / "model", adapter, *train_rows, metrics=info,
                         training=job.training)
            summary[modality] = {k: info[k] for k in ("n_train", "n_val", "best_val_accuracy")}
            ctx.say(f"  {modality} adapter: {info['n_train']} train / {info['n_val']} held-out "
                    f"utterances, held-out accuracy {info['best_val_accuracy']}")
        return summary


def adapter_models(folder: Path) -> dict[str, Path]:
    """modality -> adapter model folder, of an adapters stage output."""
    return {m: folder / m / "model" for m in IDENTITY if (folder / m / "model").is_dir()}


def _trained(outcome, out: Path, splits) -> dict:
    """The summary of a training run; its curves beside the model."""
    from erc.report import training_curves

    if outcome.history:
        training_curves(outcome.history, out / "curves.png")
    # named as the split is (train.dev_split may name test or valid), not always "dev"
    chosen = splits.dev_split if splits.select_fraction is None else "selection slice"
    summary = {"best": outcome.best, "epochs": len(outcome.history), "run_path": outcome.run_path,
               "chosen_on": chosen}
    if outcome.candidates:
        summary.update(candidates=outcome.candidates, chosen=outcome.chosen)
    if outcome.refit:
        summary["refit"] = outcome.refit
    return summary


def _progress(stage: Stage, job, inputs: dict[str, Path], out: Path, recipe=None) -> str | None:
    """``Stage.unfinished`` of a training stage: what its interrupted run left, kept."""
    from erc.train.fitting import training_progress

    ctx = StageContext(config=job, inputs=inputs, out=out, previous=None, force=False,
                       say=lambda _line: None)
    return training_progress(out, checkpoint_key(stage, ctx), recipe)


def checkpoint_key(stage: Stage, ctx: StageContext) -> str:
    """What a training run's checkpoints are for: the stage's settings and inputs. Those of
    an earlier run with others are not resumed (the model or its data changed under them).
    An input folder that holds the output folder is read without it: the checkpoints
    written there would otherwise change the key of the run they belong to."""
    from erc.fingerprint import digest, file_sha256
    from erc.stages.base import content_fingerprint

    out = ctx.out.resolve()

    def fingerprint(path: Path) -> str:
        if not (path.is_dir() and path.resolve() in out.parents):
            return content_fingerprint(path)
        files = sorted(p for p in path.rglob("*")
                       if p.is_file() and out not in p.resolve().parents)
        return digest([(p.relative_to(path).as_posix(), file_sha256(p)) for p in files])

    return digest(stage.name, stage.version, stage.settings(ctx.config),
                  {name: fingerprint(path) for name, path in sorted(ctx.inputs.items())})


def kept_candidate(summary: dict) -> str:
    """Which candidate a training run with a choice between models kept, and why ("" when
    it trained one model)."""
    scores = summary.get("candidates")
    if not scores:
        return ""
    listed = ", ".join(f"{name} {score:.4f}" for name, score in scores.items())
    if len(set(scores.values())) == 1:  # neither was better: the first of equals is kept
        return f"kept {summary['chosen']}, the first of equals: a tie on {chosen_on(summary)} ({listed})"
    return f"kept {summary['chosen']}, the better on {chosen_on(summary)} ({listed})"


def refit_said(summary: dict) -> str:
    """What a run with ``refit`` exported ("" without one)."""
    refit = summary.get("refit")
    if not refit:
        return ""
    return (f"refit: the kept model trained again on {' + '.join(refit['splits'])} "
            f"({refit['dialogues']:,} dialogues) for the chosen {refit['epochs']} epoch(s): "
            f"the model exported; its run in {refit['folder']}")


# -- the fusion model ------------------------------------------------------------------------

@dataclass
class FusionJob:
    recipe: FusionRecipe
    spec: dict  # modality -> feature spec item (erc.train.vectors)
    format: str | None = None  # corpus format, when the utterances are a corpus to read


class FusionStage(Stage):
    name = "train"
    inputs = ("utterances",)
    results = (*MODEL_RESULTS, CHOICE)
    # Ray Train's run and checkpoints (unless a storage path is set); with a choice between
    # models, each candidate's run, model and history; with a refit, its run and model; with
    # adapter sizes given, the adapters retrained to them
    writes = ("ray", "candidates", "refit", "adapters")
    version = 2  # 2: the model's labels are the train split's (a label only other splits have is none)
    description = "the fusion model (a GRU, Mamba or transformer over the dialogue) on Ray Train"

    def __init__(self, address: str | None = None, features: dict | None = None):
        self.address = address
        self.features = features  # already loaded vectors (the main job checks them first)

    def settings(self, job: FusionJob) -> dict:
        return {"recipe": job.recipe, "spec": _without_paths(job.spec), "format": job.format}

    def unfinished(self, job: FusionJob, inputs, out: Path) -> str | None:
        return _progress(self, job, inputs, out, job.recipe)

    def run(self, ctx: StageContext) -> dict:
        from erc.artifacts import load_corpus
        from erc.train.fitting import train_fusion
        from erc.train.vectors import resize_adapters

        job: FusionJob = ctx.config
        table = load_corpus(ctx.inputs["utterances"], job.format)
        spec, features = job.spec, self.features
        recipe = job.recipe
        if recipe.adapter_hidden or recipe.adapter_out:
            spec, _ = resize_adapters(spec, recipe.adapter_hidden, recipe.adapter_out,
                                      ctx.out / "adapters")
            features = None
        outcome = train_fusion(table, spec, ctx.out, recipe, address=self.address,
                               features=features, key=checkpoint_key(self, ctx), fresh=ctx.force)
        return _trained(outcome, ctx.out, recipe.splits)


# -- the text encoder ------------------------------------------------------------------------

@dataclass
class TextJob:
    recipe: TextRecipe
    format: str | None = None


class TextStage(Stage):
    name = "train-text"
    inputs = ("utterances", "encoder")
    results = MODEL_RESULTS
    writes = ("ray",)  # Ray Train's run and checkpoints (unless a storage path is set)
    version = 2  # 2: the model's labels are the train split's (a label only other splits have is none)
    description = "the context text encoder fine-tuned for emotion on Ray Train"

    def __init__(self, address: str | None = None):
        self.address = address

    def settings(self, job: TextJob) -> dict:
        recipe = dataclasses.replace(job.recipe, encoder="")  # its content is an input
        return {"recipe": recipe, "format": job.format}

    def unfinished(self, job: TextJob, inputs, out: Path) -> str | None:
        return _progress(self, job, inputs, out)

    def run(self, ctx: StageContext) -> dict:
        from erc.artifacts import load_corpus
        from erc.train.fitting import finetune_text

        job: TextJob = ctx.config
        table = load_corpus(ctx.inputs["utterances"], job.format)
        outcome = finetune_text(table, str(ctx.inputs["encoder"]), ctx.out, job.recipe,
                                address=self.address, key=checkpoint_key(self, ctx),
                                fresh=ctx.force)
        return _trained(outcome, ctx.out, job.recipe.splits)


# -- an adapter on a unimodal emotion corpus -------------------------------------------------

@dataclass
class UnimodalAdapterJob:
    modality: str  # speaker | face
    recipe: AdapterRecipe
    format: str | None = None


class UnimodalAdapterStage(Stage):
    name = "train-adapter"
    inputs = ("corpus",)
    results = ("model/*",)
    description = "an identity -> emotion adapter on a unimodal emotion corpus"

    def run(self, ctx: StageContext) -> dict:
        from erc.backends.registry import load_backend, profile_specs
        from erc.models import adapters
        from erc.train.metrics import classification_metrics

        job: UnimodalAdapterJob = ctx.config
        recipe = job.recipe
        role = "speaker" if job.modality == "speaker" else "face_embed"
        override = {k: v for k, v in (("backend", recipe.backend), ("path", recipe.weights)) if v}
        try:
            spec = profile_specs(recipe.profile, {role: override} if override else None)[role]
        except ValueError as err:
            raise ConfigError(str(err)) from None
        embedder = load_backend(spec)
        corpus = ctx.inputs["corpus"]
        if job.modality == "speaker":
            from erc.artifacts import load_corpus

            table = load_corpus(corpus, job.format)
            split = table.column("split").to_pylist()
            vectors, labels, groups = adapters.speech_embeddings(table, embedder)
            rows = [r for r, e in zip(split, table.column("emotion").to_pylist()) if e]
            train_mask = np.asarray([s == recipe.train_split for s in rows])
        else:
            paths, labels, groups = adapters.image_folder_items(corpus)
            vectors = adapters.face_crop_embeddings(paths, embedder)
            held = set(recipe.test_groups)
            train_mask = np.asarray([g not in held for g in groups])
        if not train_mask.any():
            raise InputError(f"{corpus}: no training rows (train split {recipe.train_split!r})")
        label_set = sorted(set(labels))
        train_rows = (vectors[train_mask], [lab for lab, m in zip(labels, train_mask) if m],
                      [g for g, m in zip(groups, train_mask) if m])
        size = {"hidden": recipe.size.hidden, "out_dim": recipe.size.out_dim,
                "dropout": recipe.size.dropout, "normalize_input": recipe.size.normalize_input}
        adapter, info = adapters.train_adapter(*train_rows, job.modality, label_set, config=size,
                                               training=recipe.training)
        metrics: dict[str, Any] = {"train": info}
        if (~train_mask).any():
            test = ~train_mask
            ok = np.isfinite(vectors[test]).all(1)
            y = np.asarray([label_set.index(lab) for lab, m in zip(labels, test) if m])[ok]
            metrics["test"] = classification_metrics(y, adapters.predict(adapter, vectors[test][ok]),
                                                      label_set)
        if (ctx.out / "model").exists():
            io.remove_owned(ctx.out, "model")
        adapters.save_adapter(ctx.out / "model", adapter, *train_rows, metrics=metrics,
                              extra={"embedder": embedder.record().to_dict()},
                              training=recipe.training)
        return {"in_dim": adapter.config.in_dim, "out_dim": adapter.config.out_dim,
                "test": {k: metrics["test"][k] for k in ("accuracy", "weighted_f1", "n")}
                if "test" in metrics else None}


# -- evaluation ------------------------------------------------------------------------------

@dataclass
class EvalJob:
    split: str
    format: str | None = None
    title: str | None = None
    n_models: int = 1


class EvaluateStage(Stage):
    name = "evaluate"
    version = 4  # 2: predictions say which modalities each row had no vector for; 3: metrics
    # count the rows set aside before scoring and score labels the model does not predict;
    # 4: a split without labels has null scores (not 0) and names a label column left unread;
    # rows set aside whose split could not be read are counted apart
    inputs = ("utterances",)
    optional_inputs = ("features",)  # the corpus's feature folder, for its speaker and face vectors
    results = ("metrics.json", "predictions.parquet", "confusion.png")
    description = "metrics, predictions and confusion matrix of a model (or an ensemble) on a split"

    def __init__(self, corpus: tuple | None = None):
        # (table, problems) of the utterances input, already read (``erc evaluate`` checks
        # its split first): a corpus erc reads is read, and its set-aside rows said, once
        self.corpus = corpus

    @staticmethod
    def model_inputs(models: list[str | Path]) -> dict[str, Path]:
        return {f"model_{i}": Path(m) for i, m in enumerate(models)}

    def run(self, ctx: StageContext) -> dict:
        from erc.artifacts import load_corpus_and_problems
        from erc.train.evaluate import evaluate

        job: EvalJob = ctx.config
        models = [ctx.inputs[f"model_{i}"] for i in range(job.n_models)]
        table, problems = self.corpus or load_corpus_and_problems(ctx.inputs["utterances"],
                                                                  job.format)
        result = evaluate(models, table, job.split, ctx.out, title=job.title, problems=problems,
                          features=ctx.inputs.get("features"))
        return {k: v for k, v in result.metrics.items()
                if k in ("split", "accuracy", "weighted_f1", "macro_f1", "n", "n_unlabelled",
                         "n_missing", "unseen_labels", "set_aside")}


def history(folder: Path) -> list[dict]:
    path = Path(folder) / "history.json"
    return json.loads(path.read_text()) if path.is_file() else []
