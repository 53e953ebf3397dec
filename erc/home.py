"""erc's own folder on this machine (``ERC_HOME``, default ``~/.cache/erc``): model cache,
checksum and vector caches, local copies of storage URIs, Ray's private HOME."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    base = os.environ.get("ERC_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "erc")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
