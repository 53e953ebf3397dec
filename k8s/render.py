"""Writes k8s/jobs/rayjob-<job>.yaml: one KubeRay RayJob per erc job, each on a cluster of
its own built from k8s/raycluster.yaml (the one home of the cluster's shape, image, token
and volumes) with only the worker groups that job uses, and the env vars of
jobs/runtime_env.yaml. tests/test_deploy.py checks that the files are up to date.

    python k8s/render.py

The paths in the entrypoints are examples on the shared claim (/mnt/erc); the entrypoints
and configs are those the image carries in /opt/erc (docker/Dockerfile).
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# job -> (worker groups, entrypoint)
JOBS = {
    "ingest": (["cpu"], "python /opt/erc/jobs/ingest.py /mnt/erc/data/MELD --media-root "
                        "/mnt/erc/data/MELD.Raw --check-media --out /mnt/erc/runs/meld/corpus"),
    "preprocess": (["cpu", "gpu-l4"], "python /opt/erc/jobs/preprocess.py /mnt/erc/runs/meld/corpus "
                                      "--out /mnt/erc/runs/meld/features --config "
                                      "/opt/erc/configs/cluster-gpu.yaml"),
    "train": (["gpu-l40s"], "python /opt/erc/jobs/train.py text /mnt/erc/runs/meld/corpus "
                            "--encoder all-mpnet-base-v2 --accelerator-type L40S --max-failures 2 "
                            "--out /mnt/erc/runs/meld/text"),
    "tune": (["gpu-l40s"], "python /opt/erc/jobs/tune.py /opt/erc/tune/fusion.yaml "
                           "/mnt/erc/runs/meld/corpus --text st:all-MiniLM-L6-v2 "
                           "--out /mnt/erc/runs/tune/meld-fusion"),
    "evaluate": (["cpu"], "python /opt/erc/jobs/evaluate.py /mnt/erc/runs/meld/text/model "
                          "/mnt/erc/runs/meld/corpus --split test --out /mnt/erc/runs/meld/eval-test"),
    "run": (["cpu", "gpu-l4", "gpu-l40s"], "python /opt/erc/jobs/run.py --config "
                                           "/opt/erc/configs/cluster-gpu.yaml"),
}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # write shared parts out in full, not as &anchors
        return True


def _text(dumper, value: str):  # multi-line strings (runtimeEnvYAML) as literal blocks
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def rayjob(job: str, cluster: dict, env_vars: dict) -> dict:
    groups, entrypoint = JOBS[job]
    spec = copy.deepcopy(cluster["spec"])
    spec["workerGroupSpecs"] = [g for g in spec["workerGroupSpecs"] if g["groupName"] in groups]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": f"erc-{job}", "labels": {**cluster["metadata"]["labels"],
                                                      "app.kubernetes.io/component": job}},
        "spec": {
            "entrypoint": entrypoint,
            "runtimeEnvYAML": yaml.safe_dump({"env_vars": env_vars}, sort_keys=False),
            "shutdownAfterJobFinishes": True,   # the job's cluster goes when it ends
            "ttlSecondsAfterFinished": 600,
            "submissionMode": "K8sJobMode",
            "submitterPodTemplate": {"spec": {"restartPolicy": "Never", "containers": [{
                "name": "ray-job-submitter", "image": head["image"], "env": head["env"],
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                              "limits": {"cpu": "1", "memory": "2Gi"}}}]}},
            "rayClusterSpec": spec,
        },
    }


def render() -> dict[str, str]:
    cluster = yaml.safe_load((HERE / "raycluster.yaml").read_text())
    env_vars = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())["env_vars"]
    files = {}
    for job in JOBS:
        text = yaml.dump(rayjob(job, cluster, env_vars), Dumper=_Dumper, sort_keys=False, width=100)
        files[f"rayjob-{job}.yaml"] = (
            f"# Written by k8s/render.py from k8s/raycluster.yaml: edit those, not this file.\n"
            f"# kubectl apply -f k8s/storage.yaml, the token Secret (k8s/raycluster.yaml), then:\n"
            f"#   kubectl apply -f k8s/jobs/rayjob-{job}.yaml\n" + text)
    return files


def main() -> None:
    out = HERE / "jobs"
    out.mkdir(exist_ok=True)
    for name, text in render().items():
        (out / name).write_text(text)
        print(out / name)


if __name__ == "__main__":
    main()
