"""Accuracy on real data by a protocol that reports only on dialogues no choice was made on:
the floor baseline and the conversation models side by side, fold by fold, from one run.

    .venv/bin/python bench/accuracy.py iemocap         # leave-one-session-out, 4 folds
    .venv/bin/python bench/accuracy.py meld            # select on a slice of train, report dev
    .venv/bin/python bench/accuracy.py iemocap --seeds 3 --rows bi-mamba+roles bi-gru
    .venv/bin/python bench/accuracy.py iemocap --rows bi-mamba text-window window+bi-gru
    .venv/bin/python bench/accuracy.py adapters        # identity adapters (RAVDESS, CK+48)

Protocol (``erc.train.folds``): IEMOCAP pools train and valid and leaves one session out
(Sessions 1-4: 4 folds; Session 5 is the official test set, not in ../shared); MELD trains
on train and reports on dev. In each fold a dialogue-level slice of the training dialogues
(15 %; IEMOCAP: drawn evenly from each training session) is the *selection* split: early
stopping and every choice between rows or members are made on it; the *test* dialogues
(the held-out session, MELD dev) serve only to report. The table gives each row's test
weighted F1 per fold, their mean and sd, the mean selection score, and the smallest gain
over the floor of the same fold.

Rows (text only: the corpora here have transcripts, no media; ``--encoder`` picks the
frozen sentence encoder: all-MiniLM-L6-v2 by default, all-mpnet-base-v2 after
``erc models fetch all-mpnet-base-v2``; ``--layers`` how many of its last layers its vectors
pool, as ``erc train fusion --text-layers``, 4 by default, 1 for its sentence vector;
``--second-encoder`` a second frozen encoder read as a second text token of each turn, as
``erc train fusion --second-text st:ENCODER``):

- floor: frozen all-MiniLM-L6-v2 embeddings of the turn and its two previous turns,
  concatenated, + logistic regression (trained on the train split of the fold); with
  another ``--encoder``, the same floor over that encoder's vectors too, and the gain
  column measures every row against the stronger floor of each fold;
- ``ROWS``: the fusion model over frozen embeddings, trained through ``erc train fusion``'s
  code path (``erc.train.fitting.train_fusion`` on Ray Train), one row per configuration:
  the first default (causal Mamba, mixer outputs mean-pooled over all past turns), the
  current-turn readout, the bidirectional mixers (the GRU is the default), speaker roles,
  pooling and state; ``-last`` rows score the weights as trained instead of their moving
  average (the default, ``--average-epochs``);
- ``CHOICE_ROWS``: ``erc train fusion``'s default, which trains the GRU with and without
  speaker pooling and keeps the one better on the selection split: in every fold and seed
  the kept model of the ``bi-gru`` and ``bi-gru+pool`` rows (``bi-gru-or-pool``); the same
  choice between the ``+state`` rows (``state-or-pool+state``);
- ``TEXT_ROWS``: the context text encoder (``--text-encoder``, MiniLM by default)
  fine-tuned on the fold through ``erc train text``'s code path
  (``erc.train.fitting.finetune_text``), read alone;
- ``FUSED_ROWS``: the fusion model over the utterance vectors of a text row's model
  fine-tuned on the same fold with the same seed (optionally with the frozen vectors as a
  second token): a seed varies the whole recipe, fine-tune and fusion;
- selected: in each fold, the row whose selection score is best (how a user picks one
  model without looking at the test dialogues);
- ensemble: in each fold, the class probabilities of the rows whose mean selection score
  ranks in the top ``--ensemble`` averaged (chosen on selection scores only).

With ``--seeds N`` every row trains N seeds per fold and reports the mean of their test
scores, then the score of its N seeds' probabilities averaged (the ensembles average all
seeds of their members).

Every trained model is cached under the erc state dir (``~/.cache/erc/bench/folds``)
keyed by its configuration and fold: a second run evaluates cached models and trains only
what is missing; the note column says how many came from the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from erc import runtime
from erc.home import state_dir
from erc.recipes import FusionInputs, TextRecipe

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPORA = {"meld": (SHARED / "data" / "meld", "dev"),
           "iemocap": (SHARED / "data" / "iemocap_text", "loso")}
TARGET = {"meld": 0.62, "iemocap": 0.64}
FLOOR_GAIN = 0.05  # every row worth having beats the floor by this much on every fold
PAPER = {  # (accuracy, weighted F1) in %, None where not reported: their own splits
    "meld": [("paper: text only (MPNet-v2 fine-tuned)", 58.1, None),
             ("paper: trimodal Mamba fusion", 64.8, 61.5)],
    "iemocap": [("paper: trimodal Mamba fusion", 74.3, 74.1)],
}

# name -> (fusion options, learning rate[, recipe options]); what is not given takes the
# defaults of ``erc train fusion`` (FusionConfig, FusionRecipe and its loop), except the
# speaker state, on only where a row's name says "+state" (``fusion_row``); the Mamba rows
# name their mixer. Recipe options are FusionRecipe fields
# (class_weight_power) or loop fields (average_epochs, weight_decay). "mamba-pooled" reads
# the mean of the mixer outputs of all turns up to t, as the first default did (at the
# width and state size of today's).
MAMBA = {"mixer": "mamba"}
ROWS = {
    "mamba-pooled": ({**MAMBA, "bidirectional": False, "window": None}, 1e-3, {"average_epochs": 0.0}),
    "mamba-causal": ({**MAMBA, "bidirectional": False}, 1e-3),
    "bi-mamba": (MAMBA, 1e-3),
    "bi-mamba-last": (MAMBA, 1e-3, {"average_epochs": 0.0}),
    "bi-gru": ({}, 1e-3),
    "bi-gru-last": ({}, 1e-3, {"average_epochs": 0.0}),
    "bi-mamba+roles": ({**MAMBA, "speaker_roles": 2}, 1e-3),
    "bi-transformer": ({"mixer": "transformer"}, 5e-4),
    "no-context": ({**MAMBA, "isolate_turns": True}, 1e-3),
    "bi-mamba-unweighted": (MAMBA, 1e-3, {"class_weight_power": 0.0}),
    "bi-mamba-drop0.4": ({**MAMBA, "dropout": 0.4}, 1e-3),
    "bi-mamba-lr5e-4": (MAMBA, 5e-4),
    "bi-mamba-wd0.1": (MAMBA, 1e-3, {"weight_decay": 0.1}),
    "bi-mamba-avg2": (MAMBA, 1e-3, {"average_epochs": 2.0}),
    "bi-gru-w256": ({"d_model": 256}, 1e-3),
    "bi-gru-drop0.3": ({"dropout": 0.3}, 1e-3),
    "bi-gru+roles": ({"speaker_roles": 2}, 1e-3),
    "bi-gru-lr5e-4": ({}, 5e-4),
    "bi-gru+pool": ({"speaker_pool": True}, 1e-3),
    "bi-mamba+pool": ({**MAMBA, "speaker_pool": True}, 1e-3),
    "bi-gru+state": ({"speaker_state": True}, 1e-3),
    "bi-gru+pool+state": ({"speaker_pool": True, "speaker_state": True}, 1e-3),
    "bi-gru+pool+tdrop": ({"speaker_pool": True, "turn_dropout": 0.2}, 1e-3),
    "bi-gru+ls": ({}, 1e-3, {"label_smoothing": 0.1}),
    "bi-gru+pool+ls": ({"speaker_pool": True}, 1e-3, {"label_smoothing": 0.1}),
    "bi-gru+nb": ({"neighbours": 10}, 1e-3),
    "bi-gru+pool+nb": ({"speaker_pool": True, "neighbours": 10}, 1e-3),
    "bi-gru+nb30": ({"neighbours": 30}, 1e-3),
    "bi-gru+pool+nb30": ({"speaker_pool": True, "neighbours": 30}, 1e-3),
    "bi-gru+nb+dnb": ({"neighbours": 10, "dialogue_neighbours": 3}, 1e-3),
    "bi-gru+pool+nb+dnb": ({"speaker_pool": True, "neighbours": 10, "dialogue_neighbours": 3}, 1e-3),
    # the two above, then trained again on train + selection slice for their chosen epochs
    # (`erc train fusion --refit`): the model scored is the refit, its selection score the
    # first run's, so the choice of the pair is the same
    "bi-gru+nb+dnb+refit": ({"neighbours": 10, "dialogue_neighbours": 3}, 1e-3, {"refit": True}),
    "bi-gru+pool+nb+dnb+refit": ({"speaker_pool": True, "neighbours": 10, "dialogue_neighbours": 3},
                                 1e-3, {"refit": True}),
}
# `erc train fusion`'s own choice between two ROWS (its default, choose_speaker_pool): in
# every fold and seed, the model of the pair whose selection score is better, by the rule
# the command applies (erc.train.fitting.chosen_candidate); the pair trains as its rows do.
CHOICE_ROWS = {"bi-gru-or-pool": {"speaker-pool": "bi-gru+pool", "no-speaker-pool": "bi-gru"},
               "state-or-pool+state": {"speaker-pool": "bi-gru+pool+state",
                                       "no-speaker-pool": "bi-gru+state"},
               "ls-or-pool+ls": {"speaker-pool": "bi-gru+pool+ls", "no-speaker-pool": "bi-gru+ls"},
               "nb-or-pool+nb": {"speaker-pool": "bi-gru+pool+nb", "no-speaker-pool": "bi-gru+nb"},
               "nb30-or-pool+nb30": {"speaker-pool": "bi-gru+pool+nb30", "no-speaker-pool": "bi-gru+nb30"},
               "dnb-or-pool+dnb": {"speaker-pool": "bi-gru+pool+nb+dnb", "no-speaker-pool": "bi-gru+nb+dnb"},
               "dnb-or-pool+dnb+refit": {"speaker-pool": "bi-gru+pool+nb+dnb+refit",
                                         "no-speaker-pool": "bi-gru+nb+dnb+refit"}}
DEFAULT_ROW = "dnb-or-pool+dnb"  # `erc train fusion` with every option at its default
DEFAULT_ROWS = list(ROWS)[:5]  # the first readout, causal and bidirectional Mamba, without averaging, the default

# name -> (TextModelConfig options, loop options): the context text encoder fine-tuned
# through ``erc train text``'s code path (``erc.train.fitting.finetune_text`` on Ray Train);
# what is not given takes TextRecipe's defaults.
TEXT_ROWS = {
    "text-past": ({"context_turns": 8, "future_turns": 0, "max_length": 160, "freeze_layers": 1},
                  {"epochs": 3, "lr": 6e-5}),
    "text-ctx": ({"context_turns": 8, "future_turns": 8, "max_length": 160, "freeze_layers": 1},
                 {"epochs": 3, "lr": 6e-5}),
    "text-window": ({"context_turns": 8, "future_turns": 8, "max_length": 160, "freeze_layers": 1,
                     "inputs": "window"}, {"epochs": 6, "lr": 1e-4, "batch_size": 8}),
    # the utterance alone: the context is left to the fusion model over its vectors (COSMIC)
    "text-utt": ({"context_turns": 0, "future_turns": 0, "max_length": 64, "freeze_layers": 1},
                 {"epochs": 4, "lr": 6e-5}),
}

# name -> (text row, fusion options, lr, frozen vectors too): the fusion model over the
# utterance vectors of a text row's model fine-tuned on the same fold (COSMIC / DAG-ERC),
# optionally with the frozen encoder's vectors as a second text token.
FUSED_ROWS = {
    "window+bi-mamba": ("text-window", MAMBA, 1e-3, False),
    "window+bi-gru": ("text-window", {"mixer": "gru"}, 1e-3, False),
    "window+bi-gru+drop": ("text-window", {"mixer": "gru", "turn_dropout": 0.3}, 1e-3, False),
    "window+frozen+bi-gru": ("text-window", {"mixer": "gru"}, 1e-3, True),
    "past+bi-gru": ("text-past", {"mixer": "gru"}, 1e-3, False),
    "past+frozen+bi-gru": ("text-past", {"mixer": "gru"}, 1e-3, True),
    "utt+bi-gru": ("text-utt", {"mixer": "gru"}, 1e-3, False),
    "utt+frozen+bi-gru": ("text-utt", {"mixer": "gru"}, 1e-3, True),
}
SHORT = {"all-MiniLM-L6-v2": "minilm", "all-mpnet-base-v2": "mpnet"}


def floor_baseline(table, features, labels: list[str]) -> dict:
    """Frozen embeddings of the turn + its 2 previous turns (zeros before the dialogue
    starts) -> logistic regression, trained on 'train', scored on 'test'."""
    from sklearn.linear_model import LogisticRegression

    from erc.train.data import dialogues
    from erc.train.metrics import classification_metrics

    def xy(split):
        xs, ys = [], []
        for d in dialogues(table, split):
            vectors = [features[u] for u in d["ids"]]
            for i, emotion in enumerate(d["emotions"]):
                if emotion is None:
                    continue
                ctx = [vectors[i - k] if i - k >= 0 else np.zeros_like(vectors[i]) for k in (1, 2)]
                xs.append(np.concatenate([vectors[i], *ctx]))
                ys.append(labels.index(emotion))
        return np.asarray(xs), np.asarray(ys)

    x_train, y_train = xy("train")
    x_test, y_test = xy("test")
    model = LogisticRegression(max_iter=3000).fit(x_train, y_train)
    return classification_metrics(y_test, model.predict(x_test), labels)


def ensemble_metrics(predictions: list) -> dict:
    """Metrics of the ensemble of models whose evaluations wrote ``predictions`` (their class
    probabilities averaged, as ``erc evaluate M1 M2 ...`` does; nothing predicted again)."""
    from erc.train.metrics import classification_metrics

    tables = [p.sort_by("utterance_id") for p in predictions]
    columns = [c for c in tables[0].column_names if c.startswith("p_")]
    labels = [c[2:] for c in columns]
    true = tables[0].column("true").to_pylist()
    labelled = np.asarray([t is not None for t in true])
    y = np.asarray([labels.index(t) for t in true if t is not None])
    probs = np.mean([np.stack([t.column(c).to_numpy() for c in columns], 1) for t in tables], 0)
    return classification_metrics(y, probs[labelled].argmax(1), labels)


def model_key(corpus: str, fold: str, config: dict, args, data: str) -> str:
    """The cache folder name of one trained model: its configuration (every option,
    defaults resolved), fold and the fingerprint of the fold's table (``data``: a corpus
    that changed, a row read differently, trains anew)."""
    config = {"corpus": corpus, "fold": fold, "select_fraction": args.select_fraction,
              "data": data, **config}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return f"{corpus}-{fold}-{digest}"


# The recipe options (beside the model's) that a row may set.
RECIPE_OPTIONS = ("class_weight_power", "weight_decay", "average_epochs")
# Recipe options added since models were first cached, at the value those models had: a row
# trains with it unless it names another, and only another enters its cache key.
LATER_RECIPE_OPTIONS = {"label_smoothing": 0.0, "refit": False}


def fusion_recipe_options(extra: dict) -> dict:
    """The recipe options a fusion row's cached model depends on: ``erc train fusion``'s
    defaults, then the row's."""
    from erc.recipes import FusionRecipe

    defaults = FusionRecipe()
    options = {k: extra.get(k, getattr(defaults.loop if hasattr(defaults.loop, k) else defaults, k))
               for k in RECIPE_OPTIONS}
    return options | {k: extra[k] for k, before in LATER_RECIPE_OPTIONS.items()
                      if extra.get(k, before) != before}


