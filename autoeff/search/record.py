"""The trial record: everything known about one trial, as plain data.

This module imports no torch, Lightning, Optuna or MLflow, so the read-only commands
(`autoeff pareto`, `autoeff export`) and the tables can use records without paying for them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

#: statuses a record can have; only ``complete`` trials can enter a front. ``pruned``: stopped
#: early by a multi-fidelity rule (its reason says at which rung and why)
#: ``proxy``: a one-shot candidate scored by inherited supernet weights (``proxy_accuracy``)
STATUSES = ("running", "complete", "infeasible", "failed", "interrupted", "pruned", "proxy")


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

    @property
    def feasible(self) -> bool:
        return self.status == "complete" and all(v <= 0 for v in self.violations)

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TrialRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
