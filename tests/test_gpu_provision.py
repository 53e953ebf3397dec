"""bench/gpu: wheels cut into parts and joined again (a missing or altered part is refused),
and a joined wheel installed with ``pip install --no-index`` into a scratch venv, as the
offline GPU host does (no GPU needed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("gpu_wheels", REPO / "bench" / "gpu" / "wheels.py")
wheels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheels)


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


@pytest.mark.slow
def test_a_joined_wheel_installs_without_an_index(tmp_path):
    """A real wheel (built here from a tiny package), cut into 700-byte parts, joined, and
    installed by pip with --no-index into a fresh venv, whose Python then imports it."""
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

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-index", "--no-deps", "-q",
                    "--disable-pip-version-check", str(tmp_path / "wheels" / wheel.name)], check=True)
    out = subprocess.run([str(python), "-c", "import erc_probe; print(erc_probe.ANSWER)"],
                         check=True, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "42"
    listed = subprocess.run([str(python), "-m", "pip", "list", "--no-index", "--format=freeze",
                             "--disable-pip-version-check"], check=True, capture_output=True,
                            text=True).stdout
    assert "erc-probe==1.0" in listed or "erc_probe==1.0" in listed