def row_recipe_options(extra: dict) -> dict:
    """Every recipe option a fusion row trains with."""
    return LATER_RECIPE_OPTIONS | fusion_recipe_options(extra)


def fusion_config(encoder: str, options: dict, lr: float, seed: int, args,
                  extra: dict | None = None) -> dict:
    """What a fusion row's cached model depends on (its effective settings; an option
    added since models were first cached is left out at the value that keeps the model as
    it was, so adding one does not retrain every cached model)."""
    from erc.recipes import FusionConfig
    from erc.settings import before_options

    earlier = before_options(FusionConfig)
    effective = {k: v for k, v in FusionConfig(**options).to_dict().items()
                 if k not in earlier or earlier[k] != v}
    config = {"encoder": encoder, "options": effective, "lr": lr,
              "seed": seed, "epochs": args.epochs, "patience": args.patience,
              "batch_size": args.batch_size, "recipe": fusion_recipe_options(extra or {})}
    if encoder != "finetuned":  # the frozen encoder's layers its vectors read
        config["layers"] = args.layers
    return config


def fusion_row(row: str) -> tuple[dict, float, dict]:
    """A ROWS entry as (fusion options, learning rate, recipe options)."""
    options, lr, *extra = ROWS[row]
    return ({"speaker_state": False, "neighbours": 0, "dialogue_neighbours": 0, **options}, lr,
            (extra[0] if extra else {}))


