"""ASHA that keeps the untuned default running to its last epoch (picklable: Tune saves
the scheduler with the search)."""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from erc.tune.results import is_point


class DefaultKeepingASHA(ASHAScheduler):
    """ASHA (async successive halving) that never stops the ``protected`` configuration
    (the untuned default): its results still count in the rungs, but it always trains its
    full epochs, so the search reports the default's real score beside the tuned ones."""

    def __init__(self, protected: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self._protected = dict(protected) if protected else None

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        if (action == TrialScheduler.STOP and self._protected is not None
                and is_point(dict(trial.config), self._protected)
                and result.get(self._time_attr, 0) < self._max_t):
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action
