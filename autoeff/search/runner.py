"""What every backend shares: callbacks, progress lines, the front and its re-measurement."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Sequence

from .record import TrialRecord
from .pareto import hypervolume, pareto_front
from .space import Space


class SearchCallback:
    """Hooks a backend calls; tracking (MLflow) implements them. All optional."""

    def on_search_start(self, space: Space, records: Sequence[TrialRecord], info: Mapping[str, Any]) -> None: ...
    def on_trial_start(self, number: int, params: Mapping[str, Any]) -> None: ...
    def on_trial_end(self, record: TrialRecord) -> None: ...
    def on_search_end(self, space: Space, front: Sequence[TrialRecord], records: Sequence[TrialRecord],
                      summary: Mapping[str, float]) -> None: ...


@dataclass
class SearchResult:
    space: Space
    records: List[TrialRecord]
    front: List[TrialRecord]
    summary: Dict[str, float] = field(default_factory=dict)


class Progress:
    """Plain progress lines on stderr: one per trial, plus training steps inside a trial."""

    def __init__(self, total: int, stream=None, quiet: bool = False):
        self.total = total
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            el = time.perf_counter() - self.t0
            print(f"[autoeff {el:6.0f}s] {msg}", file=self.stream, flush=True)

    def trial_start(self, done: int, number: int, params: Mapping[str, Any], what: str = "") -> None:
        short = " ".join(f"{_short(k)}={_fmt(v)}" for k, v in params.items())
        self(f"trial {number} ({what or f'{done + 1}/{self.total}'}): {short}")

    def training(self, step: int, max_steps: int, loss: float) -> None:
        if step in {max_steps // 4, max_steps // 2, (3 * max_steps) // 4}:
            self(f"    step {step}/{max_steps} loss {loss:.3f}")

    def trial_end(self, rec: TrialRecord) -> None:
        m = rec.metrics
        if rec.status in ("complete", "proxy"):
            acc = "accuracy" if rec.status == "complete" else "proxy_accuracy"
            self(f"    -> {acc} {m.get(acc, float('nan')):.3f}  latency {m.get('latency_ms', 0):.2f} ms  "
                 f"memory {m.get('peak_memory_mb', 0):.2f} MB  ({rec.duration_s:.0f}s)")
        else:
            self(f"    -> {rec.status}: {rec.reason}")


def _short(name: str) -> str:
    """'attention.layers.1.linformer.rank' -> 'L1.rank', 'model.width' -> 'width'."""
    parts = name.split(".")
    if parts[:2] == ["attention", "layers"] and len(parts) > 3:
        return f"L{parts[2]}.{parts[-1]}"
    return parts[-1]


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def front_of(space: Space, records: Sequence[TrialRecord]) -> List[TrialRecord]:
    """Feasible complete trials that no other feasible trial dominates."""
    cand = [r for r in records if r.feasible and r.values is not None]
    if not cand:
        return []
    idx = pareto_front([r.values for r in cand], space.directions)
    return [cand[i] for i in idx]


def reference_point(space: Space, records: Sequence[TrialRecord]) -> List[float]:
    """Hypervolume reference: worst observed value per objective (0 for accuracy)."""
    ref = []
    vals = [r.values for r in records if r.feasible and r.values]
    for j, o in enumerate(space.objectives):
        col = [v[j] for v in vals] or [0.0]
        if o.direction == "maximize":
            ref.append(0.0 if o.name == "accuracy" else min(col))
        else:
            ref.append(max(col) * 1.1 + 1e-9)
    return ref


def finalize(space: Space, records: List[TrialRecord], log: Callable[[str], None],
             save: Callable[[TrialRecord], None]) -> SearchResult:
    """Re-measure the front's candidates one at a time (nothing else runs now), then
    recompute the front on the re-measured figures."""
    front = front_of(space, records)
    if space.search.remeasure_front and front:
        from .objective import remeasure  # torch: only when there is something to measure

        log(f"re-measuring the {len(front)} front candidates one at a time")
        for r in front:
            try:
                remeasure(space, r)
                save(r)
            except Exception as e:  # keep the search-time figures if a checkpoint is unusable
                log(f"    trial {r.number}: re-measurement failed ({type(e).__name__}: {e}); keeping search-time figures")
        front = front_of(space, records)
    for r in records:
        r.pareto = any(r.number == f.number for f in front)
    summary: Dict[str, float] = {
        "n_trials": float(len(records)),
        "n_complete": float(sum(r.status == "complete" for r in records)),
        "n_infeasible": float(sum(r.status == "infeasible" for r in records)),
        "n_failed": float(sum(r.status == "failed" for r in records)),
        "front_size": float(len(front)),
    }
    if front:
        summary["hypervolume"] = hypervolume([r.values for r in front], space.directions,
                                             reference_point(space, records))
        if "accuracy" in space.objective_names:
            summary["best_accuracy"] = max(r.metrics["accuracy"] for r in front)
    return SearchResult(space, list(records), front, summary)
