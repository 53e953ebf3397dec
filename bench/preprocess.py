"""Preprocessing throughput: the Ray Data pass (decode tasks + model actor pools) next to a
plain sequential loop (decode, then each model, one utterance at a time) over the same real
clips and the same models, in one run. Uses CUDA when a GPU is visible (both sides).

    .venv/bin/python bench/preprocess.py                          # the 84-clip sample
    .venv/bin/python bench/preprocess.py --corpus /data/erc-scale/corpus   # the scale corpus
    .venv/bin/python bench/preprocess.py --corpus runs/meld/corpus --limit 500
    .venv/bin/python bench/preprocess.py --corpus CORPUS --resume-check   # + kill and resume

``--corpus`` is an ingested corpus (a folder holding utterances.parquet, or the file) or a
manifest (``erc corpus ingest`` format); the scale corpus comes from
``python -m erc.samples.build_scale_corpus``.

Printed, for the Ray pass and the sequential loop side by side (the pass first, so that its
driver is a process that has loaded no model; then the loop, in the same process):
utterances/s of the whole pass (with and without model loading) and, per stage, utterances
per busy second of one worker, the workers and the share of the wall time they were busy;
CPU seconds per utterance per stage (all threads; on a machine shared with other work a far
steadier figure than wall time); peak resident memory of the driver and of the Ray workers
(each, and together; a worker's RSS counts the object-store pages it maps), object-store
peak and spilled bytes; GPU utilisation when there is a GPU; and how far the two sides'
features agree. Written to ``--out``: bench.json (every figure and the sampled series) and
throughput.png (utterances done, utterances/s and memory over time; a stall shows as a
flat stretch, a leak as a slope).

``--resume-check`` then runs the pass again in a separate driver, kills one of its model
workers (SIGKILL) at a third of the clean pass's time and the driver itself once half the
partitions are written, resumes in this process, and compares the output with the clean
run's: ids, statuses and texts exactly, floats to 1e-5 (see ``compare_features``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from erc import runtime  # noqa: E402
from erc.artifacts import load_corpus, read_features  # noqa: E402
from erc.features import FEATURE_SCHEMA  # noqa: E402
from erc.media.decode import decode_utterance  # noqa: E402
from erc.pipeline.preprocess import model_specs  # noqa: E402
from erc.pipeline.stages import PASS  # noqa: E402
from erc.recipes import PreprocessConfig, RayConfig, load_run_config  # noqa: E402
from erc.stages.preprocess import preprocess  # noqa: E402

SAMPLE = REPO / "erc" / "samples" / "ravdess_dialogues" / "manifest.csv"
STAGES = tuple(stage.name for stage in PASS)
MB = 1 << 20
AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")  # Ray's own services, not workers


def load_table(corpus: str | Path) -> pa.Table:
    """The utterance table of an ingested corpus, or of a manifest read as ingest would."""
    path = Path(corpus)
    ingested = path.suffix == ".parquet" or (path / "utterances.parquet").is_file()
    return load_corpus(path, format=None if ingested else "manifest")


# -- what the machine does meanwhile ------------------------------------------------------

class Sampler(threading.Thread):
    """Samples, every ``every_s`` seconds: this process's resident memory, each Ray worker's
    (the ``ray::`` processes under this process, agents left out), and the object store's
    bytes in use and spilled (the raylet's store stats, what ``ray memory --stats-only``
    prints). Worker RSS counts the object-store pages a worker has mapped."""

    def __init__(self, every_s: float = 0.5, ray_stats: bool = False):
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.every_s = every_s
        self.ray_stats = ray_stats
        self.started = time.monotonic()
        self.rows: list[dict] = []
        self.worker_peaks: dict[str, float] = {}  # process title -> peak RSS MB
        self.worker_cpu: dict[int, list[tuple[float, float]]] = {}  # pid -> [(t, CPU s)]
        self.worker_titles: dict[int, set[str]] = {}  # pid -> what it ran (an idle worker runs tasks)
        self._halt = threading.Event()
        self._state = None
        self._gpus = self._nvml()

    @staticmethod
    def _nvml() -> list:
        try:
            import pynvml

            pynvml.nvmlInit()
            return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # no NVIDIA driver: no GPU figures
            return []

    def _store(self) -> tuple[float, float] | None:
        try:
            import ray
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address

            if self._state is None:
                self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
            stats = get_memory_info_reply(self._state, timeout_seconds=5).store_stats
            return stats.object_store_bytes_used / MB, stats.spilled_bytes_total / MB
        except Exception:  # a sample missed is not a failure
            return None

    def sample(self) -> dict:
        row = {"t": round(time.monotonic() - self.started, 2),
               "driver_mb": self.me.memory_info().rss / MB, "workers_mb": 0.0}
        for proc in self.me.children(recursive=True):
            try:
                title = _title(proc)
                if not title.startswith("ray::") or title.startswith(AGENTS) or title.endswith("("):
                    continue
                rss = proc.memory_info().rss / MB
                cpu = sum(proc.cpu_times()[:2])  # user + system, all its threads
            except Exception:  # the process ended meanwhile
                continue
            row["workers_mb"] += rss
            key = f"{title} [{proc.pid}]"
            self.worker_peaks[key] = max(self.worker_peaks.get(key, 0.0), rss)
            self.worker_cpu.setdefault(proc.pid, []).append((row["t"], cpu))
            self.worker_titles.setdefault(proc.pid, set()).add(title)
        self.worker_cpu.setdefault(self.me.pid, []).append((row["t"], sum(self.me.cpu_times()[:2])))
        self.worker_titles.setdefault(self.me.pid, {"driver"})
        if self._gpus:
            import pynvml

            rates = [pynvml.nvmlDeviceGetUtilizationRates(h) for h in self._gpus]
            row["gpu_util"] = float(np.mean([r.gpu for r in rates]))
            row["gpu_mem_mb"] = sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in self._gpus) / MB
        if self.ray_stats:
            store = self._store()
            if store is not None:
                row["store_mb"], row["spilled_mb"] = store
        return row

    def run(self) -> None:
        while not self._halt.is_set():
            self.rows.append(self.sample())
            self._halt.wait(self.every_s)

    def stop(self) -> dict:
        self._halt.set()
        self.join()
        self.rows.append(self.sample())
        return self.summary()

    def worker_cpu_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds each process spent between two sample times, by what it ran (a
        process that started later counts from zero; one that ended, to its last sample)."""
        spent: dict[str, float] = {}
        for pid, points in self.worker_cpu.items():
            before = [c for t, c in points if t <= start]
            upto = [c for t, c in points if t <= end]
            if upto:
                ran = " ".join(sorted(self.worker_titles[pid] - {"ray::IDLE"})) or "ray::IDLE"
                spent[ran] = spent.get(ran, 0.0) + upto[-1] - (before[-1] if before else 0.0)
        return spent

    def summary(self) -> dict:
        def peak(key):
            values = [r[key] for r in self.rows if key in r]
            return round(max(values), 1) if values else None

        def halves(key):  # peak in the first and the second half of the run: flat or growing
            values = [r[key] for r in self.rows if key in r]
            if len(values) < 4:
                return None
            mid = len(values) // 2
            return [round(max(values[:mid]), 1), round(max(values[mid:]), 1)]

        busy = [r["gpu_util"] for r in self.rows if "gpu_util" in r]
        return {"gpu_util_mean": round(float(np.mean(busy)), 1) if busy else None,
                "gpu_mem_peak_mb": peak("gpu_mem_mb"),
                "driver_peak_mb": peak("driver_mb"), "workers_peak_mb": peak("workers_mb"),
                "store_peak_mb": peak("store_mb"), "spilled_mb": peak("spilled_mb"),
                "driver_halves_mb": halves("driver_mb"), "workers_halves_mb": halves("workers_mb"),
                "worker_peaks_mb": {k: round(v, 1) for k, v in sorted(self.worker_peaks.items())}}


