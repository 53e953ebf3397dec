"""Wheels for an offline GPU host, shipped in parts of at most 64 MiB.

The host (see README.md here) has Python and torch but no Ray, no package index, and takes
files only in shipments of at most 64 MiB. Here, with the index:

    python bench/gpu/wheels.py pack --out .gpu                 # download, split, group
        -> .gpu/ship-01/, .gpu/ship-02/, ...  (each at most --ship-mib, parts at most --part-mib)

There, once every shipment has arrived in one folder:

    python3 bench/gpu/wheels.py join --parts /root/erc-gpu/parts --out /root/erc-gpu/wheels
    python3 -m pip install --no-index --no-deps --find-links /root/erc-gpu/wheels ...

``split`` cuts each file into numbered parts and writes ``manifest.json`` (every file's size
and sha256, and its parts in order); ``join`` puts the files back together and refuses any
whose size or sha256 differs (a part missing, truncated or from another build). Standard
library only: it runs on the host before anything is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

MIB = 1 << 20
PART_MIB = 64
MANIFEST = "manifest.json"
HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements.txt"
# The GPU host's interpreter and platforms (../.library device notes: Python 3.12, x86-64).
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
          *[arg for n in (39, 35, 34, 31, 28, 27, 24, 17)
            for arg in ("--platform", f"manylinux_2_{n}_x86_64")],
          "--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64",
          "--platform", "any"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def split(files: list[Path], out: Path, part_bytes: int = PART_MIB * MIB) -> dict:
    """Cuts each file into ``<name>.partNNN`` files of at most ``part_bytes`` in ``out``;
    returns (and writes) the manifest."""
    if part_bytes < 1:
        raise ValueError("part size must be positive")
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"part_bytes": part_bytes, "files": []}
    for path in sorted(files, key=lambda p: p.name):
        parts = []
        with open(path, "rb") as handle:
            index = 0
            while True:
                block = handle.read(part_bytes)
                if not block and index:
                    break
                name = f"{path.name}.part{index:03d}"
                (out / name).write_bytes(block)
                parts.append(name)
                index += 1
                if len(block) < part_bytes:
                    break
        manifest["files"].append({"name": path.name, "size": path.stat().st_size,
                                  "sha256": sha256(path), "parts": parts})
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def join(parts: Path, out: Path) -> list[Path]:
    """Reassembles every file the manifest in ``parts`` lists into ``out``, checking sizes
    and sha256; raises ValueError naming what is missing or wrong."""
    manifest = json.loads((parts / MANIFEST).read_text())
    missing = [p for f in manifest["files"] for p in f["parts"] if not (parts / p).is_file()]
    if missing:
        raise ValueError(f"{len(missing)} part(s) missing from {parts}: {', '.join(missing[:5])}")
    out.mkdir(parents=True, exist_ok=True)
    joined = []
    for entry in manifest["files"]:
        target = out / entry["name"]
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "wb") as sink:
            for name in entry["parts"]:
                with open(parts / name, "rb") as source:
                    shutil.copyfileobj(source, sink)
        if tmp.stat().st_size != entry["size"] or sha256(tmp) != entry["sha256"]:
            tmp.unlink()
            raise ValueError(f"{entry['name']}: the joined file differs from the one split "
                             "(size or sha256): a part is truncated or from another build")
        tmp.replace(target)
        joined.append(target)
    return joined


def group(parts: Path, out: Path, ship_bytes: int) -> list[Path]:
    """Moves the parts (and a copy of the manifest) into ``ship-NN`` folders of at most
    ``ship_bytes`` each, the manifest in the first: largest parts first, each into the
    first shipment it fits (fewer shipments than filling them in name order)."""
    sizes = {p.name: p.stat().st_size for p in parts.iterdir() if p.name != MANIFEST}
    ships: list[list[str]] = [[]]
    used = [(parts / MANIFEST).stat().st_size]
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        size = sizes[name]
        if size > ship_bytes:
            raise ValueError(f"{name} ({size} bytes) exceeds a shipment ({ship_bytes} bytes)")
        k = next((k for k, u in enumerate(used) if u + size <= ship_bytes), len(ships))
        if k == len(ships):
            ships.append([])
            used.append(0)
        ships[k].append(name)
        used[k] += size
    folders = []
    for k, names_k in enumerate(ships, start=1):
        folder = out / f"ship-{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in names_k:
            shutil.move(str(parts / name), folder / name)
        folders.append(folder)
    shutil.copy(parts / MANIFEST, folders[0] / MANIFEST)
    return folders


def download(requirements: Path, into: Path, pip: list[str]) -> list[Path]:
    """``pip download --no-deps`` of every pinned line for the host's Python and platform
    (sdists are built into wheels here: the host has no compiler toolchain to rely on)."""
    into.mkdir(parents=True, exist_ok=True)
    lines = [line.split("#")[0].strip() for line in requirements.read_text().splitlines()]
    wanted = [line for line in lines if line]
    binary = [w for w in wanted if not w.startswith("sdist:")]
    built = [w.removeprefix("sdist:").strip() for w in wanted if w.startswith("sdist:")]
    if binary:
        subprocess.run([*pip, "download", "--no-deps", *TARGET, "-d", str(into), *binary], check=True)
    for spec in built:  # pure-Python sdists: a wheel built here installs there
        subprocess.run([*pip, "wheel", "--no-deps", "-w", str(into), spec], check=True)
    return sorted(into.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("pack", help="download the wheels, split them, group the parts")
    pack.add_argument("--out", type=Path, default=Path(".gpu"))
    pack.add_argument("--requirements", type=Path, default=REQUIREMENTS)
    pack.add_argument("--part-mib", type=float, default=PART_MIB)
    pack.add_argument("--extra", type=Path, nargs="*", default=[],
                      help="other files to ship the same way (e.g. the scale corpus as a .tar)")
    pack.add_argument("--ship-mib", type=float, default=60.0,
                      help="at most this much per shipment (the host takes 64 MiB a transfer, "
                           "scripts included)")
    cut = commands.add_parser("split", help="split files into parts with a manifest")
    cut.add_argument("files", type=Path, nargs="+")
    cut.add_argument("--out", type=Path, required=True)
    cut.add_argument("--part-mib", type=float, default=PART_MIB)
    glue = commands.add_parser("join", help="join the parts a manifest lists, checking sha256")
    glue.add_argument("--parts", type=Path, required=True)
    glue.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "pack":
        wheels = download(args.requirements, args.out / "wheels", [sys.executable, "-m", "pip"])
        part_mib = min(args.part_mib, args.ship_mib)  # a part must fit in a shipment
        manifest = split([*wheels, *args.extra], args.out / "parts", int(part_mib * MIB))
        folders = group(args.out / "parts", args.out, int(args.ship_mib * MIB))
        total = sum(f["size"] for f in manifest["files"])
        print(f"{len(wheels)} wheels and {len(args.extra)} other files, {total / MIB:.0f} MiB, "
              f"in {len(folders)} shipments: "
              + ", ".join(str(f) for f in folders))
    elif args.command == "split":
        manifest = split(args.files, args.out, int(args.part_mib * MIB))
        print(f"{len(manifest['files'])} files -> {sum(len(f['parts']) for f in manifest['files'])} "
              f"parts in {args.out}")
    else:
        joined = join(args.parts, args.out)
        print(f"joined {len(joined)} files into {args.out} (sizes and sha256 checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
