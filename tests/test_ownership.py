"""Output folders: erc writes, replaces and deletes only what is its own, and two runs on
one output folder end with one consistent result.

Sentinel files stand for a user's work: each case points a command at a folder holding
them and checks the message, the exit status and that every sentinel is intact.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from erc import io
from erc.cli import main
from erc.errors import OwnershipError
from erc.stages.base import MANIFEST
from tests.conftest import REPO

SENTINELS = {"notes.txt": b"my notes", "part-00000.parquet": b"my other corpus",
             "part-00007.parquet": b"more of it", "manifest.json": b'{"mine": true}',
             "summary.json": b"{}", "model/weights.bin": b"my model"}


def plant(folder: Path, files: dict[str, bytes] = SENTINELS) -> dict[str, str]:
    """Writes the sentinel files; returns their digests."""
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return digests(folder)


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def corpus_csv(folder: Path, n: int = 6, dialogue: str = "d") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "m.csv"
    path.write_text("dialogue_id,speaker,text\n" + "".join(
        f"{dialogue},{'Ann' if i % 2 else 'Bob'},Line {i} of {dialogue}.\n" for i in range(n)))
    return path


@pytest.fixture
def ingested(tmp_path, capsys) -> Path:
    out = tmp_path / "corpus"
    assert main(["corpus", "ingest", str(corpus_csv(tmp_path / "raw")), "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def refused(argv: list[str], capsys, *fragments: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("erc: error: ") and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_ingest_into_a_folder_of_the_users_leaves_it_intact(tmp_path, capsys):
    users = tmp_path / "mine"
    users.mkdir()
    before = plant(users, {**SENTINELS, "utterances.parquet": b"my own table"})
    refused(["corpus", "ingest", str(corpus_csv(tmp_path / "raw")), "--out", str(users)], capsys,
            str(users), "erc did not write", "--overwrite")
    assert digests(users) == before


def test_ingesting_a_table_into_its_own_folder_is_refused(tmp_path, capsys):
    """The issue's case: `erc corpus ingest dir/utterances.parquet --out dir`."""
    folder = tmp_path / "dir"
    folder.mkdir()
    import pyarrow as pa

    pq.write_table(pa.table({"dialogue_id": ["d"], "speaker": ["A"], "text": ["Hi."]}),
                   folder / "utterances.parquet")
    before = digests(folder)
    refused(["corpus", "ingest", str(folder / "utterances.parquet"), "--out", str(folder)], capsys,
            "erc did not write")
    assert digests(folder) == before


@pytest.mark.parametrize("name", ["utterances.parquet", "manifest.json"])
def test_ingesting_a_file_over_which_it_would_write_is_refused_with_overwrite(tmp_path, capsys,
                                                                            name):
    """With --overwrite, `erc corpus ingest dir/utterances.parquet --out dir` replaced the
    corpus file with its own output (and read that as the corpus the next time)."""
    folder = tmp_path / "dir"
    folder.mkdir()
    if name.endswith(".parquet"):
        import pyarrow as pa

        pq.write_table(pa.table({"dialogue_id": ["d"], "speaker": ["A"], "text": ["Hi."]}),
                       folder / name)
    else:
        (folder / name).write_text('[{"dialogue_id": "d", "speaker": "A", "text": "Hi."}]')
    before = digests(folder)
    refused(["corpus", "ingest", str(folder / name), "--out", str(folder), "--overwrite"],
            capsys, f"would write its {name} over this file it reads")
    assert digests(folder) == before and sorted(p.name for p in folder.iterdir()) == [name]


def test_a_mapping_in_the_output_folder_is_not_written_over(tmp_path, capsys):
    """A mapping named manifest.json in the output folder is read, never replaced."""
    corpus, out = tmp_path / "chat.csv", tmp_path / "out"
    corpus.write_text("conv,who,says\nd,A,Hi.\nd,B,Hello.\n")
    out.mkdir()
    (out / "manifest.json").write_text('{"columns": {"dialogue_id": "conv", "speaker": "who", '
                                       '"text": "says"}}')
    before = digests(out)
    refused(["corpus", "ingest", str(corpus), "--mapping", str(out / "manifest.json"), "--out",
             str(out), "--overwrite"], capsys, "would write its manifest.json over this file")
    assert digests(out) == before


def test_preprocess_into_a_folder_of_part_files_leaves_them_intact(ingested, tmp_path, capsys):
    users = tmp_path / "features-of-another-corpus"
    users.mkdir()
    before = plant(users)
    refused(["preprocess", str(ingested), "--out", str(users)], capsys, "erc did not write")
    assert digests(users) == before


def test_train_leaves_a_model_folder_of_the_users_intact(ingested, tmp_path, capsys):
    users = tmp_path / "fusion"
    users.mkdir()
    before = plant(users)
    refused(["train", "fusion", str(ingested), "--text-only", "--out", str(users)], capsys,
            "erc did not write")
    assert digests(users) == before


def test_a_file_as_output_folder_is_refused(ingested, tmp_path, capsys):
    target = tmp_path / "report.pdf"
    target.write_bytes(b"%PDF my report")
    refused(["preprocess", str(ingested), "--out", str(target)], capsys, "not a folder")
    assert target.read_bytes() == b"%PDF my report"


