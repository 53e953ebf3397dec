"""Cluster operation.

- ``cluster.yaml`` is a valid Ray cluster-launcher config (Ray's own schema and defaults
  merging, no cloud contacted) with the security and version choices it documents.
- What every job needs on a cluster, without one: ``jobs/runtime_env.yaml`` carries erc's
  offline defaults, submitted jobs refuse relative output paths, and the preprocess
  stages' CPU shares cannot deadlock a cluster of small nodes.
- A real two-node Ray cluster on loopback (``tests/cluster_harness.py``; marked
  ``cluster``): jobs submitted with ``ray job submit`` run erc's code on both nodes, token
  authentication guards the dashboard, jobs API and GCS; the ingest, preprocess and train
  jobs run with work on both nodes and complete outputs; and each of them survives the
  loss of the worker node in the middle of its work (killed inside a running task):
  ingest and preprocess with output identical to a clean run, training resumed from its
  latest checkpoint with the clean run's history and weights. The jobs also read and write
  ``s3://`` URIs (an S3 server on loopback). The ``[cluster]`` lines
  (``-s``) report what was lost and how long recovery took.

A new job gets its test the way these have one: ``cluster.submit("python",
"jobs/<job>.py", ..., runtime_env=runtime_env_file(cluster))`` on the module's cluster,
then read its
outputs.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import time
import urllib.error
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.cluster_harness import REPO, LoopbackCluster, listening_sockets, scaled_manifest

CLUSTER_YAML = REPO / "cluster.yaml"
PROBE = "MapBatches(_probe_batch)"  # the Ray Data tasks of the media check

# The runtime env docs/cluster.md tells users to submit with (`--runtime-env FILE`): erc's
# offline defaults for every process of the job on every node (the driver alone setting
# them is not enough).
RUNTIME_ENV = REPO / "jobs" / "runtime_env.yaml"


def runtime_env(cluster: LoopbackCluster | None = None) -> dict:
    """The runtime env file's contents; for a loopback cluster with ERC_HOME in its root
    (the storage all its nodes share, as /mnt/erc is on a real cluster)."""
    env = yaml.safe_load(RUNTIME_ENV.read_text())
    if cluster is not None:
        env["env_vars"]["ERC_HOME"] = str(cluster.root / "erc-home")
    return env


def runtime_env_file(cluster: LoopbackCluster) -> Path:
    """runtime_env(cluster) as a file, for `ray job submit --runtime-env FILE`."""
    path = cluster.root / "runtime_env.yaml"
    path.write_text(yaml.safe_dump(runtime_env(cluster)))
    return path


# ---------------------------------------------------------------------------------------
# cluster.yaml (no cluster, no cloud)

@pytest.fixture(scope="module")
def launcher_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_rays_own_validation(launcher_config):
    """What `ray up` does before it talks to the cloud: merge the provider's defaults,
    then validate against ray/autoscaler/ray-schema.json and Ray's own checks."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(launcher_config))
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] in types
    assert sum(t.get("min_workers", 0) for t in types.values()) <= prepared["max_workers"]


def test_cluster_yaml_choices(launcher_config):
    """The shape docs/cluster.md describes: a head without tasks, a CPU worker type and GPU
    types pinned by accelerator type, all from zero; NVMe for Ray's temp dir and spilling;
    one zone; an instance profile everywhere; the image, no installs at boot; token auth."""
    import ray

    cfg = launcher_config
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    workers = {name: t for name, t in types.items() if name != cfg["head_node_type"]}
    assert head["resources"] == {"CPU": 0}  # GCS, autoscaler and drivers only
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))
    cpu_types = {n for n, t in workers.items() if not t["resources"].get("GPU")}
    gpu_types = {n for n, t in workers.items() if t["resources"].get("GPU")}
    assert cpu_types and gpu_types
    accelerators = set()
    for name in gpu_types:
        found = [k for k in workers[name]["resources"] if k.startswith("accelerator_type:")]
        assert len(found) == 1, name  # the autoscaler must know the GPU before the node exists
        accelerators.add(found[0])
    assert len(accelerators) == len(gpu_types)
    for worker in workers.values():
        assert worker["min_workers"] == 0 < worker["max_workers"]
        assert worker["resources"]["CPU"] > 0
    assert sum(w["max_workers"] for w in workers.values()) <= cfg["max_workers"]
    # one zone, one subnet, and every node may use the bucket
    assert "," not in cfg["provider"]["availability_zone"]
    subnets = {tuple(t["node_config"]["SubnetIds"]) for t in types.values()}
    assert len(subnets) == 1 and len(next(iter(subnets))) == 1
    assert all(t["node_config"]["IamInstanceProfile"] for t in types.values())
    # the image carries the stack: nothing is installed when a node boots
    setup = " ".join(cfg["setup_commands"] + cfg["head_setup_commands"] + cfg["worker_setup_commands"])
    assert "pip install" not in setup and "apt-get" not in setup
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    py = "py{}{}".format(*__import__("sys").version_info[:2])
    assert f"ARG RAY_IMAGE=rayproject/ray:{ray.__version__}-{py}-gpu" in dockerfile
    assert f"ray{ray.__version__}-{py}-gpu" in cfg["docker"]["image"]
    pinned = [d for d in __import__("tomllib").loads((REPO / "pyproject.toml").read_text())
              ["project"]["dependencies"] if d.startswith("ray[")]
    assert pinned and pinned[0].endswith(f"=={ray.__version__}")
    # security: token auth on every node, dashboard on the head's loopback only, no stats
    head_start = " ".join(cfg["head_start_ray_commands"])
    worker_start = " ".join(cfg["worker_start_ray_commands"])
    for start in (head_start, worker_start):
        assert "RAY_AUTH_MODE=token" in start and "--disable-usage-stats" in start
        # Ray's temp dir and spilled objects on the local NVMe SSD
        assert "--temp-dir=/mnt/nvme/" in start and "--object-spilling-directory=/mnt/nvme/" in start
    assert "--dashboard-host=127.0.0.1" in head_start
    token_mounts = [remote for remote in cfg["file_mounts"] if remote.endswith("auth_token")]
    assert token_mounts and all(f"RAY_AUTH_TOKEN_PATH={token_mounts[0]}" in s
                                for s in (head_start, worker_start))
    # shared storage and the NVMe SSD mounted on every node and visible inside the container
    init = " ".join(cfg["initialization_commands"])
    assert "/mnt/erc" in init and "/mnt/nvme" in init
    for mount in ("/mnt/erc:/mnt/erc", "/mnt/nvme:/mnt/nvme"):
        assert any(mount in o for o in cfg["docker"]["run_options"])


