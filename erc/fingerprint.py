"""The digests erc's fingerprints are made of: canonical JSON of settings, file contents,
file sizes and modification times. ``erc.stages.base`` builds stage fingerprints from
them; caches (partitions, feature vectors) key their entries with them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def digest(*parts: Any) -> str:
    """sha256 (hex, 32 characters) of the canonical JSON of ``parts``."""
    text = json.dumps(parts, sort_keys=True, default=_plain, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def file_sha256(path: str | Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            sha.update(block)
    return sha.hexdigest()


def stat_of(path: str | Path | None) -> list | None:
    """[size, mtime ns] of a file, None when it is absent (cheap: no reading)."""
    if not path:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def table_digest(table, columns: tuple[str, ...]) -> str:
    """Of the values of ``columns`` of an Arrow table, row order included."""
    return digest([table.column(name).to_pylist() for name in columns])