def test_models_fetch_refuses_a_destination_it_did_not_fetch(tmp_path, capsys):
    """Checked before anything is downloaded (no network is reached here)."""
    users = tmp_path / "models"
    users.mkdir()
    before = plant(users, {"model.safetensors": b"my fine-tuned weights", "config.json": b"{}"})
    refused(["models", "fetch", "all-mpnet-base-v2", "--dest", str(users)], capsys,
            str(users), "erc did not fetch it")
    assert digests(users) == before


def test_inspect_does_not_replace_a_mapping_file(tmp_path, capsys):
    raw = corpus_csv(tmp_path / "raw")
    mapping = tmp_path / "raw" / "erc-mapping.yaml"
    mapping.write_text("corpus: my edited mapping\n")
    refused(["corpus", "inspect", str(raw), "--write", str(mapping)], capsys, "--overwrite")
    assert mapping.read_text() == "corpus: my edited mapping\n"
    assert main(["corpus", "inspect", str(raw), "--write", str(mapping), "--overwrite"]) == 0
    assert "corpus:" in mapping.read_text() and "my edited" not in mapping.read_text()


def test_a_fresh_search_leaves_a_search_it_has_no_record_of(tmp_path):
    """erc tune --fresh removes STORAGE/search only when the folder's search.json says erc
    started that search there."""
    from erc.tune.driver import EXPERIMENT, _discard

    out = io.claim(tmp_path / "tune")
    experiment = tmp_path / "storage" / EXPERIMENT
    experiment.mkdir(parents=True)
    before = plant(experiment, {"tuner.pkl": b"someone's search", "trial_1/result.json": b"{}"})
    with pytest.raises(OwnershipError, match="no record of"):
        _discard(out, str(experiment))
    assert digests(experiment) == before
    io.write_json(out / "search.json", {"experiment": str(experiment)})
    _discard(out, str(experiment))  # erc's own: removed, with its record
    assert not experiment.exists() and not (out / "search.json").exists()


@pytest.mark.parametrize("fresh", [False, True])
def test_a_search_is_refused_a_storage_folder_of_the_users(tmp_path, fresh):
    """erc tune --storage DIR keeps its search in DIR/search: where that folder held the
    user's files, Tune wrote among them, and --fresh then deleted the folder with them."""
    from erc.tune.driver import EXPERIMENT, run_search
    from erc.tune.space import parse_spec

    storage = tmp_path / "shared"
    before = plant(storage / EXPERIMENT, {"notes.txt": b"my notes"})
    spec = parse_spec({"family": "fusion", "params": {"lr": {"loguniform": [1e-4, 1e-2]}}})
    out = tmp_path / "tune"
    with pytest.raises(OwnershipError, match="has no record of a search there") as refused:
        run_search(spec, None, out, storage=str(storage), fresh=fresh)
    assert str(refused.value).startswith(f"{storage / EXPERIMENT}: exists")
    assert digests(storage / EXPERIMENT) == before
    assert not out.exists()  # refused before anything was written


def test_a_search_stored_in_a_folder_of_the_users_inside_its_output_is_refused(tmp_path):
    """erc tune --out OUT --overwrite --storage OUT/mine: Tune kept its search among the
    user's files in OUT/mine (a folder of a folder erc adopted, which erc never writes
    into); only a --storage outside OUT was checked."""
    from erc.tune.driver import run_search
    from erc.tune.space import parse_spec

    out = tmp_path / "tune"
    before = plant(out / "mine", {"notes.txt": b"my notes"})
    spec = parse_spec({"family": "fusion", "params": {"lr": {"loguniform": [1e-4, 1e-2]}}})
    with pytest.raises(OwnershipError, match="mine"):
        run_search(spec, None, out, storage=str(out / "mine"), overwrite=True)
    assert digests(out / "mine") == before and sorted(p.name for p in out.iterdir()) == ["mine"]


def test_a_search_stored_in_the_folder_holding_its_output_is_refused(tmp_path):
    """erc tune --out DIR/search --storage DIR: the search's folder DIR/search is the
    output folder itself, which --fresh removed whole, with the user's files in it."""
    from erc.tune.driver import _check_experiment_folder

    out = io.claim(tmp_path / "search")
    io.write_json(out / "search.json", {"experiment": str(out)})  # an earlier run's record
    before = plant(out, {"notes.txt": b"my notes"})
    with pytest.raises(OwnershipError, match="output folder"):
        _check_experiment_folder(out, str(out))
    assert digests(out) == before


def test_checkpoints_stored_in_the_folder_holding_the_output_are_refused(tmp_path):
    """erc train fusion --out DIR/fusion --storage DIR: Ray Train's run folder DIR/fusion is
    the output folder itself, removed whole as "the checkpoints of the earlier run"."""
    from erc.train.loop import _checkpoints_for

    out = io.claim(tmp_path / "fusion")
    before = plant(out, {"notes.txt": b"my notes"})
    for run_path in (out, tmp_path):  # the output folder itself, or a folder holding it
        with pytest.raises(OwnershipError, match="output folder"):
            _checkpoints_for(out, str(run_path.resolve()), None, "key", fresh=False)
    assert digests(out) == before


