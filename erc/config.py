"""YAML run configs, validated on load: unknown keys and wrong types are errors that name
the key and the file, not surprises later in a Ray worker."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from erc.storage import is_uri


class ConfigError(ValueError):
    pass


@dataclass
class RayConfig:
    address: str | None = None  # None: embedded single-node Ray; else a cluster address
    num_cpus: int | None = None
    num_gpus: int | None = None
    dashboard: bool = False


@dataclass
class CorpusConfig:
    path: str = ""
    format: str | None = None  # None: detected from the path
    options: dict[str, Any] = field(default_factory=dict)  # passed to the reader
    check_media: bool = False  # open every media file on Ray; bad ones become problems
    max_clip_seconds: float = 60.0


@dataclass
class StageConfig:
    """Resources of one preprocessing stage; None takes the stage's default
    (``erc.pipeline.stages.STAGE_DEFAULTS``)."""
    batch_size: int | None = None  # rows per call of the stage
    concurrency: int | list[int] | None = None  # actors (or [min, max]); decode: tasks at once
    num_cpus: float | None = None  # per actor / task; None: fitted to the cluster's CPUs
    # per actor; None (auto): shared out over the GPUs of the largest GPU node the cluster
    # has or can launch (erc.cluster.gpu_plan), an error where it cannot tell; 0: CPU
    num_gpus: float | None = None
    accelerator_type: str | None = None  # e.g. "L4": only on nodes with that GPU
    resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources


@dataclass
class PreprocessConfig:
    """The preprocessing pass (``erc preprocess``): decode, ASR, faces, speaker, text."""
    profile: str = "offline"  # model profile of erc.backends.registry ("offline", "paper")
    overrides: dict[str, dict] = field(default_factory=dict)  # role -> ModelSpec fields
    output_dir: str | None = None  # None: <output_dir>/features
    partition_rows: int = 256  # rows per output part (the unit of resumption)
    frame_rate: float = 1.0  # video frames sampled per second of utterance
    max_frames: int = 16  # per utterance
    max_side: int | None = 480  # downscale larger frames (None: keep full size)
    max_clip_seconds: float | None = 60.0  # longer utterances fail as overlong_clip
    silence_rms: float = 1e-3  # quieter audio fails as silence
    decode: StageConfig = field(default_factory=StageConfig)
    faces: StageConfig = field(default_factory=StageConfig)
    asr: StageConfig = field(default_factory=StageConfig)
    speaker: StageConfig = field(default_factory=StageConfig)
    text: StageConfig = field(default_factory=StageConfig)


@dataclass
class QCStageConfig:
    """Quality control in the main job (``erc qc``)."""
    enabled: bool = True
    options: dict[str, Any] = field(default_factory=dict)  # fields of erc.qc.decisions.QCConfig


@dataclass
class TrainStageConfig:
    """Adapters, the fusion model and its evaluation in the main job."""
    enabled: bool = True
    modalities: list[str] = field(default_factory=lambda: ["text", "speaker", "face"])
    # "train_split": speaker and face adapters (identity -> emotion MLPs) trained on the
    # run's own training split; "none": the raw identity embeddings go into the fusion model.
    adapters: str = "train_split"
    mixer: str = "mamba"  # mamba | transformer
    model: dict[str, Any] = field(default_factory=dict)  # other FusionConfig fields
    epochs: int = 30
    batch_size: int = 4  # dialogues per optimiser step
    lr: float = 1e-3
    patience: int = 8  # epochs without a better dev weighted F1
    workers: int = 1  # Ray Train workers
    gpu: bool = False  # one GPU per worker
    accelerator_type: str | None = None  # e.g. "L40S": one GPU of that type (implies gpu)
    # Where Ray Train keeps checkpoints (default OUTPUT/train/ray): on a multi-node
    # cluster a folder every node mounts or a storage URI (s3://...).
    storage: str | None = None
    seed: int = 0
    train_split: str = "train"
    dev_split: str = "dev"
    eval_splits: list[str] = field(default_factory=lambda: ["dev", "test"])


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    qc: QCStageConfig = field(default_factory=QCStageConfig)
    train: TrainStageConfig = field(default_factory=TrainStageConfig)


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any or (isinstance(hint, type) and isinstance(value, hint)
                       and not (hint is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def from_dict(cls, data: Any, where: str = "config"):
    """Builds dataclass ``cls`` from a mapping, rejecting unknown keys and bad types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(sorted(names))}")
    return cls(**{k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def load_config(path: str | Path | None, cls=RunConfig):
    """Loads a YAML config. A relative corpus.path is taken from the config's folder (so
    a config travels with its corpus); output_dir is taken from the working directory.
    Either may be a storage URI (s3://...)."""
    if path is None:
        return cls()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    config = from_dict(cls, data, where=str(path))
    if isinstance(config, RunConfig) and config.corpus.path and not is_uri(config.corpus.path):
        corpus_path = Path(config.corpus.path).expanduser()
        if not corpus_path.is_absolute():
            config.corpus.path = str((path.parent / corpus_path).resolve())
    return config


def to_dict(config) -> dict:
    return dataclasses.asdict(config)
