"""The ingest stage: read a corpus (``erc.corpus``), optionally open its media on Ray,
write ``utterances.parquet`` and ``problems.parquet`` (every input row lands in one of
them) and the summary a person reads (``erc.summary``).

Up to date when the settings, the corpus files and every other file or folder the reader
read (a mapping file, MELD's media root: names, sizes, modification times of the files
below them) and every media file a row named (found or not) are as they were. Media are
stat'ed, never hashed: a fingerprint of a video corpus costs a directory walk.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq

from erc import io
from erc.artifacts import PROBLEMS, UTTERANCES
from erc.corpus import corpus_format, read_corpus
from erc.corpus.base import IngestResult
from erc.errors import InputError
from erc.fingerprint import file_sha256, stat_of
from erc.recipes import CorpusConfig
from erc.stages.base import Stage, StageContext, check_not_written_over, read_manifest


def _tree_stats(path: Path) -> list:
    """[(relative name, size, mtime ns)] of every file under a folder, output folders of
    erc's inside it (an ingest written beside its corpus) left out; a single file (a
    manifest, a mapping) by its content, as an edit within one clock tick keeps its time."""
    if path.is_file():
        return [(path.name, file_sha256(path))]
    found = []
    for folder, dirs, files in os.walk(path):
        if io.MARKER in files and folder != os.fspath(path):
            dirs[:] = []
            continue
        for name in files:
            full = os.path.join(folder, name)
            stat = stat_of(full)
            if stat:
                found.append((os.path.relpath(full, path), *stat))
    return sorted(found)


def read_roots(config: CorpusConfig, record: dict | None) -> list[Path]:
    """The corpus path and whatever else its reader read (``IngestResult.sources`` of the
    last run: a mapping file, MELD's media root), outside the corpus path."""
    corpus = Path(config.path)
    roots = [corpus]
    for source in (record or {}).get("sources", []):
        path = Path(source)
        if not any(path == root or root in path.parents for root in roots):
            roots.append(path)
    return roots


def not_the_corpus(config: CorpusConfig, out: Path) -> None:
    """InputError when ``out`` is the corpus folder itself: erc's outputs there (an utterance
    table, the run's run.json and manifest.json) would be read as part of the corpus."""
    corpus = Path(config.path)
    if corpus.is_dir() and corpus.resolve() == Path(out).resolve():
        raise InputError(f"{out}: is the corpus folder itself: erc's outputs there would "
                         f"be read as part of the corpus and hide its changes; choose "
                         f"another output folder (one inside the corpus folder works)")


class IngestStage(Stage):
    name = "ingest"
    section = "corpus"
    results = (UTTERANCES, PROBLEMS)
    # 23: MELD's cp1252 apostrophes read as Latin-1 (U+0092, or "Â’") are repaired,
    # IEMOCAP's text csvs repair mojibake as MELD's do;
    # 22: a JSON document's enclosing list of values (scene_id: ["x"]) is read: bad_type
    # where a field reads it, JSON in meta;
    # 21: a mapping file's labels, columns and file names are the text written (yes, on, 1);
    # 20: a MELD Dialogue_ID written as a decimal (1.0) is that number;
    # 19: a manifest's media path written on Windows (clips\a.wav) finds its file;
    # 18: Parquet decimals are numbers (ids, turns, times) and durations times;
    # 17: a CSV column of no name is named by its place ("unnamed column 4" in meta);
    # 16: the media check judges a row's separate audio file (its only file, or beside
    # its video) by its streams and length too;
    # 15: a CSV row of delimiters only is a missing_field problem, the header row again a
    # malformed_row, a byte order mark leaves any line; split words match in any case; an
    # IEMOCAP turn labelled twice, differently, is set aside; RAVDESS actor numbers are
    # ASCII digits; 14: a text without a word (only punctuation, symbols or emoji) is null, the text
    # it had in meta text_without_words; 13: a row kept without its missing media file
    # (keep_missing_media) names the path in its meta (missing_media, missing_audio);
    # 12: control characters leave every reader's text (tabs and line breaks become
    # spaces), a blank text is null, and a row with neither text nor media is a
    # missing_field problem whatever the reader; 11: a manifest file or folder named as
    # a split (dev.csv, valid/) gives its rows that split under a split column, a CSV row
    # set aside keeps its place in its dialogue;
    # 10: a manifest emotion 'nan'/'None'/'null' is an unknown_label problem, an empty
    # DailyDialog turn a missing_field problem; 9: a manifest's media may be anywhere in
    # the corpus folder, a JSON object naming a
    # key twice is a malformed_row; 8: a manifest row's turn by order counts the rows of
    # its dialogue set aside too; 7: erc's own utterance table read as a manifest maps
    # media_path, audio_path, start_s, end_s and meta back to their fields; 6: a second
    # utterance at a turn of a dialogue is a duplicate_turn problem, a manifest row set
    # aside without a turn names no default id; 5: readers take off a byte order mark,
    # MELD ids are numbers, default manifest ids escape "/"
    version = 23
    description = "read the corpus into the utterance table; every row kept or set aside with a reason"

    def settings(self, config: CorpusConfig) -> dict:
        return {"config": config,
                "format": corpus_format(Path(config.path), config.format, config.options)}

    def reads(self, config: CorpusConfig) -> tuple:
        return (("corpus", config.path), ("corpus", (config.options or {}).get("mapping")))

    def external(self, config: CorpusConfig, inputs, manifest) -> list:
        media = sorted((manifest or {}).get("media", []))
        return [[(str(root), _tree_stats(root)) for root in read_roots(config, manifest)],
                [(path, stat_of(path)) for path in media]]

    def run(self, ctx: StageContext) -> dict:
        from erc.summary import summarise

        config: CorpusConfig = ctx.config
        corpus = Path(config.path)
        not_the_corpus(config, ctx.out)
        format = corpus_format(corpus, config.format, config.options)
        result = read_corpus(Path(config.path), format=format, options=config.options)
        for read in {corpus, *map(Path, result.sources)}:  # a corpus file, its mapping
            check_not_written_over(self, "corpus", read, ctx.out)
        media = sorted(result.media)
        if config.check_media:
            from erc import runtime
            from erc.corpus.media_check import check_media

            ctx.say(f"[ingest] {runtime.connect()}")
            result = check_media(result, max_clip_seconds=config.max_clip_seconds,
                                  min_clip_seconds=config.min_clip_seconds)
        result.check_accounting()
        io.write_parquet_set([(ctx.out / PROBLEMS, result.problems),
                              (ctx.out / UTTERANCES, result.utterances)])
        ctx.record.update(format=format, media=media, sources=sorted(result.sources))
        return summarise(result)


def load_result(folder: str | Path) -> IngestResult:
    """The tables and the input row count of an ingest output folder: its manifest's count,
    which the tables must add up to (kept + problem rows when the manifest is gone)."""
    from erc.artifacts import read_utterances, readable
    from erc.schema import PROBLEM_SCHEMA

    folder = Path(folder)
    manifest = read_manifest(folder) or {}
    if not (folder / PROBLEMS).is_file():
        raise InputError(f"{folder}: no {PROBLEMS} (not an output of `erc corpus ingest`)")
    with readable(folder / PROBLEMS):
        problems = pq.read_table(folder / PROBLEMS)
    missing = [f.name for f in PROBLEM_SCHEMA if f.name not in problems.column_names]
    if missing:
        raise InputError(f"{folder / PROBLEMS}: not a problem table, it lacks {', '.join(missing)}")
    utterances = read_utterances(folder)
    rows = utterances.num_rows + problems.num_rows
    n_input = manifest.get("summary", {}).get("input_rows", rows)
    if n_input != rows:
        raise InputError(f"{folder}: its manifest counts {n_input} input rows, its tables "
                         f"{utterances.num_rows} kept + {problems.num_rows} problem rows; "
                         f"the folder was changed after the ingest (ingest again)")
    return IngestResult(utterances=utterances, problems=problems, n_input=n_input)