# -- the sequential loop ------------------------------------------------------------------

def sequential(table: pa.Table, config: PreprocessConfig, device: str) -> dict:
    """Decode then each model, one utterance at a time; models loaded once (timed apart)."""
    from erc.backends.registry import load_backend

    specs = model_specs(config)
    started = time.perf_counter()
    models = {role: load_backend(spec, device=device) for role, spec in specs.items()}
    load_s = time.perf_counter() - started
    settings = config.decoding
    busy = dict.fromkeys(STAGES, 0.0)
    cpu = dict.fromkeys(STAGES, 0.0)  # this process's CPU seconds (all threads) per stage
    out, timeline = {}, [(0.0, 0)]
    rows = table.select(["utterance_id", "text", "media_path", "audio_path", "start_s", "end_s"]).to_pylist()

    def timed(stage, work, *args):
        """``work(*args)``, its wall and CPU seconds added to the stage's."""
        wall, used = time.perf_counter(), time.process_time()
        value = work(*args)
        busy[stage] += time.perf_counter() - wall
        cpu[stage] += time.process_time() - used
        return value

    def faces_of(frames):
        found = models["face_detect"].detect(frames) if frames else []
        return models["face_embed"].embed(frames, [[f.box for f in fs] for fs in found]) if found else []

    loop_started = time.perf_counter()
    for row in rows:
        got = timed("decode", decode_utterance, row["media_path"], row["audio_path"], row["start_s"],
                    row["end_s"], settings)
        result = {"status": "ok" if got.ok else "failed"}
        if got.ok:
            result["n_faces"] = sum(len(v) for v in timed("faces", faces_of, got.frames))
            result["asr_text"] = timed("asr", models["asr"].transcribe, [got.audio])[0].text
            result["speaker"] = timed("speaker", models["speaker"].embed, [got.audio])[0]
        if row["text"] and config.text_layers > 1:  # as the pass's text stage (text_layers)
            result["text"] = timed("text", models["text"].embed_with_layers, [row["text"]],
                                   config.text_layers)[0][0]
        elif row["text"]:
            result["text"] = timed("text", models["text"].embed, [row["text"]])[0]
        out[row["utterance_id"]] = result
        timeline.append((round(time.perf_counter() - loop_started, 3), len(out)))
    loop_s = time.perf_counter() - loop_started
    models.clear()  # the models' memory is freed before the figures are read
    gc.collect()
    return {"load_s": load_s, "loop_s": loop_s, "busy": busy, "cpu": cpu, "rows": out,
            "timeline": timeline}


