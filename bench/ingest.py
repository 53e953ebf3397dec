"""Ingest throughput: each reader on the real corpora in ../shared, and media checking of
the RAVDESS files done by a plain sequential loop next to Ray Data tasks, in one run.

    .venv/bin/python bench/ingest.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from erc import runtime
from erc.corpus import read_corpus
from erc.corpus.media_check import probe_paths
from erc.media.decode import audio_defect
from erc.media.probe import probe

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CORPORA = {"meld": SHARED / "data" / "meld", "iemocap_text": SHARED / "data" / "iemocap_text",
           "ravdess": SHARED / "assets" / "speech" / "ravdess16k"}


def main() -> int:
    if not SHARED.is_dir():
        print(f"bench needs {SHARED} (real corpora)", file=sys.stderr)
        return 2
    print(f"{'corpus':14} {'rows':>7} {'seconds':>8} {'rows/s':>9}")
    for name, path in CORPORA.items():
        started = time.perf_counter()
        result = read_corpus(path)
        seconds = time.perf_counter() - started
        print(f"{name:14} {result.n_input:7,} {seconds:8.3f} {result.n_input / seconds:9,.0f}")

    paths = sorted(str(p) for p in CORPORA["ravdess"].rglob("*.flac"))
    started = time.perf_counter()
    sequential = [(probe(p), audio_defect(p)) for p in paths]  # as the check: open, decode audio
    t_seq = time.perf_counter() - started
    runtime.connect()
    probe_paths(paths[:32], decode=set(paths))  # warm the worker pool so the timing is of the work
    started = time.perf_counter()
    parallel = probe_paths(paths, decode=set(paths))
    t_ray = time.perf_counter() - started
    runtime.shutdown()
    assert len(sequential) == len(parallel) == len(paths)
    print(f"\nmedia check of {len(paths)} files: sequential {len(paths) / t_seq:,.0f} files/s, "
          f"ray data {len(paths) / t_ray:,.0f} files/s, ratio ray/sequential {t_seq / t_ray:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
