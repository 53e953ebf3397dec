"""Ray job entrypoint: read a corpus into utterances.parquet (arguments of `erc corpus ingest`).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/ingest.py /data/MELD --media-root /data/MELD.Raw \
        --check-media --out /shared/runs/meld/corpus
"""

import sys

from _job import run  # jobs/ is on sys.path: python jobs/<job>.py

if __name__ == "__main__":
    from erc.cli import main

    sys.exit(run(lambda argv: main(["corpus", "ingest", *argv]), sys.argv[1:]))