def test_checkpoints_stored_in_a_folder_of_the_users_inside_the_output_are_refused(tmp_path):
    """erc train fusion --out OUT --overwrite --storage OUT/mine: Ray Train's run folder
    OUT/mine/<name>, a folder of the user's in a folder erc adopted, was removed as "the
    checkpoints of the earlier run" (erc tune refused the same --storage)."""
    from erc.train.loop import _checkpoints_for

    out = tmp_path / "fusion"
    before = plant(out / "mine" / "fusion", {"notes.txt": b"my notes"})
    io.claim(out, overwrite=True)
    with pytest.raises(OwnershipError, match="mine"):
        _checkpoints_for(out, str((out / "mine" / "fusion").resolve()), None, "key", fresh=False)
    assert digests(out / "mine" / "fusion") == before


def test_removals_stay_inside_folders_erc_owns(tmp_path):
    users = tmp_path / "mine"
    users.mkdir()
    before = plant(users)
    with pytest.raises(OwnershipError, match="not an erc output folder"):
        io.remove_owned(users, "notes.txt")
    ours = io.claim(tmp_path / "ours")
    with pytest.raises(OwnershipError, match="outside"):
        io.remove_owned(ours, "../mine/notes.txt")
    (ours / "link").symlink_to(users)
    with pytest.raises(OwnershipError, match="outside"):
        io.remove_owned(ours, "link/notes.txt")
    assert digests(users) == before


def test_a_folder_erc_wrote_whole_is_not_replaced_while_it_holds_a_users_file(tmp_path):
    ours = io.claim(tmp_path / "run")
    io.write_bytes(ours / "model" / "weights.bin", b"erc's")
    io.write_bytes(ours / "model" / "encoder" / "config.json", b"{}")
    io.seal(ours / "model")
    (ours / "model" / "mine.txt").write_bytes(b"my notes")
    before = digests(ours)
    with pytest.raises(OwnershipError, match="erc did not write \\(mine.txt\\)"):
        io.remove_owned(ours, "model")
    assert digests(ours) == before
    (ours / "model" / "mine.txt").unlink()
    io.remove_owned(ours, "model")  # only what erc listed: removed
    assert not (ours / "model").exists()


def test_a_link_to_a_folder_put_in_a_folder_erc_wrote_whole_is_the_users(tmp_path):
    ours = io.claim(tmp_path / "run")
    io.write_bytes(ours / "model" / "weights.bin", b"erc's")
    io.seal(ours / "model")
    (tmp_path / "data").mkdir()
    (ours / "model" / "data").symlink_to(tmp_path / "data")
    with pytest.raises(OwnershipError, match="erc did not write \\(data\\)"):
        io.remove_owned(ours, "model")
    assert (ours / "model" / "data").is_symlink()


def test_save_model_lists_every_file_it_wrote(tmp_path):
    from erc.models.adapters import Adapter, save_adapter
    from erc.recipes import AdapterConfig

    adapter = Adapter(AdapterConfig(in_dim=4, hidden=3, out_dim=2, n_classes=2))
    folder = save_adapter(io.claim(tmp_path / "a") / "model", adapter, np.zeros((2, 4)),
                          ["joy", "anger"], ["s1", "s2"])
    listed = json.loads((folder / io.FILE_INDEX).read_text())
    assert listed == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                            if p.is_file() and p.name != io.FILE_INDEX)
    io.remove_owned(tmp_path / "a", "model")


def test_a_users_file_named_like_scratch_is_still_the_users(tmp_path):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "thesis.tmp").write_bytes(b"draft")
    assert not io.is_scratch("thesis.tmp") and io.is_scratch(".x.parquet.123-0a1b2c3d.tmp")
    with pytest.raises(OwnershipError, match="thesis.tmp"):
        io.claim(users)


def test_erc_does_not_write_through_a_link_in_place_of_its_lock_or_log(tmp_path):
    from erc import console

    ours = io.claim(tmp_path / "run")
    outside = tmp_path / "outside.txt"
    (ours / io.LOCK).symlink_to(outside)
    with pytest.raises(OwnershipError, match="is a link"):
        with io.locked(ours):
            pass
    outside.write_text("mine\n")
    (ours / "run.log").symlink_to(outside)
    with pytest.raises(OwnershipError, match="is a link"):
        with console.run_log(ours / "run.log"):
            print("a line")
    assert outside.read_text() == "mine\n"


def test_a_link_in_place_of_the_lock_leaves_the_folder_unmarked(tmp_path, capsys):
    """The link was found only after the marker was written: the refused run left the
    user's folder marked as erc's, so the next run wrote there without --overwrite."""
    users = tmp_path / "mine"
    users.mkdir()
    (users / io.LOCK).symlink_to(tmp_path / "elsewhere")
    refused(["corpus", "ingest", str(corpus_csv(tmp_path / "raw")), "--out", str(users)], capsys,
            "is a link")
    assert sorted(p.name for p in users.iterdir()) == [io.LOCK] and not io.owned(users)
    assert not (tmp_path / "elsewhere").exists()


