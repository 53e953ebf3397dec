"""Typed settings: how a recipe dataclass becomes a validated YAML section, command-line
options, ``-o key=value`` overrides and a tune search space, from one definition.

A recipe is a plain dataclass whose fields hold the defaults (``erc.recipes``). This
module reads its fields once and derives everything else:

- validation: ``validate(cls, data, where)`` checks a mapping with pydantic in strict mode
  (an unknown key, a wrong type, a value out of its declared bounds is a ``ConfigError``
  naming the file and key, with the offending value cut to a short preview);
- options: ``options(cls)`` lists every leaf setting under the name users write. Fields
  whose metadata says ``flatten`` merge into their parent (the fusion recipe's model and
  loop settings sit side by side in ``train:``), other nested dataclasses stay sections
  in YAML (``qc: {alignment: {rule: ...}}``) and are flattened only on the command line,
  where a section may give its options a ``prefix`` (``--face-threshold``);
- help: a field's ``help`` metadata, else the comment after it in the source;
- YAML: ``load_yaml`` refuses anchors and aliases (an alias bomb cannot expand) and files
  over 1 MiB.

Field metadata keys: ``help``, ``flatten``, ``prefix`` (sections), ``cli`` (another
command-line name), ``internal`` (not a user setting: derived from the data or the run),
``fixed_only`` (changes a search's shared inputs: may be fixed, never searched), ``before``
(a model setting added later: the value models saved before it existed were trained with;
``before_options`` lists them), ``path`` (a file or folder: ``expand_path`` reads it, from a
flag, a config file or ``-o`` alike).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import inspect
import json
import math
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from erc.errors import ConfigError, preview

MAX_CONFIG_BYTES = 1 << 20


def expand_path(text: Any) -> Any:
    """A path as the user means it: a leading ``~`` (``~/runs/x``, ``~ann/x``) is a home
    folder, as a shell expands it. No shell does in a config file, in ``-o key=~/x`` or after
    ``--out=``: taken as written it was a folder named ``~`` in the working directory. Any
    other value, a storage URI (``s3://...``) too, is returned as given. Every path a command
    takes is read through here: its flags as their argparse type, its settings marked
    ``path`` by ``validate``."""
    return os.path.expanduser(text) if isinstance(text, str) and text.startswith("~") else text


PATH = {"path": True}  # the metadata of a setting that is a file or folder (``expand_path``)


def path_flag(text: str) -> str:
    """``expand_path`` of a flag's value (its argparse type). An empty one (``--out ""``,
    ``--config "$UNSET"``) was taken as not given, running the shipped sample config or
    writing where the default goes, or as the working folder (``Path("")``)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a path, got {text!r}")
    return expand_path(text)


# -- YAML -----------------------------------------------------------------------------------

class ConfigLoader(yaml.SafeLoader):
    """A safe loader that rejects anchors and aliases: a config cannot expand itself."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(f"line {mark.line + 1}: YAML aliases (*name) are not allowed in "
                              f"erc configs; write the value out")
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise ConfigError(f"line {event.start_mark.line + 1}: YAML anchors (&name) are not "
                              f"allowed in erc configs; write the value out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        # A key written twice would silently lose its first value (two train: sections,
        # the second without the first's epochs): an error naming the key and both lines.
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise ConfigError(f"line {line}: key {preview(key, 40)} is written "
                                          f"twice (first on line {seen[key]}); write it once")
                    seen[key] = line
                except TypeError:
                    continue  # an unhashable key: construct_mapping reports it
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 reads 5e-3 (no dot) as a string; erc reads it as the number everyone means.
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_yaml(text: str, where: str, loader: type[ConfigLoader] = ConfigLoader) -> Any:
    if len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config")
    try:
        return yaml.load(text, Loader=loader)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML{_yaml_problem(err)}") from None
    except RecursionError:  # the parser recurses once per level: [[[[...]]]] exhausts it
        raise ConfigError(f"{where}: nested too deep: not a config") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """Where and what the parser's problem is, on one line: " at line 3, column 1: found
    character '\\t' that cannot start any token (while scanning for the next token)"."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or not problem:
        return f": {str(err).splitlines()[0]}"
    context = getattr(err, "context", None)
    hint = "; indent with spaces, not tabs" if "'\\t'" in problem else ""
    return (f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"
            + (f" ({context})" if context else "") + hint)


