"""The preprocessing pass's progress lines: utterances done, throughput and ETA of the pass,
and per stage its throughput, busy share and capacity, from the busy seconds each stage
adds to its rows (a fake clock; no Ray)."""

from __future__ import annotations

import pyarrow as pa

from erc.pipeline.progress import PassProgress, workers_of


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def batch(rows: int, seconds: dict[str, float]) -> pa.Table:
    """A batch as it reaches the driver: each stage's busy seconds spread over its rows."""
    return pa.table({f"_s_{stage}": [s / rows] * rows for stage, s in seconds.items()})


def test_lines_say_rate_eta_busy_share_and_the_slowest_stage():
    clock, said = Clock(), []
    tracker = PassProgress(100, {"decode": 2, "faces": 1, "asr": 1}, said.append, every_s=15.0,
                           clock=clock)
    clock.now += 10
    tracker.add(batch(10, {"decode": 1.0, "faces": 8.0, "asr": 5.0}))
    assert said == []  # less than every_s since the start
    clock.now += 10
    tracker.add(batch(10, {"decode": 1.0, "faces": 8.0, "asr": 5.0}))
    head, decode, faces, asr = said
    assert head.startswith("[preprocess] 20/100 utterances (20%) in 0m20s: 1.00 utt/s, ETA 1m20s")
    figures = tracker.stage_figures()
    assert figures["faces"] == {"rows": 20, "busy_s": 16.0, "utterances_per_s": 1.0,
                                "busy_share": 0.8, "capacity_per_s": 1.25}
    assert figures["decode"]["busy_share"] == 0.05  # 2 s over 20 s of 2 workers
    assert figures["decode"]["capacity_per_s"] == 20.0
    assert "faces" in faces and "busy  80% of 1 worker(s)" in faces and faces.endswith("<- slowest")
    assert "ETA at capacity 1m04s" in faces  # 80 left at 1.25/s
    assert "slowest" not in asr and "slowest" not in decode
    assert tracker.timeline == [(0.0, 0), (10.0, 10), (20.0, 20)]


def test_the_rate_follows_the_last_minute_and_the_end_freezes_the_figures():
    clock = Clock()
    tracker = PassProgress(30, {"text": 1}, None, clock=clock)
    for _ in range(2):  # slow start: 10 rows in 100 s
        clock.now += 50
        tracker.add(batch(5, {"text": 1.0}))
    clock.now += 30  # then 20 rows in 30 s
    tracker.add(batch(20, {"text": 2.0}))
    assert tracker.ended == clock.now
    assert abs(tracker.rate(window_s=60.0) - 25 / 80) < 1e-9  # since the point 60+ s back
    assert tracker.lines()[0].endswith("ETA done")
    frozen = tracker.stage_figures()
    clock.now += 1000  # after the end the figures no longer change
    assert tracker.stage_figures() == frozen and frozen["text"]["busy_share"] == round(4 / 130, 3)


def test_workers_of_counts_actors_and_the_decode_tasks_the_cpus_allow():
    resources = {"decode": {"concurrency": None, "num_cpus": 1.0},
                 "faces": {"concurrency": 1, "num_cpus": 0.25},
                 "asr": {"concurrency": [1, 3], "num_cpus": 0.25},
                 "text": {"concurrency": 1, "num_cpus": 0.25}}
    assert workers_of(resources, cpus=2) == {"decode": 1, "faces": 1, "asr": 3, "text": 1}
    assert workers_of(resources, cpus=8)["decode"] == 6
    resources["decode"]["concurrency"] = 4
    assert workers_of(resources, cpus=8)["decode"] == 4
