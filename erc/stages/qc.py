"""The qc stage: quality-control decisions for every utterance (``erc.qc.decisions``),
the kept utterance table training reads, relabel proposals and the QC report.

Up to date when the feature table, the utterance table, the QC settings and the files
they name (reference photos, a reviewed relabels.csv) are as they were.
"""

from __future__ import annotations

from pathlib import Path

from erc.qc.decisions import DECISIONS, KEPT, RELABELS, QCConfig
from erc.stages.base import Stage, StageContext, content_fingerprint


class QCStage(Stage):
    name = "qc"
    section = "qc"
    inputs = ("features", "utterances")
    results = (DECISIONS, KEPT, RELABELS, "report.json")
    description = "alignment, face and speaker checks; relabelling; the QC report"

    def external(self, config: QCConfig, inputs, manifest) -> dict:
        named = {"face_references": config.face_references, "relabels": config.relabels}
        return {key: content_fingerprint(path) for key, path in named.items() if path}

    def run(self, ctx: StageContext) -> dict:
        from erc.qc.decisions import run_qc

        result = run_qc(ctx.inputs["features"], ctx.inputs["utterances"], ctx.out, ctx.config)
        return result.summary


def kept_utterances(folder: str | Path) -> Path:
    """The kept utterance table of a qc output folder."""
    return Path(folder) / KEPT
