"""A real multi-node Ray cluster on this machine, for the `cluster` tests.

Every node is a separate ``ray start`` (its own raylet, object store, agents and temp dir)
with node IP 127.0.0.2, so the head and the workers talk over loopback exactly as machines
of a cluster talk over their network. Hermetic and self-cleaning:

- HOME is a private folder holding ``ray_bootstrap_config.yaml`` (Ray then skips its
  cloud-metadata probe), usage stats are off and their "disabled" report goes to a closed
  loopback port, and nothing binds a port Ray would pick by
  default: GCS, dashboard, client server and agent ports are free ports chosen here, worker
  ports are left to the kernel (``--min-worker-port=0``).
- Token authentication is on: one token file (mode 0600) named by RAY_AUTH_TOKEN_PATH for
  every ``ray start`` / ``ray job`` command; the dashboard is bound to 127.0.0.1.
- Each ``ray start`` runs in a new session; stopping a node kills exactly the processes of
  that session (never ``ray stop``, which stops every Ray on the machine).

Faults: ``crash_node`` ends a node the way a power loss ends a machine (all its processes
SIGKILLed at once), optionally at a moment one of its workers is inside a given task.

Jobs go through the Ray Jobs CLI (``ray job submit --working-dir <repo>``), the way a user
submits them. Queries use the dashboard's REST API with the bearer token.

The module is also a job entrypoint (``python tests/cluster_harness.py probe-nodes ...``):
a probe that runs one task pinned to each alive node (NodeAffinity) and reports the node,
where ``erc`` was imported from, and what ``erc.media.probe`` read there.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NODE_IP = "127.0.0.2"  # 127.0.0.1 would be rewritten to the machine's external address
DASHBOARD_HOST = "127.0.0.1"
BIN = Path(sys.executable).parent  # the venv's ray and python
FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


# ---------------------------------------------------------------------------------------
# processes

def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state ppid pgrp session ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # gone meanwhile


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a node's ``ray start`` and all it spawned)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(entry))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def kill_session(sid: int, grace_s: float = 3.0) -> None:
    """SIGTERM then SIGKILL every process of session ``sid``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        for pid in session_pids(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while session_pids(sid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not session_pids(sid):
            return


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


_HANDED_OUT: set[int] = set()  # ports free_ports gave before, maybe not bound by their user yet


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on every interface right now, none handed out before in
    this process: a head's ports are chosen in two calls, and the second could return the
    first's (freed, not yet bound), so that `ray start` refused two components one port."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)  # held open until the end: the kernel gives each port once
            if s.getsockname()[1] not in _HANDED_OUT:
                ports.append(s.getsockname()[1])
        _HANDED_OUT.update(ports)
        return ports
    finally:
        for s in socks:
            s.close()


def listening_sockets(pids: list[int]) -> dict[int, list[tuple[str, int]]]:
    """pid -> [(address, port)] of its listening TCP sockets."""
    import psutil

    out = {}
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except (psutil.Error, OSError):
            continue
        out[pid] = [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


# ---------------------------------------------------------------------------------------
# the cluster

@dataclass
class Node:
    name: str
    temp_dir: Path
    sid: int  # session id = pid of its `ray start`
    node_id: str = ""
    ports: dict[str, int] = field(default_factory=dict)

    def pids(self) -> list[int]:
        return session_pids(self.sid)

    def raylet_pid(self) -> int:
        """The node's raylet. A process the raylet has just forked carries the raylet's
        command line until it execs its own (seen once in CI: two "raylets"), so the
        raylet is the one whose parent is not one of them."""
        found = [p for p in self.pids() if "/raylet/raylet " in _cmdline(p)]
        roots = [p for p in found if int((_stat(p) or [0, 0])[1]) not in found]
        assert len(roots) == 1, f"{self.name}: raylet processes {found}"
        return roots[0]


@dataclass
class JobRun:
    submission_id: str
    status: str
    seconds: float  # submit -> final status, as the client saw it
    logs: str
    info: dict


@dataclass
class Crash:
    node: Node
    at: float  # time.monotonic() of the kill
    at_ms: float  # wall clock, ms (comparable with Ray's task and node times)
    running: dict[int, str]  # pid -> title of the processes caught inside a task


class ClusterError(RuntimeError):
    pass


def _raise_on_sigterm(signum, frame):
    raise SystemExit(f"terminated by signal {signum}")


class LoopbackCluster:
    """A head and ``workers`` worker nodes, ``cpus`` logical CPUs each, on 127.0.0.2.

    Use as a context manager: every node is stopped on exit, also on failure."""

    def __init__(self, workers: int = 1, cpus: int = 1, object_store_mb: int = 150,
                 root: Path | None = None, extra_env: dict[str, str] | None = None):
        # Short root: Ray's socket paths live under the temp dirs (107-byte limit).
        self.root = Path(root or tempfile.mkdtemp(prefix="erc-cl-", dir="/tmp"))
        self.n_workers, self.cpus, self.object_store_mb = workers, cpus, object_store_mb
        self.extra_env = dict(extra_env or {})
        self.home = self.root / "home"
        self.token_path = self.root / "auth_token"
        self.head: Node | None = None
        self.workers: list[Node] = []
        self.gcs_port = self.dashboard_port = 0

    # -- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> LoopbackCluster:
        # A SIGTERM (e.g. from `timeout`) would end this process without unwinding, leaving
        # the nodes running: turn it into an exception so that __exit__ stops them.
        self._old_sigterm = None
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_on_sigterm)
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            if self._old_sigterm is not None:
                signal.signal(signal.SIGTERM, self._old_sigterm)

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "ray_bootstrap_config.yaml").write_text(
            "# present so that Ray skips its cloud-metadata probe\n{}\n")
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        self.start_head()
        for _ in range(self.n_workers):
            self.add_worker()

    def stop(self) -> None:
        """Kills every node's processes (workers first), whatever happens on the way."""
        errors = []
        for node in [*self.workers, *([self.head] if self.head else [])]:
            try:
                kill_session(node.sid)
            except Exception as err:  # keep stopping the others
                errors.append(f"{node.name}: {err!r}")
        self.workers, self.head = [], None
        shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise ClusterError("stopping nodes: " + "; ".join(errors))

    # -- environment ----------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{NODE_IP}:{self.gcs_port}"

    @property
    def api_url(self) -> str:
        return f"http://{DASHBOARD_HOST}:{self.dashboard_port}"

    def env(self, auth: bool = True) -> dict[str, str]:
        """The environment of every `ray` command against this cluster."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RAY_") and k not in ("PYTHONPATH",)}
        env.update({
            "HOME": str(self.home),
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "RAY_USAGE_STATS_ENABLED": "0",
            # With usage stats off, the dashboard of a `ray start` cluster still POSTs one
            # "disabled" report to usage-stats.ray.io (seen: its DNS query); send it nowhere.
            "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:1/",
            "RAY_AUTH_MODE": "token" if auth else "disabled",
            "RAY_AUTH_TOKEN_PATH": str(self.token_path),
            "RAY_API_SERVER_ADDRESS": self.api_url,
            "PYTHONUNBUFFERED": "1",
        })
        if not auth:
            env.pop("RAY_AUTH_TOKEN_PATH")
        env.update(self.extra_env)
        return env

    def ray(self, *args: str, timeout: float = 120, check: bool = True, auth: bool = True,
            new_session: bool = False) -> subprocess.CompletedProcess:
        done = subprocess.run([str(BIN / "ray"), *args], env=self.env(auth), cwd=REPO,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, start_new_session=new_session)
        if check and done.returncode != 0:
            raise ClusterError(f"ray {' '.join(args)} -> {done.returncode}\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    # -- nodes ----------------------------------------------------------------------------
    def _start_node(self, name: str, args: list[str]) -> Node:
        temp_dir = self.root / name
        agent_http, agent_grpc, runtime_env, metrics = free_ports(4)
        ports = {"dashboard_agent_listen": agent_http, "dashboard_agent_grpc": agent_grpc,
                 "runtime_env_agent": runtime_env, "metrics_export": metrics}
        common = [
            f"--node-ip-address={NODE_IP}", f"--num-cpus={self.cpus}", "--num-gpus=0",
            f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
            f"--temp-dir={temp_dir}",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
            "--min-worker-port=0", "--max-worker-port=0",  # workers: kernel-chosen ports
            "--disable-usage-stats", "--log-style=record", "--log-color=false",
        ]
        # `ray start` in its own session: its daemons keep that session id, so the node
        # can be stopped (or killed) exactly, without touching other Ray clusters.
        proc = subprocess.Popen([str(BIN / "ray"), "start", *args, *common], env=self.env(),
                                cwd=self.root, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        node = Node(name, temp_dir, proc.pid, ports=ports)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired as err:
            kill_session(node.sid)
            raise ClusterError(f"ray start ({name}) timed out") from err
        if proc.returncode != 0:
            kill_session(node.sid)
            raise ClusterError(f"ray start ({name}) -> {proc.returncode}\n{out[-4000:]}")
        # The raylet of the node carries its node id on its command line.
        node.node_id = next(arg.split("=", 1)[1] for arg in _cmdline(node.raylet_pid()).split()
                            if arg.startswith("--node_id="))
        return node

    def start_head(self) -> Node:
        self.gcs_port, self.dashboard_port, client = free_ports(3)
        self.head = self._start_node("head", [
            "--head", f"--port={self.gcs_port}",
            f"--dashboard-host={DASHBOARD_HOST}", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={client}",
        ])
        self.head.ports.update(gcs=self.gcs_port, dashboard=self.dashboard_port,
                               client_server=client)
        self.wait_for_nodes(1)
        return self.head

    def add_worker(self) -> Node:
        index = len(self.workers) + sum(1 for _ in self.root.glob("worker*")) + 1
        node = self._start_node(f"worker{index}", [f"--address={self.address}"])
        self.workers.append(node)
        self.wait_for_nodes(1 + len(self.workers))
        return node

    def crash_node(self, node: Node, busy=None, ready=None, give_up=None,
                   timeout: float = 180, poll_s: float = 0.01) -> Crash:
        """Ends ``node`` the way a power loss ends a machine: every process of it (raylet,
        object store, agents, workers) SIGKILLed at once, nothing flushed or reported.

        With ``busy`` (a process-title prefix such as ``ray::MapBatches(``, or a predicate on
        the title), first waits until ``ready()`` (if given) holds and one of the node's
        worker processes executes a matching task, and kills the node while that task
        still runs. Ray titles a worker
        ``ray::<task>`` from the start of a task until its outputs are stored (its reply
        to the owner is sent after that) and ``ray::IDLE`` between tasks. A title read
        while it is still running could change before the kill, so the node is frozen
        first (SIGSTOP to all its processes: titles can no longer change), the title read
        again, and only then killed; if the task ended meanwhile the node is thawed and
        the wait goes on. So the kill lands inside a running task, not just near one.
        ``give_up()`` (checked twice a second) ends the wait with an error, e.g. when the
        job has ended before a task ran on the node."""
        if isinstance(busy, str):
            prefix = busy
            busy = lambda title: title.startswith(prefix)
        deadline = time.monotonic() + timeout
        checked = 0.0
        while True:
            now = time.monotonic()
            if now > deadline:
                raise ClusterError(f"{node.name}: no task matching {busy!r} ran in {timeout} s")
            if give_up is not None and now - checked > 0.5:
                checked = now
                reason = give_up()
                if reason:
                    raise ClusterError(f"{node.name}: gave up waiting for {busy!r}: {reason}")
            if busy is None or ready is None or ready():
                candidates = [p for p in node.pids() if busy is None or busy(_cmdline(p).strip())]
                if candidates:
                    frozen = node.pids()
                    for pid in frozen:
                        _signal(pid, signal.SIGSTOP)
                    titles = {p: _cmdline(p).strip() for p in candidates}
                    running = {p: t for p, t in titles.items() if busy is None or busy(t)}
                    if running:
                        killed_ms = time.time() * 1000
                        killed_at = time.monotonic()
                        while node.pids():  # a child spawned meanwhile is killed too
                            for pid in node.pids():
                                _signal(pid, signal.SIGKILL)
                            time.sleep(0.01)
                        self.workers = [w for w in self.workers if w is not node]
                        return Crash(node, killed_at, killed_ms, running)
                    for pid in frozen:
                        _signal(pid, signal.SIGCONT)
            time.sleep(poll_s)

    def remove_worker(self, node: Node) -> None:
        kill_session(node.sid)
        self.workers.remove(node)

    # -- the dashboard's REST API (token in the Authorization header) -------------------------
    def api(self, path: str, params: dict | None = None, method: str = "GET",
            body: dict | None = None, token: bool = True, timeout: float = 10):
        url = self.api_url + path + ("?" + urllib.parse.urlencode(params, doseq=True)
                                     if params else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if token:
            request.add_header("Authorization", "Bearer " + self.token_path.read_text().strip())
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    def _state(self, resource: str, filters: list[tuple[str, str, str]] = (),
               limit: int = 10000) -> list[dict]:
        params = {"limit": limit, "detail": 1, "timeout": 10,
                  "filter_keys": [f[0] for f in filters],
                  "filter_predicates": [f[1] for f in filters],
                  "filter_values": [f[2] for f in filters]}
        return self.api(f"/api/v0/{resource}", params)["data"]["result"]["result"]

    def nodes(self) -> list[dict]:
        return self._state("nodes")

    def actors(self, job_id: str) -> list[dict]:
        return self._state("actors", [("job_id", "=", job_id)])

    def tasks(self, job_id: str | None = None, name: str | None = None) -> list[dict]:
        filters = []
        if job_id:
            filters.append(("job_id", "=", job_id))
        if name:
            filters.append(("name", "=", name))
        return self._state("tasks", filters)

    def wait_for_nodes(self, alive: int, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                nodes = [n for n in self.nodes() if n["state"] == "ALIVE"]
                if len(nodes) == alive:
                    return nodes
            except OSError:
                pass  # dashboard still starting
            if time.monotonic() > deadline:
                raise ClusterError(f"expected {alive} alive nodes")
            time.sleep(0.3)

    def wait_node_dead(self, node_id: str, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(n["node_id"] == node_id and n["state"] == "DEAD" for n in self.nodes()):
                return time.monotonic()
            time.sleep(0.2)
        raise ClusterError(f"node {node_id} not marked dead in {timeout} s")

    # -- jobs -----------------------------------------------------------------------------
    def submit(self, *entrypoint: str, runtime_env: dict | Path | None = None, wait: bool = True,
               timeout: float = 300, name: str = "job") -> str | JobRun:
        """``ray job submit --working-dir <repo> [--runtime-env FILE | --runtime-env-json
        ...] -- <entrypoint>``. With ``wait`` returns the finished JobRun; else the
        submission id at once."""
        submission_id = f"erc-{name}-{uuid.uuid4().hex[:8]}"
        args = ["job", "submit", "--working-dir", str(REPO), "--submission-id", submission_id]
        if isinstance(runtime_env, Path):
            args += ["--runtime-env", str(runtime_env)]
        elif runtime_env:
            args += ["--runtime-env-json", json.dumps(runtime_env)]
        if not wait:
            args.append("--no-wait")
        started = time.monotonic()
        self.ray(*args, "--", *entrypoint, timeout=timeout, check=not wait)
        if not wait:
            return submission_id
        return self.wait_job(submission_id, timeout=timeout, started=started)

    def job_info(self, submission_id: str) -> dict:
        return self.api(f"/api/jobs/{submission_id}")

    def job_logs(self, submission_id: str) -> str:
        return self.api(f"/api/jobs/{submission_id}/logs")["logs"]

    def wait_job(self, submission_id: str, timeout: float = 300,
                 started: float | None = None) -> JobRun:
        started = started or time.monotonic()
        deadline = started + timeout
        while True:
            info = self.job_info(submission_id)
            if info["status"] in FINAL:
                break
            if time.monotonic() > deadline:
                self.api(f"/api/jobs/{submission_id}/stop", method="POST")
                raise ClusterError(f"job {submission_id} still {info['status']} "
                                   f"after {timeout} s\n{self.job_logs(submission_id)[-3000:]}")
            time.sleep(0.2)
        return JobRun(submission_id, info["status"], time.monotonic() - started,
                      self.job_logs(submission_id), info)


def _fake_provider_class():
    """Ray's fake multi-node provider, with one change: each node it starts gets a temp dir
    of its own (``provider.node_temp_root``/<node id>), as a machine has its own disk. Ray's
    provider gives them the head's; then a node's runtime-env agent, cleaning up the job's
    working dir on its node, deletes the head's copy, from under the job's driver."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

    class SeparateTempDirs(FakeMultiNodeProvider):
        def _create_node_with_resources_and_labels(self, node_config, tags, count, resources,
                                                   labels):
            import ray._private.parameter as parameter

            root = Path(self.provider_config["node_temp_root"])
            original = parameter.RayParams.__init__

            def with_temp_dir(params, *args, **kwargs):
                original(params, *args, **kwargs)
                override = (params.env_vars or {}).get("RAY_OVERRIDE_NODE_ID_FOR_TESTING")
                if override and params.temp_dir is None:
                    params.temp_dir = str(root / override[-5:])

            parameter.RayParams.__init__ = with_temp_dir
            try:
                super()._create_node_with_resources_and_labels(node_config, tags, count,
                                                               resources, labels)
            finally:
                parameter.RayParams.__init__ = original

    return SeparateTempDirs


class LoopbackFakeProvider:
    """What the autoscaler loads (provider type "external", module
    tests.cluster_harness.LoopbackFakeProvider): the class above, built on first use."""

    def __new__(cls, *args, **kwargs):
        return _fake_provider_class()(*args, **kwargs)


class AutoscalingCluster(LoopbackCluster):
    """A head whose autoscaler starts and stops worker nodes as the work asks for them:
    Ray's autoscaler (v2) with its fake multi-node provider, which starts each node as
    local processes with the resources its node type declares (GPU counts and accelerator
    types included; no GPU exists here). The autoscaler config lies where the cluster
    launcher puts it on a real head, ``~/ray_bootstrap_config.yaml``, so a job's driver
    reads the node types from the same place as on AWS.

    ``node_types``: {name: {"resources": {...}, "max_workers": N}}; the head offers
    ``head_cpus`` CPUs to tasks (0: none). Worker nodes are children of the head's
    autoscaler (the same session), so stopping the head stops them all. They bind
    127.0.0.1 (the provider starts them with Ray's local-IP default), the head 127.0.0.2."""

    PROVIDER = "tests.cluster_harness.LoopbackFakeProvider"

    def __init__(self, node_types: dict, head_cpus: int = 0, idle_timeout_s: float = 60,
                 root: Path | None = None, extra_env: dict[str, str] | None = None):
        from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

        env = {"RAY_FAKE_CLUSTER": "1", "RAY_enable_autoscaler_v2": "1",
               "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
               "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
               "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # provider-started nodes on loopback
               "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               "PYTHONPATH": str(REPO),  # for the autoscaler to import LoopbackFakeProvider
               **(extra_env or {})}
        super().__init__(workers=0, cpus=head_cpus, root=root, extra_env=env)
        self.node_types, self.idle_timeout_s = node_types, idle_timeout_s
        self.head_id = FAKE_HEAD_NODE_ID

    def start_head(self) -> Node:
        self.gcs_port, self.dashboard_port, client = free_ports(3)
        types = {name: {"node_config": {}, "min_workers": 0, **spec}
                 for name, spec in self.node_types.items()}
        types["ray.head.default"] = {"resources": {"CPU": self.cpus}, "node_config": {},
                                     "max_workers": 0}
        config = {
            "cluster_name": "erc-test", "max_workers": sum(t["max_workers"] for t in types.values()),
            "upscaling_speed": 1.0, "idle_timeout_minutes": self.idle_timeout_s / 60,
            "provider": {"type": "external", "module": self.PROVIDER, "launch_multiple": True,
                         "head_node_id": self.head_id, "node_temp_root": str(self.root / "n"),
                         "gcs_address": f"{NODE_IP}:{self.gcs_port}"},
            "auth": {"ssh_user": "ray"}, "available_node_types": types,
            "head_node_type": "ray.head.default",
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [], "worker_start_ray_commands": [],
        }
        bootstrap = self.home / "ray_bootstrap_config.yaml"
        bootstrap.write_text(json.dumps(config, indent=1))  # JSON is YAML
        self.head = self._start_node("head", [
            "--head", f"--port={self.gcs_port}",
            f"--dashboard-host={DASHBOARD_HOST}", f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={client}", f"--autoscaling-config={bootstrap}",
        ])
        self.head.ports.update(gcs=self.gcs_port, dashboard=self.dashboard_port,
                               client_server=client)
        self.wait_for_nodes(1)
        return self.head

    def add_worker(self) -> Node:
        raise ClusterError("the autoscaler adds the worker nodes of this cluster")


# ---------------------------------------------------------------------------------------
# test corpora

def scaled_manifest(sample_manifest: Path, out_dir: Path, copies: int, broken: int = 0) -> Path:
    """The sample corpus ``copies`` times over (hard links to its clips under new names),
    so a media check has enough distinct files to keep several tasks busy; plus ``broken``
    rows whose clip is not a media file (they must end as ``unreadable_media`` problems)."""
    import csv

    clips = out_dir / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    with open(sample_manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    fields = list(rows[0])
    out_rows = []
    for k in range(copies):
        for row in rows:
            source = sample_manifest.parent / row["media"]
            target = clips / f"r{k:03d}_{source.name}"
            if not target.exists():
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
            out_rows.append({**row, "utterance_id": f"r{k:03d}_{row['utterance_id']}",
                             "dialogue_id": f"r{k:03d}_{row['dialogue_id']}",
                             "media": f"clips/{target.name}"})
    for k in range(broken):
        target = clips / f"broken_{k:03d}.mp4"
        target.write_bytes(b"not a video\n" * (k + 1))
        out_rows.append({**rows[k], "utterance_id": f"broken_{k:03d}",
                         "dialogue_id": f"broken_{k:03d}", "media": f"clips/{target.name}"})
    manifest = out_dir / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(out_rows)
    return manifest


# ---------------------------------------------------------------------------------------
# job entrypoint: the node probe

def _probe_here(clip: str, env_names: list[str]) -> dict:
    import ray

    import erc
    from erc.media.probe import probe

    info = probe(clip)
    return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
            "erc": str(Path(erc.__file__).resolve().parent),
            "cwd": os.getcwd(), "duration_s": info.duration_s, "error": info.error,
            "env": {name: os.environ.get(name) for name in env_names}}


def probe_nodes_main(argv: list[str]) -> int:
    """One task pinned to each alive node (hard NodeAffinity); prints one JSON line."""
    import argparse

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    parser = argparse.ArgumentParser(prog="cluster_harness.py probe-nodes")
    parser.add_argument("--clip", required=True, help="a media file every node can read")
    parser.add_argument("--env", action="append", default=[],
                        help="report this environment variable as each task sees it")
    args = parser.parse_args(argv)

    ray.init()
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    remote = ray.remote(num_cpus=1)(_probe_here)
    results = ray.get([
        remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
        .remote(args.clip, args.env) for n in nodes])
    import erc

    print("PROBE " + json.dumps({"driver_node": ray.get_runtime_context().get_node_id(),
                                 "driver_erc": str(Path(erc.__file__).resolve().parent),
                                 "nodes": nodes, "tasks": results}), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["probe-nodes"]:
        sys.exit(probe_nodes_main(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} probe-nodes --clip FILE [--env NAME ...]")
