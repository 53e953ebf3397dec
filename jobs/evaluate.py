"""Ray job entrypoint: evaluate a trained model on a split (arguments of `erc evaluate`).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/evaluate.py /shared/runs/meld/fusion/model \
        /shared/runs/meld/corpus --split test --out /shared/runs/meld/eval-test
"""

import sys

from _job import check_outputs  # jobs/ is on sys.path: python jobs/<job>.py

if __name__ == "__main__":
    check_outputs(sys.argv[1:])
    from erc.cli import main

    sys.exit(main(["evaluate", *sys.argv[1:]]))
