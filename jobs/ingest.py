"""Ray job entrypoint: read a corpus into utterances.parquet (arguments of `erc corpus ingest`).

    ray job submit --working-dir . -- python jobs/ingest.py /data/MELD --media-root /data/MELD.Raw \
        --check-media --out /shared/runs/meld/corpus
"""

import sys

from erc.cli import main

if __name__ == "__main__":
    sys.exit(main(["corpus", "ingest", *sys.argv[1:]]))