# -- kill and resume ----------------------------------------------------------------------

def compare_features(got: pa.Table, want: pa.Table, tolerance: float = 1e-5) -> dict:
    """Rows, ids, statuses and strings equal; floats equal to ``tolerance`` (relative above
    1): {"identical": bool, "columns": {name: rows that differ}}."""
    def close(a, b) -> bool:
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
        if isinstance(a, float) and isinstance(b, float):
            return abs(a - b) <= tolerance * max(1.0, abs(a))
        return a == b

    if got.num_rows != want.num_rows:
        return {"identical": False, "rows": [got.num_rows, want.num_rows], "columns": {}}
    differ = {}
    for name in FEATURE_SCHEMA.names:
        a, b = got.column(name).to_pylist(), want.column(name).to_pylist()
        bad = sum(1 for x, y in zip(a, b) if not close(x, y))
        if bad:
            differ[name] = bad
    return {"identical": not differ, "rows": got.num_rows, "columns": differ}


def _parts(folder: Path) -> int:
    return len(list(folder.glob("part-*.parquet")))


def _title(proc) -> str:
    """A Ray worker's title without the method it is running:
    "ray::MapWorker(MapBatches(FaceStage)).submit" -> "ray::MapWorker(MapBatches(FaceStage))"."""
    title = proc.name() if proc.name().startswith("ray::") else (proc.cmdline() or [""])[0]
    return title[:title.rindex(")") + 1] if ")" in title else title.split(".")[0]


