"""Where each stage of a run writes, under the run's output folder."""

from __future__ import annotations

from pathlib import Path

from erc.recipes import RunConfig
from erc.stages.qc import kept_utterances


class Layout:
    def __init__(self, config: RunConfig):
        self.root = Path(config.output_dir)
        self.corpus = self.root / "corpus"
        self.features = Path(config.preprocess.output_dir or self.root / "features")
        self.qc = self.root / "qc"
        self.adapters = self.root / "adapters"
        self.text = self.root / "text"
        self.train = self.root / "train"
        self.qc_enabled = config.qc.enabled

    def evaluation(self, split: str) -> Path:
        return self.root / f"eval-{split}"

    def evaluations(self) -> list[Path]:
        return sorted(p for p in self.root.glob("eval-*") if p.is_dir())

    def utterances(self, config: RunConfig | None = None) -> Path:
        """The utterance table training reads: QC's kept rows, else the corpus's."""
        if self.qc_enabled:
            return kept_utterances(self.qc)
        return self.corpus / "utterances.parquet"

    def stage_folders(self) -> dict[str, Path]:
        """name -> folder of every stage output that exists."""
        named = {"corpus": self.corpus, "features": self.features, "qc": self.qc,
                 "adapters": self.adapters, "text": self.text, "train": self.train}
        named.update({p.name: p for p in self.evaluations()})
        return {name: path for name, path in named.items() if path.is_dir()}