def test_erc_does_not_write_through_a_link_in_place_of_its_folder_or_marker(tmp_path, capsys):
    """A link as the output folder (a run's stage folder, or --out itself) would send the
    outputs wherever it points; a link named .erc would make anyone's folder look erc's."""
    raw = corpus_csv(tmp_path / "raw")
    outside = tmp_path / "outside"
    outside.mkdir()
    run = io.claim(tmp_path / "run")
    (run / "corpus").symlink_to(outside)
    refused(["corpus", "ingest", str(raw), "--out", str(run / "corpus")], capsys, "is a link")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    refused(["corpus", "ingest", str(raw), "--out", str(tmp_path / "dangling")], capsys, "is a link")
    assert list(outside.iterdir()) == [] and not (tmp_path / "nowhere").exists()
    users = tmp_path / "mine"
    users.mkdir()
    (tmp_path / "marker").write_text("any file\n")
    (users / io.MARKER).symlink_to(tmp_path / "marker")
    before = plant(users, {**SENTINELS, "utterances.parquet": b"my own table"})
    assert not io.owned(users)
    refused(["corpus", "ingest", str(raw), "--out", str(users)], capsys, "is a link")
    assert digests(users) == before


def test_erc_does_not_write_through_a_link_in_place_of_a_folder_inside_its_own(tmp_path):
    """qc's plots/, a model/ or an adapter's speaker/ as a link to a folder of the user's:
    the user's files there stay as they were."""
    from erc.models.adapters import Adapter
    from erc.models.checkpoint import save_model
    from erc.recipes import AdapterConfig

    outside = tmp_path / "outside"
    outside.mkdir()
    before = plant(outside, {"kept_by_split.png": b"my plot"})
    ours = io.claim(tmp_path / "qc")
    (ours / "plots").symlink_to(outside)
    (ours / "speaker").symlink_to(outside)
    with pytest.raises(OwnershipError, match="plots: is a link"):
        io.write_bytes(ours / "plots" / "kept_by_split.png", b"erc's plot")
    adapter = Adapter(AdapterConfig(in_dim=4, hidden=3, out_dim=2, n_classes=2))
    with pytest.raises(OwnershipError, match="speaker: is a link"):
        save_model(ours / "speaker" / "model", adapter)
    assert digests(outside) == before and not (outside / "model").exists()
    io.write_bytes(tmp_path / "plain" / "x.png", b"a folder of no erc run: written as named")


def saved_fusion_model(tmp_path: Path) -> Path:
    """A small fusion model over a parquet vector column, saved in tmp_path/model, and its
    corpus (tmp_path/utterances.parquet, one dialogue of 4 dev turns)."""
    import pyarrow as pa
    import torch

    from erc.models.checkpoint import save_model
    from erc.models.fusion import FusionConfig, FusionModel
    from erc.schema import utterance_table

    rows = [{"utterance_id": f"u{i}", "corpus": "c", "split": "dev", "dialogue_id": "d",
             "turn": i, "speaker": "AB"[i % 2], "text": f"line {i}", "emotion": "ab"[i % 2]}
            for i in range(4)]
    pq.write_table(utterance_table(rows), tmp_path / "utterances.parquet")
    pq.write_table(pa.table({"utterance_id": [r["utterance_id"] for r in rows],
                             "v": [[float(i)] * 4 for i in range(4)]}), tmp_path / "v.parquet")
    torch.manual_seed(0)
    model = save_model(tmp_path / "model", FusionModel(FusionConfig(
        modalities=["text"], dims={"text": 4}, labels=["a", "b"], n_classes=2, d_state=8, window=2)),
        extra={"labels": ["a", "b"], "features": {"text": {
            "kind": "parquet", "path": str(tmp_path / "v.parquet"), "column": "v"}}})
    return model


def test_a_link_named_like_an_output_is_left_as_it_is(tmp_path, capsys):
    """evaluate's predictions.parquet, Ray's checkpoint folder ray/: links of the user's
    there are neither replaced nor written through."""
    from erc.recipes import TrainConfig
    from erc.train.fitting import loop_config

    model = saved_fusion_model(tmp_path)
    mine = tmp_path / "mine.parquet"
    mine.write_bytes(b"my predictions")
    ours = io.claim(tmp_path / "eval")
    (ours / "predictions.parquet").symlink_to(mine)
    refused(["evaluate", str(model), str(tmp_path / "utterances.parquet"), "--out", str(ours)],
            capsys, "predictions.parquet: is a link")
    assert (ours / "predictions.parquet").is_symlink() and mine.read_bytes() == b"my predictions"
    (ours / "ray").symlink_to(tmp_path)
    with pytest.raises(OwnershipError, match="ray: is a link"):
        loop_config(TrainConfig(), ours)


def test_one_folder_holds_one_stage(ingested, tmp_path, capsys):
    other = tmp_path / "other-corpus"
    assert main(["corpus", "ingest", str(corpus_csv(tmp_path / "raw2")), "--out", str(other)]) == 0
    capsys.readouterr()
    before = digests(other)
    refused(["preprocess", str(ingested), "--out", str(other)], capsys,
            "holds the outputs of erc's ingest stage")
    assert digests(other) == before
    before = digests(ingested)  # its own input folder: refused for that, --overwrite or not
    refused(["preprocess", str(ingested), "--out", str(ingested), "--overwrite"], capsys,
            "is preprocess's input utterances")
    assert digests(ingested) == before