def is_default_row(row: str) -> bool:
    """Whether a row is ``erc train fusion`` with every option at its default: the choice
    between the default GRU and the same with speaker pooling, each as the command
    trains its candidate."""
    from erc.recipes import FusionConfig, FusionRecipe
    from erc.train.fitting import SPEAKER_POOL_CANDIDATES

    recipe = FusionRecipe()
    defaults = {k: getattr(recipe.loop if hasattr(recipe.loop, k) else recipe, k)
                for k in row_recipe_options({})}

    def trains_as(member: str, pool: bool) -> bool:
        options, lr, extra = fusion_row(member)
        return (FusionConfig(**options) == dataclasses.replace(recipe.model, speaker_pool=pool)
                and lr == recipe.loop.lr and row_recipe_options(extra) == defaults)

    members = CHOICE_ROWS.get(row, {})
    return (recipe.choose_speaker_pool and row == DEFAULT_ROW and set(members) ==
            set(SPEAKER_POOL_CANDIDATES) and all(trains_as(members[name], pool) for name, pool
                                                 in SPEAKER_POOL_CANDIDATES.items()))


def text_recipe(row: str, seed: int, args):
    """The TextRecipe of a text row on a fold (roles train / select)."""
    from erc.recipes import Splits, TextModelConfig, TextRecipe
    from erc.train.folds import FOLD_ROLES

    options, loop = TEXT_ROWS[row]
    base = TextRecipe().loop
    loop = dataclasses.replace(base, **{"patience": 2, **loop}, seed=seed, cpus_per_worker=args.cpus)
    return TextRecipe(encoder=args.text_encoder, model=TextModelConfig(**options), loop=loop,
                      splits=Splits(**{f"{r}_split": s for r, s in FOLD_ROLES.items()}))


