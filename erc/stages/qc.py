"""The qc stage: quality-control decisions for every utterance (``erc.qc.decisions``),
the kept utterance table training reads, relabel proposals and the QC report.

Up to date when the feature table, the utterance table, the QC settings and the files
they name (reference photos, a reviewed relabels.csv) are as they were.
"""

from __future__ import annotations

import re
from pathlib import Path

from erc import io
from erc.artifacts import PROBLEMS
from erc.errors import InputError
from erc.qc.decisions import DECISIONS, KEPT, RELABELS, QCConfig
from erc.stages.base import Stage, StageContext, check_not_written_over, content_fingerprint

PLOT = re.compile(r"plots/[a-z_]+\.png")


class QCStage(Stage):
    name = "qc"
    section = "qc"
    inputs = ("features", "utterances")
    results = (DECISIONS, KEPT, PROBLEMS, RELABELS, "report.json", "report.html", "plots/*.png")
    description = "alignment, face and speaker checks; relabelling; the QC report"
    # 2: labels equal but for case and spaces are aliases of one speaker; 3: face aliases
    # from the references of dominant faces only; 4: a learned threshold of equal scores
    # is the default; 5: names equal but for their letters' Unicode encoding are one;
    # 6: a blank speaker label has no reference; 7: the rows set aside (the ingest's and
    # QC's) in problems.parquet beside the kept rows; 8: with relabels applied, the speaker
    # cuts reported are the second pass's (which decided the statuses); 9: a clip whose
    # voice and face name two other speakers is proposed to the face's (looks_like), and a
    # row whose features failed carries no alignment scores; a voice label of three
    # utterances is judged on at least the corpus's typical range
    version = 9

    def reads(self, config: QCConfig) -> tuple:
        return tuple((name, getattr(config, name)) for name in ("relabels", "face_references"))

    def external(self, config: QCConfig, inputs, manifest) -> dict:
        named = {"face_references": config.face_references, "relabels": config.relabels}
        return {key: content_fingerprint(path) for key, path in named.items() if path}

    def run(self, ctx: StageContext) -> dict:
        from erc.qc.decisions import run_qc

        # A reviewed relabels.csv passed back from this folder would be replaced by the
        # new proposals before anyone read the outcome: the review lost.
        for name, path in self.reads(ctx.config):
            if path:
                check_not_written_over(self, name, Path(path), ctx.out)
        photos = Path(ctx.config.face_references) if ctx.config.face_references else None
        if photos and photos.is_dir() and photos.resolve() in ctx.out.resolve().parents:
            raise InputError(f"{ctx.out}: inside the folder of reference photos {photos}, "
                             f"whose every image is read as a photo (the report's plots "
                             f"too); choose an output folder outside it")
        # The last run's plots go first: one this run does not draw (its check now
        # disabled) would stay and be listed as this run's. Only names a plot can have:
        # an edited manifest never names another file.
        listed = (ctx.previous or {}).get("files")
        for name in listed if isinstance(listed, dict) else ():
            if PLOT.fullmatch(name):
                io.remove_owned(ctx.out, name)
        result = run_qc(ctx.inputs["features"], ctx.inputs["utterances"], ctx.out, ctx.config)
        return result.summary


def kept_utterances(folder: str | Path) -> Path:
    """The kept utterance table of a qc output folder."""
    return Path(folder) / KEPT
