"""The report stage: one HTML page over a run folder (``erc.report``), rewritten when any
stage output it shows, or the run's settings, changed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from erc.recipes import RunConfig
from erc.stages.base import Stage, StageContext
from erc.stages.layout import Layout


def report_inputs(config: RunConfig) -> dict[str, Path]:
    return Layout(config).stage_folders()


class ReportStage(Stage):
    name = "report"
    section = None
    results = ("report.html",)
    description = "one HTML page over every stage of the run"

    def settings(self, config: RunConfig) -> dict:
        return dataclasses.asdict(config)

    def run(self, ctx: StageContext) -> dict:
        from erc.report import write_report

        path = write_report(ctx.out, ctx.config)
        return {"report": str(path)}