def load_yaml(path: str | Path, loader: type[ConfigLoader] = ConfigLoader) -> Any:
    """A YAML file as data (read by ``loader``: ConfigLoader or a subclass); ConfigError
    when it is missing, too large, invalid or uses aliases."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a config file (YAML)")
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse_yaml(text, str(path), loader)


def parse_value(text: str, loader: type[ConfigLoader] = ConfigLoader) -> Any:
    """A command-line value as YAML (``3``, ``1e-3``, ``true``, ``[a, b]``, ``null``)."""
    return parse_yaml(text, "value", loader) if text.strip() else ""


class OverrideError(ConfigError, argparse.ArgumentTypeError):
    """A bad ``-o KEY=VALUE``: argparse reports it with this message, not its own."""


def parse_override(text: str, loader_of: Callable[[str], type[ConfigLoader]] | None = None
                   ) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", parsed value); ``loader_of``: the YAML loader a key's value
    is read with (a reader option naming the corpus's labels reads ``yes`` as written)."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key or any(not part for part in key.split(".")):
        raise OverrideError(f"-o {preview(text)}: expected KEY=VALUE (e.g. -o train.lr=3e-4)")
    try:
        return key, parse_value(value, loader_of(key) if loader_of else ConfigLoader)
    except ConfigError as err:
        raise OverrideError(f"-o {preview(key, 40)}: {err}") from None


def tree(overrides: list[tuple[str, Any]]) -> dict:
    """[("a.b", 1), ("a.c", 2)] -> {"a": {"b": 1, "c": 2}}. A key given twice is an error,
    not the last one winning: one of the two values is a mistake, and which is not ours
    to guess."""
    out: dict = {}
    for key, value in overrides:
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"-o {key}: {part} is a value, not a section")
        if leaf in node:
            raise ConfigError(f"-o {key} given twice ({preview(node[leaf], 40)}, then "
                              f"{preview(value, 40)}): give it once")
        node[leaf] = value
    return out


def merge(base: dict, update: dict) -> dict:
    """``update`` over ``base``, section by section."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


# -- fields ---------------------------------------------------------------------------------

@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _strip_annotated(hint: Any) -> tuple[Any, list]:
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
        return base, extras
    return hint, []


def _is_section(hint: Any) -> bool:
    base, _ = _strip_annotated(hint)
    return dataclasses.is_dataclass(base) and isinstance(base, type)


_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")


@functools.cache
def _comments(cls) -> dict[str, str]:
    """{field: the comment after it in the class source} (the help of a setting), also
    of fields a recipe inherits."""
    found: dict[str, str] = {}
    for klass in cls.__mro__:
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            match = _COMMENT.match(line)
            if match and match.group(1) not in found:
                found[match.group(1)] = match.group(2)
    return found


def before_options(cls) -> dict:
    """Settings of ``cls`` added after models were first saved -> the value those models
    had: a saved config without one is read with it (never with today's default)."""
    return {f.name: f.metadata["before"] for f in dataclasses.fields(cls) if "before" in f.metadata}


def _key(field: dataclasses.Field) -> str:
    """The name users write for a field: its ``cli`` metadata, else the field's name."""
    return str(field.metadata.get("cli") or field.name).replace("-", "_")


@dataclass(frozen=True)
class Option:
    """One leaf setting of a recipe."""

    name: str  # what users write: the YAML key at its level, --NAME on the command line
    path: tuple[str, ...]  # attribute path in the dataclass tree
    yaml_path: tuple[str, ...]  # key path in YAML (flattened components leave no key)
    hint: Any
    default: Any
    help: str
    metadata: dict

    @property
    def base(self) -> Any:
        return _strip_annotated(self.hint)[0]

    @property
    def nullable(self) -> bool:
        return type(None) in typing.get_args(self.base)

    @property
    def kind(self) -> str:
        """bool | int | float | str | choice | other (lists, mappings, unions)."""
        base = self.base
        args = [a for a in typing.get_args(base) if a is not type(None)]
        if typing.get_origin(base) in (typing.Union, types.UnionType) and len(args) == 1:
            base = args[0]
        base, _ = _strip_annotated(base)
        if typing.get_origin(base) is Literal:
            return "choice"
        return {bool: "bool", int: "int", float: "float", str: "str"}.get(base, "other")

    @property
    def choices(self) -> tuple:
        base = self.base
        for arg in (base, *typing.get_args(base)):
            arg, _ = _strip_annotated(arg)
            if typing.get_origin(arg) is Literal:
                return typing.get_args(arg)
        return ()

    def bounds(self) -> dict[str, float]:
        """The declared bounds: {"ge"|"gt"|"le"|"lt": value}."""
        found = {}
        stack = [self.hint]
        while stack:
            hint = stack.pop()
            base, extras = _strip_annotated(hint)
            for extra in extras:
                for item in getattr(extra, "metadata", [extra]):
                    for key in ("ge", "gt", "le", "lt"):
                        if getattr(item, key, None) is not None:
                            found[key] = getattr(item, key)
            stack.extend(typing.get_args(base))
        return found

    @property
    def cli(self) -> str:
        return "--" + self.name.replace("_", "-")


