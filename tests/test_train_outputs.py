"""Training's output folder: a model folder it replaces keeps the files a user put there."""

from __future__ import annotations

import pytest

from erc import io
from erc.errors import OwnershipError


def test_a_model_folder_without_erc_s_file_index_keeps_the_user_s_files(tmp_path):
    """`erc train ... --out DIR --overwrite` where DIR/model is a folder of the user's (no
    file index): replacing it deleted the user's files with it; now the run stops and
    names them, and an index-less folder of erc's own model files is still replaced."""
    out = io.claim(tmp_path / "out", overwrite=True)
    (out / "model").mkdir()
    (out / "model" / "README.md").write_text("mine")
    (out / "model" / "config.json").write_text("{}")
    with pytest.raises(OwnershipError, match="README.md"):
        io.remove_owned(out, "model")
    assert (out / "model" / "README.md").read_text() == "mine"
    (out / "model" / "README.md").unlink()
    (out / "model" / "model.safetensors").write_bytes(b"weights")
    io.remove_owned(out, "model")
    assert not (out / "model").exists()