# ---------------------------------------------------------------------------------------
# what jobs need on any cluster (no cluster started)

def test_runtime_env_file_is_ercs_offline_env():
    """erc's offline defaults and ERC_HOME on the storage every node mounts; excludes that
    keep corpora, media and weights in the repository out of the job's upload (Ray's own
    matcher decides), the sample corpus in."""
    from ray._private.runtime_env.packaging import _get_excludes

    from erc.runtime import OFFLINE_ENV

    env = runtime_env()
    assert set(env) == {"env_vars", "excludes"}
    assert env["env_vars"] == {**OFFLINE_ENV, "ERC_HOME": "/mnt/erc/erc-home"}
    excluded = _get_excludes(REPO, env["excludes"])
    for path in ("runs/meld/features/part-00000.parquet", "data/MELD.Raw/train/dia0_utt0.mp4",
                 "corpus/x.wav", "docker/weights/facenet/vggface2.pt", "model.safetensors"):
        assert excluded(REPO / path), path
    for path in ("erc/cluster.py", "jobs/preprocess.py", "erc/configs/cluster-gpu.yaml",
                 "erc/samples/ravdess_dialogues/clips/sample_d01_t00.mp4"):
        assert not excluded(REPO / path), path


@pytest.mark.parametrize("job", ["ingest", "preprocess", "train", "evaluate", "run", "tune"])
def test_submitted_jobs_refuse_relative_outputs(job, tmp_path):
    """Under `ray job submit` (its supervisor sets RAY_JOB_CONFIG_JSON_ENV_VAR) a relative
    --out would land in the job's temporary working-dir copy on the head: refused before
    anything runs. Storage URIs and absolute paths pass."""
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}
    for out, message in (("runs/x", "absolute path"), (f"--storage=runs/{job}", "absolute path"),
                         ("s3:/KEY:SHH@bucket/x", "***@bucket/x")):  # a mistyped URI
        argv = ["in", out] if out.startswith("--") else ["in", "--out", out]
        done = subprocess.run([sys.executable, str(REPO / "jobs" / f"{job}.py"), *argv],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr, (job, out, done.stderr[-2000:])
        assert "SHH" not in done.stderr and done.stderr.startswith("erc: error: ")
    # run directly (no job), paths are the user's business: the check passes them through
    sys.path.insert(0, str(REPO / "jobs"))
    try:
        from _job import check_outputs
    finally:
        sys.path.remove(str(REPO / "jobs"))
    check_outputs(["in", "--out", "runs/x"])
    os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"] = "{}"
    try:  # submitted: URIs and absolute paths are fine
        check_outputs(["in", "--out", "s3://bucket/x", "--storage", "/mnt/erc/ray"])
    finally:
        del os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"]



def test_a_submitted_run_refuses_a_relative_output_dir_of_its_config(tmp_path):
    """jobs/run.py refused a relative --out, but not the relative output_dir of the config
    (the sample's runs/sample) or of -o (nor jobs/preprocess.py its preprocess.output_dir):
    the job wrote into its temporary copy of --working-dir on the head node."""
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}", "PYTHONPATH": str(REPO),
           "ERC_HOME": str(tmp_path / "home")}
    for job, argv, said in (("run", ["--dry-run"], "output_dir runs/sample"),
                            ("run", ["--dry-run", "-o", "output_dir=runs/x"], "output_dir runs/x"),
                            ("preprocess", [str(tmp_path), "-o", "output_dir=feats"],
                             "preprocess.output_dir feats")):
        done = subprocess.run([sys.executable, str(REPO / "jobs" / f"{job}.py"), *argv],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (argv, done.stdout[-2000:], done.stderr[-2000:])
        assert done.stderr.startswith(f"erc: error: {said}: a submitted job needs"), done.stderr
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "run.py"), "--dry-run", "--out",
                           str(tmp_path / "run")], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

def test_stage_resources_leave_room_for_decode_on_every_node():
    """Two 1-CPU nodes: the defaults used to ask 1 CPU per decode task and 0.25 per model
    actor; two actors on each node then left 0.5 CPU on both and the decode tasks waited
    forever. Now a decode task asks for at most half the smallest node and that much stays
    free on every node, so some node can always run one."""
    from itertools import product

    from erc.pipeline.preprocess import stage_resources
    from erc.pipeline.stages import MODEL_STAGES, PASS
    from erc.recipes import PreprocessConfig

    STAGES = [stage.name for stage in PASS]

    for node_cpus in ([1, 1], [1, 1, 1], [4, 2], [16, 16, 8]):
        res = stage_resources(PreprocessConfig(), list(STAGES), sum(node_cpus), 0, node_cpus)
        decode = res["decode"]["num_cpus"]
        actors = [res[s.name]["num_cpus"] for s in MODEL_STAGES]
        assert decode <= min(node_cpus) / 2
        # whichever node each actor lands on (where it fits), some node can run a decode task
        for placement in product(range(len(node_cpus)), repeat=len(actors)):
            used = [sum(a for a, n in zip(actors, placement) if n == k) for k in range(len(node_cpus))]
            if all(u <= c + 1e-9 for u, c in zip(used, node_cpus)):
                assert any(c - u >= decode - 1e-9 for u, c in zip(used, node_cpus)), placement
    # one node: as before
    one = stage_resources(PreprocessConfig(), list(STAGES), 2, 0, [2])
    assert one == stage_resources(PreprocessConfig(), list(STAGES), 2, 0)


