"""Multi-objective early stopping: the rule, as plain functions over arrays (both backends).

A trial trains through a ladder of budgets (rungs, e.g. 1/9 and 1/3 of ``train.max_steps``; the
last rung is the full budget). At each rung it reports a point: its validation accuracy so far,
with the costs that are known before training (latency, memory, ...). The trial continues only
if its point is in the best ``1/eta`` of the points recorded at that rung so far, its own
included, ranked by non-dominated sorting: multi-objective asynchronous successive halving
(Schmucker et al. 2021, "Multi-objective multi-fidelity hyperparameter optimization with
application to fairness"; Salinas et al. 2021, MOASHA, whose epsilon-net order within a front
is used here, on normalized objectives).

Asynchronous: a trial never waits for a rung to fill; it is compared with whatever trials
reached that rung before it (any worker, any process). The first trial at a rung continues.

The order of the points at a rung:

1. non-dominated sorting: front 0 is the points no other point dominates, front 1 those only
   front 0 dominates, and so on;
2. within a front, an epsilon-net order (Clarkson 2005, as in MOASHA): the best point on the
   first objective (``seed_column``, normally accuracy) first, then repeatedly the point farthest
   from those already chosen, with every objective scaled to [0, 1] over the rung's points, so a
   front is kept well spread rather than crowded at one end; ties go to the earlier point.

A point at position ``k`` (0 = best) among ``n`` points continues iff ``k < n / eta``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

import numpy as np

from .pareto import _as_min


@dataclass
class EarlyStopping:
    """``search.early_stopping`` in a space file (absent = every trial gets the full budget)."""

    #: rung budgets as fractions of ``train.max_steps``, increasing, each in (0, 1); the full
    #: budget is the last rung and needs no entry. [] = [1/eta^2, 1/eta]
    rungs: List[float] = field(default_factory=list)
    #: reduction factor: a trial continues past a rung if it is in the best 1/eta there
    eta: float = 3.0
    #: the quality figure a rung ranks on, in the accuracy objective's place: ``accuracy`` (the
    #: validation accuracy so far) or ``loss`` (the validation loss so far, lower is better; it
    #: moves before accuracy leaves the majority class: experiments/rung_signals)
    signal: str = "accuracy"


SIGNALS = ("accuracy", "loss")


def check_early_stopping(es: EarlyStopping, objective_names: Sequence[str]) -> Optional[tuple]:
    """None if valid, else ``(key, value, problem, allowed)`` for a ConfigError."""
    if es.eta <= 1:
        return ("search.early_stopping.eta", es.eta, "must be > 1", "a number > 1 (3 is usual)")
    if es.signal not in SIGNALS:
        return ("search.early_stopping.signal", es.signal, "unknown rung signal", ", ".join(SIGNALS))
    prev = 0.0
    for i, f in enumerate(es.rungs):
        if not 0 < f < 1:
            return (f"search.early_stopping.rungs[{i}]", f, "a rung is a fraction of train.max_steps in (0, 1)",
                    "fractions in (0, 1), increasing, e.g. [0.111, 0.333]")
        if f <= prev:
            return (f"search.early_stopping.rungs[{i}]", f, "rungs must increase",
                    "fractions in (0, 1), increasing, e.g. [0.111, 0.333]")
        prev = f
    if "accuracy" not in objective_names:
        return ("search.early_stopping", "set", "early stopping ranks trials by their accuracy so far, "
                "but accuracy is not an objective", "an accuracy objective, or no early_stopping block")
    from ..metrics import get as metric

    trained = [n for n in objective_names if n != "accuracy" and metric(n) is not None and metric(n).phase != "architecture"]
    if trained:  # a rung knows the accuracy so far and the figures measured before training, nothing else
        return ("search.early_stopping", "set", f"early stopping ranks trials at a rung by accuracy and the deployment "
                f"figures, but {', '.join(trained)} is only known after training",
                "accuracy and deployment figures as objectives, or no early_stopping block")
    return None


def rung_fractions(es: EarlyStopping) -> List[float]:
    return list(es.rungs) if es.rungs else [es.eta ** -2, es.eta ** -1]


def rung_steps(max_steps: int, es: EarlyStopping) -> List[int]:
    """The rung boundaries in optimizer steps (distinct, below ``max_steps``, at least 1)."""
    out: List[int] = []
    for f in rung_fractions(es):
        s = max(1, int(round(f * max_steps)))
        if s < max_steps and s not in out:
            out.append(s)
    return out


def nondominated_fronts(values: Any, directions: Sequence[str]) -> np.ndarray:
    """Front index of every row (0 = not dominated by any row; 1 = dominated only by front 0; ...)."""
    x = _as_min(values, directions)
    n = len(x)
    front = np.full(n, -1, dtype=int)
    left = np.arange(n)
    k = 0
    while left.size:
        sub = x[left]
        keep = np.ones(len(left), dtype=bool)
        for i in range(len(left)):
            le = np.all(sub <= sub[i], axis=1)
            lt = np.any(sub < sub[i], axis=1)
            if np.any(le & lt):
                keep[i] = False
        front[left[keep]] = k
        left = left[~keep]
        k += 1
    return front


def _spread_order(x: np.ndarray, seed_column: int) -> List[int]:
    """Epsilon-net order of the rows of ``x`` (already minimization, normalized)."""
    n = len(x)
    if n == 0:
        return []
    first = int(np.argmin(x[:, seed_column]))  # ties: the earliest row
    order = [first]
    rest = [i for i in range(n) if i != first]
    while rest:
        d = np.linalg.norm(x[rest][:, None, :] - x[order][None, :, :], axis=-1).min(axis=1)
        j = rest[int(np.argmax(d))]
        order.append(j)
        rest.remove(j)
    return order


def priority_order(values: Any, directions: Sequence[str], seed_column: int = 0) -> List[int]:
    """Indices of all rows, best first: by non-dominated front, then epsilon-net within a front."""
    x = _as_min(values, directions)
    if len(x) == 0:
        return []
    lo, hi = x.min(axis=0), x.max(axis=0)
    scale = np.where(hi > lo, hi - lo, 1.0)
    z = (x - lo) / scale
    fronts = nondominated_fronts(values, directions)
    out: List[int] = []
    for k in range(int(fronts.max()) + 1):
        members = np.flatnonzero(fronts == k)
        out += [int(members[i]) for i in _spread_order(z[members], seed_column)]
    return out


@dataclass
class RungDecision:
    keep: bool
    position: int  # 0 = best among the points at the rung
    population: int  # points at the rung, this one included
    allowed: int  # how many of them continue: positions 0 .. allowed - 1 (ceil(population / eta))
    front: int  # its non-dominated front among them (0 = not dominated)
    dominated_by: int  # how many of the other points dominate it

    def reason(self, eta: float) -> str:
        why = (f"dominated by {self.dominated_by} of them" if self.dominated_by
               else "not dominated, but outside the best spread of its front")
        return (f"ranked {self.position + 1} of {self.population} trials at this rung by non-dominated sorting "
                f"({why}); only the best {self.allowed} (1/{eta:g}) continue")


def decide(point: Sequence[float], recorded: Sequence[Sequence[float]], directions: Sequence[str], eta: float,
           seed_column: int = 0) -> RungDecision:
    """Should a trial whose rung point is ``point`` continue, given the points ``recorded`` at the
    same rung by other trials (in the order they arrived)? The point continues iff its position
    ``k`` in :func:`priority_order` of ``recorded + [point]`` satisfies ``k < n / eta``."""
    rows = [[float(v) for v in r] for r in recorded] + [[float(v) for v in point]]
    n = len(rows)
    order = priority_order(rows, directions, seed_column)
    pos = order.index(n - 1)
    x = _as_min(rows, directions)
    dom = int(np.sum(np.all(x[:-1] <= x[-1], axis=1) & np.any(x[:-1] < x[-1], axis=1)))
    return RungDecision(keep=pos * eta < n, position=pos, population=n, allowed=int(np.ceil(n / eta - 1e-9)),
                        front=int(nondominated_fronts(rows, directions)[-1]), dominated_by=dom)
