"""ASHA that keeps the untuned default running to its last epoch and keeps its rungs
across a resumed search (picklable: Tune saves the scheduler with the search)."""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from erc import io
from erc.tune.results import is_point


class DefaultKeepingASHA(ASHAScheduler):
    """ASHA (async successive halving) that

    - never stops the ``protected`` configuration (the untuned default): its results still
      count in the rungs, but it always trains its full epochs, so the search reports the
      default's real score beside the tuned ones;
    - writes its rungs (each trial's score at each milestone) to ``state_path`` whenever
      they change and reads them back before its first decision. Tune restores a search
      with the scheduler as it was pickled at the start, so without this a resumed search
      would forget every score recorded before the interruption and judge the trials that
      follow against empty rungs (stopping nothing)."""

    def __init__(self, protected: dict | None = None, state_path: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self._protected = dict(protected) if protected else None
        self._state_path = state_path
        self._state_loaded = False

    # -- the rungs on disk ---------------------------------------------------------------

    def rungs(self) -> list[dict[str, dict[str, float]]]:
        """Per bracket, {milestone: {trial_id: score}} (score in "max" orientation)."""
        return [{str(milestone): dict(recorded) for milestone, recorded in bracket._rungs}
                for bracket in self._brackets]

    def _recorded(self) -> int:
        """How many scores the rungs hold (ASHA only ever adds to them)."""
        return sum(len(recorded) for bracket in self._brackets for _, recorded in bracket._rungs)

    def _load_state(self) -> None:
        """Reads the rungs saved by an earlier run of this search, once."""
        if self._state_loaded:
            return
        self._state_loaded = True
        if not self._state_path or not Path(self._state_path).is_file():
            return
        saved = json.loads(Path(self._state_path).read_text())
        for bracket, rungs in zip(self._brackets, saved.get("brackets", [])):
            for milestone, recorded in bracket._rungs:
                for trial_id, score in rungs.get(str(milestone), {}).items():
                    recorded.setdefault(trial_id, float(score))

    def _save_state(self) -> None:
        if not self._state_path or not Path(self._state_path).parent.is_dir():
            return
        io.write_text(self._state_path, json.dumps({"brackets": self.rungs()}))  # a kill leaves no half file

    # -- Tune's hooks --------------------------------------------------------------------

    def on_trial_add(self, tune_controller, trial):
        self._load_state()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        self._load_state()
        before = self._recorded()
        action = super().on_trial_result(tune_controller, trial, result)
        if (action == TrialScheduler.STOP and self._protected is not None
                and is_point(dict(trial.config), self._protected)
                and result.get(self._time_attr, 0) < self._max_t):
            self._num_stopped -= 1
            action = TrialScheduler.CONTINUE
        if self._recorded() != before:
            self._save_state()
        return action

    def on_trial_complete(self, tune_controller, trial, result):
        self._load_state()
        before = self._recorded()
        super().on_trial_complete(tune_controller, trial, result)
        if self._recorded() != before:
            self._save_state()
