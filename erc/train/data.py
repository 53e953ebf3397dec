"""Training data from the utterance table (+ features): dialogues as sequences of turns.

Splits are given as roles: ``{"train": "train", "dev": "valid"}`` trains on the corpus's
``train`` split and evaluates on its ``valid`` split; the loop always calls them train/dev.
Labels are the sorted set of emotions of the train split (or a list you pass): a label only
other splits have is no class of the model (evaluate scores it as an unseen label); -1 for
a turn without a label, or with such a label (it is still context, but not a target).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from erc.errors import ConfigError, InputError

DEFAULT_ROLES = {"train": "train", "dev": "dev"}
DEV_NAMES = ("dev", "valid", "val", "validation")  # the dev role reads the first one present
SELECT_SPLIT = "select"  # the split name of a selection slice carved out of a training split
NO_DEV_HINT = ("to stop early on a slice of the train split's dialogues instead, give "
               "--select-fraction (e.g. 0.15)")


def dev_split_of(present: set[str]) -> str:
    """The split that stands for 'dev' among the splits ``present``: dev, else valid / val /
    validation ('dev' when there is none of them)."""
    return next((name for name in DEV_NAMES if name in present), "dev")


def chosen_on(summary: dict) -> str:
    """What a training run's best epoch was chosen on (its dev split's name: "dev", "valid",
    whatever ``train.dev_split`` names; or "selection slice" of the train split), as the
    lines that quote its scores name it."""
    return summary.get("chosen_on", "dev")


def chosen_split(dev_split: str, select_fraction: float | None, present: set[str]) -> str | None:
    """The split whose scores training chose its epoch and candidate on: ``dev_split`` (for
    'dev', the valid split standing for it among ``present``), none with a selection slice
    of the train split (``select_fraction``)."""
    if select_fraction is not None:
        return None
    return dev_split_of(present) if dev_split == "dev" else dev_split


def resolve_roles(table: pa.Table, roles: Mapping[str, str] | None,
                  hints: Mapping[str, str] | None = None) -> dict[str, str]:
    """Role -> split name; 'dev' falls back to 'valid' / 'val' when the corpus has no 'dev'.
    ``hints``: role -> what to do when its split is missing (added to the error)."""
    roles = dict(roles or DEFAULT_ROLES)
    present = set(table.column("split").to_pylist())
    if roles.get("dev") == "dev":
        roles["dev"] = dev_split_of(present)
    for role, split in roles.items():
        if split not in present:
            hint = f"; {hints[role]}" if hints and role in hints else ""
            raise InputError(f"split {split!r} (for {role}) is not in the table; "
                             f"splits there: {', '.join(sorted(present))}{hint}")
    return roles


def training_roles(table: pa.Table, roles: Mapping[str, str] | None) -> dict[str, str]:
    """``resolve_roles`` for training: the model learns from the train split's labels and
    is selected by the dev split's, so a split of either without any is an error."""
    roles = resolve_roles(table, roles, hints={"dev": NO_DEV_HINT})
    emotions = {}
    for role, split in roles.items():
        emotions[role] = [e for e in table.filter(pa.compute.equal(table.column("split"), split))
                          .column("emotion").to_pylist() if e]
        if not emotions[role]:
            raise InputError(f"split {split!r} (for {role}) has no labelled utterances"
                             + (_dev_hint(split) if role == "dev" else ""))
    # A label the train split never shows is one the model cannot learn: said, not hidden
    # in a dev score that counts every such utterance wrong.
    learnt = set(emotions["train"])
    if len(learnt) < 2:  # a model of one class predicts it always: scores that mean nothing
        raise InputError(f"split {roles['train']!r} (for train) has one label, "
                         f"{_counted(Counter(emotions['train']))}: a model needs two to "
                         f"tell apart")
    unlearnable = Counter(e for e in emotions.get("dev", ()) if e not in learnt)
    if "dev" in emotions and sum(unlearnable.values()) == len(emotions["dev"]):
        # its score would leave every utterance out: 0 at every epoch, nothing to stop on
        raise InputError(f"split {roles['dev']!r} (for dev) has no utterance labelled with "
                         f"a label of split {roles['train']!r} (it has {_counted(unlearnable)})"
                         f"{_dev_hint(roles['dev'])}")
    if unlearnable:
        print(f"[train] note: {_counted(unlearnable)} labelled in split {roles['dev']!r} but "
              f"never in {roles['train']!r}: the model cannot learn them, and its dev score "
              f"leaves them out", flush=True)
    # The splits training does not read (a test split, the dev split a selection slice
    # stands in for): their labels the train split lacks are no class of the model either.
    unseen = [(s, e) for s, e in zip(table.column("split").to_pylist(),
                                     table.column("emotion").to_pylist())
              if e and e not in learnt and s not in roles.values()]
    if unseen:
        print(f"[train] note: {_counted(Counter(e for _, e in unseen))} labelled in split(s) "
              f"{', '.join(map(repr, sorted({str(s) for s, _ in unseen})))} but never in "
              f"{roles['train']!r}: not among the model's labels (evaluate scores them as "
              f"unseen labels)", flush=True)
    return roles


