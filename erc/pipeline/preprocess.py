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
exactly once (checked per partition and in total). While the pass runs, a line per stage
(``erc.pipeline.progress``: utterances/s, busy share, capacity, ETA) replaces Ray Data's
progress bars; the busy shares and the timeline of the run go into the summary.

Statuses: "ok"; "text_only" (the row has no media: text embedding only; failure_reason
"missing_media" when its media file was missing at ingest, the path in failure_detail);
"failed" with a reason (``FAILURE_REASONS``). Rows whose media failed still get the text
embedding of their transcript.

The pass returns what the preprocess stage (``erc.stages.preprocess``) records in the
folder's ``manifest.json``: the partitions (file, rows, fingerprint, id range), the models,
the settings, and the summary (rows in and out, statuses, failures by reason, text-only
rows whose media was missing, seconds and utterances/s per stage). A part file this run
does not list stays untouched unless the folder's previous manifest listed it (erc wrote
it): those are removed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from erc import cluster, io
from erc.errors import ConfigError
from erc.features import FEATURE_SCHEMA, models_of, with_models
from erc.fingerprint import digest, stat_of
from erc.pipeline.progress import PassProgress, workers_of
from erc.pipeline.stages import INPUT_COLUMNS, MISSING_MEDIA, MODEL_STAGES, PASS, STAGE_OF, DecodeStage, worker_env
from erc.recipes import PreprocessConfig, RayConfig
from erc.schema import MISSING_MEDIA_META

# Bump when what the stages compute changes, so finished partitions are recomputed.
# 2: speech_segments (voice activity) from the decode stage; 3: NaN audio, DC-offset
# silence and frames too small for a face decided by decode and the detector; 4: a WAV
# header declaring more than max_clip_seconds over less data is judged by its data, and
# text-only rows whose media file was missing at ingest say so (missing_media); 5:
# faster-whisper encodes a short clip over its own window (asr encoder_window); 6: audio
# mostly at full scale fails as clipping; 7: the text stage writes text_layers; 8: audio
# shorter than min_clip_seconds fails as too_short; 9: model actors start with
# OMP_NUM_THREADS set to their threads (stages.worker_env: CTranslate2's arithmetic follows it).
FEATURES_VERSION = 9
STATS = "ray_data_stats.txt"
FINGERPRINT_KEY = b"erc.fingerprint"
SETTINGS_KEY = b"erc.settings"

FAILURE_REASONS = {
    "unreadable_media": "the media is missing, corrupt, truncated or not a file "
                        "(or the segment is empty or lies outside it)",
    "no_audio": "the media has no audio stream",
    "silence": "the audio is silent (RMS below the threshold, or no speech for the speaker model)",
    "clipping": "the audio is clipped: at least max_clipped_share of its samples at full scale",
    "no_frames": "video was expected but no frame could be decoded",
    "overlong_clip": "the utterance is longer than max_clip_seconds (a mis-cut clip)",
    "too_short": "the audio is too short to embed: shorter than min_clip_seconds, or than the "
                 "speaker model's minimum (failure_detail gives its length)",
    "model_error": "a model raised on this utterance (the role and error are in failure_detail)",
    # the one reason of a text_only row, not a failure
    "missing_media": "status text_only: the media file the row named was missing at ingest "
                     "(reader option keep_missing_media; the path is in failure_detail)",
}


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


PART_NAME = re.compile(r"part-\d{5}\.parquet")


def parts_listed(manifest: dict | None) -> list[str]:
    """The part files a folder's last manifest lists: only names this pass writes, so a
    damaged or edited manifest never names another file (the user's, or one outside the
    folder) for removal."""
    entries = (manifest or {}).get("partitions")
    if not isinstance(entries, list):
        return []
    return [entry["file"] for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get("file"), str)
            and PART_NAME.fullmatch(entry["file"])]


@dataclass
class PreprocessOutcome:
    output_dir: Path
    summary: dict
    written: int  # partitions computed by this run
    skipped: int  # partitions already up to date
    seconds: float
    record: dict = field(default_factory=dict)  # partitions, models, settings: the manifest's