def _model_workers() -> list:
    """The Ray processes running a model stage (their title names the stage class)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        title = proc.info["name"] or ""
        if not title.startswith("ray::"):
            title = " ".join(proc.info["cmdline"] or [])
        if title.startswith("ray::") and "Stage" in title:
            found.append(proc)
    return found


def resume_check(table: pa.Table, config: PreprocessConfig, clean: Path, clean_s: float,
                 work: Path) -> dict:
    """A driver in its own process on this Ray: one model worker killed at a third of the
    clean pass's time, the driver killed once half the partitions are written (or at three
    quarters of that time); then resumed here and compared with the clean output."""
    import ray
    import yaml

    from erc.settings import to_data

    work.mkdir(parents=True, exist_ok=True)
    utterances = work / "utterances.parquet"
    pq.write_table(table, utterances)
    n_parts = -(-table.num_rows // config.partition_rows)
    (work / "run.yaml").write_text(yaml.safe_dump({"preprocess": to_data(config)}))
    out = work / "features"
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
           "PYTHONPATH": str(REPO)}
    log = open(work / "driver.log", "wb")
    started = time.monotonic()
    driver = subprocess.Popen(
        [sys.executable, str(REPO / "jobs" / "preprocess.py"), str(utterances), "--out", str(out),
         "--config", str(work / "run.yaml")], env=env, cwd=REPO, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)
    killed_worker, worker_kill_s, parts_at_driver_kill, driver_kill_s = None, None, None, None
    try:
        while driver.poll() is None:
            elapsed, parts = time.monotonic() - started, _parts(out)
            if killed_worker is None and elapsed >= clean_s / 3:
                workers = _model_workers()
                victim = next((p for p in workers if "Face" in p.name()), workers[0] if workers else None)
                if victim is not None:
                    killed_worker, worker_kill_s = _title(victim), round(elapsed, 1)
                    print(f"  {elapsed:.0f} s: killing worker {killed_worker} (pid {victim.pid}) at "
                          f"{parts}/{n_parts} partitions", flush=True)
                    victim.send_signal(signal.SIGKILL)
            if killed_worker is not None and parts < n_parts and (
                    parts >= max(1, n_parts // 2) or elapsed >= 0.75 * clean_s):
                parts_at_driver_kill, driver_kill_s = parts, round(elapsed, 1)
                print(f"  {elapsed:.0f} s: killing the driver at {parts}/{n_parts} partitions", flush=True)
                os.killpg(driver.pid, signal.SIGKILL)
                break
            time.sleep(0.2)
    finally:
        driver.wait(timeout=60)
        log.close()
    if parts_at_driver_kill is None:
        tail = (work / "driver.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"the driver ended (rc {driver.returncode}) before it could be killed:\n{tail}")
    resumed = preprocess(utterances, out, config, say=print)
    comparison = compare_features(read_features(out), read_features(clean))
    partitions = resumed.summary["partitions"]
    return {"partitions": n_parts, "worker_killed": killed_worker, "worker_kill_s": worker_kill_s,
            "driver_kill_s": driver_kill_s, "parts_at_driver_kill": parts_at_driver_kill,
            "resumed_skipped": partitions["skipped"], "resumed_written": partitions["written"],
            "resumed_s": round(resumed.seconds, 1), **comparison}


# -- report -------------------------------------------------------------------------------

def plot(path: Path, seq: dict, seq_memory: list[dict], ray_timeline: list, ray_memory: list[dict],
         ray_offset: float, window_s: float = 60.0) -> None:
    """Utterances done, utterances/s over a sliding window, and memory, against time: the
    two runs one after the other on one time axis (a stall shows as a flat stretch and a
    dip, a leak as a slope)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(timeline, offset):
        t = np.array([p[0] for p in timeline], dtype=float)
        done = np.array([p[1] for p in timeline], dtype=float)
        grid = np.arange(0.0, t[-1] + 1.0, 1.0) if len(t) else np.zeros(0)
        at = done[np.searchsorted(t, grid, side="right") - 1] if len(t) else grid
        before = np.interp(grid - window_s, grid, at, left=0.0)
        return grid + offset, at, (at - before) / np.minimum(window_s, np.maximum(grid, 1.0))

    fig, (count, rate, memory) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    runs = [(ray_timeline, ray_offset, "ray data pass", "C1")]  # then the loop's
    if seq:
        runs.append((seq["timeline"], seq["offset"], "sequential loop", "C0"))
    for timeline, offset, label, colour in runs:
        t, done, per_s = series(timeline, offset)
        count.plot(t, done, colour, label=label)
        rate.plot(t, per_s, colour, label=label)
    count.set_ylabel("utterances done")
    rate.set_ylabel(f"utterances/s ({window_s:.0f} s window)")
    for axis in (count, rate):
        axis.legend()
        axis.grid(alpha=0.3)
    for rows, style in ((ray_memory, "-"), (seq_memory, ":")):
        t = [r["t"] for r in rows]
        memory.plot(t, [r["driver_mb"] for r in rows], "C0" + style, label="driver RSS")
        memory.plot(t, [r["workers_mb"] for r in rows], "C1" + style, label="Ray workers RSS (sum)")
        if any("store_mb" in r for r in rows):
            memory.plot([r["t"] for r in rows if "store_mb" in r],
                        [r["store_mb"] for r in rows if "store_mb" in r], "C2" + style,
                        label="object store in use")
    handles, labels = memory.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    memory.legend(unique.values(), unique.keys())
    memory.set_ylabel("MiB")
    memory.set_xlabel("seconds since the bench started (the Ray pass, then the sequential loop dotted)")
    memory.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


