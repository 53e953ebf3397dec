"""The preprocessing pass: one Ray Data pass over a corpus's media computes everything the
later stages need (``erc.features.FEATURE_SCHEMA``), so no model runs twice over an
utterance.

    utterances.parquet --(driver: sort by id, cut into partitions, skip finished ones)-->
      decode (CPU tasks) -> faces (detector + embedder actor) -> asr (actor)
      -> speaker (actor) -> text (actor)  --(driver: iter_batches)--> features/part-NNNNN.parquet

The driver reads the utterance table itself (it is small: ids, transcripts and paths; the
media are read inside the workers), because it needs the ids to cut and fingerprint the
partitions. Resumption: the table sorted by ``utterance_id`` is cut into partitions of
``partition_rows`` rows; ``part-NNNNN.parquet`` carries the fingerprint of its rows (ids,
transcripts, media paths and sizes), the settings and the model records in its schema
metadata, and a partition whose file holds the same fingerprint is skipped. The driver
streams the results and writes each partition atomically (temporary file + rename) as soon
as all its rows are in, so a killed run resumes where it stopped. Every input row comes out
exactly once (checked per partition and in total).

Statuses: "ok"; "text_only" (the row has no media: text embedding only); "failed" with a
reason (``FAILURE_REASONS``). Rows whose media failed still get the text embedding of
their transcript.

Also written: ``manifest.json`` (models, settings, partitions) and ``summary.json`` (rows in
and out, statuses, failures by reason, seconds and utterances/s per stage).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from erc import cluster
from erc.config import ConfigError, PreprocessConfig, RayConfig
from erc.features import FEATURE_SCHEMA, models_of, with_models
from erc.pipeline.stages import (
    INPUT_COLUMNS,
    MODEL_STAGES,
    ROLES_OF_STAGE,
    STAGE_CLASSES,
    STAGE_DEFAULTS,
    STAGES,
    decode_batch,
)

# Bump when what the stages compute changes, so finished partitions are recomputed.
FEATURES_VERSION = 1
UTTERANCES = "utterances.parquet"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
STATS = "ray_data_stats.txt"
FINGERPRINT_KEY = b"erc.fingerprint"
SETTINGS_KEY = b"erc.settings"

FAILURE_REASONS = {
    "unreadable_media": "the media is missing, corrupt or truncated (or the segment lies outside it)",
    "no_audio": "the media has no audio stream",
    "silence": "the audio is silent (RMS below the threshold, or no speech for the speaker model)",
    "no_frames": "video was expected but no frame could be decoded",
    "overlong_clip": "the utterance is longer than max_clip_seconds (a mis-cut clip)",
    "model_error": "a model raised on this utterance (the role and error are in failure_detail)",
}


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


@dataclass
class PreprocessOutcome:
    output_dir: Path
    summary: dict
    written: int  # partitions computed by this run
    skipped: int  # partitions already up to date
    seconds: float


def load_features(output_dir: str | Path) -> pa.Table:
    """Every part of a feature folder, in utterance_id order (the folder also holds JSON
    files, so read the parts by name rather than the folder as a dataset)."""
    output_dir = Path(output_dir)
    manifest = output_dir / MANIFEST
    if manifest.is_file():  # the parts of the last run (a --limit run leaves others beside)
        parts = [output_dir / p["file"] for p in json.loads(manifest.read_text())["partitions"]]
    else:
        parts = sorted(output_dir.glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{output_dir}: no feature parts (run `erc preprocess` first)")
    return pa.concat_tables([pq.read_table(p) for p in parts]).sort_by("utterance_id")


# -- inputs -------------------------------------------------------------------------------

def load_utterances(path: str | Path) -> pa.Table:
    """The utterance table from a folder holding utterances.parquet, or the file itself."""
    path = Path(path)
    file = path / UTTERANCES if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no utterance table (run `erc corpus ingest` first)")
    table = pq.read_table(file)
    missing = [c for c in INPUT_COLUMNS if c not in table.column_names]
    if missing:
        raise ConfigError(f"{file}: not an utterance table, it lacks {', '.join(missing)}")
    ids = table.column("utterance_id")
    if ids.null_count or pc.count_distinct(ids).as_py() != table.num_rows:
        raise ConfigError(f"{file}: utterance_id must be unique and non-null")
    return table


def decode_settings(config: PreprocessConfig) -> dict:
    return {"frame_rate": config.frame_rate, "max_frames": config.max_frames,
            "max_side": config.max_side, "max_clip_seconds": config.max_clip_seconds,
            "silence_rms": config.silence_rms}


def model_specs(config: PreprocessConfig) -> dict:
    """{role: ModelSpec} of the profile with the config's overrides (relative weight paths
    are taken from the working directory)."""
    from erc.backends.registry import profile_specs

    overrides = {}
    for role, values in (config.overrides or {}).items():
        values = dict(values or {})
        if values.get("path"):
            values["path"] = str(Path(os.path.expanduser(str(values["path"]))).resolve())
        overrides[role] = values
    try:
        return profile_specs(config.profile, overrides)
    except ValueError as err:
        raise ConfigError(f"preprocess models: {err}") from err


def _has_media(table: pa.Table) -> bool:
    media = pc.or_(pc.is_valid(table.column("media_path")), pc.is_valid(table.column("audio_path")))
    return bool(pc.any(media).as_py())


def _roles_for(table: pa.Table) -> list[str]:
    """The model roles a partition needs: text always, the others when a row has media."""
    if _has_media(table):
        return [role for stage in MODEL_STAGES for role in ROLES_OF_STAGE[stage]]
    return ["text"]


def _file_stamp(path: str | None) -> list | None:
    if not path:
        return None
    try:
        stat = os.stat(path)
        return [stat.st_size, stat.st_mtime_ns]
    except OSError:
        return None


def fingerprint(part: pa.Table, settings: dict, records: list[dict]) -> str:
    """Of a partition's rows (ids, transcripts, media paths, segments, media sizes and
    modification times), the decode settings and the model records."""
    digest = hashlib.sha256(json.dumps([FEATURES_VERSION, settings, records], sort_keys=True,
                                       default=str).encode())
    columns = {name: part.column(name).to_pylist() for name in INPUT_COLUMNS}
    for i in range(part.num_rows):
        row = [columns[name][i] for name in INPUT_COLUMNS]
        row += [_file_stamp(columns["media_path"][i]), _file_stamp(columns["audio_path"][i])]
        digest.update(json.dumps(row, default=str).encode())
    return digest.hexdigest()


def _existing_fingerprint(path: Path, rows: int) -> str | None:
    try:
        meta = pq.read_metadata(path)
        if meta.num_rows != rows:
            return None
        return (meta.schema.to_arrow_schema().metadata or {}).get(FINGERPRINT_KEY, b"").decode() or None
    except Exception:  # noqa: BLE001 - an unreadable part is recomputed
        return None


# -- resources ----------------------------------------------------------------------------

def stage_resources(config: PreprocessConfig, stages: list[str], cpus: float, gpus: float,
                    node_cpus: list[float] | None = None, gpu_nodes: int = 1,
                    gpu_node_cpus: float | None = None) -> dict:
    """batch_size, concurrency, num_cpus, num_gpus (and accelerator_type, resources) for
    each stage, from the config with the stage defaults; CPUs left unset are shared out so
    that every stage's actors and one decode task fit on the cluster; GPUs left unset are
    shared between the model stages when a node has any (``gpus``: the GPUs of the largest
    GPU node), and their actor pools, unless sized in the config, grow to fill
    ``gpu_nodes`` such nodes (-1: as many as the autoscaler brings, up to 64 actors).
    ``gpu_node_cpus``: the CPUs of a GPU node; the GPU stages' actors, which share one,
    ask for no more CPUs together (else the last of them would wait forever).

    ``node_cpus`` (the CPUs of each node) matters on a multi-node cluster: a decode task
    must fit on one node next to the actors placed there, so it asks for at most half of
    the smallest node, and that much is kept free on every node (the actors' share is
    what is left), so that wherever the actors land some node can still run a decode
    task."""
    nodes = [c for c in (node_cpus or []) if c > 0] or [cpus]
    chosen = {}
    for stage in stages:
        given = {k: v for k, v in dataclasses.asdict(getattr(config, stage)).items() if v is not None}
        chosen[stage] = {**STAGE_DEFAULTS[stage], **given}
        if stage in MODEL_STAGES and "num_gpus" not in given:
            users = [s for s in stages if s in MODEL_STAGES]
            share = min(1.0, gpus / len(users)) if gpus >= 1 else 0.0
            chosen[stage]["num_gpus"] = share
            if share and gpu_nodes != 1 and "concurrency" not in given:
                per_node = max(1, int(gpus / (len(users) * share) + 1e-9))
                chosen[stage]["concurrency"] = [1, min(64, per_node * gpu_nodes)
                                                if gpu_nodes > 0 else 64]

    def actors(stage) -> int:
        size = chosen[stage]["concurrency"]
        return int(size[0] if isinstance(size, list) else size or 1)

    decode = chosen.get("decode")
    if decode is not None:
        decode["num_cpus"] = min(float(decode["num_cpus"] or 1.0), max(0.25, min(nodes) / 2))
    model = [s for s in stages if s in MODEL_STAGES]
    fixed = sum(chosen[s]["num_cpus"] * actors(s) for s in model if chosen[s]["num_cpus"] is not None)
    auto = [s for s in model if chosen[s]["num_cpus"] is None]
    if auto:
        left = cpus - (decode["num_cpus"] * len(nodes) if decode else 0.0) - fixed
        share = left / sum(actors(s) for s in auto)
        on_gpu = [s for s in model if chosen[s]["num_gpus"]]
        for stage in auto:
            cpus_here = min(1.0, max(0.1, share))
            if gpu_node_cpus and stage in on_gpu:
                cpus_here = min(cpus_here, gpu_node_cpus / len(on_gpu))
            chosen[stage]["num_cpus"] = round(cpus_here, 3)
    for stage, values in chosen.items():
        if values["batch_size"] is None or int(values["batch_size"]) < 1:
            raise ConfigError(f"preprocess.{stage}.batch_size must be a positive integer")
    return chosen


def stage_request(chosen: dict) -> cluster.Request:
    """What one actor (or decode task) of a stage asks of a node, besides CPUs."""
    return cluster.Request(num_gpus=float(chosen.get("num_gpus") or 0.0),
                           accelerator_type=chosen.get("accelerator_type"),
                           resources=dict(chosen.get("resources") or {}))


def _compute(concurrency):
    import ray.data

    if isinstance(concurrency, list):
        if len(concurrency) != 2:
            raise ConfigError(f"an actor pool size is N or [min, max], got {concurrency}")
        return ray.data.ActorPoolStrategy(min_size=int(concurrency[0]), max_size=int(concurrency[1]))
    return ray.data.ActorPoolStrategy(size=int(concurrency or 1))


def build_dataset(parts: list[pa.Table], specs: dict, config: PreprocessConfig, resources: dict,
                  settings: dict):
    """The Ray Data pipeline over the pending partitions. The rows (ids, transcripts, paths)
    go in as blocks of one decode batch each, in id order, so decoding spreads over the
    cluster and partitions complete one after another."""
    import ray.data

    decode = resources["decode"]
    rows = pa.concat_tables(parts).to_pylist()
    block_rows = int(decode["batch_size"])
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // block_rows)))
    dataset = dataset.map_batches(
        decode_batch, fn_kwargs={"settings": settings}, batch_format="pyarrow",
        batch_size=int(decode["batch_size"]), num_cpus=decode["num_cpus"],
        concurrency=decode["concurrency"], **cluster.ray_options(stage_request(decode)))
    for stage in MODEL_STAGES:
        if stage not in resources:
            continue
        res = resources[stage]
        stage_specs = {role: dataclasses.asdict(specs[role]) for role in ROLES_OF_STAGE[stage]}
        kwargs = {"specs": stage_specs, "num_cpus": res["num_cpus"], "num_gpus": res["num_gpus"]}
        remote = {"num_cpus": res["num_cpus"], **cluster.ray_options(stage_request(res))}
        dataset = dataset.map_batches(
            STAGE_CLASSES[stage], fn_constructor_kwargs=kwargs, batch_format="pyarrow",
            batch_size=int(res["batch_size"]), compute=_compute(res["concurrency"]), **remote)
    return dataset


def _cluster_stage_resources(config: PreprocessConfig, stages: list[str], say) -> dict:
    """stage_resources for the connected cluster: GPUs and CPUs from the node types it can
    launch (erc.cluster), every stage's request checked against them."""
    from erc import runtime

    auto_gpu = [s for s in stages if s in MODEL_STAGES and getattr(config, s).num_gpus is None]
    plan = cluster.gpu_plan(" / ".join(f"preprocess.{s}.num_gpus" for s in auto_gpu)) \
        if auto_gpu else None
    if plan is not None and not runtime.embedded():
        say(f"[preprocess] auto GPUs from {plan.source}")
    cpus, node_cpus = cluster.task_cpus()
    resources = stage_resources(config, stages, cpus, plan.per_node if plan else 0.0,
                                node_cpus, plan.nodes if plan else 1,
                                plan.node_cpus if plan else None)
    for stage, chosen in resources.items():
        cluster.check_feasible(stage_request(chosen), f"preprocess.{stage}")
    return resources


