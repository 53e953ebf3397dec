"""The training loop every erc model uses, on Ray Train.

``fit`` runs a ``TorchTrainer``: N workers (CPU processes here, GPUs on a cluster), each
with a replica of the model under DistributedDataParallel. Every global batch of
``batch_size`` units (dialogues for fusion, utterances for the text encoder) is split
across the workers, so N workers take the same optimiser steps as one would. After every
epoch rank 0 evaluates on the dev split and every worker reports; rank 0 attaches a
checkpoint (weights as safetensors, config and metrics as JSON, optimizer state) that Ray
Train persists under ``storage_path/name``. Ray keeps the best checkpoint by dev metric
and the latest one.

Resume: start ``fit`` again with the same ``name`` and ``storage_path``; Ray Train finds
the run's checkpoint state there and hands the latest checkpoint to the workers, which
continue from the epoch after it with the optimizer, schedule, best score and
early-stopping counter it recorded. Early stopping: training ends after ``patience``
epochs without improvement of the dev metric. The best checkpoint's model is then
exported to ``out_dir/model`` (loadable with ``erc.models.checkpoint.load_model``).

Held-out score: with ``report_split`` in the config (a search, ``erc.tune``), rank 0 also
scores that split with every model that improves on dev, as ``HELD_OUT``, carried
unchanged through the epochs that do not: the held-out figure of the best-dev model so far,
which nothing is chosen on.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from erc import io
from erc.recipes import TrainConfig

log = logging.getLogger(__name__)
HELD_OUT = "report_weighted_f1"  # the report split's weighted F1 of the best-dev model so far


def _schedule(warmup_ratio: float, total_steps: int):
    warmup = max(1, int(round(warmup_ratio * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def evaluate_task(task, model, split: str, device) -> dict:
    """Metrics of ``model`` on ``split`` (the task knows how to predict)."""
    from erc.train.metrics import classification_metrics

    logits, y_true, _, _ = task.predict(model, split, device)
    keep = y_true >= 0
    return classification_metrics(y_true[keep], logits[keep].argmax(1), task.labels)


def train_loop_per_worker(config: dict) -> None:
    """Runs in every Ray Train worker."""
    import ray.train
    import ray.train.torch

    from erc.cluster import torch_device

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # not a line per report
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    # Every worker's buffers are the same by construction (the neighbour memory is filled
    # from the same data): synchronised once when wrapped, not sent again every step.
    prepare = functools.partial(ray.train.torch.prepare_model,
                                parallel_strategy_kwargs={"broadcast_buffers": False})
    use_gpu = TrainConfig(**config["train"]).gpus_per_worker() > 0
    if use_gpu and ctx.get_world_size() == 1 and torch_device(1.0) == "cpu":
        # The node advertises a GPU torch cannot use (torch_device said so): a lone
        # worker trains on the CPU instead. (Several workers need CUDA for NCCL.)
        import torch

        device = torch.device("cpu")
        prepare = lambda model: model.to(device)

    def report(metrics: dict, folder: str | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(folder) if folder else None
        ray.train.report(metrics, checkpoint=checkpoint)

    run_epochs(config, rank=ctx.get_world_rank(), world=ctx.get_world_size(),
               device=device, prepare=prepare,
               checkpoint=ray.train.get_checkpoint(), report=report)


def run_epochs(config: dict, *, rank: int, world: int, device, prepare, checkpoint,
               report) -> None:
    """The epoch loop itself, for any runner: a Ray Train worker (above) or a single-process
    Ray Tune trial (``erc.tune.trial``). ``prepare`` wraps the model (DDP, or a move to the
    device), ``checkpoint`` is the run's latest checkpoint (None: a fresh start) and
    ``report(metrics, folder)`` hands the epoch's metrics and, on rank 0, its checkpoint
    folder to the runner (the folder is deleted once ``report`` returns)."""
    import ray
    import torch
    import torch.distributed as dist

    from erc.models.checkpoint import WEIGHTS, load_train_state, save_model, save_train_state, unwrap
    from erc.train.folds import SELECT_SPLIT
    from erc.train.tasks import make_task

    tc = TrainConfig(**config["train"])
    torch.set_num_threads(max(1, tc.cpus_per_worker or 1))
    if torch.device(device).type == "cuda":
        # fp32 matrix products on the tensor cores (TF32, as training usually runs on a
        # GPU); the weights, the optimiser and the checkpoints stay fp32.
        torch.set_float32_matmul_precision("high")
    data = config["data"]
    if isinstance(data, ray.ObjectRef):
        data = ray.get(data)
    # what the epoch is chosen on, named in each epoch's line: the split the dev role reads
    # (dev, valid, or whatever train.dev_split names), or a slice of the train split
    dev_split = getattr(data, "dev_split", "dev")
    chosen_on = "selection" if dev_split == SELECT_SPLIT else dev_split
    task = make_task(config["task"], config["task_config"], data, tc)
    torch.manual_seed(tc.seed)
    model = task.build_model()

    state = None
    if checkpoint is not None:
        from safetensors.torch import load_file

        with checkpoint.as_directory() as folder:
            model.load_state_dict(load_file(os.path.join(folder, WEIGHTS)), strict=True)
            state = load_train_state(folder)
    steps = task.steps_per_epoch(tc.batch_size, world)
    # With weight averaging the checkpoint's weights are the average (what is scored and
    # exported); the weights being trained travel in the train state.
    averaged = weight_average(model, tc.average_epochs, steps, state, device)
    if state is not None and "live_weights" in state:
        model.load_state_dict(state["live_weights"], strict=True)
    model = prepare(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _schedule(tc.warmup_ratio, max(1, steps * tc.epochs)))
    start_epoch, best, bad_epochs, history = 0, -1.0, 0, []
    report_split, held_out = config.get("report_split"), None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best, bad_epochs = float(state["best"]), int(state["bad_epochs"])
        history = json.loads(state["history"])
        held_out = history[-1].get(HELD_OUT) if history else None
        if "torch_rng" in state:  # dropout goes on as if never stopped
            torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        if rank == 0:
            print(f"[train] resumed from the checkpoint of epoch {start_epoch}", flush=True)
    if bad_epochs >= tc.patience:
        start_epoch = tc.epochs  # the run had already stopped early

    for epoch in range(start_epoch, tc.epochs):
        model.train()
        started = time.time()
        rng = np.random.default_rng(tc.seed * 100_003 + epoch)
        total, count = 0.0, 0
        every = max(1, steps // 10)  # a progress line every 10% of the epoch
        for batch in task.train_batches(rng, tc.batch_size, rank, world):
            loss = task.loss(model, batch, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            optimizer.step()
            scheduler.step()
            if averaged is not None:
                averaged.update_parameters(unwrap(model))
            total += float(loss.detach())
            count += 1
            if rank == 0 and steps >= 50 and count % every == 0:
                print(f"[train] epoch {epoch + 1}: step {count}/{steps}, loss {total / count:.4f}, "
                      f"{time.time() - started:.0f} s", flush=True)
        train_seconds = time.time() - started
        metrics = None
        scored = unwrap(model) if averaged is None else averaged.module
        if rank == 0:
            dev = evaluate_task(task, scored, "dev", device)
            metrics = {"epoch": epoch, "train_loss": total / max(1, count),
                       "train_seconds": train_seconds,
                       "train_units_per_s": task.n_train / world / max(train_seconds, 1e-9),
                       **{f"dev_{k}": dev[k] for k in ("accuracy", "weighted_f1", "macro_f1")}}
        if world > 1:
            box = [metrics]
            dist.broadcast_object_list(box, src=0)
            metrics = box[0]
        score = metrics[f"dev_{tc.metric}"]
        improved = score > best
        if rank == 0 and report_split:  # Ray keeps rank 0's metrics; the others need none
            if improved:  # a new best-dev model: its held-out figure (None, not 0, where no
                # utterance there has one of the model's labels: none of them can be scored)
                on_report = evaluate_task(task, scored, report_split, device)
                held_out = on_report["weighted_f1"] if on_report["n"] else None
            metrics[HELD_OUT] = held_out
        if improved:
            best, bad_epochs = score, 0
        else:
            bad_epochs += 1
        metrics.update({"best": best, "bad_epochs": bad_epochs,
                        "stopped_early": bad_epochs >= tc.patience})
        history.append(metrics)
        with tempfile.TemporaryDirectory() as folder:
            reported = None
            if rank == 0:
                save_model(folder, scored, metrics={"history": history, "last": metrics},
                           extra={"task": config["task"], "labels": task.labels,
                                  "features": config["task_config"].get("features")})
                train_state = {"optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "epoch": epoch,
                               "best": best, "bad_epochs": bad_epochs,
                               "history": json.dumps(history), "torch_rng": torch.get_rng_state()}
                if device.type == "cuda":
                    train_state["cuda_rng"] = torch.cuda.get_rng_state(device)
                if averaged is not None:
                    train_state["live_weights"] = {k: v.detach().cpu() for k, v in
                                                   unwrap(model).state_dict().items()}
                    train_state["averaged_steps"] = int(averaged.n_averaged)
                save_train_state(folder, train_state)
                reported = folder
                print(f"[train] epoch {epoch + 1}: loss {metrics['train_loss']:.4f} {chosen_on} "
                      f"acc {metrics['dev_accuracy']:.4f} wF1 {metrics['dev_weighted_f1']:.4f} "
                      f"mF1 {metrics['dev_macro_f1']:.4f} ({train_seconds:.0f} s)", flush=True)
            report(metrics, reported)
        if bad_epochs >= tc.patience:
            break


def weight_average(model, epochs: float, steps_per_epoch: int, state: dict | None, device):
    """An exponential moving average of ``model``'s weights over about ``epochs`` epochs, kept
    on ``device`` where the model trains and is scored (None when ``epochs`` is 0). It starts
    from the model's current weights: on a resume, the checkpoint's, the average saved then."""
    if epochs <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    decay = 1.0 - 1.0 / max(1.0, epochs * steps_per_epoch)
    averaged = AveragedModel(model, device=device, multi_avg_fn=get_ema_multi_avg_fn(decay),
                             use_buffers=True)
    if state is not None:
        averaged.n_averaged.fill_(int(state.get("averaged_steps", 0)))
    return averaged


@dataclass
class TrainOutcome:
    model_dir: Path  # the exported best model
    best: dict  # metrics of the best epoch
    history: list[dict]
    run_path: str  # Ray Train's folder of the run
    candidates: dict | None = None  # with a choice between models: each one's early-stopping score
    chosen: str | None = None  # the candidate kept
    refit: dict | None = None  # the exported model trained again on train + selection slice (erc.train.fitting)


def machine_resources(train: TrainConfig) -> TrainConfig:
    """``train`` with the resources left unset filled in: on the embedded Ray a worker gets
    its share of the machine's CPUs (torch runs that many threads) and a GPU when there is
    one per worker; on a cluster one CPU and no GPU unless asked (the autoscaler cannot
    know what an unset request wants)."""
    import dataclasses

    import ray

    from erc import runtime

    cpus, use_gpu = train.cpus_per_worker, train.use_gpu
    if runtime.embedded():
        resources = ray.cluster_resources()
        if cpus is None:
            cpus = max(1, int(resources.get("CPU", 1)) // train.num_workers)
        if use_gpu is None:
            use_gpu = resources.get("GPU", 0) >= train.num_workers
    return dataclasses.replace(train, cpus_per_worker=cpus or 1, use_gpu=bool(use_gpu))


def check_room(train: TrainConfig) -> None:
    """ConfigError when the workers of ``train`` (resources filled in) can never start: one
    asks for more than any node offers, or, on the embedded Ray (one node, none to add),
    all of them together for more than it has. Ray Train waited for them forever."""
    from erc import cluster, runtime

    gpus, cpus, n = train.gpus_per_worker(), float(train.cpus_per_worker), train.num_workers
    cluster.check_feasible(cluster.Request(num_gpus=gpus, accelerator_type=train.accelerator_type,
                                           resources={"CPU": cpus}), "a training worker")
    if runtime.embedded() and n > 1:
        cluster.check_feasible(cluster.Request(num_gpus=gpus * n, resources={"CPU": cpus * n}),
                               f"a group of {n} training workers")


RUN_RECORD = "checkpoints.json"  # in the output folder: the Ray Train run its checkpoints are in, and for what


def _checkpoints_for(out_dir: Path, run_path: str, filesystem, key: str, fresh: bool) -> None:
    """Makes the checkpoints at ``run_path`` those of ``key`` (the settings and inputs of the
    run): checkpoints of other settings or inputs, or of no record (or all, when ``fresh``)
    are removed so that training starts over instead of resuming a model it is not (or
    failing on its shapes). Checkpoints outside ``out_dir`` that its record does not name
    (another output folder's, in a shared --storage) are left in place, with an error."""
    import pyarrow.fs as pafs

    from erc.errors import OwnershipError
    from erc.storage import redact, remove_tree

    record = out_dir / RUN_RECORD
    saved = json.loads(record.read_text()) if record.is_file() else {}
    # --storage the folder holding OUT: the run's folder STORAGE/<OUT's name> is OUT itself,
    # which "the checkpoints of the earlier run" removed whole, with all it held
    if filesystem is None and (Path(run_path) == out_dir.resolve()
                               or Path(run_path) in out_dir.resolve().parents):
        raise OwnershipError(f"{run_path}: Ray Train's folder for this run would be the output "
                             f"folder {out_dir} itself (or hold it); choose another --storage")
    try:  # checkpoints inside the output folder are named relative to it: they move with it
        where = Path(run_path).relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        where = run_path
    if where != run_path:  # --storage OUT/mine in a folder erc adopted: mine/ stays the user's
        io.check_outputs(out_dir, (where,))
    if filesystem is None:
        exists = Path(run_path).exists()
    else:
        exists = filesystem.get_file_info(run_path).type != pafs.FileType.NotFound
    if exists and saved.get("run") != where and where == run_path:  # not in the output folder
        raise OwnershipError(f"{redact(run_path)}: holds training checkpoints {out_dir} has no "
                             f"record of; erc leaves them in place (remove them, or use another "
                             f"--out or --storage)")
    if exists and (fresh or saved.get("key") != key):
        print("[train] " + ("--force" if fresh else "the settings or inputs changed") +
              ": the checkpoints of the earlier run are removed, training starts over", flush=True)
        remove_tree(run_path, filesystem)
    io.write_json(record, {"run": where, "key": key})


def checkpointed_epochs(out_dir: Path, key: str) -> int:
    """How many epochs the checkpoints of ``out_dir``'s training run hold that a next run
    for ``key`` (the same settings and inputs) resumes after; 0 for none (or checkpoints at
    a storage URI, not looked into)."""
    from erc.storage import is_uri

    try:
        saved = json.loads((out_dir / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return 0
    if not isinstance(saved, dict) or saved.get("key") != key or is_uri(str(saved.get("run"))):
        return 0
    latest = sorted((out_dir / str(saved["run"])).glob("checkpoint_*/metrics.json"))
    try:
        return len(json.loads(latest[-1].read_text())["history"]) if latest else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def export_model(source: str | Path, out_dir: str | Path) -> Path:
    """Replaces ``out_dir/model`` with a copy of the model folder ``source`` (a checkpoint's
    training state left out), recorded as erc's (``io.seal``); the model folder."""
    io.claim(out_dir)
    model_dir = Path(out_dir) / "model"
    # Copied whole beside it first, then renamed into place: a copy cut short (a full disk,
    # a kill) never stands as the model, with the checkpoint's file index copied into it
    with io.atomic_folder(model_dir) as tmp:
        io.copy_tree(source, tmp, skip=("train_state.pt",))
        io.seal(tmp)
        if model_dir.exists():
            io.remove_owned(out_dir, "model")
    return model_dir


def _fitted(trainer, where: str):
    """``trainer.fit()``'s result; a worker that found no room to save a checkpoint at
    ``where`` (the run's storage) is an OSError naming it, not a traceback of Ray's."""
    try:
        result = trainer.fit()
        if result.error:
            raise result.error
    except Exception as err:
        full = io.disk_full_in(err)
        if full is None:
            raise
        raise OSError(full, os.strerror(full), where) from None
    return result


def fit(task: str, task_config: dict, data: Any, train: TrainConfig, out_dir: str | Path,
        address: str | None = None, key: str | None = None, fresh: bool = False,
        keep_last: bool = False) -> TrainOutcome:
    """Trains on Ray Train and exports the best checkpoint to ``out_dir/model``. ``key``:
    what the run is for (its settings and inputs); checkpoints left by a run of another key
    (or any, when ``fresh``) are not resumed but removed (None: resumed whatever they are).
    ``keep_last``: export the last epoch's model instead (a run whose epoch count was
    chosen before it, with no split to choose on)."""
    from erc import runtime
    from erc.storage import ray_storage

    runtime.connect(address)
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    train = machine_resources(train)
    gpus = train.gpus_per_worker()
    print(f"[train] {train.num_workers} worker(s), {train.cpus_per_worker} CPU(s)"
          + (f" and {gpus:g} GPU" if gpus else "") + " each", flush=True)
    check_room(train)
    from ray.train.torch import TorchConfig, TorchTrainer

    # by default checkpoints go to OUT/ray; a URI (s3://...) reaches Ray as a filesystem
    storage, filesystem = ray_storage(train.storage_path or str(Path(out_dir).resolve() / "ray"))
    if key is not None:
        io.claim(out_dir)
        _checkpoints_for(Path(out_dir), f"{storage}/{train.name}", filesystem, key, fresh)
    trainer = TorchTrainer(
        train_loop_per_worker,
        # Ray Train records this config (its state API, the dashboard's Train view); the
        # workers never read the storage path, which may hold a URI's credentials
        train_loop_config={"task": task, "task_config": task_config,
                           "train": {**train.to_dict(), "storage_path": None}, "data": ray.put(data)},
        # One worker has nothing to all-reduce: gloo, which also runs where a node's GPU
        # turns out unusable; several GPU workers use NCCL (Ray's default), which needs CUDA.
        torch_config=TorchConfig(backend="gloo") if train.num_workers == 1 else None,
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=gpus > 0,
                                     accelerator_type=train.accelerator_type,
                                     resources_per_worker={"CPU": train.cpus_per_worker}),
        run_config=RunConfig(
            name=train.name, storage_path=storage, storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=1) if keep_last else CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=f"dev_{train.metric}",
                checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=train.max_failures)),
    )
    result = _fitted(trainer, f"{storage}/{train.name}")
    best = result.checkpoint if keep_last else result.get_best_checkpoint(
        metric=f"dev_{train.metric}", mode="max")
    if best is None:
        raise RuntimeError(f"run {train.name} reported no checkpoint")
    with best.as_directory() as folder:
        model_dir = export_model(folder, out_dir)
    saved = json.loads((model_dir / "metrics.json").read_text())
    latest = result.checkpoint
    history = saved["history"]
    if latest is not None:
        with latest.as_directory() as folder:
            history = json.loads(Path(folder, "metrics.json").read_text())["history"]
    io.write_json(Path(out_dir) / "history.json", history)
    return TrainOutcome(model_dir=model_dir, best=saved["last"], history=history,
                        run_path=str(result.path))
