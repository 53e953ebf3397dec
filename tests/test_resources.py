"""erc.cluster: what a job asks of the cluster, on the shipped node types and on the
embedded Ray (the autoscaling cluster itself: tests/test_autoscaling.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from erc import cluster
from erc.errors import ConfigError
from erc.recipes import PreprocessConfig, StageResources

REPO = Path(__file__).resolve().parents[1]


def test_node_types_of_the_shipped_cluster_yaml():
    types = {t.name: t for t in cluster._from_launcher_config(REPO / "cluster.yaml")}
    assert types["head"].max_nodes == 0 and types["head"].resources == {"CPU": 0}
    assert types["gpu_preprocess"].resources["accelerator_type:L4"] == 1
    assert types["gpu_train"].resources["accelerator_type:L40S"] == 1
    assert all(t.max_nodes > 0 for name, t in types.items() if name != "head")


def test_a_launcher_config_of_the_wrong_shape_is_named(tmp_path):
    """~/ray_bootstrap_config.yaml with a node type that is not a mapping, or a count that
    is no number, was a traceback calling it a bug in erc."""
    path = tmp_path / "ray_bootstrap_config.yaml"
    for text in ("available_node_types: {cpu: null}", "available_node_types: [cpu]",
                 "available_node_types: {cpu: {resources: {CPU: two}}}",
                 "available_node_types: {cpu: {max_workers: lots}}"):
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"{path}: available_node_types"):
            cluster._from_launcher_config(path)


def test_auto_gpus_fill_the_gpu_nodes_the_cluster_can_launch():
    """One GPU per node, up to 8 nodes: the four model stages share each GPU and their
    pools grow to one actor per node; sizes the config gives are kept."""
    from erc.pipeline.preprocess import stage_resources
    from erc.pipeline.stages import MODEL_STAGES, PASS

    STAGES = [s.name for s in PASS]
    MODEL_STAGES = [s.name for s in MODEL_STAGES]

    res = stage_resources(PreprocessConfig(), list(STAGES), 16 * 8, 1.0, [16], gpu_nodes=8)
    for stage in MODEL_STAGES:
        assert res[stage]["num_gpus"] == 0.25 and res[stage]["concurrency"] == [1, 8], stage
    config = PreprocessConfig(asr=StageResources(concurrency=[2, 3]))
    assert stage_resources(config, list(STAGES), 128, 1.0, [16], gpu_nodes=8)["asr"]["concurrency"] == [2, 3]
    # the four actors sharing a 1-CPU GPU node ask for a quarter CPU each, so all of them fit
    small = stage_resources(PreprocessConfig(), list(STAGES), 3, 1.0, [1], gpu_nodes=2,
                            gpu_node_cpus=1.0)
    assert sum(small[s]["num_cpus"] for s in MODEL_STAGES) <= 1.0
    one_node = stage_resources(PreprocessConfig(), list(STAGES), 16, 4.0, [16])
    assert all(one_node[s]["num_gpus"] == 1.0 and one_node[s]["concurrency"] == 1 for s in MODEL_STAGES)
    assert all(r["num_gpus"] == 0 for r in stage_resources(PreprocessConfig(), list(STAGES), 2, 0, [2]).values())


def test_requests_no_node_offers_are_errors(ray_local):
    cluster.check_feasible(cluster.Request(), "nothing")
    for request in (cluster.Request(num_gpus=1), cluster.Request(accelerator_type="L4"),
                    cluster.Request(resources={"erc_nvme": 1})):
        with pytest.raises(ConfigError, match="which no node type of this cluster offers"):
            cluster.check_feasible(request, "preprocess.asr")
    assert cluster.gpu_plan("x").per_node == 0  # this machine has no GPU


def test_trial_resources_pin_the_accelerator(ray_local):
    from erc.tune.driver import trial_resources

    assert trial_resources({"cpu": 1, "gpu": "auto"}) == {"cpu": 1, "gpu": 0}
    with pytest.raises(ConfigError, match="accelerator_type:A10G"):
        trial_resources({"cpu": 1, "gpu": 1, "accelerator_type": "A10G"})



def test_a_trial_no_node_can_hold_is_refused_not_awaited(ray_local):
    """resources_per_trial.cpu (--cpus-per-trial) above every node's CPUs: Tune only warned
    and waited for it forever."""
    from erc.tune.driver import trial_resources

    with pytest.raises(ConfigError, match="a trial asks for CPU 3, which no node type"):
        trial_resources({"cpu": 3, "gpu": 0})
    assert trial_resources({"cpu": 2, "gpu": 0}) == {"cpu": 2, "gpu": 0}

def test_weight_check_names_the_nodes_without_them(ray_local):
    from erc.backends.base import MissingWeightsError, ModelSpec
    from erc.backends.registry import profile_specs

    specs = profile_specs("offline")
    assert cluster.check_weights({"text": specs["text"]}, cluster.Request(), "preprocess.text") == 1
    missing = ModelSpec(role="asr", backend="openai-whisper", name="tiny.en",
                        path="/nonexistent/tiny.en.pt")
    with pytest.raises(MissingWeightsError) as err:
        cluster.check_weights({"asr": missing}, cluster.Request(), "preprocess.asr")
    message = str(err.value)
    assert "missing on 1 of 1 node(s)" in message and "- node 127.0.0.1 (" in message
    assert "asr: " in message and "/nonexistent/tiny.en.pt" in message


def test_a_gpu_without_cuda_falls_back_to_the_cpu(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert cluster.torch_device(0) == "cpu" and capsys.readouterr().out == ""
    assert cluster.torch_device(0.25) == "cpu"
    assert "finds no CUDA device" in capsys.readouterr().out


def test_weights_baked_into_an_image_are_found(tmp_path, monkeypatch):
    """ERC_MODEL_PATH: folders laid out like the model cache, searched after it."""
    from erc.backends.base import ModelSpec
    from erc.backends.registry import locate

    baked = tmp_path / "models" / "openai-whisper" / "tiny.en.pt"
    baked.parent.mkdir(parents=True)
    baked.write_bytes(b"weights")
    monkeypatch.setenv("ERC_MODEL_PATH", str(tmp_path / "models"))
    location = locate(ModelSpec(role="asr", backend="openai-whisper", name="tiny.en"))
    assert location.path == baked
