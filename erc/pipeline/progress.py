"""Progress of the preprocessing pass as its batches reach the driver: utterances done,
the pass's throughput and ETA, and for each stage its throughput and the share of the
wall time its workers were busy (from the ``_s_<stage>`` busy seconds every stage adds to
its rows), so a stalled or saturated stage shows while the pass runs.

    tracker = PassProgress(total=1079, workers={"decode": 2, "faces": 1, ...}, say=print)
    for batch in dataset.iter_batches(...):
        tracker.add(batch)       # prints the lines at most every ``every_s`` seconds
    tracker.timeline             # [(seconds since start, utterances done), ...]

A stage's busy share is its busy seconds over (wall seconds x its workers); its
throughput is the utterances it has processed per wall second; its capacity (utterances
per busy second x workers) is what it could do if it never waited, so the stage whose
capacity is lowest is the one holding the pass back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def workers_of(resources: dict, cpus: float) -> dict[str, int]:
    """How many workers each stage has: its actors (the upper bound of an autoscaling
    pool), and for the decode tasks as many as the CPUs the actors leave allow."""
    def actors(values) -> int:
        size = values["concurrency"]
        return int(size[-1] if isinstance(size, list) else size or 1)

    workers = {s: actors(r) for s, r in resources.items() if s != "decode"}
    if "decode" in resources:
        decode = resources["decode"]
        if decode["concurrency"]:
            workers["decode"] = actors(decode)
        else:
            taken = sum(r["num_cpus"] * workers[s] for s, r in resources.items() if s != "decode")
            workers["decode"] = max(1, int((cpus - taken) // max(decode["num_cpus"], 1e-9)))
        workers = {"decode": workers.pop("decode"), **workers}
    return workers


class PassProgress:
    def __init__(self, total: int, workers: dict[str, int], say: Callable[[str], None] | None,
                 every_s: float = 15.0, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.workers = {stage: max(1, int(n or 1)) for stage, n in workers.items()}
        self.say = say
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self.last_report = self.started
        self.ended: float | None = None  # when the last utterance came in
        self.done = 0
        self.rows = dict.fromkeys(self.workers, 0)  # rows each stage processed
        self.busy = dict.fromkeys(self.workers, 0.0)  # its busy seconds, summed over workers
        self.timeline: list[tuple[float, int]] = [(0.0, 0)]

    def add(self, batch: pa.Table) -> None:
        self.done += batch.num_rows
        for stage in self.workers:
            name = f"_s_{stage}"
            if name in batch.column_names:
                self.busy[stage] += pc.sum(batch.column(name)).as_py() or 0.0
                self.rows[stage] += batch.num_rows
        now = self.clock()
        if self.done >= self.total:
            self.ended = now
        self.timeline.append((round(now - self.started, 3), self.done))
        if self.say and (now - self.last_report >= self.every_s or self.done >= self.total):
            self.last_report = now
            for line in self.lines(now):
                self.say(line)

    def rate(self, window_s: float = 60.0, now: float | None = None) -> float:
        """Utterances per second over the last ``window_s`` seconds (the whole run when
        shorter)."""
        now = self.clock() if now is None else now
        elapsed = now - self.started
        if elapsed <= 0 or self.done == 0:
            return 0.0
        since = elapsed - window_s
        earlier = next(((t, n) for t, n in reversed(self.timeline) if t <= since), (0.0, 0))
        return (self.done - earlier[1]) / max(elapsed - earlier[0], 1e-9)

    def stage_figures(self, now: float | None = None) -> dict[str, dict]:
        now = (self.ended or self.clock()) if now is None else now
        wall = max(now - self.started, 1e-9)
        out = {}
        for stage, workers in self.workers.items():
            busy, rows = self.busy[stage], self.rows[stage]
            out[stage] = {"rows": rows, "busy_s": round(busy, 3),
                          "utterances_per_s": round(rows / wall, 3),
                          "busy_share": round(busy / (wall * workers), 3),
                          "capacity_per_s": round(rows / busy * workers, 3) if busy > 0 else None}
        return out

    def lines(self, now: float | None = None) -> list[str]:
        now = self.clock() if now is None else now
        rate = self.rate(now=now)
        left = self.total - self.done
        eta = _duration(left / rate) if rate > 0 and left > 0 else ("done" if left <= 0 else "?")
        head = (f"[preprocess] {self.done:,}/{self.total:,} utterances "
                f"({100 * self.done / max(self.total, 1):.0f}%) in {_duration(now - self.started)}: "
                f"{rate:.2f} utt/s, ETA {eta}")
        figures = self.stage_figures(now)
        slowest = min((s for s in figures if figures[s]["capacity_per_s"]),
                      key=lambda s: figures[s]["capacity_per_s"], default=None)
        lines = [head]
        for stage, f in figures.items():
            capacity = f["capacity_per_s"]
            stage_eta = _duration(left / capacity) if capacity and left > 0 else "-"
            lines.append(f"[preprocess]   {stage:8} {f['utterances_per_s']:7.2f} utt/s, busy "
                         f"{100 * f['busy_share']:3.0f}% of {self.workers[stage]} worker(s), "
                         f"capacity {capacity or 0:7.2f} utt/s, ETA at capacity {stage_eta}"
                         + ("  <- slowest" if stage == slowest and len(figures) > 1 else ""))
        return lines