def _dev_hint(split: str) -> str:
    """What to do when ``split`` cannot choose the epoch: a selection slice instead, unless
    it is one already (a few more of the train split's dialogues may hold labels)."""
    return "" if split == SELECT_SPLIT else f"; {NO_DEV_HINT}"


def _counted(labels: Counter) -> str:
    return ", ".join(f"{label} ({n})" for label, n in sorted(labels.items()))


def label_key(label: str) -> str:
    """What is the same emotion however it is written: 'Joy', 'joy ' and 'joy' share one, as
    do 'café' composed and 'cafe' + U+0301 (one look, two strings: two classes otherwise)."""
    return " ".join(unicodedata.normalize("NFKC", label).split()).casefold()


def _shown(label: str) -> str:
    """A label as a message quotes it: escaped where Unicode form is all that tells it from
    another ('cafe\\u0301' beside 'café', which would print the same)."""
    return repr(label) if unicodedata.normalize("NFC", label) == label else ascii(label)


def label_list(table: pa.Table, split: str | None = None) -> list[str]:
    """The emotions of ``split`` (the train split: the labels a model learns; None: of the
    whole table), sorted. Two in the table that differ only in case, spaces or Unicode form
    ('Joy', 'joy ') are an error: one emotion written two ways would be learnt as two classes."""
    everywhere = sorted({e for e in table.column("emotion").to_pylist() if e})
    written: dict[str, list[str]] = {}
    for label in everywhere:
        written.setdefault(label_key(label), []).append(label)
    clashes = [ways for ways in written.values() if len(ways) > 1]
    if clashes:
        raise InputError("labels that differ only in case, spaces or Unicode form would be "
                         "learnt as separate classes: " + "; ".join(" / ".join(map(_shown, ways))
                                                                    for ways in clashes)
                         + " (write each emotion one way in the corpus)")
    if split is None:
        return everywhere
    return sorted({e for s, e in zip(table.column("split").to_pylist(),
                                     table.column("emotion").to_pylist()) if s == split and e})


def dialogues(table: pa.Table, split: str) -> list[dict]:
    """The dialogues of ``split`` in a stable order, each with its turns in order:
    {"dialogue_id", "ids", "speakers", "texts", "emotions"}."""
    frame = table.filter(pa.compute.equal(table.column("split"), split)).select(
        ["utterance_id", "dialogue_id", "turn", "speaker", "text", "emotion"]).to_pandas()
    out = []
    for dialogue_id, group in frame.groupby("dialogue_id", sort=False):
        group = group.sort_values("turn", kind="stable")
        out.append({"dialogue_id": dialogue_id, "ids": group.utterance_id.tolist(),
                    "speakers": group.speaker.tolist(),
                    "texts": [t if isinstance(t, str) else "" for t in group.text],
                    "emotions": [e if isinstance(e, str) else None for e in group.emotion]})
    return out