def options(cls, *, cli_prefix: str = "", path: tuple = (), yaml_path: tuple = (),
            defaults: Any = None) -> list[Option]:
    """Every user-facing leaf setting of recipe ``cls`` (internal fields left out), with
    its default as the recipe sets it (a section's default may differ from its class's:
    the fusion and text recipes' learning rates)."""
    found: list[Option] = []
    comments = _comments(cls)
    defaults = cls() if defaults is None else defaults
    for field in dataclasses.fields(cls):
        meta = dict(field.metadata)
        if meta.get("internal"):
            continue
        hint = _hints(cls)[field.name]
        value = getattr(defaults, field.name)
        if _is_section(hint):
            section = _strip_annotated(hint)[0]
            flatten = meta.get("flatten", False)
            prefix = meta.get("prefix", "" if flatten else field.name)
            found += options(section, cli_prefix=cli_prefix + (f"{prefix}_" if prefix else ""),
                             path=path + (field.name,),
                             yaml_path=yaml_path if flatten else yaml_path + (_key(field),),
                             defaults=value)
            continue
        found.append(Option(name=f"{cli_prefix}{_key(field)}", path=path + (field.name,),
                            yaml_path=yaml_path + (_key(field),), hint=hint, default=value,
                            help=meta.get("help") or comments.get(field.name, ""),
                            metadata=meta))
    names = [o.name for o in found]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes and not path:
        raise TypeError(f"{cls.__name__}: settings share a command-line name: {clashes}")
    return found


def option_map(cls) -> dict[str, Option]:
    return {o.name: o for o in options(cls)}


# -- validation -----------------------------------------------------------------------------

@functools.cache
def _adapter(cls):
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def _at(where: str, keys: tuple) -> str:
    return f"{where}: {'.'.join(map(str, keys))}" if keys else where