def text_config(row: str, seed: int, args) -> dict:
    """What a text row's cached model depends on: the recipe less where it runs."""
    recipe = dataclasses.asdict(text_recipe(row, seed, args))
    for key in ("storage_path", "cpus_per_worker", "num_workers", "name"):
        recipe["loop"].pop(key)
    return {"kind": "text", "recipe": recipe}


def selection_score(out: Path) -> float:
    """A trained model's best weighted F1 on the selection split (its early-stopping score)."""
    return max(h["dev_weighted_f1"] for h in json.loads((out / "history.json").read_text()))


class Models:
    """Every row's model on a fold: trained through the product's code path, or found in the
    cache (``bench_dir/<corpus>-<fold>-<digest of its configuration>``)."""

    def __init__(self, corpus: str, args, bench_dir: Path, frozen_encoder: str, frozen_vectors,
                 second: tuple[str, dict] | None = None):
        from erc.train.vectors import resolve_text_encoder

        self.corpus, self.args, self.bench_dir = corpus, args, bench_dir
        self.frozen_encoder, self.frozen_vectors = frozen_encoder, frozen_vectors
        self.second = second  # (path, vectors) of --second-encoder: a second text token
        self.text_encoder = resolve_text_encoder(args.text_encoder)
        self.cached, self.seconds, self.data = {}, {}, {}
        self.chosen: dict[str, list[str]] = {}  # a choice row: the candidate kept, per fold and seed

    def key(self, row: str, fold, seed: int) -> Path:
        from erc.train.vectors import table_fingerprint

        if row in TEXT_ROWS:
            config = text_config(row, seed, self.args)
        elif row in FUSED_ROWS:
            text_row, options, lr, frozen_too = FUSED_ROWS[row]
            config = {"kind": "fused", "text": text_config(text_row, seed, self.args),
                      "frozen": self.args.encoder if frozen_too else None,
                      **fusion_config("finetuned", options, lr, seed, self.args)}
            if frozen_too:
                config["frozen_layers"] = self.args.layers
        else:
            options, lr, recipe = fusion_row(row)
            config = fusion_config(self.args.encoder, options, lr, seed, self.args, recipe)
            if self.args.second_encoder:  # absent without one: cached models keep their keys
                config["second_encoder"] = self.args.second_encoder
        if fold.name not in self.data:
            self.data[fold.name] = table_fingerprint(fold.table)
        return self.bench_dir / model_key(self.corpus, fold.name, config, self.args,
                                          self.data[fold.name])

    def choose(self, row: str, fold, seed: int) -> Path:
        """The output folder of the model a choice row keeps: its pair trained (or cached)
        as their rows, the better on selection kept as ``erc train fusion`` keeps it."""
        from erc.train.fitting import chosen_candidate

        outs = {name: self.get(member, fold, seed, count=False)  # counted in their own rows
                for name, member in CHOICE_ROWS[row].items()}
        scores = {name: selection_score(out) for name, out in outs.items()}
        kept = chosen_candidate(scores)
        self.chosen.setdefault(row, []).append(kept)
        return outs[kept]

    def get(self, row: str, fold, seed: int, count: bool = True) -> Path:
        """The output folder of ``row``'s model on ``fold`` (trained now if not cached;
        ``count``: in the row's cached / trained figures)."""
        from erc.recipes import FusionConfig, FusionRecipe, Splits, TrainConfig
        from erc.train.fitting import finetune_text, train_fusion
        from erc.train.folds import FOLD_ROLES
        from erc.train.vectors import feature_spec

        if row in CHOICE_ROWS:
            return self.choose(row, fold, seed)
        out = self.key(row, fold, seed)
        if (out / "model" / "model.safetensors").is_file():
            self.cached[row] = self.cached.get(row, 0) + count
            return out
        started = time.time()
        if row in TEXT_ROWS:
            recipe = text_recipe(row, seed, self.args)
            recipe.loop.storage_path = str(self.bench_dir / "ray")
            finetune_text(fold.table, self.text_encoder, out, recipe)
        else:
            if row in FUSED_ROWS:
                text_row, options, lr, frozen_too = FUSED_ROWS[row]
                extra = {}
                text_model = self.get(text_row, fold, seed, count=False) / "model"
                spec = feature_spec(FusionInputs(  # what `erc train fusion --text ... --second-text ...` reads
                    text=f"finetuned:{text_model}", text_only=True, text_layers=self.args.layers,
                    second_text=f"st:{self.frozen_encoder}" if frozen_too else None))
                features = None
            else:
                options, lr, extra = fusion_row(row)
                spec = {"text": {"kind": "sentence-transformers", "path": self.frozen_encoder,
                                 "layers": self.args.layers}}
                features = {"text": self.frozen_vectors}
                if self.second:  # what `erc train fusion --second-text st:ENCODER` reads
                    spec["text2"] = {**spec["text"], "path": self.second[0]}
                    features["text2"] = self.second[1]
            chosen = row_recipe_options(extra)
            loop_fields = {f.name for f in dataclasses.fields(TrainConfig)}
            recipe = FusionRecipe(
                model=FusionConfig(**options),
                loop=dataclasses.replace(
                    FusionRecipe().loop, storage_path=str(self.bench_dir / "ray"),
                    epochs=self.args.epochs, batch_size=self.args.batch_size, lr=lr,
                    patience=self.args.patience, cpus_per_worker=self.args.cpus, seed=seed,
                    **{k: v for k, v in chosen.items() if k in loop_fields}),
                splits=Splits(**{f"{r}_split": s for r, s in FOLD_ROLES.items()}),
                choose_speaker_pool=False,  # a row is one model; CHOICE_ROWS make the choice
                **{k: v for k, v in chosen.items() if k not in loop_fields})
            train_fusion(fold.table, spec, out, recipe, features=features)
        self.seconds[row] = self.seconds.get(row, 0.0) + time.time() - started
        return out