STAGE_OF_WORKER = {stage.__name__: stage.name for stage in PASS}  # "FaceStage" -> "faces"


def cpu_per_utterance(seq: dict | None, n: int, sampler: Sampler, timeline: list,
                      offset: float) -> dict | None:
    """CPU seconds per utterance per stage, for the loop (its whole run) and for the Ray
    workers between the pass's first output and its last (so actor start-up is left out):
    a figure the other load on a shared machine changes far less than wall time."""
    if len(timeline) < 3 or timeline[-1][1] <= timeline[1][1]:
        return None
    start, end = offset + timeline[1][0], offset + timeline[-1][0]
    rows = timeline[-1][1] - timeline[1][1]
    spent: dict[str, float] = {}
    for key, seconds in sampler.worker_cpu_between(start, end).items():
        stage = next((v for k, v in STAGE_OF_WORKER.items() if k in key),
                     "driver" if key == "driver" else "ray internals")
        spent[stage] = spent.get(stage, 0.0) + seconds
    names = [*STAGES, "ray internals", "driver"]
    table = {}
    for stage in names:
        a = seq["cpu"][stage] / n if seq and stage in seq["cpu"] else None
        b = spent[stage] / rows if stage in spent else None
        table[stage] = (a, b)
    return {"stages": table, "rows": rows,
            "sequential": sum(seq["cpu"].values()) / n if seq else None,
            "sequential_cpu_per_wall": sum(seq["cpu"].values()) / seq["loop_s"] if seq else None,
            "ray": sum(spent.values()) / rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=str(SAMPLE),
                        help="an ingested corpus (folder or utterances.parquet) or a manifest "
                             "(default: the shipped sample's manifest)")
    parser.add_argument("--manifest", dest="corpus", help=argparse.SUPPRESS)  # the old name
    parser.add_argument("--limit", type=int, help="only the first N utterances (by id)")
    parser.add_argument("--config", help="YAML run config whose `preprocess:` section sets the "
                                         "stages' resources (e.g. bench/gpu/gpu.yaml)")
    parser.add_argument("--profile", help="model profile (default: the config's, else offline)")
    parser.add_argument("--cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    parser.add_argument("--partition-rows", type=int, help="rows per output part (default: the config's)")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_preprocess"),
                        help="folder for bench.json, throughput.png and the feature parts")
    parser.add_argument("--skip-sequential", action="store_true", help="the Ray pass only")
    parser.add_argument("--resume-check", action="store_true",
                        help="then kill a worker and the driver of a second run, resume, compare")
    args = parser.parse_args()

    runtime.apply_offline_env()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = load_table(args.corpus).sort_by("utterance_id")
    if args.limit:
        table = table.slice(0, args.limit)
    n = table.num_rows
    config = load_run_config(args.config).preprocess if args.config else PreprocessConfig()
    if args.profile:
        config.profile = args.profile
    if args.partition_rows:
        config.partition_rows = args.partition_rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{n} utterances from {args.corpus}; profile {config.profile}; device {device}; "
          f"torch threads {torch.get_num_threads()}; {os.cpu_count()} CPUs", flush=True)
    bench_started = time.monotonic()
    # The Ray pass first, so that its driver's memory is that of a process that has loaded
    # no model (as `erc preprocess`'s driver); then the loop, in this same process.
    where = runtime.connect(num_cpus=args.cpus)
    print(f"ray: {where}", flush=True)
    sampler = Sampler(ray_stats=True)
    sampler.started = bench_started  # one time axis for both runs
    sampler.start()
    features_dir = out / "features"
    utterances = out / "utterances.parquet"  # the bench's rows, as the preprocess stage reads them
    pq.write_table(table, utterances)
    started = time.perf_counter()
    outcome = preprocess(utterances, features_dir, config, ray=RayConfig(num_cpus=args.cpus),
                         force=True, overwrite=True, say=lambda line: print(line, flush=True))
    ray_s = time.perf_counter() - started
    ray_mem = sampler.stop()
    ray_memory = sampler.rows
    features = {r["utterance_id"]: r for r in read_features(features_dir).to_pylist()}
    run = outcome.summary["this_run"]
    stages = run["stages"]
    load_ray = max(s["load_s"] for s in stages.values())
    timeline = run.get("timeline", [])
    pass_offset = started - bench_started + (ray_s - run["seconds"])  # after the set-up

    resume = None
    if args.resume_check:
        print("\nresume check: a second run, killed, then resumed", flush=True)
        with tempfile.TemporaryDirectory(prefix="erc-resume-", dir=out) as tmp:
            resume = resume_check(table, config, features_dir, run["seconds"], Path(tmp))
    runtime.shutdown()

    seq, seq_memory, seq_mem = None, [], {}
    if not args.skip_sequential:
        seq_sampler = Sampler()
        seq_sampler.started = bench_started
        seq_sampler.start()
        seq_started_at = time.monotonic() - bench_started
        seq = sequential(table, config, device)
        seq["offset"] = seq_started_at + seq["load_s"]
        seq_mem = seq_sampler.stop()
        seq_memory = seq_sampler.rows
        print(f"\nsequential: models loaded in {seq['load_s']:.1f} s, loop {seq['loop_s']:.1f} s, "
              f"{n / seq['loop_s']:.2f} utt/s; peak RSS {seq_mem['driver_peak_mb']:.0f} MiB", flush=True)

    # -- figures side by side --
    report = {"utterances": n, "corpus": str(args.corpus), "device": device, "cpus": os.cpu_count(),
              "profile": config.profile, "ray": {"seconds": round(ray_s, 2), "load_s": round(load_ray, 2),
                                                "summary": outcome.summary, "memory": ray_mem,
                                                "memory_series": ray_memory},
              "resume_check": resume}
    print(f"\n{'stage':8} {'sequential':>11} {'ray data':>10} {'workers':>8} {'busy':>6} {'ray/seq':>8}")
    print(f"{'':8} {'utt/s':>11} {'utt/s/wkr':>10} {'':>8} {'share':>6}   (utterances per busy second)")
    stage_rows = {}
    for stage in STAGES:
        r = stages.get(stage, {})
        s_rate = None
        if seq:
            rows_seq = n if stage in ("decode", "text") else sum(
                1 for v in seq["rows"].values() if v["status"] == "ok")
            s_rate = rows_seq / seq["busy"][stage] if seq["busy"][stage] else None
        r_rate, share = r.get("utterances_per_s"), r.get("busy_share")
        stage_rows[stage] = {"sequential_utt_s": s_rate, "ray_utt_s_per_worker": r_rate,
                             "workers": r.get("workers"), "busy_share": share}
        fmt = lambda v, w: f"{v:{w}.2f}" if v is not None else f"{'-':>{w}}"
        print(f"{stage:8} {fmt(s_rate, 11)} {fmt(r_rate, 10)} {r.get('workers', '-'):>8} "
              f"{fmt(100 * share if share is not None else None, 5)}% "
              f"{fmt(r_rate / s_rate if s_rate and r_rate else None, 8)}")
    report["stages"] = stage_rows

    ray_pass_s = run["seconds"]
    cpu_table = cpu_per_utterance(seq, n, sampler, timeline, pass_offset)
    if cpu_table:
        report["cpu_s_per_utterance"] = cpu_table
        print("\nCPU seconds per utterance (all threads; Ray: its workers from the first output "
              "to the last, model loading left out):")
        for stage, (a, b) in cpu_table["stages"].items():
            print(f"  {stage:14} {'-' if a is None else f'{a:.3f}':>10} {'-' if b is None else f'{b:.3f}':>10}")
        print(f"  {'total':14} {cpu_table['sequential'] or float('nan'):10.3f} {cpu_table['ray']:10.3f}")
        if seq:
            print(f"  sequential loop: {cpu_table['sequential_cpu_per_wall']:.2f} CPU seconds per "
                  f"wall second (1.0: one core at a time)")
    lines = []
    if seq:
        seq_total = seq["load_s"] + seq["loop_s"]
        report["sequential"] = {"load_s": round(seq["load_s"], 2), "loop_s": round(seq["loop_s"], 2),
                                "memory": seq_mem, "memory_series": seq_memory,
                                "timeline": seq["timeline"]}
        lines.append(f"whole pass, loading included: sequential {n / seq_total:.2f} utt/s ({seq_total:.1f} s), "
                     f"ray data {n / ray_s:.2f} utt/s ({ray_s:.1f} s), ratio ray/sequential "
                     f"{seq_total / ray_s:.2f}")
        lines.append(f"whole pass, loading excluded: sequential {n / seq['loop_s']:.2f} utt/s, ray data "
                     f"{n / max(ray_pass_s - load_ray, 1e-9):.2f} utt/s (pass {ray_pass_s:.1f} s minus "
                     f"the slowest actor's load {load_ray:.1f} s), ratio "
                     f"{seq['loop_s'] / max(ray_pass_s - load_ray, 1e-9):.2f}")
        report["ratio_loading_included"] = round(seq_total / ray_s, 3)
        report["ratio_loading_excluded"] = round(seq["loop_s"] / max(ray_pass_s - load_ray, 1e-9), 3)
        lines.append(f"peak RSS, sequential: {seq_mem['driver_peak_mb']:.0f} MiB "
                     f"(first/second half {seq_mem['driver_halves_mb']})")
    else:
        lines.append(f"whole pass: ray data {n / ray_s:.2f} utt/s ({ray_s:.1f} s, loading included)")
    lines.append(f"peak RSS, ray: driver {ray_mem['driver_peak_mb']:.0f} MiB (first/second half "
                 f"{ray_mem['driver_halves_mb']}), workers together {ray_mem['workers_peak_mb']:.0f} MiB "
                 f"(first/second half {ray_mem['workers_halves_mb']}); object store peak "
                 f"{ray_mem['store_peak_mb']} MiB, spilled {ray_mem['spilled_mb']} MiB")
    if ray_mem["gpu_util_mean"] is not None:
        lines.append(f"GPU: utilisation {ray_mem['gpu_util_mean']}% on average over the Ray pass "
                     f"(sequential: {seq_mem.get('gpu_util_mean')}%), memory peak "
                     f"{ray_mem['gpu_mem_peak_mb']:.0f} MiB")
    lines.append("peak RSS per worker: " + ", ".join(f"{k} {v:.0f}" for k, v in ray_mem["worker_peaks_mb"].items()))
    for line in lines:
        print(line)

    if seq:
        same_text = sum(1 for uid, r in seq["rows"].items() if r.get("asr_text") == features[uid]["asr_text"])
        cos = [float(np.dot(r["speaker"], features[uid]["speaker_embedding"])
                     / np.linalg.norm(r["speaker"]) / np.linalg.norm(features[uid]["speaker_embedding"]))
               for uid, r in seq["rows"].items() if "speaker" in r and features[uid]["speaker_embedding"]]
        faces = sum(1 for uid, r in seq["rows"].items() if r.get("n_faces") == len(features[uid]["faces"] or []))
        report["agreement"] = {"transcripts_equal": same_text, "face_counts_equal": faces,
                               "speaker_cosine_min": min(cos) if cos else None}
        print(f"agreement: transcripts {same_text}/{n}, face counts {faces}/{n}, speaker cosine "
              f"min {min(cos) if cos else float('nan'):.6f}; statuses {outcome.summary['status']}")
        for uid, r in seq["rows"].items():
            if "asr_text" in r and r["asr_text"] != features[uid]["asr_text"]:
                print(f"  {uid}: sequential {r['asr_text']!r} / ray {features[uid]['asr_text']!r}")
    plot(out / "throughput.png", seq, seq_memory, timeline, ray_memory, pass_offset)
    print(f"plot: {out / 'throughput.png'}")
    if resume:
        print(f"resume check: worker {resume['worker_killed']} killed at {resume['worker_kill_s']} s, "
              f"the driver at {resume['driver_kill_s']} s with {resume['parts_at_driver_kill']}/"
              f"{resume['partitions']} partitions written; resumed "
              f"{resume['resumed_written']} partitions ({resume['resumed_skipped']} kept) in "
              f"{resume['resumed_s']} s; output identical to the clean run: {resume['identical']}"
              + (f" (columns differing: {resume['columns']})" if resume["columns"] else ""))
    (out / "bench.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"figures: {out / 'bench.json'}")
    return 0 if not resume or resume["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
