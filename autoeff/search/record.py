"""The trial record: everything known about one trial, as plain data.

This module imports no torch, Lightning, Optuna or MLflow, so the read-only commands
(`autoeff pareto`, `autoeff export`) and the tables can use records without paying for them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence

from ..metrics import Condition, get as metric_def, unmet

#: statuses a record can have; only ``complete`` trials can enter a front. ``pruned``: stopped
#: early by a multi-fidelity rule (its reason says at which rung and why)
#: ``proxy``: a one-shot candidate scored by inherited supernet weights (``proxy_accuracy``)
#: ``duplicate``: a sampler's re-proposal of a tried candidate, answered from its twin's figures
#: (its reason names the twin); kept in the study only: never counted towards ``n_trials``, never
#: listed as a trial of its own (records, tables, MLflow, the progress display leave it out)
STATUSES = ("running", "complete", "infeasible", "failed", "interrupted", "pruned", "proxy", "duplicate")
DUPLICATE = "duplicate"


class _Named(Protocol):
    name: str


@dataclass
class TrialRecord:
    """Everything known about one trial; stored by the backend, logged by tracking."""

    number: int
    status: str  # one of STATUSES
    params: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, float] = field(default_factory=dict)
    values: Optional[List[float]] = None  # objective values, in the space's order
    violations: List[float] = field(default_factory=list)  # <= 0 satisfied, per constraint
    reason: str = ""
    config: Optional[Dict[str, Any]] = None  # the trial's RunConfig as plain data
    checkpoint: str = ""
    duration_s: float = 0.0
    remeasured: bool = False
    pareto: bool = False
    #: where it was measured: host, cpu (model), cpus, gpu (model, when measured on CUDA)
    machine: Dict[str, str] = field(default_factory=dict)

    # ---- the one feasibility test and the one scoring path ---------------------------------
    @property
    def constraints_met(self) -> bool:
        """Every constraint satisfied (by the scored violations, <= 0 each)."""
        return all(v <= 0 for v in self.violations)

    @property
    def feasible(self) -> bool:
        """A complete trial within every constraint: what may enter a front."""
        return self.status == "complete" and self.constraints_met

    @property
    def trained(self) -> bool:
        """False for a trial whose training was skipped (an architecture constraint failed): it
        has no accuracy (the tables say "not trained")."""
        return self.status != "infeasible" and self.metrics.get("trained", 1.0) != 0.0

    def broken(self, constraints: Sequence[Condition]) -> List[Condition]:
        """The constraints the record's current metrics break (one not measured yet: skipped)."""
        return unmet([c for c in constraints if c.metric in self.metrics], self.metrics)

    def score(self, objectives: Sequence["_Named"], constraints: Sequence[Condition],
              stand_in: Optional[Mapping[str, float]] = None) -> None:
        """Objective values (in the objectives' order) and constraint violations from the metrics.

        ``stand_in`` overrides metrics for scoring only (a one-shot proxy's ``proxy_accuracy``
        in the place of ``accuracy``). A trial that was never trained has no training-phase
        figure; the sampler still needs a value, so such an objective counts as its registry
        ``untrained`` value (accuracy 0.0), in the values only, never in the metrics."""
        m = {**self.metrics, **(stand_in or {})}
        if not self.trained:
            for o in objectives:
                d = metric_def(o.name)
                if o.name not in m and d is not None and d.untrained is not None:
                    m[o.name] = d.untrained
            for c in constraints:
                d = metric_def(c.metric)
                if c.metric not in m and d is not None and d.untrained is not None:
                    m[c.metric] = d.untrained
        self.values = [float(m[o.name]) for o in objectives]
        self.violations = [c.violation(m) for c in constraints]

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TrialRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
