"""What a job may ask of the Ray cluster it runs on, decided before the work starts.

An autoscaling cluster starts with its worker types at zero nodes, so its current size
says nothing about what it can run. This module answers from the node types the cluster
can launch instead, and it owns the checks a job makes before its heavy work:

- ``node_types()``: the node types of the connected cluster: Ray's cluster config in GCS
  where the cluster publishes one; else the autoscaler config the cluster launcher leaves
  on the head, ``~/ray_bootstrap_config.yaml``, where a submitted job's driver runs; else,
  in a KubeRay pod, the RayCluster's groups; for an embedded Ray its one node. None: the
  cluster names none (a fixed cluster of `ray start`ed nodes: what is up is all there is).
- ``gpu_plan(what)``: how many GPUs one node can give (``auto`` settings), and how many GPU
  nodes there can be; an error that says what to set where a cluster that autoscales
  cannot be read, so a GPU stage never lands on CPUs because the GPU nodes are at zero.
- ``check_feasible(request, what)``: a request (GPUs, an accelerator type, custom
  resources) that no node type can satisfy is an error at once, not a pass that waits
  forever.
- ``check_weights(specs, request)``: every alive node that can run a stage finds the
  stage's weights (resolved there, as the stage's actors resolve them); else an error that
  names the nodes without them.
- ``torch_device(num_gpus)``: where a stage's models run on this node: CUDA when Ray gave
  it a GPU and torch sees one; CPU, with a message, on a node that advertises a GPU but
  has no CUDA device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from erc.errors import ConfigError

log = logging.getLogger(__name__)

ACCELERATOR_PREFIX = "accelerator_type:"
# What an accelerator_type request asks of a node (Ray's own convention for tasks/actors).
ACCELERATOR_SHARE = 0.001


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: Mapping[str, float]
    max_nodes: int  # -1: no limit
    alive: int = 0

    def describe(self) -> str:
        shown = ", ".join(f"{k} {v:g}" for k, v in sorted(self.resources.items())
                          if k in ("CPU", "GPU") or k.startswith(ACCELERATOR_PREFIX)
                          or not _is_builtin(k))
        count = "unlimited" if self.max_nodes < 0 else f"up to {self.max_nodes}"
        return f"{self.name} ({shown or 'no resources'}; {count} nodes, {self.alive} up)"


@dataclass(frozen=True)
class GPUPlan:
    per_node: float  # GPUs of the largest GPU node the cluster has or can launch
    nodes: int  # GPU nodes it can have at most (-1: no limit)
    source: str  # where the answer comes from, for messages
    node_cpus: float = 0.0  # CPUs of the smallest GPU node: what actors sharing one can ask


@dataclass
class Request:
    """Resources one actor, task or training worker asks for."""
    num_gpus: float = 0.0
    accelerator_type: str | None = None
    resources: dict[str, float] = field(default_factory=dict)

    def shape(self) -> dict[str, float]:
        """As node resources: what a node must offer."""
        shape = dict(self.resources)
        if self.num_gpus:
            shape["GPU"] = self.num_gpus
        if self.accelerator_type:
            shape[ACCELERATOR_PREFIX + self.accelerator_type] = ACCELERATOR_SHARE
        return shape


def _is_builtin(name: str) -> bool:
    return name in ("memory", "object_store_memory") or name.startswith("node:")


# -- what the cluster can launch ----------------------------------------------------------

def _from_gcs() -> list[NodeType] | None:
    import ray._private.state

    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:
        return None
    if config is None or not config.node_group_configs:
        return None
    return [NodeType(g.name, {k: float(v) for k, v in g.resources.items()}, int(g.max_count))
            for g in config.node_group_configs]


def _from_launcher_config(path: Path) -> list[NodeType] | None:
    import yaml

    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    types = config.get("available_node_types") if isinstance(config, dict) else None
    if not types:
        return None
    head = config.get("head_node_type")
    try:
        return [NodeType(name, {k: float(v) for k, v in (t.get("resources") or {}).items()},
                         0 if name == head else int(t.get("max_workers", config.get("max_workers", 0))))
                for name, t in types.items()]
    except (AttributeError, TypeError, ValueError) as err:  # a node type of the wrong shape
        raise ConfigError(f"{path}: available_node_types is not what the Ray cluster launcher "
                          f"writes ({err}); fix or remove this file") from None


def _on_kuberay() -> bool:
    return "RAY_USAGE_STATS_KUBERAY_IN_USE" in os.environ  # set by KubeRay in its pods


def _from_kuberay() -> list[NodeType] | None:
    """The RayCluster's groups, read from the Kubernetes API with the pod's service
    account, by the code KubeRay's autoscaler runs (it shares that account)."""
    name = os.environ.get("RAY_CLUSTER_NAME")
    namespace_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if not (_on_kuberay() and name and namespace_file.is_file()):
        return None
    try:
        from ray.autoscaler._private.kuberay.autoscaling_config import AutoscalingConfigProducer

        config = AutoscalingConfigProducer(name, namespace_file.read_text().strip())()
    except Exception as err:
        log.warning("cannot read the RayCluster %s from the Kubernetes API: %s", name, err)
        return None
    return [NodeType(n, {k: float(v) for k, v in (t.get("resources") or {}).items()},
                     int(t.get("max_workers", 0)))
            for n, t in config["available_node_types"].items()]


