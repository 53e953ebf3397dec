"""Ray job entrypoint: train a model (arguments of `erc train`).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/train.py text /shared/runs/meld/corpus \
        --encoder all-mpnet-base-v2 --workers 4 --gpu --out /shared/runs/meld/text
    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/train.py fusion /shared/runs/meld/corpus \
        --text finetuned:/shared/runs/meld/text/model --out /shared/runs/meld/fusion

Submitting the same command again (same --out) resumes from the run's latest checkpoint.
With --out s3://bucket/runs/meld/fusion, Ray Train checkpoints to s3://bucket/runs/meld/fusion/ray
(unless --storage says otherwise) and the exported model and history are uploaded beside it.
"""

import sys

from _job import check_outputs  # jobs/ is on sys.path: python jobs/<job>.py

if __name__ == "__main__":
    check_outputs(sys.argv[1:])
    from erc.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
