"""One Tune trial: the real training of ``erc train`` (same task, model, loss, optimiser,
schedule, early stopping and checkpoints: ``erc.train.loop.run_epochs``) in the trial's
own process, reporting dev weighted F1 after every epoch so ASHA can stop it, with a
checkpoint per epoch so an interrupted trial resumes where it stopped. Where the search has
a held-out (report) split, the trial also reports its best-dev model's weighted F1 there
(``erc.train.loop.HELD_OUT``), a figure nothing is chosen on.

The training data (features already computed, dialogues / tokenised inputs built) come
from the driver through the object store (``tune.with_parameters``): built once, shared
by every trial, never recomputed in a trial. A search over adapter sizes shares the raw
features instead, and each trial runs them through adapters of its own sizes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from erc import io
from erc.tune.space import METRIC, TIME_ATTR, SearchSpec


class AdaptableDialogues:
    """What a search over adapter sizes shares with its trials: the raw (unadapted)
    features; each trial builds its dialogue data through adapters of its own sizes
    (``resize_adapters``: retrained on their saved training sets, a few seconds each)."""

    def __init__(self, table, raw: dict, feature_spec: dict, roles=None):
        from erc.train.data import label_list, resolve_roles

        self.table, self.raw, self.feature_spec, self.roles = table, raw, feature_spec, roles
        self.labels = label_list(table, resolve_roles(table, roles)["train"])

    def build(self, hidden: int | None, out_dim: int | None):
        from erc.train.data import build_dialogue_data
        from erc.train.vectors import adapt_features, resize_adapters

        spec, adapters = resize_adapters(self.feature_spec, hidden, out_dim)
        features = adapt_features(self.raw, spec, adapters)
        return build_dialogue_data(self.table, features, self.roles, labels=self.labels)


def recipe_of(spec: SearchSpec, values: dict[str, Any]):
    """The recipe of ``erc train <family>`` for a trial's option ``values``."""
    from erc.recipes import FusionRecipe, TextRecipe
    from erc.settings import by_option, validate

    cls = FusionRecipe if spec.family == "fusion" else TextRecipe
    return validate(cls, by_option(cls, values), f"trial of {spec.source}")


def run_config(spec: SearchSpec, values: dict[str, Any], base: dict, cpus: int = 1,
               use_gpu: bool = False) -> dict:
    """The training loop's config (task, task_config, train) for the option ``values`` of
    ``erc train <family>``; ``base`` holds what the data fixed (labels, dims, encoder)."""
    import dataclasses

    recipe = recipe_of(spec, values)
    train = dataclasses.replace(recipe.loop, name="trial", metric="weighted_f1",
                                cpus_per_worker=max(1, int(cpus)), use_gpu=use_gpu).to_dict()
    labels = base["labels"]
    if spec.family == "fusion":
        model = dataclasses.replace(recipe.model, modalities=base["modalities"], dims=base["dims"],
                                    labels=labels, n_classes=len(labels))
        task_config = {"model": model.to_dict(), "class_weight_power": recipe.class_weight_power,
                       "features": base.get("features")}
    else:
        model = dataclasses.replace(recipe.model, encoder=base["encoder"], labels=labels,
                                    n_classes=len(labels))
        task_config = {"model": model.to_dict(), "class_weight_power": recipe.class_weight_power}
    return {"task": spec.family, "task_config": task_config, "train": train}


def _note_start(ledger: str | None, trial_id: str, resumed_epoch: int | None) -> None:
    """Appends this start to the search's ledger (one JSON line per trial start), where
    the ledger's folder is reachable from this node."""
    if not ledger or not Path(ledger).parent.is_dir():
        return
    line = json.dumps({"trial_id": trial_id, "pid": os.getpid(), "time": time.time(),
                       "resumed_from_epoch": resumed_epoch})
    with io.open_no_link(ledger, "a") as f:
        f.write(line + "\n")


def _checkpoint_state(checkpoint) -> dict | None:
    """The loop state a trial checkpoint holds (epoch, bad_epochs, history)."""
    if checkpoint is None:
        return None
    from erc.models.checkpoint import load_train_state

    with checkpoint.as_directory() as folder:
        state = load_train_state(folder)
    return {"epoch": int(state["epoch"]), "bad_epochs": int(state["bad_epochs"]),
            "history": json.loads(state["history"])}


def _with_search_metrics(metrics: dict) -> dict:
    return {**metrics, METRIC: metrics["best"], TIME_ATTR: int(metrics["epoch"]) + 1}


def train_trial(params: dict, *, data, setup: dict) -> None:
    """The Tune trainable (a function): ``params`` are the sampled values, ``data`` the
    shared training data, ``setup`` the spec, data-fixed config, resources and ledger."""
    import torch
    from ray import tune

    from erc.train.loop import run_epochs

    spec: SearchSpec = setup["spec"]
    values = spec.trial_values(params)
    base = setup["base"]
    if isinstance(data, AdaptableDialogues):
        data = data.build(values["adapter_hidden"], values["adapter_out"])
        base = {**base, "modalities": data.modalities, "dims": data.dims}
    from erc.cluster import torch_device

    use_gpu = torch_device(setup.get("gpu")) == "cuda"  # CPU, with a message, without CUDA
    config = run_config(spec, values, base, cpus=setup.get("cpu", 1), use_gpu=use_gpu)
    config["data"] = data
    config["report_split"] = setup.get("report_split")  # scored, never chosen on
    device = torch.device("cuda" if use_gpu else "cpu")
    checkpoint = tune.get_checkpoint()
    state = _checkpoint_state(checkpoint)
    _note_start(setup.get("ledger"), tune.get_context().get_trial_id(),
                state["epoch"] if state else None)
    if state and state["history"] and (state["epoch"] + 1 >= int(values["epochs"]) or
                                       state["bad_epochs"] >= int(values["patience"])):
        # It had trained its last epoch before the search was interrupted: report that
        # epoch again (Tune needs a result to close the trial), train nothing.
        tune.report(_with_search_metrics(state["history"][-1]))
        return

    def report(metrics: dict, folder: str | None) -> None:
        saved = tune.Checkpoint.from_directory(folder) if folder else None
        tune.report(_with_search_metrics(metrics), checkpoint=saved)

    run_epochs(config, rank=0, world=1, device=device, prepare=lambda m: m.to(device),
               checkpoint=checkpoint, report=report)
