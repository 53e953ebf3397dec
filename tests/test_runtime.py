"""The embedded Ray binds to loopback, and the test process cannot reach beyond it."""

import socket
from pathlib import Path

import pytest


def test_socket_guard_blocks_outside_addresses():
    with pytest.raises(Exception, match="(?i)socket|host"):
        socket.create_connection(("192.0.2.1", 53), timeout=1)


@pytest.mark.slow
def test_embedded_ray_is_on_loopback(ray_local):
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 1
    assert nodes[0]["NodeManagerAddress"] == "127.0.0.1"
    assert ray.get(ray.remote(lambda: 2 + 3).remote()) == 5


@pytest.mark.slow
def test_the_embedded_ray_processes_get_the_embedded_defaults(ray_local):
    """Ray Train's controller reads its health-check interval from its own environment."""
    import os

    import ray

    from erc.runtime import EMBEDDED_ENV

    for key, value in EMBEDDED_ENV.items():
        expected = os.environ.get(key) or value  # the user's own value wins over erc's
        assert ray.get(ray.remote(lambda key=key: os.environ.get(key)).remote()) == expected
        if expected == value:  # erc's default stays with the embedded Ray, not this process
            assert key not in os.environ


@pytest.mark.slow
def test_the_embedded_ray_s_processes_find_it_beside_another_ray(ray_local):
    """Ray's own processes look their cluster up with no address given (Ray Train's
    placement-group cleaner does): with a second embedded Ray running on the machine, as a
    second erc command starts one, they still find their own instead of failing with
    "Found multiple active Ray instances"."""
    import os
    import subprocess
    import sys

    import ray

    from tests.conftest import REPO

    code = ("import sys; from erc import runtime; runtime.connect(num_cpus=1); "
            "print('UP', flush=True); sys.stdin.read(); runtime.shutdown()")
    other = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "UP"

        def own_cluster() -> str:
            from ray._private.services import canonicalize_bootstrap_address_or_die

            return canonicalize_bootstrap_address_or_die(None)

        found = ray.get(ray.remote(own_cluster).remote())
        assert found.rpartition(":")[2] == ray.get_runtime_context().gcs_address.rpartition(":")[2]
    finally:
        other.stdin.close()
        other.wait(timeout=120)


@pytest.mark.slow
def test_the_embedded_ray_leaves_no_session_folder_behind():
    from pathlib import Path

    from erc import runtime

    runtime.shutdown()
    runtime.connect(num_cpus=1)
    folder = Path(runtime._temp_dir)
    assert folder.is_dir() and any(folder.iterdir())
    runtime.shutdown()
    assert not folder.exists()


def test_the_embedded_ray_token_is_private_and_stable(tmp_path, monkeypatch):
    from erc import runtime

    monkeypatch.setenv("ERC_HOME", str(tmp_path / "erc"))
    first = runtime.auth_token()
    assert oct(first.stat().st_mode & 0o777) == "0o600"
    token = first.read_text()
    assert len(token) == 64 and int(token, 16)  # 256 random bits, hex
    assert runtime.auth_token().read_text() == token  # made once
    assert [p.name for p in first.parent.iterdir() if "token" in p.name] == [runtime.AUTH_TOKEN]


@pytest.mark.slow
def test_the_embedded_ray_refuses_a_process_without_its_token(ray_local, tmp_path):
    """Token authentication (measured on Ray 2.60, single node): a process with another
    token (another user of the machine) is refused; one with the token connects."""
    import os
    import subprocess
    import sys

    import ray

    from erc import runtime

    assert os.environ["RAY_AUTH_MODE"] == "token"
    token_path = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    assert token_path == runtime.auth_token()
    address = ray.get_runtime_context().gcs_address
    home = tmp_path / "home"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text("{}\n")
    code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print('CONNECTED', ray.get(ray.remote(lambda: 1 + 1).remote()))")
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    base.update(HOME=str(home), RAY_AUTH_MODE="token")

    def attempt(**env) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, address], env={**base, **env},
                              capture_output=True, text=True, timeout=300)

    other = attempt(RAY_AUTH_TOKEN="0" * 64)
    assert other.returncode != 0 and "CONNECTED" not in other.stdout
    assert "CONNECTED 2" in attempt(RAY_AUTH_TOKEN_PATH=str(token_path)).stdout
    assert token_path.read_text() not in other.stdout + other.stderr


def test_an_unreachable_address_is_one_line_and_its_password_no_host_name(tmp_path, monkeypatch,
                                                                         capsys):
    """``user:password@host:port``: the reachability check connects to the host (the
    password was looked up as a host name, in DNS); the error is one line, redacted."""
    from erc.cli import main

    hosts = []
    connect = socket.create_connection

    def spy(address, *args, **kwargs):
        if address[1] == 1:  # the check's, not a connection of another test's Ray
            hosts.append(address[0])
        return connect(address, *args, **kwargs)

    _no_ray_connected()
    monkeypatch.setattr(socket, "create_connection", spy)
    code = main(["run", "--out", str(tmp_path / "run"), "--address", "ray://admin:SHH@127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and hosts == ["127.0.0.1"], (hosts, err)
    assert err.startswith("erc: error: cannot reach the Ray cluster at 'ray://***@127.0.0.1:1'")
    assert err.count("\n") == 1 and "\\n" not in err and "SHH" not in err


def _no_ray_connected() -> None:
    """Ends the Ray an earlier test left connected in this process: a process connects to
    Ray once, so a command would run there instead of trying the address under test."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def test_sigterm_stops_a_command_as_ctrl_c_does():
    """`kill` (or a scheduler's stop) of an erc command on Ray printed a stack trace of the
    driver from Ray's C++ crash handler; it ends it as Ctrl-C does (the stage stops, the run
    resumes when run again), with nothing of Ray's on the console."""
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import time; from erc import runtime; runtime.connect(num_cpus=1)\n"
            "try:\n    print('UP', flush=True)\n    time.sleep(120)\nexcept KeyboardInterrupt:\n"
            "    print('stopped as by Ctrl-C', flush=True)\n"
            "finally:\n    runtime.shutdown()")
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "UP"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert out.strip() == "stopped as by Ctrl-C", err
    assert "SIGTERM received" not in err and "PC: @" not in err
