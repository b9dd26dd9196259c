"""Strategies: how a candidate is scored. A backend schedules trials; a strategy runs them.

- :class:`Standalone` trains every candidate for real (``search.strategy: standalone``).
- :class:`~autoeff.search.oneshot.OneShot` trains one weight-sharing supernet, scores
  candidates by their inherited weights (proxy trials), then trains the best of the proxy front
  as real trials, the *finalists* (``search.strategy: oneshot``).

Both run in any backend: ``prepare`` once before the first trial, ``run_trial`` per proposed
candidate, then ``finalists`` / ``run_finalist`` for the trials a strategy adds at the end.
"""
from __future__ import annotations

from .space import Space
from .strategy_base import Log, Strategy, kendall_tau  # noqa: F401  (the contract, re-exported)

#: statuses a candidate's record takes (a twin with one of them answers a re-proposal)
ANSWERED = ("complete", "infeasible", "proxy")


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