def test_a_refused_stage_leaves_the_output_folder_as_it_found_it(tmp_path, capsys):
    """Each stage refused for its inputs after claiming its output: the folder it created
    (with the parents made for it) goes, an existing one is left as it was."""
    empty, features = tmp_path / "empty", tmp_path / "features"
    empty.mkdir(), features.mkdir()
    commands = {"ingest": ["corpus", "ingest", str(empty)],
                "preprocess": ["preprocess", str(empty)],
                "qc": ["qc", str(features), "--utterances", str(empty)],
                "train": ["train", "fusion", str(empty)]}
    for name, argv in commands.items():
        new = tmp_path / f"new-{name}" / "out"
        refused([*argv, "--out", str(new)], capsys, str(empty))
        assert not new.parent.exists(), name
        existing = tmp_path / f"existing-{name}"
        existing.mkdir()
        refused([*argv, "--out", str(existing)], capsys, str(empty))
        assert list(existing.iterdir()) == [], name
        ours = io.claim(tmp_path / f"ours-{name}")  # erc's, holding a user's file
        before = plant(ours, {"notes.txt": b"my notes"})
        refused([*argv, "--out", str(ours)], capsys, str(empty))
        assert digests(ours) == before, name


def test_a_failed_run_keeps_what_it_wrote(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError), io.claimed(out):
        io.write_bytes(out / "part-00000.parquet", b"a partial result")
        raise RuntimeError("killed")
    assert io.owned(out) and (out / "part-00000.parquet").read_bytes() == b"a partial result"


def test_an_output_uri_erc_cannot_write_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(["corpus", "ingest", str(corpus_csv(tmp_path / "raw")), "--out",
             "https://user:HTTPSECRET@host/x"], capsys, "https://***@host/x", "not https://")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_the_local_copy_of_a_bucket_root_is_named_after_the_bucket(tmp_path):
    from erc.storage import _local_copy

    assert _local_copy(tmp_path, "s3://KEY:SECRET@bucket?region=x", folder=True).name == "bucket"
    assert _local_copy(tmp_path, "s3://KEY:SECRET@bucket/runs/a", folder=True).name == "a"


def test_temporary_names_are_unique_and_cleaned_up(tmp_path):
    names = set()
    for _ in range(50):
        with io.atomic_path(tmp_path / "x.parquet") as tmp:
            names.add(tmp.name)
            tmp.write_bytes(b"x")
    assert len(names) == 50
    with pytest.raises(RuntimeError):
        with io.atomic_path(tmp_path / "y.json") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.parquet"]


