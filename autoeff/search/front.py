"""The front of a search and what is computed from it: the feasible non-dominated trials, the
front on search-time figures, the hypervolume and its history, the summary, and the front's
re-measurement at the end of a search (:func:`finalize`). Plain functions over records: no
Optuna, Ray, torch or MLflow (the re-measurement imports torch only when it runs)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .pareto import hypervolume, pareto_front
from .record import TrialRecord
from .space import Space


@dataclass
class SearchResult:
    space: Space
    records: List[TrialRecord]
    front: List[TrialRecord]
    summary: Dict[str, float] = field(default_factory=dict)



def front_of(space: Space, records: Sequence[TrialRecord]) -> List[TrialRecord]:
    """Feasible complete trials that no other feasible trial dominates."""
    cand = [r for r in records if r.feasible and r.values is not None]
    if not cand:
        return []
    idx = pareto_front([r.values for r in cand], space.directions)
    return [cand[i] for i in idx]


def search_time_front(space: Space, records: Sequence[TrialRecord]) -> List[TrialRecord]:
    """The front on the figures measured during the search (before any re-measurement): what
    the backend's own tools (e.g. Optuna Dashboard) show."""
    import copy

    old = []
    for r in records:
        c = copy.copy(r)
        if r.remeasured and r.values is not None:
            m = dict(r.metrics)
            for o in space.objectives:
                if f"search_{o.name}" in m:
                    m[o.name] = m[f"search_{o.name}"]
            c.metrics = m
            c.score(space.objectives, space.constraints)
        old.append(c)
    ids = {r.number for r in front_of(space, old)}
    return [r for r in records if r.number in ids]


def majority_accuracy(records: Sequence[TrialRecord]) -> float:
    """The accuracy of always answering each task's majority class, combined over the tasks
    as ``accuracy`` is (``train.aggregate`` and the task weights), from the first complete
    trial that records ``majority.<task>``; 0.0 when none does."""
    from ..config import aggregate

    for r in records:
        per_task = {k.split(".", 1)[1]: v for k, v in r.metrics.items() if k.startswith("majority.")}
        if r.status == "complete" and per_task:
            cfg = r.config or {}
            weights = {(t.get("name") or t.get("kind")): float(t.get("weight", 1.0)) for t in cfg.get("tasks", [])}
            return float(aggregate(per_task, (cfg.get("train") or {}).get("aggregate", "mean"), weights))
    return 0.0


def reference_point(space: Space, records: Sequence[TrialRecord]) -> List[float]:
    """Hypervolume reference: accuracy at the majority class (:func:`majority_accuracy`: a model
    at chance adds no volume; a per-task accuracy objective at that task's majority class), the
    worst observed value of every other objective (1.1 x for minimized ones)."""
    ref = []
    vals = [r.values for r in records if r.feasible and r.values]
    for j, o in enumerate(space.objectives):
        col = [v[j] for v in vals] or [0.0]
        if o.direction == "maximize":
            if o.name == "accuracy":
                ref.append(majority_accuracy(records))
            elif o.name.startswith("accuracy."):
                task = o.name.split(".", 1)[1]
                ref.append(next((float(r.metrics[f"majority.{task}"]) for r in records
                                 if r.status == "complete" and f"majority.{task}" in r.metrics), 0.0))
            else:
                ref.append(min(col))
        else:
            ref.append(max(col) * 1.1 + 1e-9)
    return ref


def hypervolume_history(space: Space, records: Sequence[TrialRecord]) -> List[Tuple[int, float]]:
    """(trial number, hypervolume of the front of the trials up to it), in trial order, all
    against one reference point (the whole search's), so the values are comparable and never
    decrease; the last one is the search's hypervolume."""
    ref = reference_point(space, records)
    out: List[Tuple[int, float]] = []
    seen: List[TrialRecord] = []
    for r in sorted(records, key=lambda r: r.number):
        seen.append(r)
        fr = front_of(space, seen)
        hv = hypervolume([f.values for f in fr], space.directions, ref) if fr else 0.0
        out.append((r.number, float(hv)))
    return out


def summarize(space: Space, records: Sequence[TrialRecord], front: Sequence[TrialRecord]) -> Dict[str, float]:
    """Counts, front size, hypervolume and best accuracy of a search."""
    summary: Dict[str, float] = {
        "n_trials": float(len(records)),
        "n_complete": float(sum(r.status == "complete" for r in records)),
        "n_infeasible": float(sum(r.status == "infeasible" for r in records)),
        "n_failed": float(sum(r.status == "failed" for r in records)),
        "front_size": float(len(front)),
    }
    for status in ("pruned", "proxy"):
        n = sum(r.status == status for r in records)
        if n:
            summary[f"n_{status}"] = float(n)
    if front:
        summary["hypervolume"] = hypervolume([r.values for r in front], space.directions,
                                             reference_point(space, records))
        if "accuracy" in space.objective_names:
            summary["best_accuracy"] = max(r.metrics["accuracy"] for r in front)
    return summary


def finalize(space: Space, records: List[TrialRecord], log: Callable[[str], None],
             save: Callable[[TrialRecord], None],
             remeasure: Optional[Callable[[Space, TrialRecord], TrialRecord]] = None) -> SearchResult:
    """Re-measure the front's candidates one at a time (nothing else runs now), then
    recompute the front on the re-measured figures. ``remeasure`` (default: here, in this
    process) lets a backend measure elsewhere, e.g. on the kind of node ``search.ray.resources`` names."""
    front = front_of(space, records)
    if space.search.remeasure_front and front:
        if remeasure is None:
            from .objective import remeasure  # torch: only when there is something to measure

        log(f"re-measuring the {len(front)} front candidates one at a time")
        for r in front:
            try:
                r.__dict__.update(remeasure(space, r).__dict__)
                save(r)
            except Exception as e:  # keep the search-time figures if a checkpoint is unusable
                log(f"    trial {r.number}: re-measurement failed ({type(e).__name__}: {e}); keeping search-time figures")
        front = front_of(space, records)
    for r in records:
        r.pareto = any(r.number == f.number for f in front)
    summary = summarize(space, records, front)
    return SearchResult(space, list(records), front, summary)