def _alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _node_type_of(node: dict) -> str | None:
    labels = node.get("Labels") or {}
    return labels.get("ray.io/node-group") or labels.get("ray.io/node_group") or None


def node_types() -> list[NodeType] | None:
    """The node types of the connected cluster with how many of each are up (module doc);
    for an embedded Ray, its one node. None when the cluster does not say."""
    from erc import runtime

    alive = _alive_nodes()
    if runtime.embedded():
        return [NodeType("local", alive[0]["Resources"] if alive else {}, 1, len(alive))]
    types = (_from_gcs() or _from_launcher_config(Path.home() / "ray_bootstrap_config.yaml")
             or _from_kuberay())
    if types is None:
        return None
    counts: dict[str, int] = {}
    for node in alive:
        kind = _node_type_of(node)
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
    return [NodeType(t.name, t.resources, t.max_nodes, counts.get(t.name, 0)) for t in types]


def gpu_plan(what: str) -> GPUPlan:
    """GPUs per node and GPU nodes available to ``what`` (a setting left at ``auto``, named
    in the error). Raises ConfigError where the cluster cannot tell and none is up."""
    types = node_types()
    if types is not None:
        gpu_types = [t for t in types if t.resources.get("GPU", 0) > 0]
        per_node = max((t.resources["GPU"] for t in gpu_types), default=0.0)
        nodes = -1 if any(t.max_nodes < 0 for t in gpu_types) else sum(
            max(t.max_nodes, t.alive) for t in gpu_types)
        source = "node types: " + "; ".join(t.describe() for t in types)
        return GPUPlan(per_node, nodes if per_node else 0, source,
                       min((t.resources.get("CPU", 0.0) for t in gpu_types), default=0.0))
    alive = _alive_nodes()
    gpus = [float(n["Resources"].get("GPU", 0)) for n in alive]
    if any(gpus) or not _on_kuberay():
        # A cluster of `ray start`ed nodes with no autoscaler config: what is up is what
        # there is. (A driver outside the head, e.g. through ray://, cannot read the
        # launcher's config either: submit jobs with `ray job submit`.)
        return GPUPlan(max(gpus, default=0.0), sum(1 for g in gpus if g),
                       "the nodes that are up (the cluster names no node types it could add)",
                       min((float(n["Resources"].get("CPU", 0)) for n in alive
                            if n["Resources"].get("GPU")), default=0.0))
    raise ConfigError(
        f"{what} is auto, but this KubeRay cluster's node groups could not be read (see the "
        "warning above) and no node with a GPU is up, so erc cannot tell whether GPU nodes "
        "would come. Set it: a number of GPUs (with accelerator_type to pick the GPU group, "
        "as erc/configs/cluster-gpu.yaml does), or 0 to run on CPUs.")


def task_cpus() -> tuple[float, list[float]]:
    """(CPUs the cluster can have in all, CPUs of each node or node type that offers any):
    what CPU-sharing settings are fitted to. From the node types where the cluster says
    them (a cluster scaled to zero has none up), else from the alive nodes."""
    types = node_types()
    if types is not None:
        usable = [t for t in types if t.resources.get("CPU", 0) > 0 and (t.max_nodes or t.alive)]
        if usable:
            total = sum(t.resources["CPU"] * max(t.max_nodes, t.alive, 1) for t in usable)
            return total, [float(t.resources["CPU"]) for t in usable]
    node_cpus = [float(n["Resources"].get("CPU", 0)) for n in _alive_nodes()]
    return sum(node_cpus) or 1.0, [c for c in node_cpus if c > 0]


# -- requests -----------------------------------------------------------------------------

def _fits(shape: Mapping[str, float], resources: Mapping[str, float]) -> bool:
    return all(resources.get(k, 0.0) + 1e-9 >= v for k, v in shape.items() if v > 0)