# -- output -------------------------------------------------------------------------------

def _records_of(table: pa.Table) -> dict[str, list[dict]]:
    """The model records the rows carry (role -> distinct records)."""
    found: dict[str, list[dict]] = defaultdict(list)
    for stage in MODEL_STAGES:
        name = f"_rec_{stage}"
        if name not in table.column_names:
            continue
        for text in pc.unique(table.column(name).drop_null()).to_pylist():
            for record in json.loads(text):
                if record not in found[record["role"]]:
                    found[record["role"]].append(record)
    return found


def _feature_table(table: pa.Table, metadata: dict) -> pa.Table:
    columns = []
    for field in FEATURE_SCHEMA:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    schema = FEATURE_SCHEMA.with_metadata(metadata)
    out = pa.Table.from_arrays(columns, schema=schema)
    return out.sort_by("utterance_id")


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _write_json(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _add_stage_stats(stats: dict, table: pa.Table) -> None:
    for stage in STAGES:
        seconds = f"_s_{stage}"
        if seconds not in table.column_names:
            continue
        entry = stats.setdefault(stage, {"rows": 0, "busy_s": 0.0, "load_s": 0.0})
        entry["busy_s"] += pc.sum(table.column(seconds)).as_py() or 0.0
        if stage == "decode":
            entry["rows"] += table.num_rows
        else:
            entry["rows"] += len(table.column(f"_rec_{stage}")) - table.column(f"_rec_{stage}").null_count
            entry["load_s"] += pc.sum(table.column(f"_load_{stage}")).as_py() or 0.0


def format_summary(summary: dict) -> str:
    lines = [f"rows in {summary['rows_in']:,}, rows out {summary['rows_out']:,}: "
             + ", ".join(f"{k} {v:,}" for k, v in summary["status"].items())]
    if summary["failures"]:
        lines.append("failures: " + ", ".join(f"{k} {v:,}" for k, v in summary["failures"].items()))
    parts = summary["partitions"]
    lines.append(f"partitions: {parts['total']} ({parts['written']} computed, "
                 f"{parts['skipped']} up to date)")
    run = summary["this_run"]
    if run["rows"]:
        lines.append(f"this run: {run['rows']:,} utterances in {run['seconds']:.1f} s, "
                     f"{run['utterances_per_s']:.2f} utterances/s")
        lines.append(f"  {'stage':8} {'rows':>7} {'busy s':>8} {'utt/s':>8} {'load s':>7}")
        for stage, entry in run["stages"].items():
            lines.append(f"  {stage:8} {entry['rows']:7,} {entry['busy_s']:8.2f} "
                         f"{entry['utterances_per_s']:8.2f} {entry['load_s']:7.2f}")
    models = ", ".join(f"{m['role']}={m['backend']}:{m['name']}" for m in summary["models"])
    lines.append(f"models: {models}")
    return "\n".join(lines)


# -- the pass -----------------------------------------------------------------------------

def run_preprocess(utterances: str | Path | pa.Table, output_dir: str | Path,
                   config: PreprocessConfig | None = None, ray: RayConfig | None = None,
                   limit: int | None = None, force: bool = False,
                   progress: Callable[[str], None] | None = print) -> PreprocessOutcome:
    """Runs the pass over ``utterances`` (a folder holding utterances.parquet, the file, or
    a table) into ``output_dir`` (the folder of the part files), skipping partitions that
    are up to date unless ``force``."""
    started = time.perf_counter()
    config = config or PreprocessConfig()
    ray = ray or RayConfig()
    say = progress or (lambda _message: None)
    output_dir = Path(output_dir)
    if config.partition_rows < 1:
        raise ConfigError("preprocess.partition_rows must be at least 1")

    table = utterances if isinstance(utterances, pa.Table) else load_utterances(utterances)
    table = table.select(list(INPUT_COLUMNS)).sort_by("utterance_id")
    if limit is not None:
        table = table.slice(0, max(0, limit))
    rows_in = table.num_rows
    n_parts = -(-rows_in // config.partition_rows)
    parts = [table.slice(k * config.partition_rows, config.partition_rows) for k in range(n_parts)]

    settings = decode_settings(config)
    specs = model_specs(config)
    needed = sorted({role for part in parts for role in _roles_for(part)})
    from erc.backends.registry import make_record, resolve

    resolved = {role: resolve(specs[role]) for role in needed}
    spec_records = {role: make_record(spec).to_dict() for role, spec in resolved.items()}

    output_dir.mkdir(parents=True, exist_ok=True)
    for stale in output_dir.glob(".part-*.tmp"):
        stale.unlink()
    fingerprints, pending = [], []
    for k, part in enumerate(parts):
        records = [spec_records[role] for role in _roles_for(part)]
        stamp = fingerprint(part, settings, records)
        fingerprints.append(stamp)
        if force or _existing_fingerprint(output_dir / part_name(k), part.num_rows) != stamp:
            pending.append(k)
    skipped = n_parts - len(pending)
    say(f"[preprocess] {rows_in:,} utterances in {n_parts} partition(s) of {config.partition_rows}: "
        f"{skipped} up to date, {len(pending)} to compute -> {output_dir}")

    stage_stats: dict = {}
    run_rows = 0
    run_started = time.perf_counter()
    if pending:
        from erc import runtime

        where = runtime.connect(ray.address, num_cpus=ray.num_cpus, num_gpus=ray.num_gpus,
                                dashboard=ray.dashboard)
        say(f"[preprocess] {where}")
        import ray as ray_module

        resources_now = ray_module.cluster_resources()
        with_media = any(_has_media(parts[k]) for k in pending)
        stages = list(STAGES) if with_media else ["decode", "text"]
        resources = _cluster_stage_resources(config, stages, say)
        wanted = sum(r["num_cpus"] * (r["concurrency"][0] if isinstance(r["concurrency"], list)
                                      else r["concurrency"] or 1) for r in resources.values())
        if wanted > float(resources_now.get("CPU", 1)) + 1e-6:
            say(f"[preprocess] warning: the stages ask for {wanted:g} CPUs, the cluster has "
                f"{resources_now.get('CPU', 0):g}; actors wait until the cluster grows")
        say("[preprocess] stages: " + "; ".join(
            f"{s} batch {r['batch_size']} x{r['concurrency'] or 'auto'} "
            f"cpu {r['num_cpus']:g} gpu {r['num_gpus']:g}"
            + (f" on {r['accelerator_type']}" if r.get("accelerator_type") else "")
            for s, r in resources.items()))
        for stage in (s for s in stages if s in MODEL_STAGES):
            checked = cluster.check_weights({r: specs[r] for r in ROLES_OF_STAGE[stage]},
                                            stage_request(resources[stage]),
                                            f"preprocess.{stage}")
            if checked and not runtime.embedded():
                say(f"[preprocess] {stage}: weights found on the {checked} node(s) up that can run it")
        inputs = [parts[k].append_column("_part", pa.array([k] * parts[k].num_rows, pa.int32()))
                  for k in pending]
        # The stage actors resolve their weights on their own nodes (from the specs, not
        # from paths found here): the model cache path may differ between nodes.
        dataset = build_dataset(inputs, specs, config, resources, settings)

        buffers: dict[int, list[pa.Table]] = defaultdict(list)
        counts: Counter = Counter()
        done = 0
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            part_of = batch.column("_part")
            for k in pc.unique(part_of).to_pylist():
                rows = batch.filter(pc.equal(part_of, k))
                buffers[k].append(rows)
                counts[k] += rows.num_rows
                if counts[k] > parts[k].num_rows:
                    raise RuntimeError(f"partition {k} received {counts[k]} rows for "
                                       f"{parts[k].num_rows} utterances")
                if counts[k] < parts[k].num_rows:
                    continue
                whole = pa.concat_tables(buffers.pop(k), promote_options="default")
                _add_stage_stats(stage_stats, whole)
                run_rows += whole.num_rows
                records = _records_of(whole)
                models = [r for role in _roles_for(parts[k])
                          for r in (records.get(role) or [spec_records[role]])]
                meta = with_models(FEATURE_SCHEMA, models).metadata
                meta[FINGERPRINT_KEY] = fingerprints[k].encode()
                meta[SETTINGS_KEY] = json.dumps(settings).encode()
                features = _feature_table(whole, meta)
                expected = parts[k].column("utterance_id")
                if not features.column("utterance_id").equals(expected):
                    raise RuntimeError(f"partition {k}: the rows out are not the rows in")
                _write_atomic(features, output_dir / part_name(k))
                done += 1
                say(f"[preprocess] {part_name(k)} written ({done}/{len(pending)} this run, "
                    f"{features.num_rows} rows)")
        if buffers or done != len(pending):
            missing = sorted(set(pending) - {k for k in pending if counts[k] == parts[k].num_rows})
            raise RuntimeError(f"the pass ended with partitions incomplete: {missing}")
        try:
            (output_dir / STATS).write_text(dataset.stats())
        except Exception:  # noqa: BLE001 - statistics are a nicety
            pass
    run_seconds = time.perf_counter() - run_started

    # Stale parts from an earlier, longer table (kept when --limit cut this run short).
    for extra in ([] if limit is not None else output_dir.glob("part-*.parquet")):
        try:
            index = int(extra.stem.split("-")[1])
        except (IndexError, ValueError):
            continue
        if index >= n_parts:
            extra.unlink()

    summary = _summarise(output_dir, parts, fingerprints, rows_in, skipped, stage_stats,
                         run_rows, run_seconds, settings, config)
    _write_json(summary["manifest"], output_dir / MANIFEST)
    del summary["manifest"]
    summary["seconds"] = round(time.perf_counter() - started, 3)
    _write_json(summary, output_dir / SUMMARY)
    say(format_summary(summary))
    return PreprocessOutcome(output_dir, summary, len(pending), skipped,
                             time.perf_counter() - started)


def _summarise(output_dir: Path, parts, fingerprints, rows_in, skipped, stage_stats, run_rows,
               run_seconds, settings, config) -> dict:
    status: Counter = Counter()
    failures: Counter = Counter()
    models: list[dict] = []
    listing = []
    rows_out = 0
    for k, part in enumerate(parts):
        path = output_dir / part_name(k)
        table = pq.read_table(path, columns=["utterance_id", "status", "failure_reason"])
        if table.num_rows != part.num_rows or not table.column("utterance_id").equals(
                part.column("utterance_id")):
            raise RuntimeError(f"{path} does not hold the rows of partition {k}")
        rows_out += table.num_rows
        status.update(table.column("status").to_pylist())
        failures.update(r for r in table.column("failure_reason").to_pylist() if r)
        for record in models_of(pq.read_schema(path)):
            if record not in models:
                models.append(record)
        listing.append({"file": part_name(k), "rows": part.num_rows, "fingerprint": fingerprints[k],
                        "first_id": part.column("utterance_id")[0].as_py(),
                        "last_id": part.column("utterance_id")[-1].as_py()})
    if rows_out != rows_in:
        raise RuntimeError(f"{rows_in} utterances in, {rows_out} feature rows out")
    stages = {}
    for stage in STAGES:
        if stage in stage_stats:
            entry = stage_stats[stage]
            stages[stage] = {"rows": entry["rows"], "busy_s": round(entry["busy_s"], 3),
                             "utterances_per_s": round(entry["rows"] / entry["busy_s"], 3)
                             if entry["busy_s"] > 0 else None,
                             "load_s": round(entry["load_s"], 3)}
    ordered_status = {k: status.get(k, 0) for k in ("ok", "text_only", "failed")}
    manifest = {"features_version": FEATURES_VERSION, "rows": rows_out,
                "partition_rows": config.partition_rows, "profile": config.profile,
                "settings": settings, "models": models, "partitions": listing}
    return {
        "rows_in": rows_in, "rows_out": rows_out, "status": ordered_status,
        "failures": dict(failures.most_common()),
        "partitions": {"total": len(parts), "written": len(parts) - skipped, "skipped": skipped},
        "this_run": {"rows": run_rows, "seconds": round(run_seconds, 3),
                     "utterances_per_s": round(run_rows / run_seconds, 3) if run_rows else None,
                     "stages": stages},
        "models": models, "output_dir": str(output_dir), "manifest": manifest,
    }


# -- command line -------------------------------------------------------------------------

def _default_out(utterances: str) -> Path:
    path = Path(utterances).resolve()
    folder = path if path.is_dir() else path.parent
    return folder.parent / "features"


def cmd_preprocess(args) -> int:
    from erc.backends.base import MissingWeightsError
    from erc.config import RunConfig, load_config

    run_config = load_config(args.config) if args.config else RunConfig()
    config = run_config.preprocess
    if args.profile:
        config.profile = args.profile
    if args.partition_rows:
        config.partition_rows = args.partition_rows
    if args.address:
        run_config.ray.address = args.address
    out = Path(args.out) if args.out else (
        Path(config.output_dir) if config.output_dir else
        (Path(run_config.output_dir) / "features" if args.config else _default_out(args.utterances)))
    try:
        outcome = run_preprocess(args.utterances, out, config, ray=run_config.ray, limit=args.limit,
                                 force=args.force, progress=None if args.json else print)
    except MissingWeightsError as err:
        print(f"erc: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(outcome.summary, indent=2))
    else:
        print(f"\npreprocess done in {outcome.seconds:.1f} s: {out / 'part-*.parquet'}, "
              f"{out / SUMMARY}")
    return 0


def register(commands) -> argparse.ArgumentParser:
    """Adds ``erc preprocess`` to an argparse subparsers object."""
    parser = commands.add_parser(
        "preprocess", help="decode media, run Whisper, faces, speaker and text models once",
        description="The preprocessing pass on Ray Data: decodes each utterance's audio and "
                    "sampled frames, transcribes it (Whisper), detects and embeds every face, "
                    "embeds the speaker and the corpus transcript, and writes "
                    "features/part-*.parquet (resumable: finished partitions are skipped), "
                    "manifest.json and summary.json.")
    parser.add_argument("utterances", help="folder holding utterances.parquet (from `erc corpus "
                                           "ingest`), or the parquet file")
    parser.add_argument("--out", help="folder for the feature parts (default: the config's, "
                                      "else 'features' beside the utterance folder)")
    parser.add_argument("--profile", choices=["offline", "paper"],
                        help="model profile (default: the config's, else offline)")
    parser.add_argument("--config", help="YAML run config (its `preprocess:` and `ray:` sections)")
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else embedded)")
    parser.add_argument("--limit", type=int, help="only the first N utterances (by id)")
    parser.add_argument("--partition-rows", type=int, help="rows per output part")
    parser.add_argument("--force", action="store_true", help="recompute up-to-date partitions")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(func=cmd_preprocess)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``erc preprocess`` on its own (what jobs/preprocess.py runs)."""
    from erc.cli import stage_main

    return stage_main(register, ["preprocess", *(sys.argv[1:] if argv is None else argv)])
