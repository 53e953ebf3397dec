"""Prints docker/requirements.lock: the exact versions of erc's runtime stack as installed
in this environment (the closure of ``erc[weights]`` plus mamba-ssm's own dependencies),
so the image runs what the tests ran.

    .venv/bin/python docker/lock.py > docker/requirements.lock

Run it in a venv made by .ci/install.sh. The packages that .ci/install.sh installs without
their dependency pins (``NO_DEPS``) are left out: the Dockerfile installs them the same way.
"""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

NO_DEPS = ("facenet-pytorch", "resemblyzer", "mamba-ssm")
HEADER = """\
# erc's whole runtime stack, exact versions: the closure of `erc[weights]` as installed
# and tested by .ci/install.sh on Python 3.11 / Linux x86_64 (the Python of
# rayproject/ray:2.60.0-py311-gpu). docker/Dockerfile installs it; three packages are not
# here because they are installed without their dependency pins (their metadata conflicts
# with this stack, see .ci/install.sh): facenet-pytorch==2.6.0, Resemblyzer==0.1.4 and
# mamba-ssm==2.3.2.post1 (built with its CUDA kernels in the image).
# Regenerate after changing pyproject.toml: python docker/lock.py > docker/requirements.lock"""


def closure(roots: list[tuple[str, set[str]]]) -> set[str]:
    """Canonical names of the installed distributions ``roots`` need, extras included."""
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    seen: set[tuple[str, frozenset]] = set()
    found: set[str] = set()
    stack = list(roots)
    while stack:
        name, extras = stack.pop()
        key = canonicalize_name(name)
        if key not in installed or (key, frozenset(extras)) in seen:
            continue
        seen.add((key, frozenset(extras)))
        found.add(key)
        for text in installed[key].requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e})
                                         for e in (extras or {""})):
                stack.append((req.name, set(req.extras)))
    return found


def main() -> None:
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    names = closure([("erc", {"weights"}), ("mamba-ssm", set())])
    names -= {"erc", *NO_DEPS}
    print(HEADER)
    for line in sorted(f"{installed[k].metadata['Name']}=={installed[k].version}" for k in names):
        print(line)


if __name__ == "__main__":
    main()