def check_feasible(request: Request, what: str) -> None:
    """Raises ConfigError when no node type of the cluster (or, where it publishes none, no
    alive node) can ever satisfy ``request``: Ray would wait for it forever."""
    shape = request.shape()
    if not shape:
        return
    types = node_types()
    if types is not None:
        if not any(_fits(shape, t.resources) for t in types if t.max_nodes != 0 or t.alive):
            raise ConfigError(
                f"{what} asks for {_describe(shape)}, which no node type of this cluster "
                f"offers ({'; '.join(t.describe() for t in types)})")
        return
    alive = _alive_nodes()
    if not any(_fits(shape, n["Resources"]) for n in alive):
        log.warning("%s asks for %s: no node that is up offers it, and the cluster does not "
                    "say which node types it can launch; the work waits until such a node "
                    "joins", what, _describe(shape))


def _describe(shape: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(shape.items()))


def ray_options(request: Request) -> dict:
    """``request`` as keyword arguments of ``.options`` / ``map_batches``."""
    options: dict = {}
    if request.num_gpus:
        options["num_gpus"] = request.num_gpus
    if request.accelerator_type:
        options["accelerator_type"] = request.accelerator_type
    if request.resources:
        options["resources"] = dict(request.resources)
    return options


# -- weights on every node ----------------------------------------------------------------

def _locate_here(specs: dict[str, dict]) -> dict:
    """On one node: where each spec's weights are, or why they are not (no download)."""
    import ray

    from erc import runtime
    from erc.backends.base import MissingWeightsError, ModelSpec
    from erc.backends.registry import locate

    runtime.apply_offline_env()
    found = {}
    for role, spec in specs.items():
        try:
            location = locate(ModelSpec(**spec))
            found[role] = {"ok": True, "source": location.source}
        except MissingWeightsError as err:
            found[role] = {"ok": False, "error": str(err)}
    return {"node_id": ray.get_runtime_context().get_node_id(), "roles": found}


def check_weights(specs: Mapping[str, object], request: Request, what: str) -> int:
    """Before a pass: every alive node that can run ``what`` (satisfies ``request``) finds
    the weights of ``specs`` ({role: ModelSpec}) where that node's actors will look.
    Raises MissingWeightsError naming each node and role that lacks them; returns the
    number of nodes checked. Nodes the autoscaler adds later resolve their weights when
    their actors start (and fail there, naming the node)."""
    import dataclasses

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from erc.backends.base import MissingWeightsError

    shape = request.shape()
    nodes = [n for n in _alive_nodes() if _fits(shape, n["Resources"])
             and (shape or n["Resources"].get("CPU", 0) > 0)]
    if not nodes:
        return 0
    plain = {role: dataclasses.asdict(spec) for role, spec in specs.items()}
    probe = ray.remote(num_cpus=0)(_locate_here)
    results = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        n["NodeID"], soft=False)).remote(plain) for n in nodes])
    address = {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in nodes}
    missing = [(r["node_id"], role, got["error"]) for r in results
               for role, got in r["roles"].items() if not got["ok"]]
    if missing:
        lines = [f"{what}: model weights are missing on {len({m[0] for m in missing})} of "
                 f"{len(nodes)} node(s) that can run it:"]
        for node_id, role, error in missing:
            lines.append(f"- node {address[node_id]} ({node_id[:12]}), {role}: "
                         + error.splitlines()[0])
        lines.append("Put them on storage every node mounts (ERC_HOME, see docs/cluster.md), "
                     "bake them into the image (docker/README.md), or fetch them on each "
                     "node. The full message for one of them:\n" + missing[0][2])
        raise MissingWeightsError("\n".join(lines))
    return len(nodes)


# -- on the node --------------------------------------------------------------------------

def torch_device(num_gpus: float | None) -> str:
    """"cuda" when Ray gave this process a GPU and torch sees a CUDA device; else "cpu",
    with a message when a GPU was given (the node advertises one it cannot use)."""
    if not num_gpus:
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    node = "?"
    try:
        import ray

        node = ray.util.get_node_ip_address()
    except Exception:
        pass
    message = (f"[erc] warning: node {node} gave this process {num_gpus:g} GPU(s) "
               f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}), but "
               f"torch {torch.__version__} finds no CUDA device "
               f"(torch.version.cuda={torch.version.cuda}): running on the CPU instead. Check "
               "the node's NVIDIA driver, or the GPU count its node type declares.")
    print(message, flush=True)  # Ray forwards it to the driver (erc.console shows it)
    return "cpu"
