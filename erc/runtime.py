"""Where erc's work runs: an embedded single-node Ray started on demand, or an existing
cluster given by ``--address`` / ``RAY_ADDRESS``.

The embedded Ray is bound to loopback and makes no outside connection: no usage stats,
no cloud-metadata probe (Ray's dashboard skips it when ``$HOME/ray_bootstrap_config.yaml``
exists, so Ray's own processes get a private HOME that holds one), no token file written
to the user's home, and model hubs offline unless the user says otherwise.

It runs with Ray's token authentication (``RAY_AUTH_MODE=token``): a random token created
once in erc's state folder (``ray-auth-token``, mode 0600, never printed), so another user
of a shared machine, who cannot read that file, cannot submit work to it through its
loopback ports. ``RAY_AUTH_MODE=disabled`` turns it off; a token the user names
(``RAY_AUTH_TOKEN_PATH``, ``RAY_AUTH_TOKEN``) is used instead of erc's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from erc.errors import ConfigError, ErcError
from erc.home import state_dir

log = logging.getLogger(__name__)
AUTH_TOKEN = "ray-auth-token"  # the embedded Ray's token, in erc's state folder

# Defaults that keep every library offline and inside known folders, and Ray's output
# legible; a value the user already set wins.
OFFLINE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # makes a local Ray pick 127.0.0.1
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "false",  # ultralytics pip-installs what it misses (pi-heif for an odd photo)
    "TOKENIZERS_PARALLELISM": "false",
    # Ray Train tees a worker's print() into its logger too: each line reached the driver twice
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
}
# Defaults for the embedded Ray's processes only (a value the user set wins). Ray Train's
# controller checks its workers every 2 s and waits out that interval at each step of a
# run's start and end: on one machine a short fit spent about 4 s of its 12 there
# (bench/train_overhead.py).
EMBEDDED_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"}


def apply_offline_env() -> None:
    """Sets the offline defaults in this process (inherited by Ray's processes)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    for key, sub in (("MPLCONFIGDIR", "matplotlib"), ("YOLO_CONFIG_DIR", "ultralytics"),
                     ("TILELANG_CACHE_DIR", "tilelang")):
        if key not in os.environ:
            folder = state_dir() / sub
            folder.mkdir(parents=True, exist_ok=True)
            os.environ[key] = str(folder)


def _ray_home() -> Path:
    home = state_dir() / "ray-home"
    home.mkdir(parents=True, exist_ok=True)
    bootstrap = home / "ray_bootstrap_config.yaml"
    if not bootstrap.exists():
        bootstrap.write_text("# present so Ray skips its cloud-metadata probe\n{}\n")
    return home


