"""erc's own folder on this machine (``ERC_HOME``, default ``~/.cache/erc``): model cache,
checksum and vector caches, local copies of storage URIs, Ray's private HOME."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    base = os.environ.get("ERC_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "erc")
    path = Path(os.path.expanduser(base))  # ERC_HOME=~/x unexpanded was a folder named ~ here
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file there, a read-only disk: the user's to fix, not a bug
        from erc.errors import ConfigError

        raise ConfigError(f"{path}: erc cannot keep its own files there ({err.strerror or err}); "
                          f"set ERC_HOME to a folder it can create and write") from None
    return path
