"""Model folders that can run code. A pickled YOLO checkpoint and a SpeechBrain folder's
hyperparams.yaml are built here to touch a sentinel file when loaded: erc must not load
them (the sentinel stays absent) unless the spec says ``trust_model_code: true`` (then
the sentinel appears: the flag is what lets their code run), and must say so where a
user chooses weights."""

from __future__ import annotations

import pathlib
from pathlib import Path

import pytest

from erc.backends import registry
from erc.backends.base import ModelSpec, UntrustedModelError
from erc.cli import main


class _TouchOnLoad:
    """Unpickling it calls Path.touch: what a malicious checkpoint could do, harmlessly."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return pathlib.Path.touch, (self.sentinel,)


def _yolo_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    import torch

    sentinel = tmp_path / "yolo-ran-code"
    weights = tmp_path / "face.pt"
    torch.save({"model": _TouchOnLoad(sentinel), "epoch": 1}, weights)
    return weights, sentinel


def test_yolo_checkpoints_load_without_unpickling_code(tmp_path):
    from erc.backends.face import YOLODetector

    weights, sentinel = _yolo_checkpoint(tmp_path)
    spec = ModelSpec("face_detect", "yolov8", "yolov8n-face", path=str(weights))
    with pytest.raises(UntrustedModelError, match="trust_model_code: true"):
        YOLODetector(spec, device="cpu")
    assert not sentinel.exists()
    trusted = ModelSpec("face_detect", "yolov8", "yolov8n-face", path=str(weights),
                        options={"trust_model_code": True})
    with pytest.raises(Exception):  # unpickled in full: the code ran, then no model was found
        YOLODetector(trusted, device="cpu")
    assert sentinel.exists()


def _speechbrain_folder(tmp_path: Path) -> tuple[Path, Path]:
    sentinel = tmp_path / "hparams-ran-code"
    folder = tmp_path / "spkrec"
    folder.mkdir()
    (folder / "hyperparams.yaml").write_text(
        f"ran: !apply:pathlib.Path.touch [!new:pathlib.Path [{sentinel}]]\n")
    (folder / "embedding_model.ckpt").write_bytes(b"not read")
    return folder, sentinel


def test_a_speechbrain_folder_from_elsewhere_needs_trust(tmp_path):
    folder, sentinel = _speechbrain_folder(tmp_path)
    spec = ModelSpec("speaker", "speechbrain-xvector", "spkrec-xvect-voxceleb", path=str(folder))
    with pytest.raises(UntrustedModelError, match="hyperparams.yaml") as refused:
        registry.resolve(spec)  # where the pipeline checks, before any Ray actor starts
    assert "trust_model_code: true" in str(refused.value)
    from erc.backends.speaker import SpeechBrainEmbedder

    with pytest.raises(UntrustedModelError):
        SpeechBrainEmbedder(spec, device="cpu")  # a library caller is checked too
    assert not sentinel.exists()
    trusted = ModelSpec("speaker", "speechbrain-xvector", "spkrec-xvect-voxceleb",
                        path=str(folder), options={"trust_model_code": True})
    registry.resolve(trusted)
    with pytest.raises(Exception):  # the yaml ran, then no model was defined
        SpeechBrainEmbedder(trusted, device="cpu")
    assert sentinel.exists()


def test_trust_must_be_the_boolean_true(tmp_path):
    folder, _ = _speechbrain_folder(tmp_path)
    for value in ("true", "yes", 1):
        spec = ModelSpec("speaker", "speechbrain-ecapa", "ecapa", path=str(folder),
                         options={"trust_model_code": value})
        with pytest.raises(UntrustedModelError):
            registry.resolve(spec)


def test_known_sources_need_no_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("ERC_HOME", str(tmp_path / "erc"))
    cached = registry.cache_path("speechbrain-xvector", "spkrec-xvect-voxceleb")
    cached.mkdir(parents=True)
    (cached / "hyperparams.yaml").write_text("a: 1\n")
    spec = ModelSpec("speaker", "speechbrain-xvector", "spkrec-xvect-voxceleb")
    with pytest.raises(UntrustedModelError):  # in erc's cache, but nothing says from where
        registry.resolve(spec)
    marker = cached.with_name(cached.name + ".source")
    marker.write_text("hub:speechbrain/spkrec-xvect-voxceleb\n")  # what erc's download writes
    assert registry.resolve(spec).path == str(cached)
    marker.write_text("hub:someone/spkrec-xvect-voxceleb\n")  # another publisher's copy
    with pytest.raises(UntrustedModelError):
        registry.resolve(spec)


def test_models_list_says_which_weights_run_code(tmp_path, capsys):
    folder, _ = _speechbrain_folder(tmp_path)
    assert main(["models", "list", "--profile", "paper", "--set", f"speaker.path={folder}"]) == 0
    out = capsys.readouterr().out
    assert "runs code on load" in out and "hyperparams.yaml" in out
    assert "needs trust_model_code: true" in out
    assert "weights-only loader" in out  # the YOLO row
    assert main(["models", "list", "--profile", "paper", "--set", f"speaker.path={folder}",
                 "--set", "speaker.options.trust_model_code=true"]) == 0
    assert "trusted by trust_model_code: true" in capsys.readouterr().out
