"""bench/gpu: wheels cut into parts and joined again (a missing or altered part is refused),
the parts packed into few shipments, a joined wheel installed with ``pip install --no-index
--target`` as the offline GPU host does, and a model folder shipped at half size and
restored (no GPU needed)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import textwrap

import pytest

from tests.conftest import REPO


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", REPO / "bench" / "gpu" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wheels = bench_module("wheels")
halve = bench_module("halve")


def test_split_group_join_round_trip(tmp_path):
    files = []
    for name, size in (("a.whl", 2500), ("b.whl", 1024), ("empty.tar", 0)):
        path = tmp_path / name
        path.write_bytes(bytes(range(256)) * (size // 256) + bytes(size % 256))
        files.append(path)
    manifest = wheels.split(files, tmp_path / "parts", part_bytes=1024)
    assert [len(f["parts"]) for f in manifest["files"]] == [3, 1, 1]
    assert all((tmp_path / "parts" / p).stat().st_size <= 1024
               for f in manifest["files"] for p in f["parts"])
    ships = wheels.group(tmp_path / "parts", tmp_path, ship_bytes=2500)
    assert len(ships) >= 2
    assert all(sum(p.stat().st_size for p in ship.iterdir()) <= 2500 for ship in ships)

    arrived = tmp_path / "arrived"
    arrived.mkdir()
    for ship in ships:  # what `provision.sh receive` does once per shipment
        for part in ship.iterdir():
            (arrived / part.name).write_bytes(part.read_bytes())
    joined = wheels.join(arrived, tmp_path / "joined")
    assert sorted(p.name for p in joined) == ["a.whl", "b.whl", "empty.tar"]
    for original in files:
        assert (tmp_path / "joined" / original.name).read_bytes() == original.read_bytes()


def test_a_missing_or_altered_part_is_refused(tmp_path):
    source = tmp_path / "x.whl"
    source.write_bytes(b"wheel bytes " * 300)
    wheels.split([source], tmp_path / "parts", part_bytes=1000)
    first = tmp_path / "parts" / "x.whl.part000"
    data = first.read_bytes()
    first.write_bytes(data[:-1] + b"!")
    with pytest.raises(ValueError, match="sha256"):
        wheels.join(tmp_path / "parts", tmp_path / "out")
    assert not (tmp_path / "out" / "x.whl").exists()
    first.unlink()
    with pytest.raises(ValueError, match="missing"):
        wheels.join(tmp_path / "parts", tmp_path / "out")


def test_parts_fill_few_shipments(tmp_path):
    """Largest parts first, each into the first shipment with room: 50 + 10, 30 + 30, 20 + 20
    + 10 in three shipments of 62 (the manifest in the first), where filling them in name
    order takes four."""
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / wheels.MANIFEST).write_text("{}")
    sizes = {"a": 20, "b": 50, "c": 30, "d": 10, "e": 30, "f": 20, "g": 10}
    for name, size in sizes.items():
        (parts / name).write_bytes(b"x" * size)
    ships = wheels.group(parts, tmp_path, ship_bytes=62)
    assert len(ships) == 3
    held = sorted(sorted(p.name for p in ship.iterdir() if p.name != wheels.MANIFEST) for ship in ships)
    assert sorted(sum(held, [])) == sorted(sizes)
    assert all(sum(sizes.get(p.name, 0) for p in ship.iterdir()) <= 62 for ship in ships)
    assert (ships[0] / wheels.MANIFEST).is_file()


def test_a_model_shipped_at_half_size_comes_back_in_fp32(tmp_path):
    """fp32 tensors travel as fp16 and come back as fp32 within fp16's rounding; other
    tensors and every other file of the folder come back as they were."""
    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path / "encoder"
    (model / "1_Pooling").mkdir(parents=True)
    weights = {"w": torch.randn(64, 32), "ids": torch.arange(10),
               "already_half": torch.randn(8).half()}
    save_file(weights, model / "model.safetensors")
    (model / "vocab.txt").write_text("[PAD]\nhello\n")
    (model / "1_Pooling" / "config.json").write_text('{"mean": true}')
    archive = halve.pack(model, tmp_path / "encoder.fp16.tar")
    with tarfile.open(archive) as tar:
        shipped = tar.getmember("encoder/model" + halve.HALF_SUFFIX).size
    assert shipped < 0.6 * (model / "model.safetensors").stat().st_size

    restored = halve.unpack(archive, tmp_path / "there")
    assert restored == tmp_path / "there" / "encoder"
    back = load_file(restored / "model.safetensors")
    assert back["w"].dtype == torch.float32 and back["ids"].dtype == torch.int64
    assert back["already_half"].dtype == torch.float16  # not halved for the trip: stays fp16
    assert torch.equal(back["ids"], weights["ids"])
    assert torch.equal(back["already_half"], weights["already_half"])
    assert torch.allclose(back["w"], weights["w"], rtol=1e-3, atol=1e-4)
    assert not torch.equal(back["w"], weights["w"])  # fp16's rounding: not the file shipped
    assert (restored / "vocab.txt").read_text() == "[PAD]\nhello\n"
    assert (restored / "1_Pooling" / "config.json").read_text() == '{"mean": true}'
    assert not list(restored.glob("*" + halve.HALF_SUFFIX))

    save_file({"huge": torch.tensor([1e6, 1.0])}, model / "model.safetensors")
    with pytest.raises(ValueError, match="huge holds values beyond fp16"):
        halve.pack(model, tmp_path / "refused.fp16.tar")


@pytest.mark.slow
def test_a_joined_wheel_installs_without_an_index(tmp_path):
    """A real wheel (built here from a tiny package), cut into 700-byte parts, joined, and
    installed by pip with --no-index --target into a folder, which a Python given it on
    PYTHONPATH then imports (provision.sh install)."""
    package = tmp_path / "src"
    (package / "erc_probe").mkdir(parents=True)
    (package / "erc_probe" / "__init__.py").write_text("ANSWER = 42\n" + "# padding\n" * 200)
    (package / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "erc-probe"
        version = "1.0"
        """))
    built = tmp_path / "built"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
                    "--no-build-isolation", "-q", "-w", str(built), str(package)], check=True)
    wheel = next(built.glob("erc_probe-1.0-*.whl"))
    manifest = wheels.split([wheel], tmp_path / "parts", part_bytes=700)
    assert len(manifest["files"][0]["parts"]) > 1
    assert wheels.main(["join", "--parts", str(tmp_path / "parts"), "--out", str(tmp_path / "wheels")]) == 0

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q",
                    "--disable-pip-version-check", "--target", str(site),
                    str(tmp_path / "wheels" / wheel.name)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", "import erc_probe; print(erc_probe.ANSWER)"],
                         check=True, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.stdout.strip() == "42"
    assert list(site.glob("erc_probe-1.0.dist-info"))
