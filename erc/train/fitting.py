"""From an utterance table and a recipe to a trained model on Ray Train.

- ``train_fusion``: the fusion model (Mamba, or a baseline mixer) on per-utterance tokens
  (``FusionRecipe``), its inputs given by a feature spec (``erc.train.vectors``);
- ``finetune_text``: the context text encoder fine-tuned for emotion (``TextRecipe``).

Both export the best epoch's model to ``OUT/model`` (``erc.train.loop.fit``; a fusion
``refit``: the kept model trained again on train + selection slice for that many epochs);
running again with the same output folder resumes an interrupted run from its checkpoints.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from erc import io
from erc.errors import ConfigError
from erc.recipes import FusionRecipe, Splits, TextRecipe, TrainConfig
from erc.train.data import build_dialogue_data, build_text_data, training_roles
from erc.train.folds import SELECT_SPLIT, with_selection_slice
from erc.train.loop import TrainOutcome, export_model, fit


def loop_config(loop: TrainConfig, out_dir: str | Path) -> TrainConfig:
    """The loop settings of a run in ``out_dir``: named after the folder, checkpoints in
    ``OUT/ray`` unless a storage path (a shared folder, s3://...) is given."""
    out_dir = Path(out_dir).resolve()
    return dataclasses.replace(loop, name=out_dir.name,
                               storage_path=loop.storage_path or str(io.not_linked(out_dir / "ray")))


def training_table(table: pa.Table, splits: Splits) -> tuple[pa.Table, dict[str, str]]:
    """(table, roles) a run trains on: the train split, stopping early on the dev split, or
    with ``select_fraction`` on a slice of the train split's dialogues (split ``select``),
    leaving the corpus's dev split unseen (or standing in for a corpus without one)."""
    if splits.select_fraction is None:
        return table, training_roles(table, {"train": splits.train_split, "dev": splits.dev_split})
    try:
        table = with_selection_slice(table, splits.train_split, splits.select_fraction)
    except ValueError as err:  # too few dialogues to hold some out, a split named select
        raise ConfigError(f"select_fraction {splits.select_fraction}: {err}") from None
    return table, training_roles(table, {"train": splits.train_split, "dev": SELECT_SPLIT})


def train_fusion(table: pa.Table, spec: Mapping[str, dict], out_dir: str | Path,
                 recipe: FusionRecipe | None = None, address: str | None = None,
                 features: Mapping | None = None, key: str | None = None,
                 fresh: bool = False) -> TrainOutcome:
    """Trains the fusion model of ``recipe`` on the features ``spec`` describes
    (``features``: already loaded ones, per modality {utterance_id: vector}); ``key`` and
    ``fresh``: which checkpoints may be resumed (``erc.train.loop.fit``). With
    ``choose_speaker_pool`` it trains the model with and without speaker pooling, each in
    ``OUT/candidates/<name>``, and keeps in ``OUT/model`` the one with the better
    early-stopping score (``OUT/candidates.json`` holds both scores). A candidate that
    finished for the same settings and inputs is not trained again. With ``refit``, when
    the choices (candidate, epoch) were made on a selection slice, the kept model is then
    trained again on train + slice for the chosen number of epochs in ``OUT/refit``, and
    that model is ``OUT/model``: the slice's dialogues are not lost to training."""
    from erc.fingerprint import digest
    from erc.train.vectors import load_features, require_vectors

    recipe = recipe or FusionRecipe()
    table, roles = training_table(table, recipe.splits)
    features = features if features is not None else load_features(spec, table)
    require_vectors(spec, features)
    data = build_dialogue_data(table, features, roles)
    model = dataclasses.replace(recipe.model, modalities=data.modalities, dims=data.dims,
                                labels=data.labels, n_classes=len(data.labels))

    def config_of(candidate) -> dict:
        config = {"model": candidate.to_dict(), "class_weight_power": recipe.class_weight_power,
                  "features": dict(spec)}
        if recipe.label_smoothing:  # absent at 0, so earlier runs' fingerprints still match
            config["label_smoothing"] = recipe.label_smoothing
        return config

    def train(candidate, folder: Path, loop: TrainConfig, run_key: str | None) -> TrainOutcome:
        return fit("fusion", config_of(candidate), data, loop, folder, address=address,
                   key=run_key, fresh=fresh)

    loop = loop_config(recipe.loop, out_dir)
    if not recipe.choose_speaker_pool or model.isolate_turns:  # turns alone: nothing to pool
        outcome = train(model, Path(out_dir), loop, key)
        if (Path(out_dir) / CHOICE).exists():  # an earlier run's choice is not this model's
            io.remove_owned(out_dir, CHOICE)
        kept = model
    else:
        outcomes = {}
        for number, (name, pool) in enumerate(SPEAKER_POOL_CANDIDATES.items(), 1):
            folder = Path(out_dir) / "candidates" / name
            run_key = None if key is None else digest(key, name)
            outcomes[name] = None if fresh else finished_candidate(folder, run_key)
            if outcomes[name] is not None:  # a run interrupted after it: not trained twice
                print(f"[train] {name}: trained earlier for these settings, kept", flush=True)
                continue
            print(f"[train] candidate {number} of {len(SPEAKER_POOL_CANDIDATES)}: {name}",
                  flush=True)
            candidate_loop = dataclasses.replace(  # its own Ray Train run beside the other's
                loop_config(recipe.loop, folder), name=f"{loop.name}-{name}")
            outcomes[name] = train(dataclasses.replace(model, speaker_pool=pool), folder,
                                   candidate_loop, run_key)
            _record_finished(folder, run_key, outcomes[name])
        outcome = keep_best(outcomes, Path(out_dir), f"dev_{recipe.loop.metric}")
        kept = dataclasses.replace(model, speaker_pool=SPEAKER_POOL_CANDIDATES[outcome.chosen])
    if not (recipe.refit and roles["dev"] == SELECT_SPLIT):
        # An earlier run's OUT/refit stays, as candidates/ does: OUT/model is this run's,
        # and the refit is kept only by a run for its own key (settings, choice, epochs).
        return outcome
    epochs = int(outcome.best["epoch"]) + 1
    merged = merged_selection(table, roles["train"])
    # Its "dev" scores are of the dialogues it trains on: nothing is chosen on them, the
    # last epoch is the model (keep_last).
    refit_data = build_dialogue_data(merged, features, {"train": roles["train"],
                                                        "dev": roles["train"]})
    refit_model = dataclasses.replace(kept, labels=refit_data.labels,
                                      n_classes=len(refit_data.labels))
    folder = Path(out_dir) / REFIT
    run_key = None if key is None else digest(key, REFIT, outcome.chosen, epochs)
    dialogues = len(refit_data.splits["train"])
    refitted = None if fresh else finished_candidate(folder, run_key)
    if refitted is None:
        print(f"[train] refit: the kept model again on {roles['train']!r} + the selection "
              f"slice ({dialogues:,} dialogues) for the chosen {epochs} epoch(s)", flush=True)
        refit_loop = dataclasses.replace(loop_config(recipe.loop, folder), name=f"{loop.name}-{REFIT}",
                                         epochs=epochs, patience=epochs)
        refitted = fit("fusion", config_of(refit_model), refit_data, refit_loop, folder,
                       address=address, key=run_key, fresh=fresh, keep_last=True)
        _record_finished(folder, run_key, refitted)
    model_dir = export_model(refitted.model_dir, out_dir)
    return dataclasses.replace(outcome, model_dir=model_dir, refit={
        "epochs": epochs, "splits": [roles["train"], SELECT_SPLIT],
        "dialogues": dialogues, "folder": str(folder)})


def merged_selection(table: pa.Table, train_split: str) -> pa.Table:
    """``table`` with its selection slice given back to ``train_split``."""
    splits = [train_split if s == SELECT_SPLIT else s for s in table.column("split").to_pylist()]
    return table.set_column(table.schema.get_field_index("split"), "split", pa.array(splits))


def _record_finished(folder: Path, run_key: str | None, outcome: TrainOutcome) -> None:
    """Marks a run in ``folder`` finished for ``run_key``: the next run for it keeps it."""
    if run_key is not None:
        io.write_json(folder / FINISHED, {"key": run_key, **dataclasses.asdict(outcome),
                                          "model_dir": str(outcome.model_dir)})


# The fusion models ``choose_speaker_pool`` trains. Pooling wins on IEMOCAP's selection
# split and loses on MELD's (README, "Accuracy"): which one a corpus wants is chosen on it.
SPEAKER_POOL_CANDIDATES = {"speaker-pool": True, "no-speaker-pool": False}


FINISHED = "outcome.json"  # in a candidate's folder: its run's outcome, once it finished
CHOICE = "candidates.json"  # beside the kept model: every candidate's score and the one kept
REFIT = "refit"  # OUT/refit: the kept model trained again on train + selection slice


def training_progress(out_dir: Path, key: str, recipe: FusionRecipe | None = None) -> str | None:
    """What an interrupted training into ``out_dir`` left that the next run for ``key``
    keeps, in words (a dry run's note): the candidates trained, the epochs checkpointed;
    ``recipe``: a fusion recipe, whose choice trains candidates."""
    from erc.fingerprint import digest
    from erc.train.loop import checkpointed_epochs

    def said(folder: Path, run_key: str) -> str | None:
        epochs = checkpointed_epochs(folder, run_key)
        return f"{epochs} epoch(s) checkpointed, training goes on from there" if epochs else None

    if recipe is None or not recipe.choose_speaker_pool or recipe.model.isolate_turns:
        parts = [left] if (left := said(Path(out_dir), key)) else []
    else:
        parts = []
        for name in SPEAKER_POOL_CANDIDATES:
            folder, run_key = Path(out_dir) / "candidates" / name, digest(key, name)
            if finished_candidate(folder, run_key) is not None:
                parts.append(f"candidate {name} trained, kept")
            elif left := said(folder, run_key):
                parts.append(f"candidate {name} {left}")
    if recipe is not None and recipe.refit and (Path(out_dir) / REFIT / FINISHED).is_file():
        parts.append("a refit trained (kept if the choices come out the same)")
    return "; ".join(parts) or None


def finished_candidate(folder: Path, key: str | None) -> TrainOutcome | None:
    """The outcome of a candidate that finished training for the settings and inputs of
    ``key`` (None: none known)."""
    import json

    try:
        record = json.loads((folder / FINISHED).read_text())
    except (OSError, ValueError):
        return None
    if key is None or record.pop("key", None) != key or not (folder / "model").is_dir():
        return None
    return TrainOutcome(**{**record, "model_dir": folder / "model"})


def chosen_candidate(scores: Mapping[str, float]) -> str:
    """The candidate with the best early-stopping score (the first of equals)."""
    return max(scores, key=lambda name: scores[name])


def keep_best(outcomes: Mapping[str, TrainOutcome], out_dir: Path, metric: str) -> TrainOutcome:
    """Copies the best candidate's model and history to ``out_dir`` and records every
    candidate's score in ``out_dir/candidates.json``; the kept run's outcome."""
    scores = {name: float(outcome.best[metric]) for name, outcome in outcomes.items()}
    name = chosen_candidate(scores)
    kept = outcomes[name]
    model_dir = export_model(kept.model_dir, out_dir)
    io.write_json(out_dir / "history.json", kept.history)
    io.write_json(out_dir / CHOICE, {"metric": metric, "scores": scores, "chosen": name})
    return dataclasses.replace(kept, model_dir=model_dir, candidates=scores, chosen=name)


def finetune_text(table: pa.Table, encoder: str, out_dir: str | Path,
                  recipe: TextRecipe | None = None, address: str | None = None,
                  key: str | None = None, fresh: bool = False) -> TrainOutcome:
    """Fine-tunes the encoder folder ``encoder`` with the context of ``recipe`` (``key``,
    ``fresh``: as for ``train_fusion``)."""
    from erc.models.text import check_frozen_layers, load_tokenizer

    recipe = recipe or TextRecipe()
    tokenizer = load_tokenizer(encoder)
    settings = recipe.model
    check_frozen_layers(settings, encoder)
    table, roles = training_table(table, recipe.splits)
    data = build_text_data(table, tokenizer, settings, roles)
    model = dataclasses.replace(settings, encoder=str(Path(encoder).resolve()),
                                n_classes=len(data.labels), labels=data.labels)
    return fit("text", {"model": model.to_dict(), "class_weight_power": recipe.class_weight_power},
               data, loop_config(recipe.loop, out_dir), out_dir, address=address, key=key,
               fresh=fresh)
