"""The ingest stage: read a corpus, optionally check its media on Ray, write
``utterances.parquet``, ``problems.parquet`` and ``ingest.json`` (summary + fingerprint).

Re-running with the same inputs and settings does nothing: the fingerprint of the corpus
files (names, sizes, modification times) and the settings is compared with the one stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.parquet as pq

from erc.config import CorpusConfig
from erc.corpus import detect_format, read_corpus
from erc.corpus.base import IngestResult
from erc.summary import summarise

UTTERANCES = "utterances.parquet"
PROBLEMS = "problems.parquet"
RECORD = "ingest.json"


@dataclass
class IngestOutcome:
    output_dir: Path
    summary: dict
    skipped: bool  # True when an up-to-date result was already there
    seconds: float


def _file_stats(path: Path) -> list[tuple[str, int, int]]:
    if path.is_file():
        st = path.stat()
        return [(path.name, st.st_size, st.st_mtime_ns)]
    stats = []
    for folder, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(folder, name))
            stats.append((os.path.relpath(os.path.join(folder, name), path), st.st_size, st.st_mtime_ns))
    return sorted(stats)


def fingerprint(config: CorpusConfig, format: str) -> str:
    """Hash of the settings and of every file the corpus (and its media roots) holds."""
    digest = hashlib.sha256(json.dumps([asdict(config), format], sort_keys=True, default=str).encode())
    roots = [Path(config.path)] + [Path(v) for v in config.options.values()
                                   if isinstance(v, str) and os.path.sep in v and Path(v).exists()]
    for root in roots:
        digest.update(json.dumps(_file_stats(root)).encode())
    return digest.hexdigest()


def load_result(output_dir: Path) -> IngestResult:
    record = json.loads((output_dir / RECORD).read_text())
    return IngestResult(utterances=pq.read_table(output_dir / UTTERANCES),
                        problems=pq.read_table(output_dir / PROBLEMS),
                        n_input=record["summary"]["input_rows"])


def run_ingest(config: CorpusConfig, output_dir: Path, force: bool = False,
               ray_address: str | None = None) -> IngestOutcome:
    started = time.perf_counter()
    output_dir = Path(output_dir)
    config.path = str(Path(config.path).expanduser().resolve())
    format = config.format or detect_format(Path(config.path), config.options)
    stamp = fingerprint(config, format)
    record_path = output_dir / RECORD
    if not force and record_path.is_file() and (output_dir / UTTERANCES).is_file():
        record = json.loads(record_path.read_text())
        if record.get("fingerprint") == stamp:
            return IngestOutcome(output_dir, record["summary"], True, time.perf_counter() - started)

    result = read_corpus(Path(config.path), format=format, **config.options)
    if config.check_media:
        from erc import runtime
        from erc.corpus.media_check import check_media

        runtime.connect(ray_address)
        result = check_media(result, max_clip_seconds=config.max_clip_seconds)
    summary = summarise(result)

    output_dir.mkdir(parents=True, exist_ok=True)
    # Write to temporary names and rename, so an interrupted write leaves no half table.
    for table, name in ((result.utterances, UTTERANCES), (result.problems, PROBLEMS)):
        pq.write_table(table, output_dir / f".{name}.tmp")
        os.replace(output_dir / f".{name}.tmp", output_dir / name)
    record = {"format": format, "config": asdict(config), "fingerprint": stamp, "summary": summary}
    (output_dir / f".{RECORD}.tmp").write_text(json.dumps(record, indent=2, default=str))
    os.replace(output_dir / f".{RECORD}.tmp", record_path)
    return IngestOutcome(output_dir, summary, False, time.perf_counter() - started)
