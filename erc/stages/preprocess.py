"""The preprocess stage: the Ray Data pass (``erc.pipeline.preprocess``) over the media of
an utterance table, into ``part-*.parquet`` feature files.

Up to date when the utterance table, the settings, the models' weights (their sha256) and
the media files (sizes, modification times) are as they were. Within a run, partitions
already computed are skipped (their own fingerprints), so an interrupted pass resumes.
The manifest records the digest of the utterance rows the features come from
(``utterances_digest``), which QC checks its utterance table against.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from erc.artifacts import read_utterances
from erc.recipes import PreprocessConfig, RayConfig
from erc.stages.base import Stage, StageContext


class PreprocessStage(Stage):
    name = "preprocess"
    section = "preprocess"
    inputs = ("utterances",)
    writes = ("part-*.parquet",)  # its results: the partitions its record lists
    description = "decode media; Whisper, faces, speaker and text embeddings (Ray Data)"

    def __init__(self, ray: RayConfig | None = None, limit: int | None = None):
        from erc.pipeline.preprocess import FEATURES_VERSION

        self.ray = ray or RayConfig()
        self.limit = limit
        # The second number: 3 records the utterances_digest QC checks (a folder without
        # it is rewritten; its finished partitions are kept).
        self.version = [FEATURES_VERSION, 3]

    def settings(self, config: PreprocessConfig) -> dict:
        where_not_what = {"output_dir", "decode", "faces", "asr", "speaker", "text"}
        return {"config": {k: v for k, v in dataclasses.asdict(config).items()
                           if k not in where_not_what}, "limit": self.limit}

    def external(self, config: PreprocessConfig, inputs, manifest) -> list[str]:
        from erc.pipeline.preprocess import plan

        # Partition fingerprints: media sizes and times, model records (weights' sha256).
        return plan(read_utterances(inputs["utterances"]), config, self.limit).fingerprints

    def unfinished(self, config: PreprocessConfig, inputs, out: Path) -> str | None:
        from erc.pipeline.preprocess import pending_parts, plan

        work = plan(read_utterances(inputs["utterances"]), config, self.limit)
        pending = pending_parts(work, out)
        done = len(work.parts) - len(pending)
        return (f"{done} of {len(work.parts)} partitions done, {len(pending)} to compute"
                if done else None)

    def result_files(self, out: Path, record: dict) -> list[Path]:
        return [out / entry["file"] for entry in record.get("partitions", [])]

    def run(self, ctx: StageContext) -> dict:
        from erc.features import source_digest
        from erc.pipeline.preprocess import run_preprocess

        table = read_utterances(ctx.inputs["utterances"])
        outcome = run_preprocess(table, ctx.out, ctx.config, ray=self.ray, limit=self.limit,
                                 force=ctx.force, progress=ctx.say, previous=ctx.previous)
        # What QC checks its utterance table against (erc.qc.decisions.check_source).
        ctx.record.update(outcome.record, utterances_digest=source_digest(table))
        return outcome.summary


def preprocess(utterances, out, config: PreprocessConfig | None = None,
               ray: RayConfig | None = None, limit: int | None = None, force: bool = False,
               overwrite: bool = False, say=print):
    """The preprocess stage on an utterance table (folder or file) into ``out``: what
    ``erc preprocess`` runs. Returns the ``StageResult`` (its summary, skipped or not)."""
    from erc.stages.base import execute

    quiet = say or (lambda _message: None)
    return execute(PreprocessStage(ray, limit), config or PreprocessConfig(),
                   {"utterances": utterances}, out, force=force, overwrite=overwrite, say=quiet)
