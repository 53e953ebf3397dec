"""Evaluation folds: leave-one-session-out and train -> dev, each with a dialogue-level
selection slice; no dialogue is in two roles, every utterance is in exactly one."""

from __future__ import annotations

from collections import Counter

import pytest

from erc.schema import utterance_table
from erc.train.folds import FOLD_ROLES, dev_fold, loso_folds, protocol_folds, selection_slice, session_of
from tests.conftest import shared_path  # first: it sets the hermetic environment


def _table(dialogues: dict[tuple[str, str], int]):
    """(split, dialogue_id) -> number of turns."""
    rows = []
    for (split, dialogue), turns in dialogues.items():
        for t in range(turns):
            rows.append({"utterance_id": f"c/{split}/{dialogue}/{t}", "corpus": "c",
                         "split": split, "dialogue_id": dialogue, "turn": t,
                         "speaker": "AB"[t % 2], "text": f"turn {t}", "emotion": "neu"})
    return utterance_table(rows)


def _roles(fold):
    """role -> set of dialogue ids; utterances per role."""
    table = fold.table
    out: dict[str, set] = {}
    for split, dialogue in zip(table.column("split").to_pylist(),
                               table.column("dialogue_id").to_pylist()):
        out.setdefault(split, set()).add(dialogue)
    return out, Counter(table.column("split").to_pylist())


def test_session_of_reads_the_dialogue_id():
    assert session_of("Ses01F_impro01") == 1 and session_of("Ses04M_script02_2") == 4
    with pytest.raises(ValueError, match="IEMOCAP session"):
        session_of("dia12")


def test_leave_one_session_out_folds():
    dialogues = {("train" if i % 5 else "valid", f"Ses0{s}{g}_impro{i:02d}"): 3 + i % 4
                 for s in (1, 2, 3, 4) for g in "FM" for i in range(10)}
    table = _table(dialogues)
    folds = loso_folds(table, select_fraction=0.15)
    assert [f.name for f in folds] == ["session1", "session2", "session3", "session4"]
    tested = set()
    for held, fold in zip((1, 2, 3, 4), folds):
        roles, counts = _roles(fold)
        assert set(roles) == {"train", "select", "test"}
        assert fold.table.num_rows == table.num_rows  # train and valid pooled, nothing lost
        assert {session_of(d) for d in roles["test"]} == {held}
        assert len(roles["test"]) == 20  # the whole session, from train and valid alike
        assert not roles["train"] & roles["select"] and not roles["test"] & roles["select"]
        # The selection slice: 15 % of each training session's 20 dialogues, 3 each.
        assert Counter(session_of(d) for d in roles["select"]) == {
            s: 3 for s in (1, 2, 3, 4) if s != held}
        tested |= roles["test"]
    assert tested == {d for _, d in dialogues}  # every dialogue is tested exactly once
    # Seeded: the same folds again; another seed draws another slice.
    again = loso_folds(table, select_fraction=0.15)
    assert _roles(again[0])[0]["select"] == _roles(folds[0])[0]["select"]
    other = loso_folds(table, select_fraction=0.15, seed=1)
    assert _roles(other[0])[0]["select"] != _roles(folds[0])[0]["select"]


def test_dev_fold_keeps_dialogue_ids_apart_by_split():
    # MELD numbers each split's dialogues from 0: dia0 of train is not dia0 of dev.
    table = _table({**{("train", f"dia{i}"): 4 for i in range(40)},
                    **{("dev", f"dia{i}"): 2 for i in range(5)}})
    fold = dev_fold(table, select_fraction=0.1)
    assert fold.name == "dev"
    roles, counts = _roles(fold)
    assert counts == {"train": 36 * 4, "select": 4 * 4, "test": 5 * 2}
    assert [f.name for f in protocol_folds(table, "dev")] == ["dev"]
    with pytest.raises(ValueError, match="splits"):
        dev_fold(table, test_split="test")


def test_selection_slice_checks_its_fraction_and_groups():
    assert len(selection_slice(range(20), 0.2)) == 4
    assert len(selection_slice(range(3), 0.01)) == 1  # at least one
    with pytest.raises(ValueError, match="fraction"):
        selection_slice(range(10), 1.0)
    with pytest.raises(ValueError, match="too few"):
        selection_slice(["a"], 0.5)
    with pytest.raises(ValueError, match="protocol"):
        protocol_folds(_table({("train", "Ses01F_a"): 2}), "kfold")


def test_iemocap_folds_on_the_real_transcripts():
    from erc.artifacts import load_corpus as load_utterances
    from erc.train.data import build_dialogue_data

    table = load_utterances(shared_path("data", "iemocap_text"))
    folds = protocol_folds(table, "loso")
    assert len(folds) == 4
    for fold in folds:
        roles, counts = _roles(fold)
        assert sum(counts.values()) == table.num_rows
        assert 10 <= len(roles["select"]) <= 16 and len(roles["test"]) >= 28
    vectors = {u: [0.0] for u in folds[0].table.column("utterance_id").to_pylist()}
    data = build_dialogue_data(folds[0].table, {"text": vectors}, FOLD_ROLES,
                               extra_splits=("test",))
    assert set(data.splits) == {"train", "dev", "test"}
