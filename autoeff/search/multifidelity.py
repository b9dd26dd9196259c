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

Learned first (``learned_first``, the default): a cheap model that has learned nothing must not
beat an expensive one that is learning on its cost alone. A point *has learned* when its
validation accuracy so far is above the tasks' majority class, or its validation loss below the
loss of always answering the class prior, by ``learned_margin`` (1 point of accuracy, 1% of the
prior's loss). The points that have learned come first, in the order above; the points that have
not follow, ranked on the rung's signal alone (their costs are not compared: a model that has
not started to learn cannot buy its way on by being small). In the default study at its first
rung (44 of 400 steps) 1 of 14 measured candidates had learned, so that rung ranks almost all on
the validation loss alone (Spearman +0.38 with the final accuracy, where the cost-driven order
had kept the cheapest); at 133 steps 12 of 14 had: experiments/rung_signals,
experiments/search_quality.
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
    #: rank the points that have learned something before those that have not (module docstring)
    learned_first: bool = True
    #: how far a point must be from the "learned nothing" baselines to count as learning:
    #: accuracy above the majority class by this much (absolute), or loss below the class prior's
    #: by this fraction of it
    learned_margin: float = 0.01
    #: the sampler learns from the rung points too (TPE: fitted to the highest rung with enough
    #: trials until enough trials finish the full budget; see autoeff.search.store)
    inform_sampler: bool = True


def has_learned(es: "EarlyStopping", accuracy: float, majority: float, loss: float, prior_loss: float) -> bool:
    """Whether a rung's figures show learning (see the module docstring): accuracy above the
    majority class by ``learned_margin``, or the loss below the class prior's by that fraction."""
    m = es.learned_margin
    return bool(accuracy > majority + m or (prior_loss > 0 and loss < prior_loss * (1.0 - m)))


SIGNALS = ("accuracy", "loss")


def check_early_stopping(es: EarlyStopping, objective_names: Sequence[str]) -> Optional[tuple]:
    """None if valid, else ``(key, value, problem, allowed)`` for a ConfigError."""
    if es.eta <= 1:
        return ("search.early_stopping.eta", es.eta, "must be > 1", "a number > 1 (3 is usual)")
    if not 0 <= es.learned_margin < 1:
        return ("search.early_stopping.learned_margin", es.learned_margin, "must be in [0, 1)",
                "a small fraction, e.g. 0.01")
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
    #: with learned-first ranking: whether this point has learned, and how many at the rung have
    learned: Optional[bool] = None
    n_learned: int = 0

    def reason(self, eta: float) -> str:
        allowed = f"only the best {self.allowed} (1/{eta:g}) continue"
        if self.learned is False:
            return (f"has not learned yet (no better than the majority class / class prior): ranked "
                    f"{self.position + 1} of {self.population} trials at this rung, after the {self.n_learned} that "
                    f"have, then on its signal alone (costs not compared); {allowed}")
        why = (f"dominated by {self.dominated_by} of them" if self.dominated_by
               else "not dominated, but outside the best spread of its front")
        among = f" among the {self.n_learned} that have learned" if self.learned else ""
        return (f"ranked {self.position + 1} of {self.population} trials at this rung by non-dominated sorting{among} "
                f"({why}); {allowed}")


def learned_first_order(values: Any, directions: Sequence[str], learned: Sequence[bool],
                        seed_column: int = 0) -> List[int]:
    """Indices of all rows, best first, learned first: the rows that have learned in
    :func:`priority_order` among themselves, then the rest by ``seed_column`` alone (the rung's
    signal; ties go to the earlier row)."""
    rows = np.asarray(values, dtype=float).reshape(len(learned), -1)
    yes = [i for i, f in enumerate(learned) if f]
    no = [i for i, f in enumerate(learned) if not f]
    out = [yes[i] for i in priority_order(rows[yes], directions, seed_column)] if yes else []
    sign = -1.0 if directions[seed_column].lower().startswith("max") else 1.0
    return out + sorted(no, key=lambda i: (sign * rows[i, seed_column], i))


def decide(point: Sequence[float], recorded: Sequence[Sequence[float]], directions: Sequence[str], eta: float,
           seed_column: int = 0, learned: Optional[bool] = None,
           recorded_learned: Optional[Sequence[bool]] = None) -> RungDecision:
    """Should a trial whose rung point is ``point`` continue, given the points ``recorded`` at the
    same rung by other trials (in the order they arrived)? The point continues iff its position
    ``k`` in :func:`priority_order` of ``recorded + [point]`` satisfies ``k < n / eta``. With
    ``learned`` (this point's flag) and ``recorded_learned`` (theirs; a missing flag counts as
    learned), the order is :func:`learned_first_order`."""
    rows = [[float(v) for v in r] for r in recorded] + [[float(v) for v in point]]
    n = len(rows)
    flags: Optional[List[bool]] = None
    if learned is not None:
        prev = list(recorded_learned) if recorded_learned is not None else [True] * (n - 1)
        flags = [bool(f) for f in prev] + [bool(learned)]
        order = learned_first_order(rows, directions, flags, seed_column)
    else:
        order = priority_order(rows, directions, seed_column)
    pos = order.index(n - 1)
    x = _as_min(rows, directions)
    peers = np.ones(n - 1, dtype=bool) if flags is None else np.asarray(flags[:-1], dtype=bool)
    dom = int(np.sum(np.all(x[:-1] <= x[-1], axis=1) & np.any(x[:-1] < x[-1], axis=1) & peers))
    return RungDecision(keep=pos * eta < n, position=pos, population=n, allowed=int(np.ceil(n / eta - 1e-9)),
                        front=int(nondominated_fronts(rows, directions)[-1]), dominated_by=dom,
                        learned=None if flags is None else flags[-1], n_learned=sum(flags) if flags else 0)
