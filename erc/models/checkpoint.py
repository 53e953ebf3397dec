"""Model checkpoints: ``model.safetensors`` (weights) + ``config.json`` (what to build) +
``metrics.json`` (how it did). No pickles: weights are safetensors, everything else JSON;
the optimizer state of a training checkpoint is loaded with ``weights_only=True``.

A checkpoint folder loads on any device: the Mamba fusion model has the same state_dict
keys on its CUDA and CPU paths.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import torch
from torch import nn

from erc import io
from erc.errors import InputError, preview
from erc.settings import before_options

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
TRAIN_STATE = "train_state.pt"
ENCODER_DIR = "encoder"  # text models: the encoder's config + tokenizer, so the folder is self-contained


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper."""
    return model.module if hasattr(model, "module") and isinstance(
        model, torch.nn.parallel.DistributedDataParallel) else model


def save_model(directory: str | Path, model: nn.Module, metrics: dict | None = None,
               extra: dict | None = None) -> Path:
    """Writes weights, config and metrics of ``model`` (which has ``kind`` and ``config``)."""
    from safetensors.torch import save_file

    model = unwrap(model)
    directory = Path(directory)  # made by the first write (io.atomic_path), after its checks
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with io.atomic_path(directory / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"kind": model.kind})
    config = model.config.to_dict()
    if model.kind == "text":
        _copy_encoder_files(Path(config["encoder"]), directory / ENCODER_DIR)
        config["encoder"] = ENCODER_DIR
    io.write_json(directory / CONFIG, {"kind": model.kind, "config": config, **(extra or {})})
    if metrics is not None:
        io.write_json(directory / METRICS, metrics)
    return io.seal(directory)


def _copy_encoder_files(source: Path, target: Path) -> None:
    """Architecture config + tokenizer files of a text encoder (not its weights)."""
    if source.resolve() == target.resolve():
        return
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json", "merges.txt", "vocab.json", "spiece.model",
                 "sentencepiece.bpe.model"):
        if (source / name).is_file():
            io.copy_file(source / name, target / name)


def read_config(directory: str | Path) -> dict:
    file = Path(directory) / CONFIG
    if not file.is_file():  # a training's output folder given for its model/, a file, a folder of the user's
        inside = Path(directory) / "model" / CONFIG
        raise InputError(f"{directory}: not a model folder (no {CONFIG})"
                         + (f"; the model of this run is {inside.parent}" if inside.is_file() else ""))
    try:
        saved = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:  # nested too deep
        raise InputError(f"{file}: not a model config ({err})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict) \
            or "kind" not in saved:
        raise InputError(f"{file}: not a model config (no kind and config)")
    # The feature spec a fusion model records: evaluation reads each item's kind and path.
    features = saved.get("features")
    if features is not None and not (isinstance(features, dict) and all(
            isinstance(item, dict) and isinstance(item.get("kind"), str)
            and isinstance(item.get("path"), str)
            and all(isinstance(item.get(key, ""), str) for key in ("column", "adapter"))
            for item in features.values())):
        raise InputError(f"{file}: features: expected a mapping of modality -> "
                         f"{{kind, path[, column, adapter]}} (strings), got {preview(features)}")
    return saved


# Model kinds, as backends are: the class that rebuilds a saved model of each kind (each
# class names its config dataclass as ``config_class``).
MODEL_KINDS = {
    "fusion": "erc.models.fusion:FusionModel",
    "adapter": "erc.models.adapters:Adapter",
    "text": "erc.models.text:ContextTextClassifier",
}


def build_model(kind: str, config: dict, directory: Path | None = None,
                pretrained: bool = True) -> nn.Module:
    """A model of ``kind`` from its config dict (weights not loaded)."""
    if kind not in MODEL_KINDS:
        raise InputError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    module, _, name = MODEL_KINDS[kind].partition(":")
    cls = getattr(importlib.import_module(module), name)
    # A setting added after the model was saved: the value it was trained with.
    config = {**before_options(cls.config_class), **config}
    unknown = sorted(set(config) - {f.name for f in dataclasses.fields(cls.config_class)})
    if unknown:  # a model saved by another version of erc
        raise InputError(f"unknown {kind} model settings {', '.join(unknown)} "
                         f"(saved by another version of erc?)")
    _check_config(kind, cls.config_class, config)
    if kind == "text":  # the folder holds the encoder's config and tokenizer
        if directory is not None and not Path(config["encoder"]).is_absolute():
            config["encoder"] = str(Path(directory) / config["encoder"])
        return cls(cls.config_class(**config), pretrained=pretrained)
    return cls(cls.config_class(**config))


def _check_config(kind: str, config_class, config: dict) -> None:
    """InputError naming the setting when a saved config (an edited or damaged
    config.json) is not one erc writes: of the wrong type or out of its bounds, or labels
    that are not n_classes distinct names. Such a config built a model that failed later,
    deep in torch or in scoring, with a traceback."""
    from pydantic import TypeAdapter, ValidationError

    try:
        saved = TypeAdapter(config_class).validate_json(json.dumps(config), strict=True)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise InputError(f"{kind} model setting {where}: {first['msg']} "
                         f"(got {preview(first.get('input'))})") from None
    n_classes, labels = getattr(saved, "n_classes", 1), getattr(saved, "labels", [])
    if n_classes < 1:
        raise InputError(f"{kind} model setting n_classes: {n_classes} (not a class count)")
    if len(labels) != n_classes or len(set(labels)) != len(labels):
        # erc writes every model with the names of its classes: without them no
        # prediction can be named, and the split's labels cannot be checked against them.
        raise InputError(f"{kind} model setting labels: {preview(labels)} are not "
                         f"{n_classes} distinct names (n_classes)")
    widths = {**{f"dims.{m}": d for m, d in getattr(saved, "dims", {}).items()},
              "in_dim": getattr(saved, "in_dim", 1)}
    for name, width in widths.items():
        if width < 1:
            raise InputError(f"{kind} model setting {name}: width {width} (not a width)")


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuilds the model saved in ``directory`` and loads its weights (strict)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / WEIGHTS).is_file():
        raise InputError(f"{directory}: no {WEIGHTS} (not a model checkpoint)")
    saved = read_config(directory)
    try:
        model = build_model(saved["kind"], saved["config"], directory, pretrained=False)
    except (InputError, TypeError, ValueError) as err:  # settings this erc cannot build
        raise InputError(f"{directory / CONFIG}: {_first_line(err)}") from None
    try:
        model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=True)
    except (SafetensorError, RuntimeError) as err:  # safetensors' and torch's errors on foreign weights
        raise InputError(f"{directory / WEIGHTS}: not the weights of the model in {CONFIG} "
                         f"({_first_line(err)})") from None
    return model.to(device).eval()


def load_model_of(directory: str | Path, kind: str, what: str,
                  device: str | torch.device = "cpu") -> nn.Module:
    """``load_model`` of a folder that must hold a model of ``kind`` (``what`` it is read as
    names it): a model of another kind failed where its settings were read, a traceback."""
    saved = read_config(directory)["kind"]
    if saved != kind:
        raise InputError(f"{directory}: holds a model of kind {saved!r}, not {what}")
    return load_model(directory, device)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def save_train_state(directory: str | Path, state: dict) -> None:
    """Optimizer / scheduler state and loop counters (tensors and plain Python values)."""
    with io.atomic_path(Path(directory) / TRAIN_STATE) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)


def load_train_state(directory: str | Path) -> dict:
    return torch.load(Path(directory) / TRAIN_STATE, map_location="cpu", weights_only=True)
