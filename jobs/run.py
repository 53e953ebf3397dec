"""Ray job entrypoint for the main job (what `ray job submit` runs).

    ray job submit --working-dir . -- python jobs/run.py --config my_corpus.yaml

Inside a Ray job RAY_ADDRESS names the cluster, so the work runs there; run directly,
it starts an embedded single-node Ray. Arguments are those of `erc run`.
"""

import sys

from erc.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
