"""Pareto logic as plain functions over arrays, shared by every backend.

Directions are "maximize" / "minimize" per column. Internally everything is turned into
minimization by negating maximized columns.
"""
from __future__ import annotations

import re
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError
from ..metrics import Condition, parse_condition, unmet


def _as_min(values: Any, directions: Sequence[str]) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim != 2:
        v = v.reshape(len(v), -1)
    if v.shape[1] != len(directions):
        raise ValueError(f"{v.shape[1]} columns but {len(directions)} directions")
    sign = np.array([-1.0 if d.startswith("max") else 1.0 for d in directions])
    return v * sign


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """True when ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    x = _as_min([a, b], directions)
    return bool(np.all(x[0] <= x[1]) and np.any(x[0] < x[1]))


def pareto_mask(values: Any, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows. Duplicate rows are all kept."""
    x = _as_min(values, directions)
    n = len(x)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        le = np.all(x <= x[i], axis=1)
        lt = np.any(x < x[i], axis=1)
        if np.any(le & lt):
            keep[i] = False
    return keep


def pareto_front(values: Any, directions: Sequence[str]) -> List[int]:
    """Indices of the non-dominated rows, ordered by the first objective (best first)."""
    mask = pareto_mask(values, directions)
    idx = np.flatnonzero(mask)
    x = _as_min(values, directions)
    return [int(i) for i in idx[np.argsort(x[idx, 0], kind="stable")]]


def hypervolume(values: Any, directions: Sequence[str], reference: Sequence[float]) -> float:
    """Volume dominated by the points and bounded by ``reference`` (given in the original
    directions, e.g. accuracy 0.0 and the worst acceptable latency). Exact, by slicing
    along the first axis; fine for the few dozen points of a front.
    """
    x = _as_min(values, directions)
    ref = _as_min([reference], directions)[0]
    x = x[np.all(x < ref, axis=1)]
    if len(x) == 0:
        return 0.0
    x = x[pareto_mask(x, ["minimize"] * x.shape[1])]
    return float(_hv(x, ref))


def _hv(x: np.ndarray, ref: np.ndarray) -> float:
    if x.shape[1] == 1:
        return float(ref[0] - x[:, 0].min())
    order = np.argsort(x[:, 0])
    x = x[order]
    vol = 0.0
    for i in range(len(x)):
        upper = x[i + 1, 0] if i + 1 < len(x) else ref[0]
        width = upper - x[i, 0]
        if width <= 0:
            continue
        sub = x[: i + 1, 1:]
        sub = sub[pareto_mask(sub, ["minimize"] * sub.shape[1])]
        vol += width * _hv(sub, ref[1:])
    return vol


# --------------------------------------------------------------------------------------
# choosing one point by a rule, e.g. "highest accuracy with latency_ms <= 20"
# --------------------------------------------------------------------------------------

_RULE = re.compile(
    r"^\s*(highest|max|maximum|lowest|min|minimum)\s+([A-Za-z_][\w.]*)\s*(?:(?:with|where|and|if)\s+(.*))?$",
    re.IGNORECASE,
)
RULE_FORM = "'<highest|lowest> <metric> [with <condition> [and <condition> ...]]'"


def parse_rule(rule: str, reference: Optional[Mapping[str, float]] = None, *,
               key: str = "--rule") -> Tuple[str, str, List[Condition]]:
    """'highest accuracy with latency_ms <= 20 and peak_memory_mb <= 8' ->
    ("max", "accuracy", [Condition latency_ms <= 20, Condition peak_memory_mb <= 8]).

    Conditions are the space's constraint language (:func:`autoeff.metrics.parse_condition`):
    every operator, and ``<metric> <op> [<factor> *] reference`` resolved against ``reference``
    (the study's measured reference model). Raises ConfigError (a ValueError) naming the key."""
    m = _RULE.match(rule) if isinstance(rule, str) else None
    if not m:
        raise ConfigError(f"expected {RULE_FORM}", key=key, value=rule, has_value=True)
    word, metric, rest = m.groups()
    sense = "max" if word.lower() in ("highest", "max", "maximum") else "min"
    conds = []
    if rest:
        for part in re.split(r"\s+and\s+|,", rest):
            c = parse_condition(part, key=key, what="rule")
            if c.factor is not None:
                if reference is None or c.metric not in reference:
                    raise ConfigError("the condition is relative to the reference model, but this study measured "
                                      "none (the space has no 'reference:' section, or its search has not started)",
                                      key=key, value=part.strip(), allowed="an absolute bound, e.g. latency_ms <= 20",
                                      has_value=True)
                c.resolve(reference)
            conds.append(c)
    return sense, metric, conds


def select(rows: Sequence[Mapping[str, float]], rule: str,
           reference: Optional[Mapping[str, float]] = None) -> Optional[int]:
    """Index of the row the rule picks among ``rows`` (metric dicts), or None if none qualifies."""
    sense, metric, conds = parse_rule(rule, reference)
    best, best_v = None, None
    for i, r in enumerate(rows):
        if metric not in r or unmet(conds, r):
            continue
        v = float(r[metric])
        if best is None or (v > best_v if sense == "max" else v < best_v):
            best, best_v = i, v
    return best