# -- inputs -------------------------------------------------------------------------------

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
        return [role for stage in MODEL_STAGES for role in stage.roles]
    return ["text"]


def _missing_media(table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """Of each row, the path it named for a media file missing at ingest (its meta's
    MISSING_MEDIA_META entry, the media's before the audio's), null when none."""
    if "meta" not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    meta = table.column("meta")
    return pc.coalesce(*(pc.map_lookup(meta, key, "first") for key in MISSING_MEDIA_META.values()))


def fingerprint(part: pa.Table, settings: dict, records: list[dict]) -> str:
    """Of a partition's rows (ids, transcripts, media paths, segments, the paths of media
    missing at ingest, media sizes and modification times), the pass's settings (decoding,
    text layers) and the model records."""
    names = [*INPUT_COLUMNS, *([MISSING_MEDIA] if MISSING_MEDIA in part.column_names else [])]
    columns = {name: part.column(name).to_pylist() for name in names}
    rows = [[columns[name][i] for name in names]
            + [stat_of(columns["media_path"][i]), stat_of(columns["audio_path"][i])]
            for i in range(part.num_rows)]
    return digest(FEATURES_VERSION, settings, records, rows)


def _existing_fingerprint(path: Path, rows: int) -> str | None:
    try:
        meta = pq.read_metadata(path)
        if meta.num_rows != rows:
            return None
        return (meta.schema.to_arrow_schema().metadata or {}).get(FINGERPRINT_KEY, b"").decode() or None
    except Exception:
        return None


@dataclass
class Plan:
    """The partitions of a pass: rows, fingerprints and the models that serve them."""
    parts: list[pa.Table]
    fingerprints: list[str]
    specs: dict  # role -> resolved ModelSpec
    records: dict  # role -> ModelRecord dict
    settings: dict


def plan(table: pa.Table, config: PreprocessConfig, limit: int | None = None,
         download: bool = True) -> Plan:
    """Cuts the utterance table (sorted by id) into partitions and fingerprints each."""
    from erc.backends.registry import make_record, resolve

    table = table.select(list(INPUT_COLUMNS)).append_column(
        MISSING_MEDIA, _missing_media(table)).sort_by("utterance_id")
    if limit is not None:
        table = table.slice(0, max(0, limit))
    n_parts = -(-table.num_rows // config.partition_rows)
    parts = [table.slice(k * config.partition_rows, config.partition_rows) for k in range(n_parts)]
    settings = {**dataclasses.asdict(config.decoding), "text_layers": config.text_layers}
    specs = model_specs(config)
    needed = sorted({role for part in parts for role in _roles_for(part)})
    resolved = {role: resolve(specs[role], download=download) for role in needed}
    records = {role: make_record(spec).to_dict() for role, spec in resolved.items()}
    # A model's options (beam size, language, thresholds) change what it computes; none
    # given adds nothing, so the parts made with a profile's defaults keep their prints.
    models = {role: {**record, "options": resolved[role].options} if resolved[role].options
              else record for role, record in records.items()}
    prints = [fingerprint(part, settings, [models[role] for role in _roles_for(part)])
              for part in parts]
    return Plan(parts, prints, resolved, records, settings)


def pending_parts(work: Plan, output_dir: Path, force: bool = False) -> list[int]:
    """The partitions of ``work`` to compute: all with ``force``, else those whose part file
    in ``output_dir`` is missing or holds another fingerprint (an interrupted pass's
    finished partitions are kept)."""
    return [k for k, part in enumerate(work.parts) if force or _existing_fingerprint(
        Path(output_dir) / part_name(k), part.num_rows) != work.fingerprints[k]]


# -- resources ----------------------------------------------------------------------------

def stage_resources(config: PreprocessConfig, stages: list[str], cpus: float, gpus: float,
                    node_cpus: list[float] | None = None, gpu_nodes: int = 1,
                    gpu_node_cpus: float | None = None, rows: int | None = None) -> dict:
    """batch_size, concurrency, num_cpus, num_gpus (and accelerator_type, resources) for
    each stage, from the config with the stage's own defaults (``PassStage.resources``);
    CPUs left unset are shared out so that every stage's actors and one decode task fit on
    the cluster; GPUs left unset are shared between the model stages when a node has any
    (``gpus``: the GPUs of the largest GPU node), and their actor pools, unless sized in
    the config, grow to fill ``gpu_nodes`` such nodes (-1: as many as the autoscaler
    brings, up to 64 actors). ``gpu_node_cpus``: the CPUs of a GPU node; the GPU stages'
    actors, which share one, ask for no more CPUs together (else the last of them would
    wait forever).

    ``node_cpus`` (the CPUs of each node) matters on a multi-node cluster: a decode task
    must fit on one node next to the actors placed there, so it asks for at most half of
    the smallest node, and that much is kept free on every node (the actors' share is
    what is left), so that wherever the actors land some node can still run a decode
    task.

    A model stage on CPUs whose pool the config does not size gets actors in proportion to
    what an utterance costs it (``PassStage.cpu_seconds``): of 2 CPUs, ASR takes 2 actors
    and the others one each; of 16, faces 7, ASR 9, speaker 2. ``rows`` (the rows to compute)
    bounds each pool to one actor per ``BATCHES_PER_ACTOR`` batches, so that a small pass
    does not load a model more often than it uses it."""
    nodes = [c for c in (node_cpus or []) if c > 0] or [cpus]
    model_names = [stage.name for stage in MODEL_STAGES]
    chosen, sized = {}, set()
    for stage in stages:
        given = {k: v for k, v in dataclasses.asdict(getattr(config, stage)).items() if v is not None}
        chosen[stage] = {**STAGE_OF[stage].resources, **given}
        if "concurrency" in given:
            sized.add(stage)
        if stage in model_names and "num_gpus" not in given:
            users = [s for s in stages if s in model_names]
            share = min(1.0, gpus / len(users)) if gpus >= 1 else 0.0
            chosen[stage]["num_gpus"] = share
            if share and gpu_nodes != 1 and "concurrency" not in given:
                per_node = max(1, int(gpus / (len(users) * share) + 1e-9))
                chosen[stage]["concurrency"] = [1, min(64, per_node * gpu_nodes)
                                                if gpu_nodes > 0 else 64]

    on_cpu = [s for s in stages if s in model_names and not chosen[s]["num_gpus"]]
    cost = sum(STAGE_OF[s].cpu_seconds for s in on_cpu)
    for stage in [s for s in on_cpu if s not in sized] if cost > 0 else []:
        wanted = math.ceil(cpus * STAGE_OF[stage].cpu_seconds / cost - 1e-9)
        if rows is not None:
            wanted = min(wanted, math.ceil(rows / (chosen[stage]["batch_size"] * BATCHES_PER_ACTOR)))
        chosen[stage]["concurrency"] = max(1, wanted)

    def actors(stage) -> int:
        size = chosen[stage]["concurrency"]
        return int(size[0] if isinstance(size, list) else size or 1)

    decode = chosen.get("decode")
    if decode is not None:
        decode["num_cpus"] = min(float(decode["num_cpus"] or 1.0), max(0.25, min(nodes) / 2))
    model = [s for s in stages if s in model_names]
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
    return chosen


BATCHES_PER_ACTOR = 4  # a CPU pool grows by one actor per this many batches of rows


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


def build_dataset(parts: list[pa.Table], specs: dict, config: PreprocessConfig, resources: dict):
    """The Ray Data pipeline over the pending partitions. The rows (ids, transcripts, paths)
    go in as blocks of one decode batch each, in id order, so decoding spreads over the
    cluster and partitions complete one after another."""
    import ray.data

    decode = resources["decode"]
    rows = pa.concat_tables(parts).to_pylist()
    block_rows = int(decode["batch_size"])
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // block_rows)))
    dataset = dataset.map_batches(
        DecodeStage(config.decoding), batch_format="pyarrow",
        batch_size=int(decode["batch_size"]), num_cpus=decode["num_cpus"],
        concurrency=decode["concurrency"], **cluster.ray_options(stage_request(decode)))
    for stage in MODEL_STAGES:
        if stage.name not in resources:
            continue
        res = resources[stage.name]
        stage_specs = {role: dataclasses.asdict(specs[role]) for role in stage.roles}
        kwargs = {"specs": stage_specs, "num_cpus": res["num_cpus"], "num_gpus": res["num_gpus"],
                  **stage.options(config)}
        remote = {"num_cpus": res["num_cpus"], **cluster.ray_options(stage_request(res)),
                  **worker_env(res["num_cpus"])}
        dataset = dataset.map_batches(
            stage, fn_constructor_kwargs=kwargs, batch_format="pyarrow",
            batch_size=int(res["batch_size"]), compute=_compute(res["concurrency"]), **remote)
    return dataset


def _cluster_stage_resources(config: PreprocessConfig, stages: list[str], say,
                             rows: int | None = None) -> dict:
    """stage_resources for the connected cluster: GPUs and CPUs from the node types it can
    launch (erc.cluster), every stage's request checked against them."""
    from erc import runtime

    model_names = {stage.name for stage in MODEL_STAGES}
    auto_gpu = [s for s in stages if s in model_names and getattr(config, s).num_gpus is None]
    plan = cluster.gpu_plan(" / ".join(f"preprocess.{s}.num_gpus" for s in auto_gpu)) \
        if auto_gpu else None
    if plan is not None and not runtime.embedded():
        say(f"[preprocess] auto GPUs from {plan.source}")
    cpus, node_cpus = cluster.task_cpus()
    resources = stage_resources(config, stages, cpus, plan.per_node if plan else 0.0,
                                node_cpus, plan.nodes if plan else 1,
                                plan.node_cpus if plan else None, rows)
    for stage, chosen in resources.items():
        cluster.check_feasible(stage_request(chosen), f"preprocess.{stage}")
    return resources


# -- output -------------------------------------------------------------------------------

def _records_of(table: pa.Table) -> dict[str, list[dict]]:
    """The model records the rows carry (role -> distinct records)."""
    found: dict[str, list[dict]] = defaultdict(list)
    for stage in MODEL_STAGES:
        name = f"_rec_{stage.name}"
        if name not in table.column_names:
            continue
        for text in pc.unique(table.column(name).drop_null()).to_pylist():
            for record in json.loads(text):
                if record not in found[record["role"]]:
                    found[record["role"]].append(record)
    return found


def _feature_table(table: pa.Table, metadata: dict) -> pa.Table:
    columns = []
    for field_ in FEATURE_SCHEMA:
        if field_.name in table.column_names:
            columns.append(table.column(field_.name).cast(field_.type))
        else:
            columns.append(pa.nulls(table.num_rows, field_.type))
    schema = FEATURE_SCHEMA.with_metadata(metadata)
    out = pa.Table.from_arrays(columns, schema=schema)
    return out.sort_by("utterance_id")


def _add_stage_stats(stats: dict, table: pa.Table) -> None:
    for stage in PASS:
        seconds = f"_s_{stage.name}"
        if seconds not in table.column_names:
            continue
        entry = stats.setdefault(stage.name, {"rows": 0, "busy_s": 0.0, "load_s": 0.0})
        entry["busy_s"] += pc.sum(table.column(seconds)).as_py() or 0.0
        if not stage.roles:
            entry["rows"] += table.num_rows
        else:
            records = table.column(f"_rec_{stage.name}")
            entry["rows"] += len(records) - records.null_count
            entry["load_s"] += pc.sum(table.column(f"_load_{stage.name}")).as_py() or 0.0


def format_summary(summary: dict) -> str:
    lines = [f"rows in {summary['rows_in']:,}, rows out {summary['rows_out']:,}: "
             + ", ".join(f"{k} {v:,}" for k, v in summary["status"].items())]
    if summary.get("missing_media"):
        lines.append(f"media missing at ingest: {summary['missing_media']:,} of the text_only "
                     f"rows (their failure_detail names the file)")
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
                         f"{entry['utterances_per_s'] or 0:8.2f} {entry['load_s']:7.2f}")
    models = ", ".join(f"{m['role']}={m['backend']}:{m['name']}" for m in summary["models"])
    lines.append(f"models: {models}")
    return "\n".join(lines)


def _pace(done: int, total: int, seconds: float) -> str:
    """", 64/84 utterances, 0.31 utt/s, about 1 min left" for a progress line."""
    rate = done / seconds if seconds > 0 else 0.0
    text = f", {done:,}/{total:,} utterances, {rate:.2f} utt/s"
    if done < total and rate > 0:
        left = (total - done) / rate
        text += f", about {left / 60:.0f} min left" if left >= 90 else f", about {left:.0f} s left"
    return text


# -- the pass -----------------------------------------------------------------------------

def run_preprocess(table: pa.Table, output_dir: str | Path, config: PreprocessConfig | None = None,
                   ray: RayConfig | None = None, limit: int | None = None, force: bool = False,
                   progress: Callable[[str], None] | None = print,
                   previous: dict | None = None) -> PreprocessOutcome:
    """Runs the pass over the utterance ``table`` into ``output_dir`` (the folder of the
    part files, claimed by the caller), skipping partitions that are up to date unless
    ``force``. ``previous``: the folder's last manifest (its parts may be removed)."""
    started = time.perf_counter()
    config = config or PreprocessConfig()
    ray = ray or RayConfig()
    say = progress or (lambda _message: None)
    output_dir = Path(output_dir)
    work = plan(table, config, limit)
    parts, fingerprints = work.parts, work.fingerprints
    rows_in = sum(p.num_rows for p in parts)
    pending = pending_parts(work, output_dir, force)
    skipped = len(parts) - len(pending)
    say(f"[preprocess] {rows_in:,} utterances in {len(parts)} partition(s) of "
        f"{config.partition_rows}: {skipped} up to date, {len(pending)} to compute -> {output_dir}")

    stage_stats: dict = {}
    tracker = None
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
        stages = [s.name for s in PASS] if with_media else ["decode", "text"]
        resources = _cluster_stage_resources(config, stages, say,
                                             sum(parts[k].num_rows for k in pending))
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
        # The stage actors resolve their weights on their own nodes, from the specs (not
        # from the paths found here: a model cache may lie elsewhere on another node);
        # on a cluster every node up that can run a stage is checked first (the embedded
        # Ray's one node is this one, where plan() found them).
        specs = model_specs(config)
        for stage in MODEL_STAGES if not runtime.embedded() else ():
            if stage.name in resources:
                checked = cluster.check_weights({r: specs[r] for r in stage.roles},
                                                stage_request(resources[stage.name]),
                                                f"preprocess.{stage.name}")
                if checked:
                    say(f"[preprocess] {stage.name}: weights found on the {checked} node(s) "
                        "up that can run it")
        pending_rows = sum(parts[k].num_rows for k in pending)
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False  # PassProgress says it
        tracker = PassProgress(pending_rows, workers_of(resources, float(resources_now.get("CPU", 1))),
                               say)
        inputs = [parts[k].append_column("_part", pa.array([k] * parts[k].num_rows, pa.int32()))
                  for k in pending]
        dataset = build_dataset(inputs, specs, config, resources)

        buffers: dict[int, list[pa.Table]] = defaultdict(list)
        counts: Counter = Counter()
        done = 0
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            tracker.add(batch)
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
                          for r in (records.get(role) or [work.records[role]])]
                meta = with_models(FEATURE_SCHEMA, models).metadata
                meta[FINGERPRINT_KEY] = fingerprints[k].encode()
                meta[SETTINGS_KEY] = json.dumps(work.settings).encode()
                features = _feature_table(whole, meta)
                expected = parts[k].column("utterance_id")
                if not features.column("utterance_id").equals(expected):
                    raise RuntimeError(f"partition {k}: the rows out are not the rows in")
                io.write_parquet(output_dir / part_name(k), features)
                done += 1
                say(f"[preprocess] {part_name(k)} written: {done}/{len(pending)} partitions"
                    + _pace(run_rows, pending_rows, time.perf_counter() - run_started))
        if buffers or done != len(pending):
            missing = sorted(set(pending) - {k for k in pending if counts[k] == parts[k].num_rows})
            raise RuntimeError(f"the pass ended with partitions incomplete: {missing}")
        try:
            io.write_text(output_dir / STATS, dataset.stats())
        except Exception:
            pass
    run_seconds = time.perf_counter() - run_started

    # Parts an earlier run of erc listed that this one does not (a longer table): removed,
    # unless this run was cut short by --limit. Files no manifest listed are left alone.
    listed_now = {part_name(k) for k in range(len(parts))}
    if limit is None:
        for name in parts_listed(previous):
            if name not in listed_now and (output_dir / name).exists():
                io.remove_owned(output_dir, name)

    summary, record = _summarise(output_dir, parts, fingerprints, rows_in, skipped, stage_stats,
                                 run_rows, run_seconds, work.settings, config)
    if tracker is not None:  # busy shares and the timeline of this run
        for stage, figures in tracker.stage_figures().items():
            summary["this_run"]["stages"].get(stage, {}).update(
                workers=tracker.workers[stage], busy_share=figures["busy_share"])
        summary["this_run"]["timeline"] = tracker.timeline
    summary["seconds"] = round(time.perf_counter() - started, 3)
    say(format_summary(summary))
    return PreprocessOutcome(output_dir, summary, len(pending), skipped,
                             time.perf_counter() - started, record)


