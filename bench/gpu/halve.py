"""A model folder shipped at half its size: fp32 weights stored as fp16 for the transfer,
restored to fp32 on the host.

all-mpnet-base-v2 is 438 MB in fp32, seven or eight 64 MiB transfers to an offline GPU host
by itself; as fp16 it is half that. The weights come back as fp32 with fp16's rounding
(relative error about 5e-4 for weights above 6e-5 in size, more for the smaller ones, which
fp16 stores as subnormals), which fine-tuning moves far past; a model restored this way is
*not* the published file (its sha256 differs). A weight beyond fp16's range is refused.

    python bench/gpu/halve.py pack ~/.cache/erc/models/sentence-transformers/all-mpnet-base-v2 \\
        --out /tmp/all-mpnet-base-v2.fp16.tar        # here
    python3 bench/gpu/halve.py unpack all-mpnet-base-v2.fp16.tar --dest /root/erc-gpu/models
        # there: /root/erc-gpu/models/all-mpnet-base-v2, fp32 again

Only the fp32 tensors of ``*.safetensors`` files change (the file's metadata names them,
so a tensor that was fp16 already stays fp16); everything else travels as it is.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path

HALF_SUFFIX = ".fp16.safetensors"
HALVED = "erc_halved"  # metadata key: the names of the tensors stored as fp16 for the trip


def pack(folder: Path, out: Path) -> Path:
    """``folder`` into the tar ``out``, each fp32 tensor of its safetensors files as fp16."""
    import torch
    from safetensors.torch import load_file, save

    with tarfile.open(out, "w") as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = f"{folder.name}/{path.relative_to(folder)}"
            if path.suffix != ".safetensors":
                tar.add(path, arcname=name)
                continue
            tensors = load_file(path)
            halved = sorted(k for k, v in tensors.items() if v.dtype == torch.float32)
            for key in halved:
                if tensors[key].abs().max() > torch.finfo(torch.float16).max:
                    raise ValueError(f"{path}: {key} holds values beyond fp16's range")
                tensors[key] = tensors[key].half()
            blob = save(tensors, metadata={HALVED: ",".join(halved)})
            info = tarfile.TarInfo(name[: -len(".safetensors")] + HALF_SUFFIX)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return out


def unpack(archive: Path, dest: Path) -> Path:
    """The model folder of a ``pack`` tar under ``dest``, its fp16 tensors back in fp32."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
        roots = {Path(m.name).parts[0] for m in tar.getmembers()}
    if len(roots) != 1:
        raise ValueError(f"{archive}: expected one model folder, found {sorted(roots)}")
    folder = dest / roots.pop()
    for half in folder.rglob("*" + HALF_SUFFIX):
        with safe_open(half, "pt") as handle:
            halved = set(filter(None, (handle.metadata() or {}).get(HALVED, "").split(",")))
        tensors = {k: v.float() if k in halved else v for k, v in load_file(half).items()}
        save_file(tensors, half.with_name(half.name[: -len(HALF_SUFFIX)] + ".safetensors"),
                  metadata={"format": "pt"})
        half.unlink()
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    down = commands.add_parser("pack", help="a model folder into a tar, weights as fp16")
    down.add_argument("folder", type=Path)
    down.add_argument("--out", type=Path, required=True)
    up = commands.add_parser("unpack", help="the tar into a model folder, weights as fp32")
    up.add_argument("archive", type=Path)
    up.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "pack":
        out = pack(args.folder.expanduser(), args.out)
        print(f"{out}: {out.stat().st_size / 2**20:.0f} MiB")
    else:
        print(f"restored {unpack(args.archive, args.dest)} (fp32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