def test_a_full_disk_is_an_error_naming_the_file(tmp_path, capsys, monkeypatch):
    """A write that finds no room (ENOSPC names no file) was reported as a bug in erc."""
    import errno

    write_bytes = Path.write_bytes

    def full(self, data):  # the disk fills as the output folder's marker is written
        if self.name.startswith(f".{io.MARKER}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "new" / "out"
    refused(["corpus", "ingest", str(corpus_csv(tmp_path / "raw")), "--out", str(out)], capsys,
            f"{out / io.MARKER}: No space left on device")
    assert not out.parent.exists()  # the refused run left no trace


# -- two runs on one output folder --------------------------------------------------------

def _erc(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "erc.cli", *argv], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _consistent(out: Path, results: list[tuple[int, str]]) -> dict:
    """Checks that ``out`` holds one consistent result (the files its manifest lists, no
    temporary file) and that a run that did not write it was refused as busy; returns
    the manifest."""
    codes = [code for code, _ in results]
    assert 0 in codes and all(code in (0, 2) for code in codes), "\n\n".join(
        f"exit {code}:\n{err[-4000:]}" for code, err in results)
    for code, err in results:
        if code == 2:
            assert "another erc run is writing this folder" in err, err
    manifest = json.loads((out / MANIFEST).read_text())
    for name, entry in manifest["files"].items():  # the manifest describes the files there
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == entry["sha256"], name
    assert not [p for p in out.iterdir() if io.is_scratch(p.name) and p.name != io.LOCK]
    return manifest


@pytest.mark.slow
def test_two_ingests_at_once_leave_one_consistent_result(tmp_path):
    corpora = {name: str(corpus_csv(tmp_path / name, n=40_000, dialogue=name))
               for name in ("alpha", "beta")}
    out = tmp_path / "out"
    seen_busy = 0
    for _ in range(3):
        runs = [_erc("corpus", "ingest", path, "--out", str(out), "-o", f"corpus={name}", "--force")
                for name, path in corpora.items()]
        results = [(run.wait(timeout=600), run.communicate()[1]) for run in runs]
        seen_busy += sum(code == 2 for code, _ in results)
        manifest = _consistent(out, results)
        utterances = pq.read_table(out / "utterances.parquet")
        problems = pq.read_table(out / "problems.parquet")
        [corpus] = set(utterances.column("corpus").to_pylist())  # no mix of the two
        assert manifest["summary"]["corpora"] == [corpus]
        assert set(problems.column("corpus").to_pylist()) <= {corpus}
        assert manifest["summary"]["input_rows"] == 40_000 == utterances.num_rows + problems.num_rows
        assert set(utterances.column("dialogue_id").to_pylist()) == {corpus}
        # and a later run agrees that this is the result of that corpus
        check = _erc("corpus", "ingest", corpora[corpus], "--out", str(out), "-o", f"corpus={corpus}")
        assert check.wait(timeout=600) == 0
        assert "up to date" in check.communicate()[0]
    print(f"\ntwo ingests at once, 3 rounds: {seen_busy} run(s) refused as busy")


@pytest.mark.slow
def test_two_preprocess_runs_at_once_leave_one_consistent_result(tmp_path, capsys):
    config = tmp_path / "text-only.yaml"
    config.write_text("preprocess:\n  profile: paper\n  partition_rows: 3\n"
                      "  overrides: {text: {backend: sentence-transformers, name: all-MiniLM-L6-v2}}\n")
    tables = {}
    for name in ("alpha", "beta"):
        out = tmp_path / f"corpus-{name}"
        assert main(["corpus", "ingest", str(corpus_csv(tmp_path / name, n=7, dialogue=name)),
                     "--out", str(out), "-o", f"corpus={name}"]) == 0
        tables[name] = out
    capsys.readouterr()
    features = tmp_path / "features"
    runs = [_erc("preprocess", str(table), "--out", str(features), "--config", str(config))
            for table in tables.values()]
    results = [(run.wait(timeout=900), run.communicate()[1]) for run in runs]
    manifest = _consistent(features, results)
    parts = sorted(features.glob("part-*.parquet"))
    assert sorted(manifest["files"]) == [p.name for p in parts]
    ids = [u for part in parts for u in pq.read_table(part).column("utterance_id").to_pylist()]
    corpora = {u.split("/")[0] for u in ids}
    assert len(corpora) == 1 and len(ids) == 7, ids  # every row of one corpus, no mix
    [corpus] = corpora
    from erc.stages.base import content_fingerprint

    assert manifest["parts"]["inputs"]["utterances"] == content_fingerprint(tables[corpus])


def test_a_write_the_os_refuses_names_the_file_not_its_temporary_copy(ingested, tmp_path, capsys):
    """A folder where the utterance table goes (as a read-only file system refuses every
    write) was reported as erc: error: .../.utterances.parquet.<pid>-<hex>.tmp: Is a
    directory, a name the user never gave nor sees; it names the file erc writes."""
    (ingested / "utterances.parquet").unlink()
    (ingested / "utterances.parquet").mkdir()
    refused(["corpus", "ingest", str(tmp_path / "raw" / "m.csv"), "--out", str(ingested),
             "--force"], capsys, f"erc: error: {ingested / 'utterances.parquet'}: Is a directory")
    assert not list(ingested.glob(".*.tmp"))


def test_a_users_file_named_like_erc_scratch_is_never_removed_as_a_leftover(tmp_path):
    """A file of the user's whose name matches erc's temporary pattern, of a process that no
    longer runs, was taken for a leftover of a killed writer: a folder holding only that
    was claimed without --overwrite, and the lock removed it, or one inside an adopted
    folder. It is the user's: the claim asks for --overwrite, and the lock leaves it."""
    dead = 2 ** 22 + 7  # above any pid this machine hands out
    name = f".draft.txt.{dead}-0123abcd.tmp"
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / name).write_text("mine")
    with pytest.raises(OwnershipError, match="draft"):
        io.claim(alone)
    adopted = tmp_path / "adopted"
    (adopted / "notes").mkdir(parents=True)
    (adopted / name).write_text("mine")
    (adopted / "notes" / name).write_text("mine too")
    io.claim(adopted, overwrite=True)
    (adopted / f".part-00000.parquet.{dead}-0123abcd.tmp").write_text("erc's own leftover")
    with io.locked(adopted):
        pass
    assert (adopted / name).read_text() == "mine"
    assert (adopted / "notes" / name).read_text() == "mine too"
    assert not (adopted / f".part-00000.parquet.{dead}-0123abcd.tmp").exists()


def test_a_users_adapters_folder_stops_a_fusion_run_that_would_write_resized_adapters(tmp_path):
    """With adapter sizes given, the fusion stage saves the retrained adapters in
    ``adapters/``: a folder of that name of the user's, in a folder erc adopts, stops the
    run before it computes anything, as its other outputs do."""
    from erc.errors import OwnershipError
    from erc.stages.base import check_outputs
    from erc.stages.train import FusionStage

    out = tmp_path / "fusion"
    (out / "adapters" / "speaker" / "model").mkdir(parents=True)
    (out / "adapters" / "speaker" / "model" / "notes.txt").write_text("mine")
    with pytest.raises(OwnershipError, match="adapters"):
        check_outputs(FusionStage, out, overwrite=True)
    assert (out / "adapters" / "speaker" / "model" / "notes.txt").read_text() == "mine"


