"""Ray job entrypoint: the preprocessing pass (arguments of `erc preprocess`).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/preprocess.py /shared/runs/meld/corpus \
        --out /shared/runs/meld/features --profile paper --config my_corpus.yaml

Paths may be storage URIs instead (`s3://bucket/runs/meld/corpus --out s3://bucket/runs/meld/features`).
Inside a Ray job RAY_ADDRESS names the cluster, so the work runs there; run directly, it
starts an embedded single-node Ray. Re-submitting after a failure resumes: finished
partitions are skipped.
"""

import sys

from _job import check_outputs  # jobs/ is on sys.path: python jobs/<job>.py

if __name__ == "__main__":
    check_outputs(sys.argv[1:])
    from erc.cli import main

    sys.exit(main(["preprocess", *sys.argv[1:]]))
