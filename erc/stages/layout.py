"""Where each stage of a run writes, under the run's output folder."""

from __future__ import annotations

from pathlib import Path

from erc import io
from erc.recipes import RunConfig
from erc.stages.qc import kept_utterances

IDENTITY_MODALITIES = ("speaker", "face")


class Layout:
    def __init__(self, config: RunConfig):
        self.config = config
        self.root = Path(config.output_dir)
        self.corpus = self.root / "corpus"
        self.features = Path(config.preprocess.output_dir or self.root / "features")
        self.qc = self.root / "qc"
        self.adapters = self.root / "adapters"
        self.text = self.root / "text"
        self.train = self.root / "train"
        self.qc_enabled = config.qc.enabled

    def evaluation(self, split: str) -> Path:
        return self.root / f"eval-{io.path_part(split)}"

    def evaluations(self) -> list[Path]:
        """The evaluation folders of this config's splits (an eval-* folder an earlier
        run of another config left is not this run's)."""
        train = self.config.train
        if not train.enabled:
            return []
        return [p for p in (self.evaluation(s) for s in dict.fromkeys(train.eval_splits))
                if p.is_dir()]

    def utterances(self, config: RunConfig | None = None) -> Path:
        """The utterance table training reads: QC's kept rows, else the corpus's."""
        if self.qc_enabled:
            return kept_utterances(self.qc)
        return self.corpus / "utterances.parquet"

    def folders(self) -> dict[str, Path]:
        """name -> folder of every stage output of this config, there yet or not (the
        report's folder, the run's own, left out)."""
        train = self.config.train
        named = {"corpus": self.corpus, "features": self.features}
        if self.qc_enabled:
            named["qc"] = self.qc
        if train.enabled:
            if train.adapters == "train_split" and set(train.modalities) & set(IDENTITY_MODALITIES):
                named["adapters"] = self.adapters
            if train.text_tokens in ("finetuned", "both") and "text" in train.modalities:
                named["text"] = self.text
            named["train"] = self.train
            named.update({p.name: p for p in map(self.evaluation, train.eval_splits)})
        return named

    def stage_folders(self) -> dict[str, Path]:
        """name -> folder of every stage output of this config that exists: a folder an
        earlier run of another config left (train/ of a run with training now disabled,
        qc/ with QC off) is not part of this run's report."""
        return {name: path for name, path in self.folders().items() if path.is_dir()}