def corpus_table(name: str, args, bench_dir: Path) -> list[dict]:
    """Trains and scores every row on every fold of ``name``; returns the table's rows."""
    from erc.artifacts import load_corpus as load_utterances
    from erc.train.data import label_list
    from erc.train.evaluate import evaluate
    from erc.train.folds import protocol_folds
    from erc.train.vectors import frozen_text_features, resolve_text_encoder

    path, protocol = CORPORA[name]
    table = load_utterances(path)
    labels = label_list(table)
    folds = protocol_folds(table, protocol, select_fraction=args.select_fraction)
    if args.folds:
        folds = [f for f in folds if f.name in args.folds]
    encoder = resolve_text_encoder(args.encoder)
    second = None
    if args.second_encoder:
        path = resolve_text_encoder(args.second_encoder)
        second = (path, frozen_text_features(path, table, layers=args.layers))
    models = Models(name, args, bench_dir, encoder,
                    frozen_text_features(encoder, table, layers=args.layers), second)
    def named(encoder_name: str) -> str:
        short = SHORT.get(encoder_name, Path(encoder_name).name)
        return short + (f" (last {args.layers} layers)" if args.layers != 1 else "")

    # The floor of the issue reads frozen MiniLM sentence vectors; rows over other vectors
    # also face the floor over each of those (the gain column takes the strongest).
    floor_encoders = {"MiniLM": ("all-MiniLM-L6-v2", 1)}
    for other in filter(None, (args.encoder, args.second_encoder)):
        if (other, args.layers) != ("all-MiniLM-L6-v2", 1):
            floor_encoders[named(other)] = (other, args.layers)
    short = " + ".join(named(e) for e in filter(None, (args.encoder, args.second_encoder)))
    floors = {label: ({"model": f"floor: frozen {label} + 2 turns + LogReg", "test": {},
                       "select": {}, "note": "trained on the train split", "floor": True},
                      frozen_text_features(resolve_text_encoder(enc), table, layers=layers))
              for label, (enc, layers) in floor_encoders.items()}
    runs: dict[str, dict] = {row: {"test": {}, "select": {}, "predictions": {}}
                             for row in args.rows}
    for fold in folds:
        print(f"[{name} {fold.name}]", flush=True)
        for label, (floor, vectors) in floors.items():
            floor["test"][fold.name] = floor_baseline(fold.table, vectors, labels)["weighted_f1"]
            print(f"  floor ({label}) wF1 {floor['test'][fold.name]:.4f}", flush=True)
        for row in args.rows:
            tests, selects, predictions = [], [], []
            for seed in range(args.seeds):
                out = models.get(row, fold, seed)
                selects.append(selection_score(out))
                result = evaluate(out / "model", fold.table, "test", out / "eval-test")
                tests.append(result.metrics["weighted_f1"])
                predictions.append(result.predictions)
            runs[row]["test"][fold.name] = float(np.mean(tests))
            runs[row]["select"][fold.name] = float(np.mean(selects))
            runs[row]["predictions"][fold.name] = predictions
            print(f"  {row:32} select {np.mean(selects):.4f}  test {np.mean(tests):.4f}"
                  + (f"  (seeds: {' '.join(f'{t:.3f}' for t in tests)})" if args.seeds > 1 else ""),
                  flush=True)

    rows = [floor for floor, _ in floors.values()]
    tuned = SHORT.get(args.text_encoder, Path(args.text_encoder).name)
    for row in args.rows:
        run = runs[row]
        cached = models.cached.get(row, 0)
        if row in TEXT_ROWS:
            title = f"fine-tuned {tuned}: {row}"
        elif row in FUSED_ROWS:
            title = f"fused over {tuned} {FUSED_ROWS[row][0]}: {row}"
        elif row in CHOICE_ROWS:
            default = is_default_row(row) and args.layers == FusionInputs().text_layers
            title = f"frozen {short} + {row}" + (" (default)" if default else "")
        else:
            default = is_default_row(row) and args.layers == FusionInputs().text_layers
            title = f"frozen {short} + {row}" + (" (default)" if default else "")
        note = f"{cached} cached, {len(folds) * args.seeds - cached} trained in " \
               f"{models.seconds.get(row, 0.0):.0f} s"
        if row in CHOICE_ROWS:
            kept = models.chosen.get(row, [])
            note = ", ".join(f"{name} kept {kept.count(name)}x" for name in CHOICE_ROWS[row]) + \
                f" of {len(kept)} (models of its pair's rows)"
        rows.append({"model": title, "test": run["test"], "select": run["select"], "note": note})
        if args.seeds > 1:  # what `erc evaluate` of the row's seeds scores together
            rows.append({"model": f"{row}: {args.seeds} seeds, probabilities averaged",
                         "test": {f: ensemble_metrics(p)["weighted_f1"]
                                  for f, p in run["predictions"].items()},
                         "select": {}, "note": "no choice made"})
    if len(args.rows) > 1:
        # Per fold, the row with the best selection score: a choice made without the test dialogues.
        chosen = {f.name: max(args.rows, key=lambda r: runs[r]["select"][f.name]) for f in folds}
        rows.append({"model": "selected: best row on the selection split",
                     "test": {f: runs[r]["test"][f] for f, r in chosen.items()},
                     "select": {f: runs[r]["select"][f] for f, r in chosen.items()},
                     "note": "per fold: " + ", ".join(f"{f} {r}" for f, r in chosen.items())})
    if args.ensemble > 1 and len(args.rows) >= args.ensemble:
        ranked = sorted(args.rows, key=lambda r: -np.mean(list(runs[r]["select"].values())))
        members = ranked[: args.ensemble]
        rows.append({"model": f"ensemble of the top {args.ensemble} rows on selection",
                     "test": {f.name: ensemble_metrics([p for r in members for p in
                                                        runs[r]["predictions"][f.name]])["weighted_f1"]
                              for f in folds},
                     "select": {}, "note": "members: " + ", ".join(members)})
    for r in rows:
        r["corpus"] = name
    return rows


