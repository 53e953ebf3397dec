"""GPU work on a cluster that autoscales from zero, without GPUs or a cloud.

Ray's own autoscaler (v2) runs on a loopback head with its fake multi-node provider
(``tests/cluster_harness.py``, ``AutoscalingCluster``): worker nodes start as local
processes with the resources their node type declares, GPU counts and accelerator types
included, and stop when idle. The head offers no CPU to tasks; every worker type starts at
zero. The preprocess, train and tune jobs, submitted with ``ray job submit``:

- leave GPU settings at ``auto`` (read from the node types the cluster can launch, the
  autoscaler config on the head) or pin an accelerator type, and run their GPU stages only
  on GPU nodes of that type that the autoscaler started for them; nothing of theirs runs
  on the head but the driver;
- end with the output of the same job on one machine (an embedded Ray);
- run on nodes that advertise a GPU but have no CUDA device (none here has one): the
  stages and trainers fall back to the CPU and say so in the job's log.

A request no node type can satisfy fails at once, naming the node types.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster_harness import REPO, AutoscalingCluster
from tests.test_cluster import PREPROCESS_YAML, _features_equal, runtime_env_file

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MB = 1024 * 1024
NODE_TYPES = {
    "cpu": {"resources": {"CPU": 1, "object_store_memory": 150 * MB}, "max_workers": 1},
    "gpu_preprocess": {"resources": {"CPU": 1, "GPU": 1, "accelerator_type:T4": 1,
                                     "object_store_memory": 150 * MB}, "max_workers": 1},
    "gpu_train": {"resources": {"CPU": 1, "GPU": 1, "accelerator_type:A10G": 1,
                                "object_store_memory": 150 * MB}, "max_workers": 1},
}
LIMIT = 4  # utterances: 2 partitions of 2
NO_CUDA = "finds no CUDA device"
# num_gpus left at auto; the stages pinned to the preprocessing GPU type
PINNED = PREPROCESS_YAML
for _stage in ("faces", "asr", "speaker", "text"):
    PINNED = PINNED.replace(f"  {_stage}: {{batch_size: 2}}", f"  {_stage}: {{batch_size: 2, accelerator_type: T4}}")
assert PINNED.count("accelerator_type: T4") == 4


@pytest.fixture(scope="module")
def autoscaling():
    with AutoscalingCluster(NODE_TYPES, head_cpus=0, idle_timeout_s=30) as cluster:
        yield cluster


def _alive(cluster) -> list[dict]:
    return [n for n in cluster.nodes() if n["state"] == "ALIVE"]


def _node_of_type(node: dict, accelerator: str) -> bool:
    return f"accelerator_type:{accelerator}" in (node.get("resources_total") or {})


def _wait_scaled_down(cluster, accelerator: str, timeout_s: float = 180) -> None:
    """Waits until no node of ``accelerator`` is alive (the idle timeout stops it), so that
    the next job's node is one the autoscaler starts for it."""
    deadline = time.time() + timeout_s
    while any(_node_of_type(n, accelerator) for n in _alive(cluster)):
        assert time.time() < deadline, f"a {accelerator} node still up after {timeout_s:.0f} s idle"
        time.sleep(2)