def _nest(cls, data: Any, where: str, keys: tuple = ()) -> dict:
    """YAML data of ``cls`` (flattened components merged in) -> the nested mapping of its
    dataclass tree. Unknown keys are errors that say which keys exist."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{_at(where, keys)}: expected a mapping, got {preview(data)}")
    routes: dict[str, tuple[str, ...]] = {}  # YAML key at this level -> attribute path
    sections: dict[str, Any] = {}  # YAML key of a nested section -> its class
    paths: set[str] = set()  # YAML keys of settings that are paths

    def collect(kls, prefix: tuple) -> None:
        for field in dataclasses.fields(kls):
            if field.metadata.get("internal"):
                continue
            hint = _hints(kls)[field.name]
            if _is_section(hint) and field.metadata.get("flatten"):
                collect(_strip_annotated(hint)[0], prefix + (field.name,))
            else:
                routes[_key(field)] = prefix + (field.name,)
                if field.metadata.get("path"):
                    paths.add(_key(field))
                if _is_section(hint):
                    sections[_key(field)] = _strip_annotated(hint)[0]

    collect(cls, ())
    out: dict = {}
    for key, value in data.items():
        if key not in routes:
            close = difflib.get_close_matches(str(key), list(routes), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{_at(where, keys)}: unknown key {preview(key, 40)}{hint}; "
                              f"known: {', '.join(sorted(routes))}")
        if key in sections:
            value = _nest(sections[key], value, where, keys + (key,))
        elif key in paths:
            value = expand_path(value)
        node = out
        for part in routes[key][:-1]:
            node = node.setdefault(part, {})
        node[routes[key][-1]] = value
    return out


# How pydantic names a member of a union in an error's location ("str", "none",
# "constrained-int", "list[constrained-int]"); settings are identifiers, never these.
_UNION_MEMBER = re.compile(r"str|int|float|bool|none|[a-z]+-[a-z-]+(\[.*\])?|[a-z]+\[.*\]")


def _describe(error: dict, where: str, yaml_paths: dict[tuple, tuple]) -> tuple[tuple, str]:
    """(the value it is about, the line naming it) of one pydantic error. A value of a union
    (``Count | list[Count]``) fails once per member, each under the member's name: the
    line names the value without it, and the errors of one value share the first part."""
    loc = tuple(p for p in error["loc"] if p != "__root__")
    member = [isinstance(p, str) and _UNION_MEMBER.fullmatch(p) is not None for p in loc]
    keys = tuple(p for p, m in zip(loc, member) if not m)
    value = loc[:member.index(True)] if any(member) else keys
    n = next((n for n in range(len(keys), 0, -1) if keys[:n] in yaml_paths), 0)
    keys = yaml_paths[keys[:n]] + keys[n:] if n else keys  # attribute path -> the keys users write
    message = error["msg"].removeprefix("Value error, ")
    got = error.get("input")
    shown = "" if isinstance(got, dict) or error["type"] == "missing" else f" (got {preview(got)})"
    return value, f"{_at(where, keys)}: {message}{shown}"


def validate(cls, data: Any, where: str = "config"):
    """An instance of recipe ``cls`` from YAML-shaped ``data`` (None: the defaults),
    checked strictly; ConfigError lists what is wrong (at most three problems)."""
    from pydantic import ValidationError

    nested = _nest(cls, data, where)
    found = _unfit_at(nested)
    if found is not None:
        keys, why = found
        keys = {o.path: o.yaml_path for o in options(cls)}.get(keys, keys)
        raise ConfigError(f"{_at(where, keys)}: {why}")
    try:
        text = json.dumps(nested, default=list)  # YAML's sets and tuples: lists
    except (TypeError, ValueError) as err:  # a key no mapping of settings has (a YAML date)
        raise ConfigError(f"{where}: {err}") from None
    try:
        return _adapter(cls).validate_json(text, strict=True)
    except ValidationError as err:
        yaml_paths = _yaml_paths(cls)
        described: dict[tuple, tuple[int, str]] = {}
        for error in err.errors():  # one line a value: of a union's members, the one
            value, line = _describe(error, where, yaml_paths)  # that read it deepest
            if len(error["loc"]) > described.get(value, (-1, ""))[0]:
                described[value] = len(error["loc"]), line
        problems = [line for _, line in described.values()]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ConfigError("; ".join(problems[:3]) + more) from None


def _yaml_paths(cls) -> dict[tuple, tuple]:
    """Attribute path -> the keys users write, of every setting of ``cls`` and of every
    section holding one: an error of a section's own check (qc's alignment rule) named the
    attribute path, qc.checks.alignment, which no config can hold."""
    found = {}
    for option in options(cls):
        keys, kls = [], cls
        for n, name in enumerate(option.path, 1):
            field = next(f for f in dataclasses.fields(kls) if f.name == name)
            if not field.metadata.get("flatten"):
                keys.append(_key(field))
            found[option.path[:n]] = tuple(keys)
            kls = _strip_annotated(_hints(kls)[name])[0]
    return found


def _unfit(value: Any) -> str | None:
    """Why a plain YAML value is no setting's, or None. A bound like ge=0 lets these
    through, and each fails later: an infinite frame rate or averaging window crashes or
    leaves a model untrained, a seed of 2**64 fails in torch.manual_seed mid-training, a
    path holding NUL in the OS call that opens it."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"expected a finite number, got {value}"
    if isinstance(value, int) and not isinstance(value, bool):
        return (None if -(1 << 63) <= value < (1 << 63) else
                f"{preview(value)} is out of range (a whole number of at most 64 bits)")
    if isinstance(value, str):
        return None if "\0" not in value else (f"{preview(value)} holds a NUL character (no "
                                               f"path, name or label does)")
    if isinstance(value, (bool, type(None))):
        return None
    return (f"a value of type {type(value).__name__} ({preview(value, 40)}) is not a plain "
            f"number, string, list or mapping")  # a YAML date or binary


