"""Strategies: how a candidate is scored. A backend schedules trials; a strategy runs them.

- :class:`Standalone` trains every candidate for real (``search.strategy: standalone``).
- :class:`~autoeff.search.oneshot.OneShot` trains one weight-sharing supernet, scores
  candidates by their inherited weights (proxy trials), then trains the best of the proxy front
  as real trials, the *finalists* (``search.strategy: oneshot``).

Both run in any backend: ``prepare`` once before the first trial, ``run_trial`` per proposed
candidate, then ``finalists`` / ``run_finalist`` for the trials a strategy adds at the end.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .record import TrialRecord
from .space import Space

Log = Callable[[str], None]

#: statuses a candidate's record takes (a twin with one of them answers a re-proposal)
ANSWERED = ("complete", "infeasible", "proxy")


class Strategy:
    name = "standalone"
    #: how the front's accuracy was obtained (logged on the search's parent run)
    front_accuracy = "real: every candidate trained for its full budget"

    def __init__(self, space: Space):
        self.space = space

    def prepare(self, log: Log, artifacts_dir: str) -> Dict[str, float]:
        """Work before the first trial; returns figures for the parent run."""
        return {}

    def run_trial(self, params: Mapping[str, Any], number: int, *, artifacts_dir: str, log: Log,
                  progress=None) -> TrialRecord:
        raise NotImplementedError

    def finalists(self, records: Sequence[TrialRecord]) -> List[Tuple[TrialRecord, str]]:
        """(record, role) pairs whose candidates run again as real trials after the search
        (none here); the role names why (e.g. ``finalist``, ``rank_check``)."""
        return []

    def run_finalist(self, of: TrialRecord, role: str, number: int, *, artifacts_dir: str, log: Log,
                     progress=None) -> TrialRecord:
        raise NotImplementedError

    def summary(self, records: Sequence[TrialRecord]) -> Dict[str, float]:
        """Figures of the finished search (added to the parent run's metrics)."""
        return {}


class Standalone(Strategy):
    def run_trial(self, params, number, *, artifacts_dir, log, progress=None, rung_judge=None):
        """``rung_judge``: early stopping's judge (``search.early_stopping``, standalone only)."""
        from .objective import run_trial  # torch and Lightning: only a running search needs them

        return run_trial(self.space, params, number, artifacts_dir=artifacts_dir, log=log, progress=progress,
                         rung_judge=rung_judge)


def make_strategy(space: Space) -> Strategy:
    if space.search.strategy == "oneshot":
        from .oneshot import OneShot

        return OneShot(space)
    return Standalone(space)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Kendall's tau-b between two rankings (scipy); None for fewer than 3 pairs or a constant side."""
    if len(x) != len(y) or len(x) < 3:
        return None
    from scipy.stats import kendalltau

    tau = kendalltau(x, y).statistic
    return None if tau != tau else float(tau)  # NaN: a constant side