def test_a_model_export_cut_short_by_a_full_disk_is_one_line_and_keeps_the_model(tmp_path,
                                                                                   capsys,
                                                                                   monkeypatch):
    """The export of the trained model (a copy of the best checkpoint) that found no room
    was a traceback (shutil.Error, "a bug in erc"), and left a half-copied model folder
    holding the checkpoint's file index, as if sealed: a truncated model.safetensors and
    an empty metrics.json stood as the model. The export names the folder, keeps the
    model there before it, and leaves no partial copy; a later run finishes it."""
    import errno
    import shutil

    from erc.cli import _expected, _message
    from erc.train.loop import export_model

    checkpoint = tmp_path / "ray" / "checkpoint_0"
    checkpoint.mkdir(parents=True)
    for name, data in {"config.json": b"{}", "model.safetensors": b"new weights",
                       "metrics.json": b"{}", "train_state.pt": b"state"}.items():
        (checkpoint / name).write_bytes(data)
    io.seal(checkpoint)
    out = tmp_path / "fusion"
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"old weights")
    export_model(old, out)
    copyfile = shutil.copyfile

    def full(source, target, **kwargs):  # the disk fills as the weights are copied
        if Path(source).name == "model.safetensors":  # sendfile names the file it reads
            Path(target).write_bytes(b"new wei")
            raise OSError(errno.ENOSPC, "No space left on device", str(source))
        return copyfile(source, target, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", full)
    with pytest.raises(OSError) as failed:
        export_model(checkpoint, out)
    assert _expected(failed.value), failed.value
    assert _message(failed.value) == f"{out / 'model'}: No space left on device"
    assert (out / "model" / "model.safetensors").read_bytes() == b"old weights"
    assert sorted(p.name for p in out.iterdir()) == [io.MARKER, "model"]
    monkeypatch.setattr(shutil, "copyfile", copyfile)
    export_model(checkpoint, out)
    assert (out / "model" / "model.safetensors").read_bytes() == b"new weights"
    assert sorted(p.name for p in (out / "model").iterdir()) == [
        io.FILE_INDEX, "config.json", "metrics.json", "model.safetensors"]


def test_a_model_folder_copy_left_by_a_killed_run_is_removed_when_its_folder_is_locked(tmp_path):
    """``io.atomic_folder``'s temporary folder, left by a process that no longer runs."""
    dead = 2 ** 22 + 7  # above any pid this machine hands out
    out = io.claim(tmp_path / "fusion")
    (out / f".model.{dead}-0123abcd.tmp").mkdir()
    (out / f".model.{dead}-0123abcd.tmp" / "model.safetensors").write_bytes(b"half")
    with io.locked(out):
        pass
    assert sorted(p.name for p in out.iterdir()) == [io.MARKER, io.LOCK]


def test_an_ingest_cut_short_never_leaves_a_table_beside_another_runs_problems(tmp_path, capsys,
                                                                                monkeypatch):
    """Ingesting another corpus into a folder wrote its utterance table, then found no room
    for its problem table: the folder held the new corpus's rows beside the old corpus's
    rows set aside (and its manifest), which training and evaluation read as one corpus.
    Now a full disk leaves the old pair as it was, a kill between the two renames leaves
    no utterance table (an error that says so), and the run again finishes as a clean one."""
    import errno
    import os

    import pyarrow.parquet as pq_module

    out = tmp_path / "corpus"
    alpha = corpus_csv(tmp_path / "alpha", dialogue="alpha")
    beta = tmp_path / "beta" / "m.csv"
    beta.parent.mkdir()
    beta.write_text("dialogue_id,speaker,text,turn\nbeta,Ann,Hi.,0\nbeta,Bob,Hey.,x\n")
    assert main(["corpus", "ingest", str(alpha), "--out", str(out)]) == 0
    before = digests(out)
    write_table = pq_module.write_table

    def full(table, where, *args, **kwargs):  # room for the utterance table only
        if "reason" in table.column_names:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_table(table, where, *args, **kwargs)

    monkeypatch.setattr(pq_module, "write_table", full)
    refused(["corpus", "ingest", str(beta), "--out", str(out)], capsys,
            f"{out / 'problems.parquet'}: No space left on device")
    assert digests(out) == before
    monkeypatch.setattr(pq_module, "write_table", write_table)

    replace = os.replace

    def killed(source, target):  # the run stopped as it renames the utterance table
        if Path(target).name == "utterances.parquet":
            raise KeyboardInterrupt
        return replace(source, target)

    monkeypatch.setattr(os, "replace", killed)
    assert main(["corpus", "ingest", str(beta), "--out", str(out)]) == 130
    capsys.readouterr()
    monkeypatch.setattr(os, "replace", replace)
    assert not (out / "utterances.parquet").exists()
    assert not [p for p in out.iterdir() if io.is_scratch(p.name) and p.name != io.LOCK]
    refused(["train", "fusion", str(out), "--out", str(tmp_path / "fusion")], capsys,
            f"{out / 'utterances.parquet'}: no utterance table")

    assert main(["corpus", "ingest", str(beta), "--out", str(out)]) == 0
    assert main(["corpus", "ingest", str(beta), "--out", str(tmp_path / "clean")]) == 0
    for name in ("utterances.parquet", "problems.parquet"):
        assert pq.read_table(out / name).equals(pq.read_table(tmp_path / "clean" / name))
    assert pq.read_table(out / "problems.parquet").num_rows == 1


def test_a_checkpoint_a_training_worker_has_no_room_for_is_one_line(tmp_path):
    """A Ray Train worker that found the disk full saving a checkpoint failed the command
    with Ray's WorkerGroupError, a traceback reported as a bug in erc; it is an OSError
    naming the run's checkpoint folder (``erc: error: PATH: No space left on device``)."""
    from erc.cli import _expected, _message
    from erc.train.loop import _fitted

    class WorkerGroupError(Exception):  # as Ray Train passes a worker's traceback on
        pass

    class Trainer:
        def __init__(self, error):
            self.error = error

        def fit(self):
            raise self.error

    where = str(tmp_path / "fusion" / "ray" / "fusion")
    snippet = ("Training failed due to worker errors:\n[Rank 0 Error Snippet]:\nTraceback (most "
               "recent call last):\n  File \"pyarrow/error.pxi\", line 92, in check_status\n"
               "OSError: [Errno 28] Error writing bytes to file. Detail: [errno 28] No space "
               "left on device\n")
    with pytest.raises(OSError) as failed:
        _fitted(Trainer(WorkerGroupError(snippet)), where)
    assert _expected(failed.value)
    assert _message(failed.value) == f"{where}: No space left on device"
    class ControllerError(Exception):  # the Ray Train controller's own write, as it holds it
        def __init__(self, controller_failure):
            super().__init__(f"Training failed due to controller error:\n{controller_failure}")
            self.controller_failure = controller_failure

    import errno

    with pytest.raises(OSError) as failed:
        _fitted(Trainer(ControllerError(OSError(errno.ENOSPC, "No space left on device"))), where)
    assert _message(failed.value) == f"{where}: No space left on device"
    other = WorkerGroupError(snippet.replace("28", "2"))
    with pytest.raises(WorkerGroupError):  # any other failure stays what it is
        _fitted(Trainer(other), where)


def test_a_folder_of_a_first_run_stopped_before_its_manifest_holds_that_stage(tmp_path, capsys):
    """A first run stopped before it wrote its manifest (Ctrl-C during training, a full disk
    mid-way through the feature parts) left its outputs in a folder with nothing naming
    its stage: another command pointed there wrote its own beside them (an ingest beside
    the training's checkpoints), one folder holding two stages' outputs. The marker names
    the stage from the claim on, so the other command is refused and the folder is left
    as it was, while the stage itself resumes there."""
    from erc.stages.base import Stage, execute

    class Training(Stage):
        name = "train"
        results = ("model/*",)
        writes = ("ray",)

        def run(self, ctx):
            io.write_bytes(ctx.out / "ray" / "run" / "checkpoint_0" / "model.safetensors", b"w")
            raise KeyboardInterrupt  # stopped before its manifest

    out = tmp_path / "fusion"
    with pytest.raises(KeyboardInterrupt):
        execute(Training(), {}, {}, out)
    before = digests(out)
    refused(["corpus", "ingest", str(corpus_csv(tmp_path / "raw")), "--out", str(out)], capsys,
            f"{out}: holds the outputs of erc's train stage; give ingest an output folder")
    assert digests(out) == before

    class Resumed(Training):
        def run(self, ctx):
            io.write_bytes(ctx.out / "model" / "model.safetensors", b"w")
            return {}

    assert not execute(Resumed(), {}, {}, out).skipped


def test_an_input_replaced_while_a_stage_reads_it_leaves_its_result_stale(tmp_path, capsys):
    """`erc corpus ingest OTHER --out D` while `erc preprocess D --out F` ran: the manifest
    of F recorded D's new content with the features of its old rows, so preprocess said
    "up to date" from then on, and QC refused F ("run erc preprocess D --out F"), a loop
    only --force left. The manifest records the inputs as the run found them: the next
    run recomputes."""
    from erc.stages.base import Stage, execute, up_to_date

    corpus = tmp_path / "corpus"
    assert main(["corpus", "ingest", str(corpus_csv(tmp_path / "alpha", dialogue="alpha")),
                 "--out", str(corpus)]) == 0

    class Reading(Stage):
        name = "reading"
        inputs = ("utterances",)
        results = ("rows.json",)

        def run(self, ctx):
            rows = pq.read_table(ctx.inputs["utterances"] / "utterances.parquet").num_rows
            # another command replaces the corpus while this one works on what it read
            assert main(["corpus", "ingest", str(corpus_csv(tmp_path / "beta", n=9,
                                                              dialogue="beta")),
                         "--out", str(corpus)]) == 0
            io.write_json(ctx.out / "rows.json", rows)
            return {}

    out = tmp_path / "out"
    execute(Reading(), {}, {"utterances": corpus}, out)
    assert up_to_date(Reading(), {}, {"utterances": corpus}, out) == (
        False, "changed: input utterances")
    assert not execute(Reading(), {}, {"utterances": corpus}, out).skipped