@contextlib.contextmanager
def _environ_meanwhile(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in this process's environment, each key's earlier value (or its
    absence) back afterwards."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _env_for_ray_start(gcs_port: str) -> dict[str, str]:
    """What Ray's processes inherit at start, set while the embedded Ray starts: erc's
    private HOME (caches that default under HOME pinned to the real home first), and the
    GCS port (Ray reads RAY_GCS_SERVER_PORT when it starts the head's GCS)."""
    real_home = os.path.expanduser("~")
    pinned = {"XDG_CACHE_HOME": os.path.join(real_home, ".cache")}
    return {**{k: v for k, v in pinned.items() if k not in os.environ},
            "HOME": str(_ray_home()), "RAY_GCS_SERVER_PORT": gcs_port}


def _free_port() -> int:
    """A TCP port free on every interface right now."""
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


_embedded = False  # whether this process started the Ray it is connected to
_temp_dir: str | None = None  # the embedded Ray's session folder, removed at shutdown


def embedded() -> bool:
    """True when this process runs on the embedded single-node Ray it started itself."""
    return _embedded


def auth_token() -> Path:
    """The embedded Ray's token file: created once (0600, a 256-bit random token), read
    by Ray itself; erc never prints it."""
    path = state_dir() / AUTH_TOKEN
    if path.is_file():
        return path
    # Written whole under a private name, then linked into place: a concurrent erc process
    # sees no token file or a complete one, and the first link wins.
    draft = path.with_name(f".{AUTH_TOKEN}.{os.getpid()}-{secrets.token_hex(4)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(draft)
    return path


def _use_token_auth() -> None:
    """Token authentication for the embedded Ray, unless the user turned it off; Ray's
    processes inherit it from this environment."""
    mode = os.environ.setdefault("RAY_AUTH_MODE", "token")
    if mode == "token" and not (os.environ.get("RAY_AUTH_TOKEN_PATH")
                                or os.environ.get("RAY_AUTH_TOKEN")):
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(auth_token())
    if "ray" in sys.modules:
        # Ray read the mode and token when it was imported: make it read them again, as
        # Ray's own switch to token mode does.
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


class ClusterUnreachable(ErcError, ConnectionError):
    """The Ray address given cannot be reached."""


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fails fast on a HOST:PORT nobody listens on (Ray itself retries for minutes)."""
    # The host is what follows a "user:password@": the password is never looked up as a name
    host, _, port = address.split("://", 1)[-1].rpartition("@")[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # "auto" and other forms: left to Ray
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(f"nothing answers at {host}:{port} ({err})") from err


def submitted_job() -> bool:
    """True inside the driver of a job started by `ray job submit` (its supervisor sets
    this variable for the entrypoint)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


# Where a submitted job's keys go instead of anything Ray keeps with the job.
_KEYS_ON_THE_NODES = (
    "give the store's keys to the cluster's nodes instead: their own environment "
    "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set where the nodes start, on Kubernetes "
    "from a Secret), a credentials file on every node (~/.aws/credentials, or the path in "
    "AWS_SHARED_CREDENTIALS_FILE or GOOGLE_APPLICATION_CREDENTIALS), or an instance profile; "
    "then submit it again")


def check_submitted_job(argv: list[str]) -> None:
    """What `ray job submit` was given is kept by Ray as typed, before erc runs: the
    entrypoint (``ray job list``, the dashboard, Ray's logs of the job), the runtime env,
    its ``env_vars`` with their values, and the job's metadata (``--metadata-json``; the
    job table, the dashboard's job page). A submitted job given a credential in any of
    them is refused, so it goes no further with it and the setup that stored it is
    mended."""
    from erc.redaction import is_secret_name, redact

    if not submitted_job():
        return
    for arg in argv:
        if redact(arg) != arg:
            raise ConfigError(
                f"{redact(arg)}: a submitted job's command line is kept by Ray (ray job list, "
                f"the dashboard), so it must hold no credential; give the URI without one and "
                f"{_KEYS_ON_THE_NODES}")
    # The supervisor passes the job's runtime env and metadata to its driver in this
    # variable (ray/dashboard/modules/job/job_supervisor.py, _get_driver_env_vars)
    try:
        job_config = json.loads(os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"])
        env_vars = dict((job_config.get("runtime_env") or {}).get("env_vars") or {})
        metadata = dict(job_config.get("metadata") or {})
    except (ValueError, AttributeError, TypeError):
        return  # not the supervisor's JSON: nothing known to be stored

    def holding_secrets(mapping: dict) -> str:
        """The names (themselves redacted) whose name is a secret's and value set, or
        whose name or value holds a credential (a URI's keys, a secret's value)."""
        return ", ".join(sorted(
            redact(str(name)) for name, value in mapping.items()
            if (is_secret_name(str(name)) and value) or redact(str(name)) != str(name)
            or redact(str(value)) != str(value)))

    if secrets_named := holding_secrets(env_vars):
        raise ConfigError(
            f"the runtime env's env_vars hold {secrets_named}: Ray keeps a submitted job's "
            f"runtime env with its values (ray job list, the dashboard), so it must hold no "
            f"secret nor credential; remove them (or the keys in their URIs) from env_vars "
            f"(--runtime-env, --runtime-env-json) and {_KEYS_ON_THE_NODES}")
    if secrets_named := holding_secrets(metadata):
        raise ConfigError(
            f"the job's metadata holds a secret or credential in {secrets_named}: Ray keeps a "
            f"submitted job's metadata (ray job list, the dashboard), so it must hold none; "
            f"remove it from --metadata-json and {_KEYS_ON_THE_NODES}")


def _mask_credentials_in_command_line() -> None:
    """Ray records a driver's command line (read from the OS) as its job's entrypoint,
    kept in the job table (``ray list jobs``, the dashboard) where erc's redaction cannot
    reach: a URI's credentials in it are masked in the process title before Ray reads it.
    Each masked argument keeps its length, so the title fills the command line's space
    exactly and reads back as the same arguments."""
    import psutil
    from ray._raylet import setproctitle

    from erc.redaction import redact

    args = psutil.Process().cmdline()
    masked = []
    for arg in args:
        hidden = redact(arg)
        if len(hidden) < len(arg):
            hidden = hidden.replace("***", "*" * (3 + len(arg) - len(hidden)), 1)
        masked.append(hidden)
    if masked != args:
        setproctitle(" ".join(masked))


def connect(address: str | None = None, num_cpus: int | None = None,
            num_gpus: int | None = None, dashboard: bool = False) -> str:
    """Connects this process to Ray once: to ``address`` (or ``RAY_ADDRESS``) when given,
    else to a fresh embedded single-node Ray on loopback. Returns a description."""
    apply_offline_env()  # before Ray is imported: it reads some of these at import
    address = address or os.environ.get("RAY_ADDRESS") or None
    running = sys.modules.get("ray")
    if running is not None and running.is_initialized():
        return "ray (already connected)"
    if not address or address == "local":
        _use_token_auth()  # before Ray is imported, which reads the mode once
    import ray

    from erc import console

    _mask_credentials_in_command_line()
    if address and address != "local":
        try:
            _check_reachable(address)
            ray.init(address=address, log_to_driver=True, configure_logging=False)
        except (OSError, RuntimeError, ValueError, SystemExit) as err:  # Ray may sys.exit
            raise ClusterUnreachable(
                f"cannot reach the Ray cluster at {address!r}: {err}. "
                "Check the address (ray://HEAD:10001 for a remote client, HEAD:6379 on a "
                "cluster node), that the cluster is up (`ray status` on the head), and that "
                "RAY_AUTH_TOKEN_PATH names its token when it uses token authentication; or "
                "leave out --address / RAY_ADDRESS to run on an embedded Ray.") from err
        console.attach_to_ray()
        _stop_on_sigterm()
        return f"ray cluster at {address}"
    global _embedded, _temp_dir
    # the embedded Ray's own processes get these; this process and any later Ray do not
    embedded_env = {key: value for key, value in EMBEDDED_ENV.items() if key not in os.environ}
    # Ray's own processes find their cluster by RAY_ADDRESS, else among the Ray processes
    # running on the machine, which fails once another Ray runs there (Ray Train's
    # placement-group cleaner: "Found multiple active Ray instances"). The GCS port is
    # chosen here, so that they can be told their own address.
    port = os.environ.get("RAY_GCS_SERVER_PORT") or str(_free_port())
    embedded_env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    _temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    with _environ_meanwhile(_env_for_ray_start(port)):
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            _node_ip_address="127.0.0.1",
            _temp_dir=_temp_dir,
            configure_logging=False,  # erc.console owns what reaches the console
            log_to_driver=True,
            runtime_env={"worker_process_setup_hook": "erc.console.quiet_worker_logs",
                         "env_vars": embedded_env},
        )
    _embedded = True
    console.attach_to_ray()
    _stop_on_sigterm()
    resources = ray.cluster_resources()
    return (f"embedded ray on 127.0.0.1 ({int(resources.get('CPU', 0))} CPU, "
            f"{int(resources.get('GPU', 0))} GPU)")


def _stop_on_sigterm() -> None:
    """SIGTERM (``kill``, a scheduler's stop) ends the command as Ctrl-C does: the stage
    stops, the run records it and resumes when run again. After ``ray.init`` Ray's C++
    crash handler held SIGTERM and printed a stack trace of the driver to the console."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def shutdown() -> None:
    ray = sys.modules.get("ray")  # never import Ray just to stop it
    global _embedded, _temp_dir
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    if _temp_dir is not None:  # the embedded Ray's sessions and logs: nothing outlives the run
        shutil.rmtree(_temp_dir, ignore_errors=True)
    _embedded, _temp_dir = False, None


def error_inside(err: BaseException) -> ErcError | None:
    """The erc error a Ray worker raised, when ``err`` is the Ray error that carried it to
    the driver (an actor that could not load its model: Ray keeps only the worker's
    traceback, as text), else None."""
    import re

    ray_errors = sys.modules.get("ray.exceptions")
    if ray_errors is None or not isinstance(err, ray_errors.RayError):
        return None
    from erc import errors

    found = re.findall(r"^erc\.errors\.(\w+): (.+)$", str(err), re.M)
    if not found:
        return None
    name, message = found[-1]
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ErcError)):
        return None
    return cls(message.strip())
