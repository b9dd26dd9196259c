"""The strategy contract: what every strategy (:mod:`autoeff.search.strategy`,
:mod:`autoeff.search.oneshot`) implements, and the helpers they share. Both strategy modules import
this one, and only :func:`autoeff.search.strategy.make_strategy` knows them both, so neither imports
the other (see docs/architecture.md, the search)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .record import TrialRecord
from .space import Space

Log = Callable[[str], None]


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


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> Optional[float]:
    """Kendall's tau-b between two rankings (scipy); None for fewer than 3 pairs or a constant side."""
    if len(x) != len(y) or len(x) < 3:
        return None
    from scipy.stats import kendalltau

    tau = kendalltau(x, y).statistic
    return None if tau != tau else float(tau)  # NaN: a constant side