def _encode_labels(emotions, labels: list[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    return np.asarray([index.get(e, -1) if e else -1 for e in emotions], dtype=np.int64)


def build_text_data(table: pa.Table, tokenizer, settings, roles: Mapping[str, str] | None = None,
                    labels: list[str] | None = None, extra_splits: tuple[str, ...] = ()):
    """TextData for the text task of ``settings`` (a ``TextModelConfig``): one input per
    utterance, with its past (and future) turns (``erc.models.text.target_inputs``); with
    window inputs the train role also keeps each dialogue's turns, which the task packs
    into windows every epoch."""
    from erc.models.text import special_ids, target_inputs, turn_ids
    from erc.train.tasks import TextData

    # An input longer than the encoder's position table fails in its embedding layer, in
    # the first batch that is that long, mid-training (the tokenizer's 1e30: it does not say).
    if settings.max_length > tokenizer.model_max_length:
        raise ConfigError(f"max_length: {settings.max_length} tokens is more than the encoder "
                          f"reads in one input ({tokenizer.model_max_length})")
    roles = resolve_roles(table, roles)
    labels = labels or label_list(table, roles.get("train"))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    cls_id, sep_id = special_ids(tokenizer)
    windows = settings.inputs == "window"
    data = TextData(labels=labels, pad_id=pad, cls_id=cls_id, sep_id=sep_id,
                    dev_split=roles.get("dev", "dev"))
    for role, split in list(roles.items()) + [(s, s) for s in extra_splits]:
        dias = dialogues(table, split)
        ids = turn_ids(tokenizer, [list(zip(d["speakers"], d["texts"])) for d in dias],
                       settings.speaker_names)
        inputs = [target_inputs(turns, settings.context_turns, settings.max_length, cls_id,
                                sep_id, settings.future_turns, mark_target=not windows)
                  for turns in ids]
        data.splits[role] = {
            "rows": [row for rows in inputs for row in rows],
            "y": _encode_labels([e for d in dias for e in d["emotions"]], labels),
            "ids": [u for d in dias for u in d["ids"]],
            "speakers": [s for d in dias for s in d["speakers"]],
        }
        if windows and role == "train":
            data.splits[role]["dialogues"] = [
                (turns, _encode_labels(d["emotions"], labels)) for turns, d in zip(ids, dias)]
    return data


def build_dialogue_data(table: pa.Table, features: Mapping[str, Mapping[str, np.ndarray]],
                        roles: Mapping[str, str] | None = None, labels: list[str] | None = None,
                        extra_splits: tuple[str, ...] = (), dims: Mapping[str, int] | None = None):
    """DialogueData for the fusion task. ``features``: modality -> {utterance_id: vector};
    an utterance without a vector for a modality is marked missing for it (the model
    substitutes its learned missing embedding), never filled with zeros as if observed.
    ``dims``: a trained model's widths, for a modality of which no utterance has a vector."""
    from erc.train.tasks import DialogueData

    roles = resolve_roles(table, roles)
    labels = labels or label_list(table, roles.get("train"))
    modalities = [m for m in ("text", "speaker", "face") if m in features] + sorted(
        m for m in features if m not in ("text", "speaker", "face"))
    known, dims = dims or {}, {}
    for m in modalities:
        first = next(iter(features[m].values()), None)
        if first is None and m not in known:
            raise InputError(f"no {m} features at all")
        dims[m] = int(np.asarray(first).shape[-1]) if first is not None else int(known[m])
    data = DialogueData(labels=labels, modalities=modalities, dims=dims,
                        dev_split=roles.get("dev", "dev"))
    for role, split in list(roles.items()) + [(s, s) for s in extra_splits]:
        out = []
        for d in dialogues(table, split):
            t = len(d["ids"])
            feats, present = {}, {}
            for m in modalities:
                arr = np.zeros((t, dims[m]), dtype=np.float32)
                have = np.zeros(t, dtype=bool)
                for i, uid in enumerate(d["ids"]):
                    vec = features[m].get(uid)
                    if vec is not None:
                        arr[i] = vec
                        have[i] = True
                feats[m], present[m] = arr, have
            out.append({"features": feats, "present": present,
                        "y": _encode_labels(d["emotions"], labels), "ids": d["ids"],
                        "speakers": d["speakers"], "dialogue_id": d["dialogue_id"]})
        data.splits[role] = out
    return data
