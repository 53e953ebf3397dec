"""Search spaces as YAML files, one per model family, validated on load.

A search file (``tune/fusion.yaml``, ``tune/text.yaml``)::

    family: fusion            # fusion | text: what `erc train` trains
    params:                   # what the search varies: NAME: {DISTRIBUTION: ARGS}
      lr: {loguniform: [1.0e-4, 3.0e-3]}
      dropout: {uniform: [0.0, 0.5]}
      d_state: {choice: [16, 32, 64]}
      batch_size: {int: [4, 16]}        # inclusive; logint: [low, high] samples on a log scale
      window: {choice: [null, 2, 4, 8]} # null: all past turns
    fixed:                    # the same in every trial (defaults: those of `erc train`)
      epochs: 8
      patience: 3
    search:                   # how the search runs (command-line options override these)
      num_samples: 24
      max_concurrent_trials: 2
      seed: 0
      include_default: true   # the first trial: the untuned defaults; ASHA never stops it
      resources_per_trial: {cpu: 1, gpu: auto}   # auto: 1 GPU when the cluster has GPUs
      scheduler: {type: asha, grace_period: 2, reduction_factor: 3}
      max_failures: 1
      experiment_checkpoint_s: 2

The names are the options of ``erc train fusion`` / ``erc train text`` (``--d-state`` is
``d_state``), derived with their defaults and bounds from the recipes (``erc.recipes``),
so the best trial is written as a config those commands read (``--config
best_config.yaml``). Every name, key, range and type is checked on load: an
unknown key, a range outside what the parameter allows, ``low >= high``, a log scale
through zero, a default outside its range with ``include_default`` ... are errors that say
where (file, key) and what is allowed.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from erc.errors import ConfigError
from erc.settings import load_yaml

DISTRIBUTIONS = ("uniform", "loguniform", "int", "logint", "choice")
METRIC = "best_dev_weighted_f1"  # the best epoch's dev weighted F1 so far (maximised)
# The held-out split's role; its figure (erc.train.loop.HELD_OUT: each trial's best-dev model
# scored on it) is reported and never chosen on (not by Optuna or ASHA, not for the best trial).
REPORT_ROLE = "report"
TIME_ATTR = "epochs_done"  # ASHA's clock: epochs trained (survives resume)
ADAPTER_SIZES = ("adapter_hidden", "adapter_out")  # fusion options that retrain the adapters


@dataclass(frozen=True)
class Knob:
    """One option of ``erc train``: its kind, what values it allows and its default."""

    kind: str  # float | int | choice | bool | str
    default: Any
    low: float | None = None  # allowed range (inclusive unless open_low / open_high)
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple = ()  # kind "choice": the allowed values
    nullable: bool = False  # None allowed (window, d_model: "all" / "token width")
    fixed_only: bool = False  # changes the inputs: may be fixed, not searched
    help: str = ""

    def allows(self, value: Any) -> str | None:
        """None when ``value`` is allowed, else why not."""
        if value is None:
            return None if self.nullable else "null is not allowed"
        if self.kind == "bool":
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind == "str":
            return None if isinstance(value, str) and value else "must be a non-empty string"
        if self.kind == "choice":
            return None if value in self.choices else f"must be one of {', '.join(map(str, self.choices))}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {value!r}"
        if self.kind == "int" and not float(value).is_integer():
            return f"must be an integer, got {value!r}"
        if not math.isfinite(value):
            return "must be finite"
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return f"must be {'>' if self.open_low else '>='} {self.low}"
        if self.high is not None and (value >= self.high if self.open_high else value > self.high):
            return f"must be {'<' if self.open_high else '<='} {self.high}"
        return None

    def describe(self) -> str:
        if self.kind == "choice":
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.kind in ("bool", "str"):
            text = self.kind
        else:
            lo = "" if self.low is None else f" {'>' if self.open_low else '>='} {self.low}"
            hi = "" if self.high is None else f", {'<' if self.open_high else '<='} {self.high}"
            text = f"{self.kind}{lo}{hi}"
        return text + (" or null" if self.nullable else "")


def knob(option) -> Knob | None:
    """The search knob of a recipe option (None: not a hyperparameter, e.g. where to run)."""
    from erc.settings import Option

    assert isinstance(option, Option)
    if option.metadata.get("tunable") is False or option.kind == "other":
        return None
    bounds = option.bounds()
    low = bounds.get("ge", bounds.get("gt"))
    high = bounds.get("le", bounds.get("lt"))
    if option.kind == "float":
        low, high = (None if b is None else float(b) for b in (low, high))
    return Knob(kind=option.kind, default=option.default, low=low, high=high,
                open_low="gt" in bounds, open_high="lt" in bounds, choices=tuple(option.choices),
                nullable=option.nullable, fixed_only=bool(option.metadata.get("fixed_only")),
                help=option.help)


def _family(recipe) -> dict[str, Knob]:
    from erc.settings import options

    return {o.name: k for o in options(recipe) if (k := knob(o)) is not None}


def _families() -> dict[str, dict[str, Knob]]:
    """The options of ``erc train fusion`` / ``erc train text`` a search may set, with the
    recipes' defaults and bounds (``erc.recipes``)."""
    from erc.recipes import FusionRecipe, TextRecipe

    return {"fusion": _family(FusionRecipe), "text": _family(TextRecipe)}


