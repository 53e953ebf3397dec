"""From an utterance table and a recipe to a trained model on Ray Train.

- ``train_fusion``: the fusion model (Mamba, or a baseline mixer) on per-utterance tokens
  (``FusionRecipe``), its inputs given by a feature spec (``erc.train.vectors``);
- ``finetune_text``: the context text encoder fine-tuned for emotion (``TextRecipe``).

Both export the best epoch's model to ``OUT/model`` (``erc.train.loop.fit``); running
again with the same output folder resumes an interrupted run from its checkpoints.
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
from erc.train.loop import TrainOutcome, fit


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
    from erc.train.folds import SELECT_SPLIT, with_selection_slice

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
    ``fresh``: which checkpoints may be resumed (``erc.train.loop.fit``)."""
    from erc.train.vectors import load_features, require_vectors

    recipe = recipe or FusionRecipe()
    table, roles = training_table(table, recipe.splits)
    features = features if features is not None else load_features(spec, table)
    require_vectors(spec, features)
    data = build_dialogue_data(table, features, roles)
    model = dataclasses.replace(recipe.model, modalities=data.modalities, dims=data.dims,
                                labels=data.labels, n_classes=len(data.labels))
    return fit("fusion", {"model": model.to_dict(), "class_weight_power": recipe.class_weight_power,
                          "features": dict(spec)},
               data, loop_config(recipe.loop, out_dir), out_dir, address=address, key=key,
               fresh=fresh)


def finetune_text(table: pa.Table, encoder: str, out_dir: str | Path,
                  recipe: TextRecipe | None = None, address: str | None = None,
                  key: str | None = None, fresh: bool = False) -> TrainOutcome:
    """Fine-tunes the encoder folder ``encoder`` with the context of ``recipe`` (``key``,
    ``fresh``: as for ``train_fusion``)."""
    from erc.models.text import load_tokenizer

    recipe = recipe or TextRecipe()
    tokenizer = load_tokenizer(encoder)
    settings = recipe.model
    table, roles = training_table(table, recipe.splits)
    data = build_text_data(table, tokenizer, settings, roles)
    model = dataclasses.replace(settings, encoder=str(Path(encoder).resolve()),
                                n_classes=len(data.labels), labels=data.labels)
    return fit("text", {"model": model.to_dict(), "class_weight_power": recipe.class_weight_power},
               data, loop_config(recipe.loop, out_dir), out_dir, address=address, key=key,
               fresh=fresh)