def _summarise(output_dir: Path, parts, fingerprints, rows_in, skipped, stage_stats, run_rows,
               run_seconds, settings, config) -> tuple[dict, dict]:
    status: Counter = Counter()
    failures: Counter = Counter()
    missing_media = 0
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
        statuses = table.column("status").to_pylist()
        status.update(statuses)
        for state, reason in zip(statuses, table.column("failure_reason").to_pylist()):
            if state == "text_only" and reason == "missing_media":
                missing_media += 1
            elif reason:
                failures[reason] += 1
        for record in models_of(pq.read_schema(path)):
            if record not in models:
                models.append(record)
        listing.append({"file": part_name(k), "rows": part.num_rows, "fingerprint": fingerprints[k],
                        "first_id": part.column("utterance_id")[0].as_py(),
                        "last_id": part.column("utterance_id")[-1].as_py()})
    if rows_out != rows_in:
        raise RuntimeError(f"{rows_in} utterances in, {rows_out} feature rows out")
    stages = {}
    for stage in PASS:
        if stage.name in stage_stats:
            entry = stage_stats[stage.name]
            stages[stage.name] = {
                "rows": entry["rows"], "busy_s": round(entry["busy_s"], 3),
                "utterances_per_s": round(entry["rows"] / entry["busy_s"], 3)
                if entry["busy_s"] > 0 else None, "load_s": round(entry["load_s"], 3)}
    ordered_status = {k: status.get(k, 0) for k in ("ok", "text_only", "failed")}
    record = {"features_version": FEATURES_VERSION, "rows": rows_out,
              "partition_rows": config.partition_rows, "profile": config.profile,
              "settings": settings, "models": models, "partitions": listing}
    summary = {
        "rows_in": rows_in, "rows_out": rows_out, "status": ordered_status,
        "failures": dict(failures.most_common()),
        "missing_media": missing_media,  # of the text_only rows: their media file was missing
        "partitions": {"total": len(parts), "written": len(parts) - skipped, "skipped": skipped},
        "this_run": {"rows": run_rows, "seconds": round(run_seconds, 3),
                     "utterances_per_s": round(run_rows / run_seconds, 3) if run_rows else None,
                     "stages": stages},
        "models": models, "output_dir": str(output_dir),
    }
    return summary, record