# ---------------------------------------------------------------------------------------
# the two-node cluster

# GCS declares a node dead after this many failed health checks this far apart (Ray's
# defaults: 5 x 3000 ms, so about 15 s). A crashed raylet refuses the check at once, so
# 3 x 1000 ms finds it in about 3 s; a slow but live one still has the default 10 s per check.
HEALTH_CHECK_ENV = {"RAY_health_check_period_ms": "1000",
                    "RAY_health_check_failure_threshold": "3"}


@pytest.fixture(scope="module")
def cluster():
    with LoopbackCluster(workers=1, cpus=1, extra_env=HEALTH_CHECK_ENV) as c:
        yield c


@pytest.fixture
def two_nodes(cluster) -> LoopbackCluster:
    """The module's cluster with its head and one live worker (a test that killed the
    worker leaves a fresh one for the next)."""
    while len(cluster.workers) < 1:
        cluster.add_worker()
    cluster.wait_for_nodes(2)
    return cluster


def _job_tasks(cluster, run_or_id, name=PROBE) -> list[dict]:
    job_id = run_or_id.info["job_id"] if hasattr(run_or_id, "info") else run_or_id
    return cluster.tasks(job_id=job_id, name=name)


@pytest.mark.cluster
def test_security_defaults(two_nodes):
    cluster = two_nodes
    # the dashboard (and the jobs API on it) listens on the head's loopback only
    listeners = [sock for pids in listening_sockets(cluster.head.pids()).values() for sock in pids]
    assert {ip for ip, port in listeners if port == cluster.dashboard_port} == {"127.0.0.1"}
    # REST / jobs API: refused without the token, served with it
    with pytest.raises(urllib.error.HTTPError) as refused:
        cluster.api("/api/jobs/", token=False)
    assert refused.value.code == 401
    assert isinstance(cluster.api("/api/jobs/"), list)
    # a wrong token is refused by the REST API, the jobs CLI and the GCS (gRPC)
    good = cluster.token_path.read_text()
    cluster.token_path.write_text(secrets.token_hex(32))
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            cluster.api("/api/jobs/")
        assert refused.value.code in (401, 403)
        status = cluster.ray("status", f"--address={cluster.address}", check=False, timeout=60)
        jobs = cluster.ray("job", "list", check=False, timeout=60)
    finally:
        cluster.token_path.write_text(good)
    assert status.returncode != 0, status.stdout[-2000:]
    assert jobs.returncode != 0, jobs.stdout[-2000:]
    assert "authentication" in (jobs.stdout + jobs.stderr).lower()
    assert cluster.ray("status", f"--address={cluster.address}").returncode == 0


@pytest.fixture(scope="module")
def sample_corpus(cluster, sample_manifest, tmp_path_factory):
    """The shipped sample ingested by the ingest job on the cluster (media checked by Ray
    Data tasks): the input of the preprocess job."""
    while len(cluster.workers) < 1:
        cluster.add_worker()
    out = tmp_path_factory.mktemp("sample") / "corpus"
    run = cluster.submit("python", "jobs/ingest.py", str(sample_manifest), "--check-media",
                         "--out", str(out), runtime_env=runtime_env_file(cluster), name="ingest")
    return run, out


@pytest.mark.cluster
def test_ingest_job_on_the_sample(two_nodes, sample_corpus, sample_manifest):
    from erc.corpus import read_corpus

    cluster = two_nodes
    run, out = sample_corpus
    assert run.status == "SUCCEEDED", run.logs[-3000:]
    print(f"\n[cluster] ingest job on the sample: {run.seconds:.1f} s")
    assert str(out / "utterances.parquet") in run.logs  # the job says where its results are

    # complete: every manifest row kept (the sample has no bad clip), and the table is
    # exactly what reading the manifest locally gives
    record = json.loads((out / "manifest.json").read_text())
    assert (record["summary"]["input_rows"], record["summary"]["kept"],
            record["summary"]["problems"]) == (84, 84, 0)
    local = read_corpus(sample_manifest)
    assert pq.read_table(out / "utterances.parquet").equals(local.utterances)
    assert pq.read_table(out / "problems.parquet").num_rows == 0
    # the media check ran as Ray tasks on the cluster's nodes
    tasks = _settled_tasks(cluster, run.info["job_id"])
    assert tasks and all(t["state"] == "FINISHED" for t in tasks)
    assert {t["node_id"] for t in tasks} <= {cluster.head.node_id, cluster.workers[0].node_id}


