"""Evaluation folds: which dialogues a model trains on, which it is chosen on, which it is
scored on, so that no reported figure comes from dialogues a choice was made on.

Every fold is the utterance table with its ``split`` column rewritten to three roles:

- ``train``: what the model learns from;
- ``select``: a dialogue-level slice of the training dialogues held out for every choice
  (the early-stopping epoch, hyperparameters, ensemble members);
- ``test``: the dialogues the fold reports on; nothing is chosen on them.

Protocols:

- ``loso`` (IEMOCAP): train and valid pooled, leave one session out: fold k tests on
  session k (the session is in the dialogue id, ``Ses01F_impro01`` -> 1) and selects on a
  slice of the other sessions' dialogues, drawn evenly from each of them.
- ``dev`` (MELD and any corpus with train and dev splits): tests on the dev split and
  selects on a slice of the train dialogues.

Train with ``roles=FOLD_ROLES`` (the loop early-stops on ``select``) and score on ``test``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from erc.train.data import SELECT_SPLIT, dev_split_of

FOLD_ROLES = {"train": "train", "dev": "select"}  # the training loop's roles on a fold
SESSION = re.compile(r"^Ses(\d+)")


@dataclass
class Fold:
    name: str  # e.g. "session1" or "dev"
    table: pa.Table  # the utterances with split = train | select | test


def session_of(dialogue_id: str) -> int:
    """IEMOCAP session of a dialogue id: ``Ses01F_impro01`` -> 1."""
    match = SESSION.match(dialogue_id)
    if not match:
        raise ValueError(f"dialogue id {dialogue_id!r} does not name an IEMOCAP session "
                         "(expected Ses<NN>...)")
    return int(match.group(1))


def selection_slice(dialogue_ids, fraction: float, seed: int = 0,
                    groups: dict | None = None) -> set:
    """A seeded draw of ``fraction`` of the dialogues (at least one); with ``groups``
    (dialogue -> group, e.g. its session) the same fraction of each group."""
    if not 0 < fraction < 1:
        raise ValueError(f"the selection fraction must be in (0, 1), got {fraction}")
    ids = sorted(set(dialogue_ids))
    by_group: dict = {}
    for d in ids:
        by_group.setdefault(groups[d] if groups else None, []).append(d)
    rng = np.random.default_rng(seed)
    chosen: set = set()
    for group in sorted(by_group, key=str):
        members = by_group[group]
        n = max(1, int(round(fraction * len(members))))
        if n >= len(members):
            where = f"group {group!r} has" if groups else "there are"
            raise ValueError(f"{where} {len(members)} dialogue(s): too few to hold {n} out "
                             f"for selection and still train on the rest")
        chosen.update(members[i] for i in rng.choice(len(members), n, replace=False))
    return chosen


def _dialogue_keys(table: pa.Table) -> list[tuple[str, str]]:
    """(split, dialogue_id) of every row: dialogue ids are unique within a split only
    (MELD numbers each split's dialogues from 0)."""
    return list(zip(table.column("split").to_pylist(), table.column("dialogue_id").to_pylist()))


def _with_splits(table: pa.Table, split_of_dialogue: dict) -> pa.Table:
    """``table`` restricted to the dialogues (keys of ``split_of_dialogue``: (split,
    dialogue_id)), their split column rewritten to the role they are given."""
    keys = _dialogue_keys(table)
    kept = table.filter(pa.array([k in split_of_dialogue for k in keys]))
    splits = pa.array([split_of_dialogue[k] for k in keys if k in split_of_dialogue])
    return kept.set_column(kept.schema.get_field_index("split"), "split", splits)


def loso_folds(table: pa.Table, sessions: list[int] | None = None, select_fraction: float = 0.15,
               seed: int = 0) -> list[Fold]:
    """Leave-one-session-out folds over all of ``table``'s splits pooled (IEMOCAP).
    ``sessions``: the sessions to rotate through (default: every session in the table)."""
    dialogue_ids = sorted(set(_dialogue_keys(table)))
    if len({d for _, d in dialogue_ids}) < len(dialogue_ids):
        raise ValueError("a dialogue id occurs in two splits: sessions cannot be pooled")
    session = {d: session_of(d[1]) for d in dialogue_ids}
    sessions = sorted(sessions or set(session.values()))
    if len(set(session.values())) < 2:
        raise ValueError("leave-one-session-out needs dialogues of at least two sessions")
    folds = []
    for held in sessions:
        if held not in session.values():
            raise ValueError(f"no dialogue of session {held}")
        rest = [d for d in dialogue_ids if session[d] != held]
        select = selection_slice(rest, select_fraction, seed, groups=session)
        split = {d: "test" for d in dialogue_ids if session[d] == held}
        split.update({d: "select" if d in select else "train" for d in rest})
        folds.append(Fold(f"session{held}", _with_splits(table, split)))
    return folds




def with_selection_slice(table: pa.Table, train_split: str, fraction: float,
                         seed: int = 0) -> pa.Table:
    """``table`` with a seeded slice of ``fraction`` of ``train_split``'s dialogues moved to
    split ``select`` (the draw ``dev_fold`` makes): what a run stops early and chooses on
    when the corpus has no dev split, or its dev split is kept unseen."""
    keys = _dialogue_keys(table)
    present = {split for split, _ in keys}
    if SELECT_SPLIT in present:
        raise ValueError(f"the table already has a split named {SELECT_SPLIT!r}, the name of "
                         f"the selection slice: rename that split")
    train = {k for k in keys if k[0] == train_split}
    if not train:
        raise ValueError(f"no dialogue in split {train_split!r}; splits there: "
                         f"{', '.join(sorted(present))}")
    select = selection_slice(train, fraction, seed)
    splits = pa.array([SELECT_SPLIT if k in select else k[0] for k in keys])
    return table.set_column(table.schema.get_field_index("split"), "split", splits)


def dev_fold(table: pa.Table, train_split: str = "train", test_split: str = "dev",
             select_fraction: float = 0.15, seed: int = 0) -> Fold:
    """One fold: train on ``train_split`` less a selection slice of its dialogues, test on
    ``test_split`` (MELD: train -> dev)."""
    keys = set(_dialogue_keys(table))
    train = {k for k in keys if k[0] == train_split}
    test = {k for k in keys if k[0] == test_split}
    if not train or not test:
        raise ValueError(f"the table needs {train_split!r} and {test_split!r} splits; it has "
                         f"{', '.join(sorted({k[0] for k in keys}))}")
    select = selection_slice(train, select_fraction, seed)
    split = {d: "test" for d in test}
    split.update({d: "select" if d in select else "train" for d in train})
    return Fold(test_split, _with_splits(table, split))


def protocol_folds(table: pa.Table, protocol: str, select_fraction: float = 0.15,
                   seed: int = 0) -> list[Fold]:
    """The folds of ``protocol``: ``loso`` (IEMOCAP) or ``dev`` (train -> dev, e.g. MELD)."""
    if protocol == "loso":
        return loso_folds(table, select_fraction=select_fraction, seed=seed)
    if protocol == "dev":
        present = set(table.column("split").to_pylist())
        return [dev_fold(table, test_split=dev_split_of(present), select_fraction=select_fraction,
                         seed=seed)]
    raise ValueError(f"protocol must be loso or dev, got {protocol!r}")
