"""Ray job entrypoint: evaluate a trained model on a split (arguments of `erc evaluate`).

    ray job submit --working-dir . -- python jobs/evaluate.py /shared/runs/meld/fusion/model \
        /shared/runs/meld/corpus --split test --out /shared/runs/meld/eval-test
"""

import sys

from erc.train.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