@pytest.mark.cluster
def test_erc_code_runs_on_every_node(two_nodes, sample_manifest):
    """One task pinned to each node imports erc from the job's --working-dir copy on that
    node, reads a sample clip from shared storage, and sees the job's runtime env."""
    cluster = two_nodes
    clip = sample_manifest.parent / "clips" / "sample_d01_t00.mp4"
    marker = secrets.token_hex(4)
    run = cluster.submit("python", "tests/cluster_harness.py", "probe-nodes", "--clip",
                         str(clip), "--env", "ERC_PROBE", "--env", "HF_HUB_OFFLINE",
                         runtime_env={"env_vars": {**runtime_env(cluster)["env_vars"],
                                                   "ERC_PROBE": marker}}, name="probe")
    assert run.status == "SUCCEEDED", run.logs[-3000:]
    line = next(l for l in run.logs.splitlines() if l.startswith("PROBE "))
    probe = json.loads(line[len("PROBE "):])
    nodes = [cluster.head, cluster.workers[0]]
    assert set(probe["nodes"]) == {node.node_id for node in nodes}
    assert probe["driver_node"] == cluster.head.node_id  # job drivers run on the head
    by_node = {t["node_id"]: t for t in probe["tasks"]}
    assert set(by_node) == {node.node_id for node in nodes}
    for node in nodes:
        task = by_node[node.node_id]
        assert Path(task["erc"]).is_relative_to(node.temp_dir), task  # shipped, not installed
        assert task["error"] is None and task["duration_s"] > 0
        assert task["env"] == {"ERC_PROBE": marker, "HF_HUB_OFFLINE": "1"}


TERMINAL = {"FINISHED", "FAILED"}


def _settled_tasks(cluster, job_id: str, name=PROBE, timeout: float = 15) -> list[dict]:
    """The job's tasks once every attempt has a final state (workers flush their task
    events about once a second, so the last ones can trail the job's end)."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = _job_tasks(cluster, job_id, name)
        if all(t["state"] in TERMINAL for t in tasks) or time.monotonic() > deadline:
            return tasks
        time.sleep(0.5)


def _started_ms(cluster, job_id: str, task_id: str, attempt: int) -> float:
    """When an attempt of a task started running (task events reach GCS within ~1 s)."""
    deadline = time.monotonic() + 10
    while True:
        for t in _job_tasks(cluster, job_id):
            if t["task_id"] == task_id and t["attempt_number"] == attempt and t["start_time_ms"]:
                return t["start_time_ms"]
        if time.monotonic() > deadline:
            return float("nan")
        time.sleep(0.5)


def _ended(cluster, submission_id: str) -> str | None:
    """Why waiting for a moment to strike is pointless: the job is over."""
    status = cluster.job_info(submission_id)["status"]
    return f"the job ended ({status})" if status in ("SUCCEEDED", "FAILED", "STOPPED") else None


def _node_death(cluster, node_id: str, killed_ms: float) -> float:
    """Seconds from the kill until GCS marked the node dead."""
    dead = next(n for n in cluster.nodes() if n["node_id"] == node_id)
    assert dead["state"] == "DEAD", dead
    return (dead["end_time_ms"] - killed_ms) / 1000


@pytest.mark.cluster
def test_ingest_survives_losing_the_worker_node(two_nodes, sample_manifest, tmp_path):
    """The worker node dies (every process SIGKILLed at once) while one of its processes
    is inside a media-check task: the job still succeeds, the task that was running there
    failed with NODE_DIED and was run again on the head, and the output is identical to a
    clean run's."""
    cluster = two_nodes
    manifest = scaled_manifest(sample_manifest, tmp_path / "corpus", copies=30, broken=3)
    args = ["python", "jobs/ingest.py", str(manifest), "--check-media"]

    clean = cluster.submit(*args, "--out", str(tmp_path / "clean"), runtime_env=runtime_env_file(cluster),
                           name="ingest-clean")
    assert clean.status == "SUCCEEDED", clean.logs[-3000:]
    clean_tasks = _settled_tasks(cluster, clean.info["job_id"])
    used = {t["node_id"] for t in clean_tasks}
    assert used == {cluster.head.node_id, cluster.workers[0].node_id}, "work not spread"

    worker = cluster.workers[0]
    submission = cluster.submit(*args, "--out", str(tmp_path / "faulty"),
                                runtime_env=runtime_env_file(cluster), name="ingest-faulty", wait=False)
    started = time.monotonic()
    # kill the node while one of its workers is inside a media-check task
    crash = cluster.crash_node(worker, busy=f"ray::{PROBE}",
                               give_up=lambda: _ended(cluster, submission))
    faulty = cluster.wait_job(submission, started=started)
    assert faulty.status == "SUCCEEDED", faulty.logs[-3000:]
    job_id = faulty.info["job_id"]

    # identical output: tables, summary and input fingerprint
    for name in ("utterances.parquet", "problems.parquet"):
        assert pq.read_table(tmp_path / "faulty" / name).equals(
            pq.read_table(tmp_path / "clean" / name)), name
    records = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("clean", "faulty")]
    assert records[0]["summary"] == records[1]["summary"]
    assert records[0]["fingerprint"] == records[1]["fingerprint"]
    summary = records[0]["summary"]
    assert (summary["input_rows"], summary["kept"], summary["problems"]) == (2523, 2520, 3)
    assert summary["problems_by_reason"] == {"unreadable_media": 3}

    # the attempts running on the node died with it; each such task ran again, on the head
    tasks = _settled_tasks(cluster, job_id)
    lost = [t for t in tasks if t["node_id"] == worker.node_id and t["state"] != "FINISHED"]
    retried = [t for t in tasks if t["attempt_number"] > 0]
    assert lost, f"no task attempt was lost with the node (caught running: {crash.running})"
    assert all(t["state"] == "FAILED" and t["error_type"] == "NODE_DIED" for t in lost), lost
    assert all(t["state"] == "FINISHED" and t["node_id"] == cluster.head.node_id for t in retried)
    redone = {t["task_id"] for t in retried}
    assert {t["task_id"] for t in lost} <= redone, "a lost task was not run again"
    detect_s = _node_death(cluster, worker.node_id, crash.at_ms)

    retry_ms = min(_started_ms(cluster, job_id, t["task_id"], t["attempt_number"])
                   for t in retried)
    print(f"\n[cluster] ingest, worker node lost mid-task: clean run {clean.seconds:.1f} s, "
          f"run with the loss {faulty.seconds:.1f} s; {len(clean_tasks)} media-check tasks "
          f"on 2 nodes; {len(lost)} lost, {len(retried)} retried on the head, output "
          f"identical; node marked dead {detect_s:.1f} s after the kill, first retry running "
          f"after {(retry_ms - crash.at_ms) / 1000:.1f} s, job done "
          f"{(faulty.info['end_time'] - crash.at_ms) / 1000:.1f} s after the kill")