def _unfit_at(value: Any, keys: tuple = ()) -> tuple[tuple, str] | None:
    """(keys, why) of the first value inside ``value`` that no setting holds (so that the
    message names the setting, not only the file); None: there is none."""
    if isinstance(value, dict):
        items = [(keys + (key,), item) for key, item in value.items()]
    elif isinstance(value, (list, tuple, set)):
        items = [(keys, item) for item in value]
    else:
        why = _unfit(value)
        return None if why is None else (keys, why)
    for at, item in items:
        found = _unfit_at(item, at)
        if found is not None:
            return found
    return None


def to_data(obj) -> dict:
    """A recipe instance as YAML-shaped data (the inverse of ``validate``)."""
    out: dict = {}
    for field in dataclasses.fields(obj):
        if field.metadata.get("internal"):
            continue
        value = getattr(obj, field.name)
        if dataclasses.is_dataclass(value):
            if field.metadata.get("flatten"):
                out.update(to_data(value))
            else:
                out[_key(field)] = to_data(value)
        else:
            out[_key(field)] = list(value) if isinstance(value, tuple) else value
    return out


def updated(obj, changes: dict, where: str):
    """A new instance of ``obj``'s class: ``obj`` with YAML-shaped ``changes`` merged in."""
    return validate(type(obj), merge(to_data(obj), changes), where)


def by_option(cls, values: dict[str, Any]) -> dict:
    """{option name: value} (flat, as on the command line) -> YAML-shaped data."""
    table = option_map(cls)
    out: dict = {}
    for name, value in values.items():
        option = table.get(name)
        if option is None:
            close = difflib.get_close_matches(name, list(table), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown option {name!r}{hint}")
        node = out
        for part in option.yaml_path[:-1]:
            node = node.setdefault(part, {})
        node[option.yaml_path[-1]] = value
    return out


def option_values(obj) -> dict[str, Any]:
    """{option name: value} of a recipe instance (the flat view)."""
    out = {}
    for option in options(type(obj)):
        value = obj
        for part in option.path:
            value = getattr(value, part)
        out[option.name] = list(value) if isinstance(value, tuple) else value
    return out


# -- command line ---------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = (),
                  title: str | None = None) -> list[Option]:
    """``--NAME`` for every option of ``cls`` (booleans as ``--NAME/--no-NAME``). Values
    are parsed as YAML and checked by ``validate``; an option not given is absent from the
    namespace (the recipe's default, or the config file's value, stands)."""
    group = parser.add_argument_group(title) if title else parser
    added = []
    for option in options(cls):
        if option.name in skip:
            continue
        default = option.default
        # 0 is a default to show (0 == False: `in` hid every setting whose default is 0)
        shown = ("" if default is None or default is False or default in ("", [], {})
                 else f" (default: {_show(default)})")
        if option.kind == "bool":
            # --flag / --no-flag; a setting named no_x is a plain switch (--no-x)
            action = "store_true" if option.name.startswith("no_") else argparse.BooleanOptionalAction
            group.add_argument(option.cli, dest=option.name, action=action,
                               default=argparse.SUPPRESS, help=option.help + shown)
        else:
            choices = option.choices
            metavar = "{" + ",".join(map(str, choices)) + "}" if choices else option.name.upper()
            group.add_argument(option.cli, dest=option.name, default=argparse.SUPPRESS,
                               type=_parser(option), metavar=metavar, help=option.help + shown)
        added.append(option)
    return added


def _parser(option: Option):
    """How a command-line value of ``option`` is read: strings as given, lists also as
    ``a,b,c``, everything else as YAML (checked by ``validate`` afterwards)."""
    if option.kind == "str":
        return path_flag if option.metadata.get("path") else str
    base = option.base
    args = [a for a in typing.get_args(base) if a is not type(None)]
    if typing.get_origin(base) in (typing.Union, types.UnionType) and len(args) == 1:
        base = args[0]
    if typing.get_origin(_strip_annotated(base)[0]) in (list, tuple):
        return lambda text: (_flag_value(text) if text.strip().startswith("[")
                             else [part.strip() for part in text.split(",") if part.strip()])
    return _flag_value


def _flag_value(text: str) -> Any:
    """``parse_value`` for a flag: a value that is not YAML is argparse's error naming the
    flag and saying why (not "invalid parse_value value")."""
    try:
        return parse_value(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def given(args: argparse.Namespace, added: list[Option]) -> dict[str, Any]:
    """{option name: value} of the options given on the command line."""
    return {o.name: getattr(args, o.name) for o in added if hasattr(args, o.name)}