def print_table(name: str, rows: list[dict]) -> None:
    folds = list(rows[0]["test"])
    floors = [r["test"] for r in rows if r.get("floor")]
    floor = {f: max(fl[f] for fl in floors) for f in folds}  # the strongest floor of each fold
    print(f"\n{name}: test weighted F1 per fold (selection: mean over folds of the best "
          f"selection-split wF1); gain = smallest gain over the (strongest) floor of the same fold")
    print(f"{'model':46} " + " ".join(f"{f:>9}" for f in folds)
          + f" {'mean':>6} {'sd':>6} {'select':>6} {'gain':>6}  note")
    for r in rows:
        scores = [r["test"][f] for f in folds]
        select = f"{np.mean(list(r['select'].values())):6.3f}" if r["select"] else f"{'':6}"
        gain = "" if r.get("floor") else f"{min(r['test'][f] - floor[f] for f in folds):+6.3f}"
        print(f"{r['model']:46} " + " ".join(f"{s:9.3f}" for s in scores)
              + f" {np.mean(scores):6.3f} {np.std(scores):6.3f} {select} {gain:>6}  {r['note']}")
    for model, acc, wf1 in PAPER[name]:
        print(f"{model:46} {'(their own splits)':>{10 * len(folds) - 1}} "
              f"{'  n/a' if wf1 is None else f'{wf1 / 100:6.3f}'}  acc {acc / 100:.3f}, reported")
    ours = [r for r in rows if not r.get("floor")]
    if ours:
        best = max(ours, key=lambda r: np.mean(list(r["test"].values())))
        mean = np.mean(list(best["test"].values()))
        beats = all(best["test"][f] - floor[f] >= FLOOR_GAIN for f in folds)
        print(f"target mean wF1 >= {TARGET[name]:.2f} and >= floor + {FLOOR_GAIN} on every fold: "
              f"{'MET' if mean >= TARGET[name] and beats else 'NOT MET'} (best: "
              f"{best['model']}, {mean:.3f})")


