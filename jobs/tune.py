"""Ray job entrypoint: a hyperparameter search (arguments of `erc tune`).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/tune.py tune/fusion.yaml /shared/runs/meld/corpus \
        --text st:all-MiniLM-L6-v2 --out /shared/runs/tune/meld-fusion \
        --storage /shared/runs/tune/meld-fusion/ray --num-samples 64 --max-concurrent-trials 8

Submitting the same command again (same --out) resumes the search: finished trials are
kept, interrupted ones continue from their latest epoch checkpoint.
"""

import sys

from _job import check_outputs  # jobs/ is on sys.path: python jobs/<job>.py

if __name__ == "__main__":
    check_outputs(sys.argv[1:])
    from erc.cli import main

    sys.exit(main(["tune", *sys.argv[1:]]))
