"""What one Ray Train run costs before and after its training loop, on the embedded Ray.

Every `erc train` and every model the main job trains is one Ray Train run: a controller
actor, a worker group, a process group, then the loop. On a small corpus that start and end
is most of the run. This bench times runs whose loop only reports once (so the figure is the
overhead alone), through `erc.runtime.connect` as the CLI starts Ray, with Ray Train's
health-check interval at its own default (2 s) and at the embedded default erc sets
(`erc.runtime.EMBEDDED_ENV`), side by side in one run.

    .venv/bin/python bench/train_overhead.py               # 4 runs per setting
    .venv/bin/python bench/train_overhead.py --runs 8

Each setting runs in a fresh process (Ray's processes read the interval when they start);
the first run of each pays for cold imports, so the table gives the median of the others
beside the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INTERVAL = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"


def _one_setting(runs: int) -> None:
    """In a fresh process: ``runs`` Ray Train runs; prints their wall seconds as JSON."""
    sys.path.insert(0, str(REPO))
    from erc import runtime

    runtime.connect(num_cpus=2)
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(_config: dict) -> None:
        import ray.train

        ray.train.report({"step": 1})

    seconds = []
    with tempfile.TemporaryDirectory() as storage:
        for run in range(runs):
            start = time.perf_counter()
            TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                         run_config=RunConfig(storage_path=storage, name=f"run-{run}")).fit()
            seconds.append(time.perf_counter() - start)
    runtime.shutdown()
    print(json.dumps(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="Ray Train runs per setting (>= 2)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _one_setting(args.runs)
        return
    if args.runs < 2:
        parser.error("--runs must be at least 2: the first run of each setting is cold")
    sys.path.insert(0, str(REPO))
    from erc.runtime import EMBEDDED_ENV

    settings = {"Ray's default (2 s)": "2.0", f"erc's embedded default ({EMBEDDED_ENV[INTERVAL]} s)":
                EMBEDDED_ENV[INTERVAL]}
    medians = {}
    print(f"{'health-check interval':<34} {'first run':>10} {'median of the rest':>19}")
    for name, value in settings.items():
        env = {**os.environ, INTERVAL: value}
        done = subprocess.run([sys.executable, __file__, "--child", "--runs", str(args.runs)],
                              env=env, capture_output=True, text=True, check=True)
        seconds = json.loads(done.stdout.strip().splitlines()[-1])
        medians[name] = statistics.median(seconds[1:])
        print(f"{name:<34} {seconds[0]:>9.2f}s {medians[name]:>18.2f}s")
    before, after = medians.values()
    print(f"one Ray Train run's overhead: {before:.2f} s -> {after:.2f} s ({before / after:.2f}x)")


if __name__ == "__main__":
    main()
