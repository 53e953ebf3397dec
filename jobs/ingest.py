"""Ray job entrypoint: read a corpus into utterances.parquet (arguments of `erc corpus ingest`).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/ingest.py /data/MELD --media-root /data/MELD.Raw \
        --check-media --out /shared/runs/meld/corpus
"""

import sys

from _job import check_outputs  # jobs/ is on sys.path: python jobs/<job>.py

if __name__ == "__main__":
    check_outputs(sys.argv[1:])
    from erc.cli import main

    sys.exit(main(["corpus", "ingest", *sys.argv[1:]]))