def _local_run(args: list[str], out: Path) -> subprocess.CompletedProcess:
    """The same job on one machine: the entrypoint run directly (embedded Ray)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def _job_work(cluster, job_id: str) -> tuple[list[dict], list[dict]]:
    tasks = [t for t in cluster.tasks(job_id=job_id) if t["node_id"]]
    actors = [a for a in cluster.actors(job_id) if a["node_id"]]
    return tasks, actors


# What does the work: Ray Data's decode tasks and stage actors, Ray Train's workers, Tune's
# trials. (Coordinators such as the job supervisor or Ray Train's controller ask no CPU and
# may sit on the head.)
HEAVY = ("MapBatches(", "MapWorker(", "RayTrainWorker", "ImplicitFunc", "train_trial")


def _check_placement(cluster, run, submitted_ms: float, gpu: tuple[str, ...], accelerator: str):
    """The job's GPU actors ran only on nodes of the accelerator type that came up after
    the submission; none of its work ran on the head."""
    nodes = {n["node_id"]: n for n in cluster.nodes()}
    tasks, actors = _job_work(cluster, run.info["job_id"])
    gpu_actors = [a for a in actors if a["class_name"].startswith(gpu)]
    assert gpu_actors, [a["class_name"] for a in actors]
    for actor in gpu_actors:
        node = nodes[actor["node_id"]]
        assert _node_of_type(node, accelerator), (actor["class_name"], node["resources_total"])
        assert node["start_time_ms"] > submitted_ms, "a node that was up before the job"
    work = [(t["name"], t["node_id"]) for t in tasks] + [(a["class_name"], a["node_id"]) for a in actors]
    on_head = [name for name, node in work if node == cluster.head.node_id and name.startswith(HEAVY)]
    assert not on_head, f"work on the head: {on_head}"
    return {a["node_id"] for a in gpu_actors}


def test_preprocess_waits_for_and_runs_on_the_gpu_nodes(autoscaling, sample_manifest, tmp_path):
    import pyarrow.parquet as pq

    from erc.artifacts import read_features as load_features
    from erc.corpus import read_corpus

    cluster = autoscaling
    assert [n["node_id"] for n in _alive(cluster)] == [cluster.head.node_id]  # all at zero
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    pq.write_table(read_corpus(sample_manifest).utterances, corpus / "utterances.parquet")
    config = tmp_path / "cluster.yaml"
    config.write_text(PINNED)
    submitted_ms = time.time() * 1000
    run = cluster.submit("python", "jobs/preprocess.py", str(corpus), "--out", str(tmp_path / "out"),
                         "--config", str(config), "--limit", str(LIMIT),
                         runtime_env=runtime_env_file(cluster), name="as-pre", timeout=900)
    assert run.status == "SUCCEEDED", run.logs[-4000:]
    assert "auto GPUs from node types: " in run.logs  # read from the autoscaler config
    assert "gpu 0.25 on T4" in run.logs  # one GPU shared by the four model stages
    assert NO_CUDA in run.logs and "running on the CPU instead" in run.logs
    gpu_nodes = _check_placement(cluster, run, submitted_ms, ("MapWorker(MapBatches(",), "T4")

    # the same features, partitions and fingerprints as on one machine
    local = tmp_path / "local.yaml"
    local.write_text(PREPROCESS_YAML)  # no accelerator type: the embedded Ray has none
    _local_run(["jobs/preprocess.py", str(corpus), "--out", str(tmp_path / "ref"),
                "--config", str(local), "--limit", str(LIMIT)], tmp_path / "ref")
    _features_equal(load_features(tmp_path / "out"), load_features(tmp_path / "ref"))
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("out", "ref")]
    assert manifests[0]["partitions"] == manifests[1]["partitions"]
    print(f"\n[autoscaling] preprocess, {LIMIT} utterances: {run.seconds:.1f} s from submission "
          f"on {len(gpu_nodes)} T4 node(s) the autoscaler started; features equal the "
          f"single-machine run's")


def test_train_and_tune_request_their_accelerator(autoscaling, tmp_path):
    import torch
    from safetensors.torch import load_file

    from tests.test_train import _write_corpus

    cluster = autoscaling
    utterances, features = _write_corpus(tmp_path / "corpus")
    args = ["fusion", str(utterances), "--text", f"parquet:{features}", "--epochs", "2",
            "--batch-size", "8", "--d-state", "8", "--window", "2", "--dropout", "0",
            "--no-choose-speaker-pool"]
    submitted_ms = time.time() * 1000
    run = cluster.submit("python", "jobs/train.py", *args, "--accelerator-type", "A10G",
                         "--out", str(tmp_path / "fusion"), runtime_env=runtime_env_file(cluster),
                         name="as-train", timeout=900)
    assert run.status == "SUCCEEDED", run.logs[-4000:]
    assert NO_CUDA in run.logs
    _check_placement(cluster, run, submitted_ms, ("RayTrainWorker",), "A10G")
    _local_run(["jobs/train.py", *args, "--out", str(tmp_path / "ref")], tmp_path / "ref")
    got = json.loads((tmp_path / "fusion" / "history.json").read_text())
    want = json.loads((tmp_path / "ref" / "history.json").read_text())
    for a, b in zip(got, want, strict=True):
        assert a["dev_weighted_f1"] == pytest.approx(b["dev_weighted_f1"], abs=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    weights = [load_file(tmp_path / d / "model" / "model.safetensors") for d in ("fusion", "ref")]
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-5) for k in weights[1])

    search = tmp_path / "search.yaml"
    search.write_text(
        "family: fusion\nparams:\n  lr: {loguniform: [1.0e-3, 1.0e-2]}\n"
        "fixed: {epochs: 2, patience: 2, batch_size: 8, d_state: 8, window: 2}\n"
        "search:\n  num_samples: 2\n  max_concurrent_trials: 1\n  include_default: false\n"
        "  resources_per_trial: {cpu: 1, gpu: auto, accelerator_type: A10G}\n"
        "  scheduler: {type: none}\n  max_failures: 0\n")
    _wait_scaled_down(cluster, "A10G")  # the train job's node, idle: not the search's
    submitted_ms = time.time() * 1000
    tuned = cluster.submit("python", "jobs/tune.py", str(search), str(utterances), "--text",
                           f"parquet:{features}", "--text-only", "--out", str(tmp_path / "tune"),
                           runtime_env=runtime_env_file(cluster), name="as-tune", timeout=900)
    assert tuned.status == "SUCCEEDED", tuned.logs[-4000:]
    assert "'gpu': 1, 'accelerator_type:A10G': 0.001" in tuned.logs  # auto: 1 GPU per trial
    assert NO_CUDA in tuned.logs and "2 trials: 2 completed" in tuned.logs
    _check_placement(cluster, tuned, submitted_ms, ("ImplicitFunc", "train_trial"), "A10G")
    print(f"\n[autoscaling] train 2 epochs on an A10G node: {run.seconds:.1f} s, history and "
          f"weights equal the single-machine run's; tune 2 trials: {tuned.seconds:.1f} s")


def test_a_request_no_node_type_offers_fails_at_once(autoscaling, tmp_path):
    from tests.test_train import _write_corpus

    cluster = autoscaling
    utterances, features = _write_corpus(tmp_path / "corpus")
    run = cluster.submit("python", "jobs/train.py", "fusion", str(utterances), "--text",
                         f"parquet:{features}", "--accelerator-type", "H100", "--out",
                         str(tmp_path / "fusion"), runtime_env=runtime_env_file(cluster),
                         name="as-infeasible", timeout=300)
    assert run.status == "FAILED"
    assert "accelerator_type:H100 0.001, which no node type of this cluster offers" in run.logs
    assert "gpu_train (CPU 1, GPU 1, accelerator_type:A10G 1" in run.logs
    assert run.seconds < 120