# ---------------------------------------------------------------------------------------
# the preprocessing job: the sample's first utterances, small batches, two frames a clip

PREPROCESS_LIMIT = 8  # utterances (4 partitions of 2): well under a minute on 2 slow CPUs
PARTITIONS = PREPROCESS_LIMIT // 2
PREPROCESS_YAML = """\
preprocess:
  profile: offline
  partition_rows: 2
  max_frames: 2
  max_side: 320
  decode: {batch_size: 1}
  faces: {batch_size: 2}
  asr: {batch_size: 2}
  speaker: {batch_size: 2}
  text: {batch_size: 2}
"""


def _preprocess(cluster, corpus: Path, config: Path, out: Path, wait: bool = True, name="pre"):
    return cluster.submit("python", "jobs/preprocess.py", str(corpus), "--out", str(out),
                          "--config", str(config), "--limit", str(PREPROCESS_LIMIT),
                          runtime_env=runtime_env_file(cluster), name=name, wait=wait)


@pytest.fixture(scope="module")
def preprocess_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("preprocess") / "preprocess.yaml"
    path.write_text(PREPROCESS_YAML)
    return path


@pytest.fixture(scope="module")
def preprocess_clean(cluster, sample_corpus, preprocess_config, tmp_path_factory):
    """The preprocess job without faults: the reference output."""
    while len(cluster.workers) < 1:
        cluster.add_worker()
    cluster.wait_for_nodes(2)
    nodes = (cluster.head.node_id, cluster.workers[0].node_id)
    out = tmp_path_factory.mktemp("preprocess-clean") / "features"
    run = _preprocess(cluster, sample_corpus[1], preprocess_config, out, name="pre-clean")
    return run, out, nodes


def _stage_tasks(cluster, job_id: str) -> list[dict]:
    """Every task of the pass: decode tasks and the stage actors' batches."""
    tasks = _settled_tasks(cluster, job_id, name=None)
    return [t for t in tasks if t["name"].startswith("MapBatches(")
            or (t["name"].startswith("MapWorker(") and t["name"].endswith(".submit"))]


def _features_equal(got, want) -> None:
    from erc.features import FEATURE_SCHEMA
    from tests.test_preprocess import _close

    assert got.column("utterance_id").equals(want.column("utterance_id"))
    for name in FEATURE_SCHEMA.names:
        a, b = got.column(name).to_pylist(), want.column(name).to_pylist()
        if name in ("speaker_embedding", "text_embedding", "text_layers", "faces", "asr_no_speech_prob",
                    "asr_avg_logprob", "asr_words"):
            assert _close(a, b), name  # floats to 1e-5: batches of other rows change last bits
        else:
            assert a == b, name


@pytest.mark.cluster
def test_preprocess_job_on_two_nodes(two_nodes, sample_corpus, preprocess_clean):
    """The preprocess job (decode, ASR, faces, speaker, text) submitted with `ray job
    submit`: its tasks and model actors run on both nodes and every utterance comes out
    with every feature."""
    from erc.artifacts import read_features as load_features

    cluster = two_nodes
    run, out, nodes = preprocess_clean
    assert run.status == "SUCCEEDED", run.logs[-4000:]
    assert f"{out / 'manifest.json'}" in run.logs  # the job says where its results are

    want_ids = sorted(pq.read_table(sample_corpus[1] / "utterances.parquet")
                      .column("utterance_id").to_pylist())[:PREPROCESS_LIMIT]
    features = load_features(out)
    assert features.column("utterance_id").to_pylist() == want_ids
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert summary["rows_in"] == summary["rows_out"] == PREPROCESS_LIMIT
    assert summary["status"] == {"ok": PREPROCESS_LIMIT, "text_only": 0, "failed": 0}
    assert summary["partitions"] == {"total": PARTITIONS, "written": PARTITIONS, "skipped": 0}
    for row in features.to_pylist():
        assert row["status"] == "ok" and row["n_frames"] == 2, row["utterance_id"]
        assert len(row["text_embedding"]) == 384 and len(row["speaker_embedding"]) == 256
        assert len(row["text_layers"]) == 4 * 384
        assert row["asr_text"] and row["faces"], row["utterance_id"]

    tasks = _stage_tasks(cluster, run.info["job_id"])
    by_node = {node: sorted({t["name"] for t in tasks if t["node_id"] == node}) for node in nodes}
    assert all(by_node.values()), f"work not on both nodes: {by_node}"
    assert all(t["state"] == "FINISHED" for t in tasks)
    print(f"\n[cluster] preprocess job, {PREPROCESS_LIMIT} utterances: {run.seconds:.1f} s; "
          + "; ".join(f"{'head' if node == nodes[0] else 'worker'}: "
                      f"{sum(t['node_id'] == node for t in tasks)} tasks of "
                      + ", ".join(name.replace("MapWorker(MapBatches(", "").replace(")).submit", "")
                                  .replace("MapBatches(", "").rstrip(")") for name in names)
                      for node, names in by_node.items()))


def _in_a_model_batch(title: str) -> bool:
    """A stage actor (faces, ASR, speaker, text) inside a call on a batch."""
    return title.startswith("ray::MapWorker(MapBatches(") and title.endswith(".submit")