FAMILIES: dict[str, dict[str, Knob]] = _families()


@dataclass
class Param:
    """One searched parameter: ``distribution`` over ``args`` (bounds or choices)."""

    name: str
    distribution: str
    args: list

    def optuna(self):
        """The Optuna distribution (what OptunaSearch samples and the plots read)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.distribution == "choice":
            return CategoricalDistribution(list(self.args))
        low, high = self.args
        log = self.distribution.startswith("log")
        if self.distribution in ("int", "logint"):
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)

    def contains(self, value: Any) -> bool:
        if self.distribution == "choice":
            return value in self.args
        if value is None or isinstance(value, bool):
            return False
        return self.args[0] <= value <= self.args[1]

    def describe(self) -> str:
        return f"{self.distribution}{list(self.args)}"


@dataclass
class Scheduler:
    type: str = "asha"  # asha | none
    grace_period: int = 2  # epochs every trial gets before ASHA may stop it
    reduction_factor: float = 3.0


@dataclass
class SearchSettings:
    num_samples: int = 16
    max_concurrent_trials: int = 2
    seed: int = 0
    include_default: bool = True
    resources_per_trial: dict = field(default_factory=lambda: {"cpu": 1, "gpu": "auto"})
    scheduler: Scheduler = field(default_factory=Scheduler)
    max_failures: int = 1  # retries of a trial that errors (from its latest checkpoint)
    experiment_checkpoint_s: float = 2.0  # how often the search state is saved (resume)


@dataclass
class SearchSpec:
    family: str
    params: dict[str, Param]
    fixed: dict[str, Any]
    search: SearchSettings
    source: str = "<dict>"

    def knobs(self) -> dict[str, Knob]:
        return FAMILIES[self.family]

    def defaults(self) -> dict[str, Any]:
        """Every option of the family: ``erc train``'s default, or the fixed value."""
        return {**{k: v.default for k, v in self.knobs().items()}, **self.fixed}

    def default_point(self) -> dict[str, Any]:
        """The untuned configuration, as a point of the search space."""
        defaults = self.defaults()
        return {name: defaults[name] for name in self.params}

    def trial_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every option for a trial: defaults, then fixed values, then the sampled ones."""
        unknown = set(params) - set(self.params)
        if unknown:
            raise ConfigError(f"parameters not in the search space: {sorted(unknown)}")
        return {**self.defaults(), **params}

    def adapter_sizes(self) -> list[str]:
        """The adapter-size options this search sets (searched, or fixed to a size)."""
        return [name for name in ADAPTER_SIZES
                if name in self.params or self.fixed.get(name) is not None]

    def without(self, names) -> SearchSpec:
        """The same search with the parameters ``names`` left out."""
        return SearchSpec(family=self.family,
                          params={n: p for n, p in self.params.items() if n not in names},
                          fixed=dict(self.fixed), search=self.search, source=self.source)

    def max_epochs(self) -> int:
        if "epochs" in self.params:
            p = self.params["epochs"]
            return int(max(p.args) if p.distribution == "choice" else p.args[1])
        return int(self.defaults()["epochs"])

    def to_dict(self) -> dict:
        return {"family": self.family,
                "params": {n: {p.distribution: list(p.args)} for n, p in self.params.items()},
                "fixed": dict(self.fixed), "search": asdict(self.search)}

    def fingerprint(self) -> str:
        """What a resumed search must share with the one it continues: family, space,
        fixed values and the settings that shape the trials (not resources)."""
        d = self.to_dict()
        keep = {k: d["search"][k] for k in ("seed", "include_default", "scheduler")}
        text = json.dumps({"family": d["family"], "params": d["params"], "fixed": d["fixed"],
                           "search": keep}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- loading and validation -----------------------------------------------------------------

def _near(name: str, known) -> str:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(where: str, data: dict, known: tuple[str, ...]) -> None:
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}{_near(key, known)}; "
                              f"known: {', '.join(known)}")


def _int(where: str, value: Any, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{where}: expected an integer {bound}, got {value!r}")
    return value


def _number(where: str, value: Any, low: float, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value) or value < low or (strict and value == low):
        raise ConfigError(f"{where}: expected a number {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def _param(where: str, name: str, knob: Knob, spec: Any) -> Param:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: expected one distribution, e.g. {{uniform: [0.0, 0.5]}} "
                          f"or {{choice: [16, 32]}}; got {spec!r} (a single value belongs in fixed:)")
    (kind, args), = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}{_near(kind, DISTRIBUTIONS)}; "
                          f"known: {', '.join(DISTRIBUTIONS)}")
    if not isinstance(args, list):
        raise ConfigError(f"{where}: {kind} takes a list, got {args!r}")
    if kind == "choice":
        if len(args) < 2:  # one value varies nothing, as int/uniform bounds low == high
            raise ConfigError(f"{where}: choice needs at least two values, got {args!r} "
                              f"(a single value belongs in fixed:)")
        if len({json.dumps(a, sort_keys=True, default=str) for a in args}) != len(args):
            raise ConfigError(f"{where}: choice has repeated values {args}")
        for value in args:
            if isinstance(value, (list, dict)):
                raise ConfigError(f"{where}: choice values must be plain values, got {value!r}")
            why = knob.allows(value)
            if why:
                raise ConfigError(f"{where}: choice value {value!r}: {name} {why}")
        return Param(name, kind, list(args))
    if knob.kind not in ("float", "int"):
        raise ConfigError(f"{where}: {name} is {knob.describe()}: use choice: [...]")
    if len(args) != 2:
        raise ConfigError(f"{where}: {kind} takes [low, high], got {args!r}")
    low, high = args
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise ConfigError(f"{where}: {kind} bounds must be numbers, got {args!r}")
    if kind in ("int", "logint"):
        if knob.kind != "int":
            raise ConfigError(f"{where}: {name} is a real number: use uniform or loguniform")
        if not (float(low).is_integer() and float(high).is_integer()):
            raise ConfigError(f"{where}: {kind} bounds must be integers, got {args!r}")
        low, high = int(low), int(high)
    elif knob.kind == "int":
        raise ConfigError(f"{where}: {name} is an integer: use int or logint (or choice)")
    if not low < high:
        raise ConfigError(f"{where}: low must be < high, got [{low}, {high}]")
    if kind.startswith("log") and low <= 0:
        raise ConfigError(f"{where}: {kind} needs low > 0 (a log scale), got {low}")
    for bound in (low, high):
        why = knob.allows(bound)
        if why:
            raise ConfigError(f"{where}: bound {bound}: {name} {why} ({knob.describe()})")
    return Param(name, kind, [low, high])


def _resources(where: str, data: Any) -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected {{cpu: N, gpu: N | auto}}, got {data!r}")
    _check_keys(where, data, ("cpu", "gpu", "accelerator_type"))
    cpu = _number(f"{where}.cpu", data.get("cpu", 1), 0.0, strict=True)
    gpu = data.get("gpu", "auto")
    if gpu != "auto":
        gpu = _number(f"{where}.gpu", gpu, 0.0)
    accelerator = data.get("accelerator_type")
    if accelerator is not None and not isinstance(accelerator, str):
        raise ConfigError(f"{where}.accelerator_type: expected a GPU type such as L40S")
    out = {"cpu": int(cpu) if cpu.is_integer() else cpu, "gpu": gpu}
    if accelerator:
        out["accelerator_type"] = accelerator
    return out


def _search(where: str, data: Any) -> SearchSettings:
    if data is None:
        return SearchSettings()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    known = tuple(SearchSettings.__dataclass_fields__)
    _check_keys(where, data, known)
    s = SearchSettings()
    if "num_samples" in data:
        s.num_samples = _int(f"{where}.num_samples", data["num_samples"], 1)
    if "max_concurrent_trials" in data:
        s.max_concurrent_trials = _int(f"{where}.max_concurrent_trials",
                                       data["max_concurrent_trials"], 1)
    if "seed" in data:
        # Optuna's sampler takes a seed of 32 bits: a larger one failed after Ray started
        s.seed = _int(f"{where}.seed", data["seed"], 0, 2**32 - 1)
    if "include_default" in data:
        if not isinstance(data["include_default"], bool):
            raise ConfigError(f"{where}.include_default: expected true or false")
        s.include_default = data["include_default"]
    if "resources_per_trial" in data:
        s.resources_per_trial = _resources(f"{where}.resources_per_trial",
                                           data["resources_per_trial"])
    if "max_failures" in data:
        s.max_failures = _int(f"{where}.max_failures", data["max_failures"], 0)
    if "experiment_checkpoint_s" in data:
        s.experiment_checkpoint_s = _number(f"{where}.experiment_checkpoint_s",
                                            data["experiment_checkpoint_s"], 0.0, strict=True)
    if "scheduler" in data:
        sw = f"{where}.scheduler"
        sched = data["scheduler"]
        if not isinstance(sched, dict):
            raise ConfigError(f"{sw}: expected {{type: asha, grace_period: N, reduction_factor: F}}")
        _check_keys(sw, sched, tuple(Scheduler.__dataclass_fields__))
        kind = sched.get("type", "asha")
        if kind not in ("asha", "none"):
            raise ConfigError(f"{sw}.type: expected asha or none, got {kind!r}")
        s.scheduler = Scheduler(
            type=kind,
            grace_period=_int(f"{sw}.grace_period", sched.get("grace_period", 2), 1),
            reduction_factor=_number(f"{sw}.reduction_factor", sched.get("reduction_factor", 3),
                                     1.0, strict=True))
    return s


def parse_spec(data: Any, source: str = "<dict>") -> SearchSpec:
    """A validated ``SearchSpec`` from the parsed YAML ``data``; ConfigError says what is wrong."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with family, params, fixed, search")
    _check_keys(source, data, ("family", "params", "fixed", "search"))
    family = data.get("family")
    if not isinstance(family, str) or family not in FAMILIES:  # a list is no family (nor hashable)
        raise ConfigError(f"{source}: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    knobs = FAMILIES[family]
    params_data = data.get("params") or {}
    fixed = data.get("fixed") or {}
    for key, section in (("params", params_data), ("fixed", fixed)):
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping, got {section!r}")
        for name in section:
            if name not in knobs:
                raise ConfigError(
                    f"{source}: {key}.{name}: unknown parameter for family {family}"
                    f"{_near(name, knobs)}; known: {', '.join(knobs)}")
    params = {}
    for name, spec in params_data.items():
        knob = knobs[name]
        if knob.fixed_only:
            raise ConfigError(f"{source}: params.{name}: {name} changes the inputs every trial "
                              f"shares (they are built once, before the trials): set it under fixed:")
        if name in fixed:
            raise ConfigError(f"{source}: {name} is both searched (params) and fixed")
        params[name] = _param(f"{source}: params.{name}", name, knob, spec)
    for name, value in fixed.items():
        why = knobs[name].allows(value)
        if why:
            raise ConfigError(f"{source}: fixed.{name}: {name} {why} ({knobs[name].describe()})")
    search = _search(f"{source}: search", data.get("search"))
    if not params:  # every trial would train the same configuration
        raise ConfigError(f"{source}: params: nothing to search; name at least one parameter "
                          f"with a distribution, e.g. lr: {{loguniform: [1.0e-4, 3.0e-3]}}")
    spec = SearchSpec(family=family, params=params, fixed=dict(fixed), search=search,
                      source=source)
    if search.scheduler.type == "asha" and search.scheduler.grace_period > spec.max_epochs():
        raise ConfigError(f"{source}: search.scheduler.grace_period "
                          f"{search.scheduler.grace_period} exceeds the epochs "
                          f"({spec.max_epochs()}): ASHA could never stop a trial")
    if search.include_default and params:
        for name, value in spec.default_point().items():
            if not params[name].contains(value):
                raise ConfigError(
                    f"{source}: search.include_default: the default {name}={value!r} is outside "
                    f"params.{name} {params[name].describe()}; widen the range, fix {name}, "
                    f"or set include_default: false")
    return spec


def load_spec(path: str | Path) -> SearchSpec:
    """Reads and validates a search file (``tune/fusion.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such search file")
    return parse_spec(load_yaml(path), str(path))


def find_spec(name_or_path: str) -> Path:
    """A search file path as given, else ``tune/<name>.yaml`` of this checkout."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    folder = Path(__file__).resolve().parents[2] / "tune"
    if path.suffix or len(path.parts) > 1:
        raise ConfigError(f"{name_or_path}: no such search file")
    if (folder / f"{name_or_path}.yaml").is_file():
        return folder / f"{name_or_path}.yaml"
    names = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    raise ConfigError(f"{name_or_path}: no such search file"
                            + (f" (the ones in tune/: {', '.join(names)})" if names else ""))
