"""Ray job entrypoint for the main job (what `ray job submit` runs).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/run.py --config my_corpus.yaml

Inside a Ray job RAY_ADDRESS names the cluster, so the work runs there; run directly,
it starts an embedded single-node Ray. Arguments are those of `erc run`.
"""

import sys

from _job import check_outputs  # jobs/ is on sys.path: python jobs/<job>.py

if __name__ == "__main__":
    check_outputs(sys.argv[1:])
    from erc.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