@pytest.mark.cluster
def test_preprocess_survives_losing_the_worker_node(two_nodes, sample_corpus, preprocess_config,
                                                    preprocess_clean, tmp_path):
    """The worker node dies while one of its processes is inside a batch of the pass. The
    node is replaced (as the autoscaler replaces a lost node); Ray restarts the stage
    actors that lived there and retries the lost tasks, and the job finishes with output
    identical to the clean run's."""
    from erc.artifacts import read_features as load_features

    cluster = two_nodes
    clean_run, clean_out, _ = preprocess_clean
    assert clean_run.status == "SUCCEEDED", clean_run.logs[-4000:]
    worker = cluster.workers[0]
    out = tmp_path / "features"
    submission = _preprocess(cluster, sample_corpus[1], preprocess_config, out, wait=False,
                             name="pre-faulty")
    started = time.monotonic()
    crash = cluster.crash_node(worker, busy=_in_a_model_batch,
                               give_up=lambda: _ended(cluster, submission))
    parts_before = sorted(p.name for p in out.glob("part-*.parquet"))
    replacement = cluster.add_worker()
    replaced_s = time.monotonic() - crash.at
    faulty = cluster.wait_job(submission, started=started)
    assert faulty.status == "SUCCEEDED", faulty.logs[-4000:]
    job_id = faulty.info["job_id"]

    # the same features as the clean run, the same partitions and fingerprints
    _features_equal(load_features(out), load_features(clean_out))
    manifests = [json.loads((d / "manifest.json").read_text()) for d in (clean_out, out)]
    assert manifests[0]["partitions"] == manifests[1]["partitions"]
    summaries = [m["summary"] for m in manifests]
    assert summaries[0]["status"] == summaries[1]["status"]

    # what died with the node was redone elsewhere
    tasks = _stage_tasks(cluster, job_id)
    lost = [t for t in tasks if t["node_id"] == worker.node_id and t["state"] != "FINISHED"]
    assert lost, f"no attempt was lost with the node (caught running: {crash.running})"
    assert all(t["state"] == "FAILED" for t in lost), lost
    done = {t["task_id"] for t in tasks
            if t["state"] == "FINISHED" and t["node_id"] != worker.node_id}
    assert {t["task_id"] for t in lost} <= done, "a lost task was not run again"
    actors = [a for a in cluster.actors(job_id) if a["class_name"].startswith("MapWorker(")]
    restarted = [a for a in actors if int(a.get("num_restarts") or 0) > 0]
    assert restarted, "no stage actor was restarted"
    assert all(a["node_id"] in (cluster.head.node_id, replacement.node_id) for a in restarted)
    detect_s = _node_death(cluster, worker.node_id, crash.at_ms)
    retry_ms = min((t["start_time_ms"] for t in tasks if t["start_time_ms"]
                    and t["task_id"] in {l["task_id"] for l in lost} and t["attempt_number"] > 0),
                   default=float("nan"))
    print(f"\n[cluster] preprocess, worker node lost inside {', '.join(crash.running.values())}:"
          f" clean run {clean_run.seconds:.1f} s, run with the loss {faulty.seconds:.1f} s; "
          f"{len(parts_before)} of {PARTITIONS} partitions written before the kill; {len(lost)} task "
          f"attempts lost, all redone; {len(restarted)} stage actors restarted "
          f"({', '.join(a['class_name'] for a in restarted)}); output identical; node marked "
          f"dead {detect_s:.1f} s after the kill, replacement node up after {replaced_s:.1f} s, "
          f"first lost task running again after {(retry_ms - crash.at_ms) / 1000:.1f} s, "
          f"job done {(faulty.info['end_time'] - crash.at_ms) / 1000:.1f} s after the kill")


# ---------------------------------------------------------------------------------------
# the training job: the fusion model on synthetic dialogues, one Ray Train worker a node

TRAIN_EPOCHS = 6


def _train(cluster, corpus: tuple[Path, Path], out: Path, wait: bool = True, name="train"):
    utterances, features = corpus
    # dropout 0: the run is deterministic, so a resumed run can be compared with a clean one
    return cluster.submit(
        "python", "jobs/train.py", "fusion", str(utterances), "--text", f"parquet:{features}",
        "--out", str(out), "--epochs", str(TRAIN_EPOCHS), "--batch-size", "8",
        "--patience", "100", "--d-state", "8", "--lr", "5e-3", "--window", "2",
        "--dropout", "0", "--workers", "2", "--max-failures", "1", "--no-choose-speaker-pool",
        runtime_env=runtime_env_file(cluster), name=name, wait=wait)


@pytest.fixture(scope="module")
def train_corpus(tmp_path_factory) -> tuple[Path, Path]:
    from tests.test_train import _write_corpus

    return _write_corpus(tmp_path_factory.mktemp("train") / "corpus")


@pytest.fixture(scope="module")
def train_clean(cluster, train_corpus, tmp_path_factory):
    while len(cluster.workers) < 1:
        cluster.add_worker()
    cluster.wait_for_nodes(2)
    nodes = (cluster.head.node_id, cluster.workers[0].node_id)
    out = tmp_path_factory.mktemp("train-clean") / "fusion"
    return _train(cluster, train_corpus, out, name="train-clean"), out, nodes


def _train_workers(cluster, job_id: str) -> list[dict]:
    return [a for a in cluster.actors(job_id) if a["class_name"] == "RayTrainWorker"]