def adapter_rows() -> None:
    """Emotion from identity embeddings on unseen people: logistic regression on the raw
    embeddings vs the adapter (its head, and logistic regression on its 128-d layer)."""
    from sklearn.linear_model import LogisticRegression

    from erc.backends.registry import load_backend, profile_specs
    from erc.corpus import read_corpus
    from erc.models import adapters
    from erc.train.metrics import classification_metrics

    specs = profile_specs("offline")

    def compare(name, x, labels, groups, test_mask, modality):
        label_set = sorted(set(labels))
        ok = np.isfinite(x).all(1)
        train, test = ok & ~test_mask, ok & test_mask
        y = np.asarray([label_set.index(label) for label in labels])
        unit = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-9)
        raw = LogisticRegression(max_iter=3000).fit(unit[train], y[train]).predict(unit[test])
        adapter, _ = adapters.train_adapter(x[train], [labels[i] for i in np.flatnonzero(train)],
                                            [groups[i] for i in np.flatnonzero(train)],
                                            modality, label_set)
        head = adapters.predict(adapter, x[test])
        adapted = adapters.adapt_vectors(adapter, x)
        lr = LogisticRegression(max_iter=3000).fit(adapted[train], y[train]).predict(adapted[test])
        chance = np.bincount(y[test]).max() / test.sum()
        for model, pred in ((f"raw {x.shape[1]}-d + LogReg", raw), ("adapter (its head)", head),
                            ("adapted 128-d + LogReg", lr)):
            m = classification_metrics(y[test], pred, label_set)
            print(f"  {name:22} {model:26} acc {m['accuracy']:.4f}  wF1 {m['weighted_f1']:.4f}  "
                  f"n={int(test.sum())}, majority {chance:.3f}", flush=True)

    ravdess = SHARED / "assets" / "speech" / "ravdess16k"
    if ravdess.is_dir():
        table = read_corpus(ravdess, actor_splits={"train": "1-14", "test": "15-18"}).utterances
        embedder = load_backend(specs["speaker"])
        x, labels, groups = adapters.speech_embeddings(table, embedder)
        split = [s for s, e in zip(table.column("split").to_pylist(),
                                   table.column("emotion").to_pylist()) if e]
        compare("ravdess speaker (GE2E)", x, labels, groups,
                np.asarray([s == "test" for s in split]), "speaker")
    ckplus = SHARED / "assets" / "faces" / "ckplus48"
    if ckplus.is_dir():
        paths, labels, groups = adapters.image_folder_items(ckplus)
        embedder = load_backend(specs["face_embed"])
        x = adapters.face_crop_embeddings(paths, embedder)
        subjects = sorted(set(groups))
        held = set(subjects[::5])  # every 5th subject is unseen
        compare("ck+48 face (dlib)", x, labels, groups,
                np.asarray([g in held for g in groups]), "face")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", choices=[*CORPORA, "adapters"])
    parser.add_argument("--encoder", default="all-MiniLM-L6-v2",
                        help="frozen sentence encoder of the fusion rows (all-mpnet-base-v2 "
                             "after `erc models fetch all-mpnet-base-v2`)")
    parser.add_argument("--second-encoder", metavar="ENCODER",
                        help="a second frozen encoder whose vectors the fusion rows read as a "
                             "second text token (erc train fusion --second-text st:ENCODER)")
    parser.add_argument("--layers", type=int, default=FusionInputs().text_layers,
                        help="the frozen encoder's last N layers pooled into its vectors (1: its "
                             "sentence vector; default erc train fusion's --text-layers)")
    parser.add_argument("--text-encoder", default=TextRecipe.encoder,
                        help="the encoder the text rows fine-tune (erc train text's; "
                             "all-mpnet-base-v2 after `erc models fetch all-mpnet-base-v2`, or a folder)")
    every_row = [*ROWS, *CHOICE_ROWS, *TEXT_ROWS, *FUSED_ROWS]
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=every_row,
                        metavar="ROW", help=f"rows to train (default the first five): {every_row}")
    parser.add_argument("--folds", nargs="+", help="only these folds (e.g. session1)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per row and fold")
    parser.add_argument("--ensemble", type=int, default=3,
                        help="members of the ensemble row (rows ranked on selection)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--select-fraction", type=float, default=0.15,
                        help="training dialogues held out for selection, per fold")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the training worker")
    parser.add_argument("--out", help="JSON of the table (default runs/bench/accuracy-CORPUS.json)")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        print(f"bench needs {SHARED} (real corpora)", file=sys.stderr)
        return 2
    runtime.apply_offline_env()
    started = time.time()
    if args.corpus == "adapters":
        adapter_rows()
        print(f"\n{time.time() - started:.0f} s")
        return 0
    bench_dir = state_dir() / "bench" / "folds"
    try:
        rows = corpus_table(args.corpus, args, bench_dir)
    finally:
        runtime.shutdown()
    print_table(args.corpus, rows)
    out = Path(args.out or f"runs/bench/accuracy-{args.corpus}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "seconds": time.time() - started,
                               "args": vars(args)}, indent=2))
    print(f"\n{time.time() - started:.0f} s; table in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