@pytest.mark.cluster
def test_train_job_on_two_nodes(two_nodes, train_clean):
    """`jobs/train.py fusion --workers 2` submitted with `ray job submit`: one DDP worker
    on each node, every epoch run once, the best model exported as safetensors."""
    from erc.models.checkpoint import load_model

    cluster = two_nodes
    run, out, nodes = train_clean
    assert run.status == "SUCCEEDED", run.logs[-4000:]
    assert f"model: {out / 'model'}" in run.logs  # the job says where its results are
    workers = _train_workers(cluster, run.info["job_id"])
    assert sorted(a["node_id"] for a in workers) == sorted(nodes), workers
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(TRAIN_EPOCHS))
    assert max(h["dev_accuracy"] for h in history) > 0.45  # chance is about 1/3
    assert (out / "model" / "model.safetensors").is_file()
    assert load_model(out / "model").config.n_classes == 3
    print(f"\n[cluster] train job, 2 workers on 2 nodes, {TRAIN_EPOCHS} epochs: {run.seconds:.1f} s")


def _registered_epoch(run_dir: Path) -> int:
    """The epoch of the newest checkpoint Ray Train's controller has registered (-1: none)."""
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, ValueError):  # not written yet, or being written
        return -1
    return max((r["metrics"]["epoch"] for r in snapshot["checkpoint_results"]), default=-1)


def _epoch_lines(logs: str) -> list[tuple[int, int]]:
    """(worker pid, epoch index) of every epoch a rank-0 worker finished, in log order (the
    lines count epochs from 1, the history from 0)."""
    import re

    plain = re.sub(r"\x1b\[[0-9;]*m", "", logs)  # Ray colours the "(Actor pid=N)" prefix
    found = re.findall(r"pid=(\d+)[^)]*\)\s+\[train\] epoch (\d+): loss", plain)
    return list(dict.fromkeys((int(pid), int(epoch) - 1) for pid, epoch in found))


@pytest.mark.cluster
def test_train_survives_losing_the_worker_node(two_nodes, train_corpus, train_clean, tmp_path):
    """The worker node dies while its DDP worker trains, after the first checkpoint. A
    node replaces it (as the autoscaler would); Ray Train (max_failures 1) restarts the
    worker group from the latest checkpoint, and the run finishes with exactly the clean
    run's history and weights: nothing checkpointed was lost or redone."""
    import torch
    from safetensors.torch import load_file

    cluster = two_nodes
    clean_run, clean_out, _ = train_clean
    assert clean_run.status == "SUCCEEDED", clean_run.logs[-4000:]
    worker = cluster.workers[0]
    out = tmp_path / "fusion"
    submission = _train(cluster, train_corpus, out, wait=False, name="train-faulty")
    started = time.monotonic()
    run_dir = out / "ray" / out.name
    # Strike once Ray Train has registered a checkpoint (a folder alone is not enough:
    # rank 0 writes it, then the controller records the report) and well before the end.
    latest = lambda: _registered_epoch(run_dir)
    too_late = lambda: (f"epoch {latest()} already checkpointed"
                        if latest() > TRAIN_EPOCHS - 3 else _ended(cluster, submission))
    crash = cluster.crash_node(worker, busy="ray::RayTrainWorker",
                               ready=lambda: 0 <= latest() <= TRAIN_EPOCHS - 3, give_up=too_late)
    checkpointed = latest()
    replacement = cluster.add_worker()
    replaced_s = time.monotonic() - crash.at
    faulty = cluster.wait_job(submission, started=started)
    assert faulty.status == "SUCCEEDED", faulty.logs[-4000:]

    # resumed from a checkpoint taken before the end, not from scratch
    resumed = list(dict.fromkeys(  # Ray can print a worker's line twice
        line for line in faulty.logs.splitlines()
        if "[train] resumed from the checkpoint of epoch" in line))
    assert len(resumed) == 1, faulty.logs[-4000:]
    restored = int(resumed[0].rsplit(" ", 1)[-1]) - 1  # the line counts from 1
    # the latest checkpoint: the one registered at the kill (or one rank 0 on the head
    # was reporting at that moment), not an older one
    assert checkpointed <= restored < TRAIN_EPOCHS - 1, (checkpointed, restored)
    lines = _epoch_lines(faulty.logs)
    new_pid = int(resumed[0].split("pid=")[1].split(")")[0].split(",")[0])
    before = [epoch for pid, epoch in lines if pid != new_pid]
    after = [epoch for pid, epoch in lines if pid == new_pid]
    assert after == list(range(restored + 1, TRAIN_EPOCHS)), lines
    redone = sorted(set(before) & set(after))
    # the same run as without the failure: every epoch once, same metrics, same weights
    history = json.loads((out / "history.json").read_text())
    clean_history = json.loads((clean_out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(TRAIN_EPOCHS))
    for got, want in zip(history, clean_history):
        for key in ("train_loss", "dev_accuracy", "dev_weighted_f1", "dev_macro_f1"):
            assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), (got, want)
    a, b = load_file(out / "model" / "model.safetensors"), load_file(
        clean_out / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    workers = _train_workers(cluster, faulty.info["job_id"])
    assert {a["node_id"] for a in workers if a["state"] == "DEAD"} >= {worker.node_id}
    assert replacement.node_id in {a["node_id"] for a in workers}
    detect_s = _node_death(cluster, worker.node_id, crash.at_ms)
    restarts = [t["start_time_ms"] for t in cluster.tasks(job_id=faulty.info["job_id"])
                if t["name"] == "RayTrainWorker.__init__" and t["start_time_ms"]
                and t["start_time_ms"] > crash.at_ms]  # the new group's workers
    regroup_s = (max(restarts) - crash.at_ms) / 1000 if restarts else float("nan")
    print(f"\n[cluster] train, worker node lost mid-run: clean run {clean_run.seconds:.1f} s, "
          f"run with the loss {faulty.seconds:.1f} s; epochs {sorted(set(before))} done before "
          f"the kill (checkpoint of epoch {checkpointed} registered), resumed from the "
          f"checkpoint of epoch {restored}, epochs redone: "
          f"{redone or 'none'}; history and weights identical to the clean run; node marked "
          f"dead {detect_s:.1f} s after the kill, replacement node up after {replaced_s:.1f} s, "
          f"new worker group up after {regroup_s:.1f} s ({len(restarts)} workers), "
          f"job done {(faulty.info['end_time'] - crash.at_ms) / 1000:.1f} s after the kill")


# ---------------------------------------------------------------------------------------
# inputs and outputs at storage URIs: the jobs against an S3 server on loopback

def _staging_folder(logs: str, uri: str) -> Path:
    """The local copy a job's driver worked in for the output ``uri`` (it says so)."""
    marker = f"[storage] {uri}: working in "
    line = next(line for line in logs.splitlines() if marker in line)
    return Path(line.split(marker, 1)[1].split(" (", 1)[0])


@pytest.mark.cluster
def test_jobs_read_and_write_s3(two_nodes, sample_manifest, preprocess_config, preprocess_clean,
                                train_corpus, s3_store, tmp_path):
    """ingest -> preprocess -> train -> evaluate with every output, and every input after
    the first, at s3:// URIs. The features equal those written to shared storage; the
    preprocess job submitted again on a head without its local copy finds its partitions
    in S3 and computes none twice; Ray Train's workers on both nodes checkpoint straight
    to S3."""
    import shutil

    from erc.artifacts import read_features as load_features
    from erc.corpus import read_corpus
    from erc.redaction import is_secret_name
    from erc.storage import Mirror
    from tests.conftest import S3_BUCKET

    cluster = two_nodes
    env = runtime_env(cluster)
    # The keys in a credentials file every node reads (a runtime env holding them is
    # refused: Ray keeps it with the job), the loopback endpoint in the runtime env
    credentials = cluster.root / "aws-credentials"
    credentials.write_text(f"[default]\naws_access_key_id = {s3_store['AWS_ACCESS_KEY_ID']}\n"
                           f"aws_secret_access_key = {s3_store['AWS_SECRET_ACCESS_KEY']}\n")
    env["env_vars"] = {**env["env_vars"], "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
                       **{name: value for name, value in s3_store.items() if not is_secret_name(name)}}
    base = f"s3://{S3_BUCKET}/cluster"

    def submit(*args: str, name: str):
        run = cluster.submit("python", *args, runtime_env=env, name=name)
        assert run.status == "SUCCEEDED", run.logs[-4000:]
        return run

    def download(uri: str) -> Path:
        mirror = Mirror(uri, tmp_path / "download" / uri.rsplit("/", 1)[-1])
        mirror.pull()
        return mirror.local

    run = submit("jobs/ingest.py", str(sample_manifest), "--out", f"{base}/corpus", name="s3-ingest")
    assert f"results: {base}/corpus" in run.logs
    assert pq.read_table(download(f"{base}/corpus") / "utterances.parquet").equals(
        read_corpus(sample_manifest).utterances)

    preprocess = ("jobs/preprocess.py", f"{base}/corpus", "--out", f"{base}/features",
                  "--config", str(preprocess_config), "--limit", str(PREPROCESS_LIMIT))
    first = submit(*preprocess, name="s3-pre")
    assert f"results: {base}/features" in first.logs
    _features_equal(load_features(download(f"{base}/features")), load_features(preprocess_clean[1]))

    # a new head node: the job's local copy is gone; what is done is read back from S3
    shutil.rmtree(_staging_folder(first.logs, f"{base}/features"))
    again = submit(*preprocess, name="s3-pre-again")
    assert "preprocess up to date, nothing recomputed" in again.logs  # read back, not redone
    assert "earlier file(s) downloaded" in again.logs

    utterances, features = train_corpus
    Mirror(f"{base}/train", utterances.parent).push()
    run = submit("jobs/train.py", "fusion", f"{base}/train/utterances.parquet",
                 "--text", f"parquet:{base}/train/features.parquet#text_embedding",
                 "--out", f"{base}/fusion", "--epochs", "2", "--batch-size", "8",
                 "--d-state", "8", "--window", "2", "--workers", "2", "--no-choose-speaker-pool",
                 name="s3-train")
    workers = _train_workers(cluster, run.info["job_id"])
    assert {a["node_id"] for a in workers} == {cluster.head.node_id, cluster.workers[0].node_id}
    fusion = download(f"{base}/fusion")
    assert [h["epoch"] for h in json.loads((fusion / "history.json").read_text())] == [0, 1]
    assert (fusion / "model" / "model.safetensors").is_file()
    checkpoints = sorted(p.parent.name for p in (fusion / "ray" / "fusion").glob("checkpoint_*/model.safetensors"))
    assert checkpoints, "Ray Train wrote no checkpoint to s3://.../fusion/ray"

    submit("jobs/evaluate.py", f"{base}/fusion/model", f"{base}/train/utterances.parquet",
           "--split", "dev", "--out", f"{base}/eval-dev", name="s3-eval")
    evaluation = download(f"{base}/eval-dev")
    dev_rows = pq.read_table(utterances).column("split").to_pylist().count("dev")
    assert pq.read_table(evaluation / "predictions.parquet").num_rows == dev_rows
    assert 0 <= json.loads((evaluation / "metrics.json").read_text())["weighted_f1"] <= 1
    print(f"\n[cluster] jobs on s3:// (loopback S3): preprocess {first.seconds:.1f} s, submitted "
          f"again with nothing local {again.seconds:.1f} s (all {PARTITIONS} partitions read "
          f"back from S3), train 2 epochs on 2 nodes {run.seconds:.1f} s")
