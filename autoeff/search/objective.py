"""One trial, independent of the backend that runs it.

Order of work (issue: architecture-only figures do not depend on training):

1. sampled params -> RunConfig (an impossible combination fails the trial with its reason);
2. build the model and measure it as deployed: latency and peak memory per task input
   shape, parameter count and size;
3. if a hard constraint on those figures already fails, stop: status ``infeasible``, training
   skipped, the reason recorded (accuracy is reported as 0.0, the value of an untrained
   candidate, and the constraint keeps it off the front);
4. train with Lightning for the budget, evaluate accuracy per task on the validation split
   (and the test split, recorded), aggregate, save the checkpoint.
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from ..config import RunConfig
from ..errors import ConfigError
from ..measure.model import measure_model
from ..model import build_model
from ..tasks import load_task, task_spec
from ..training import evaluate, fit
from .space import Objective, Space

ARCH_METRICS = ("latency_ms", "peak_memory_mb", "params", "size_mb")
Log = Callable[[str], None]


@dataclass
class TrialRecord:
    """Everything known about one trial; stored by the backend, logged by tracking."""

    number: int
    status: str  # running | complete | infeasible | failed | interrupted
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

    @property
    def feasible(self) -> bool:
        return self.status == "complete" and all(v <= 0 for v in self.violations)

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TrialRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def aggregate(per_task: Mapping[str, float], how: str, weights: Mapping[str, float]) -> float:
    vals = list(per_task.values())
    if how == "mean":
        return sum(vals) / len(vals)
    if how == "min":
        return min(vals)
    if how == "max":
        return max(vals)
    if how == "weighted":
        total = sum(weights[k] for k in per_task)
        return sum(per_task[k] * weights[k] for k in per_task) / total
    raise ValueError(how)


def _agg_rule(objectives: Sequence[Objective], metric: str, default: str) -> str:
    for o in objectives:
        if o.name == metric:
            return o.aggregate
    return default


def architecture_metrics(cfg: RunConfig, model, specs, objectives: Sequence[Objective]) -> Dict[str, float]:
    """Deployment figures of a model, per task and aggregated by the objectives' rules."""
    per = measure_model(model, specs, cfg.deploy)
    weights = {t.name: t.weight for t in cfg.tasks}
    tasks = [s.name for s in specs]
    m: Dict[str, float] = {}
    for key in ("latency_ms", "peak_memory_mb", "latency_p10_ms", "latency_p90_ms", "latency_spread"):
        vals = {t: per[t][key] for t in tasks}
        rule = _agg_rule(objectives, key, "max") if key in ("latency_ms", "peak_memory_mb") else "max"
        m[key] = aggregate(vals, rule, weights)
        if len(tasks) > 1:
            for t in tasks:
                m[f"{key}.{t}"] = vals[t]
    m["threads"] = per[tasks[0]]["threads"]
    m.update(per["_model"])
    return m


def run_trial(space: Space, params: Mapping[str, Any], number: int, *, artifacts_dir: str,
              log: Log = lambda s: None, progress=None) -> TrialRecord:
    """Run one trial end to end and return its record (never raises for a trial's own failure)."""
    t0 = time.perf_counter()
    rec = TrialRecord(number=number, status="running", params=dict(params))
    try:
        cfg = space.materialize(params)
        rec.config = cfg.to_dict()
        specs = [task_spec(t) for t in cfg.tasks]
        model = build_model(cfg, specs)
        arch = architecture_metrics(cfg, model, specs, space.objectives)
        rec.metrics.update(arch)
        arch_constraints = [c for c in space.constraints if c.metric in ARCH_METRICS]
        broken = [c for c in arch_constraints if not c.satisfied(arch)]
        if broken:  # confirm with a second measurement: one noisy spike must not discard a candidate
            again = architecture_metrics(cfg, model, specs, space.objectives)
            for k in ("latency_ms", "peak_memory_mb"):
                arch[k] = min(arch[k], again[k])
            rec.metrics.update(arch)
            broken = [c for c in arch_constraints if not c.satisfied(arch)]
        if broken:
            rec.status = "infeasible"
            rec.reason = "; ".join(f"{c.metric} = {arch[c.metric]:.4g} breaks '{c.text}'" for c in broken) + \
                " (architecture alone: training skipped)"
            rec.metrics["accuracy"] = 0.0
            rec.metrics["trained"] = 0.0
        else:
            data = [load_task(t, cfg.data_dir) for t in cfg.tasks]
            fr = fit(model, data, cfg.train, progress=progress)
            val = evaluate(model, data, "val", max_batches=cfg.train.val_batches)
            test = evaluate(model, data, "test")
            weights = {t.name: t.weight for t in cfg.tasks}
            rule = _agg_rule(space.objectives, "accuracy", "mean")
            rec.metrics["accuracy"] = aggregate(val, rule, weights)
            rec.metrics["test_accuracy"] = aggregate(test, rule, weights)
            for t in data:
                n = t.spec.name
                rec.metrics[f"accuracy.{n}"] = val[n]
                rec.metrics[f"test_accuracy.{n}"] = test[n]
                rec.metrics[f"majority.{n}"] = t.majority_accuracy("val")
            rec.metrics.update({"train_steps": float(fr.steps), "train_time_s": fr.seconds,
                                "train_loss": fr.last_loss, "trained": 1.0})
            rec.checkpoint = save_checkpoint(model, cfg, Path(artifacts_dir) / f"trial-{number:04d}" / "model.pt",
                                             metrics=rec.metrics)
            rec.status = "complete"
        _score(space, rec)
    except ConfigError as e:
        rec.status, rec.reason = "failed", f"invalid candidate: {e}"
    except Exception as e:  # a failing trial is recorded with its reason; the search goes on
        rec.status = "failed"
        tb = traceback.format_exc(limit=4).strip().splitlines()
        rec.reason = f"{type(e).__name__}: {e}" + (f" [at {tb[-3].strip()}]" if len(tb) >= 3 else "")
    rec.duration_s = time.perf_counter() - t0
    return rec


def _score(space: Space, rec: TrialRecord) -> None:
    """Objective values and constraint violations from the record's metrics."""
    rec.values = [float(rec.metrics[o.name]) for o in space.objectives]
    rec.violations = [c.violation(rec.metrics) for c in space.constraints]


def save_checkpoint(model, cfg: RunConfig, path: Path, metrics: Optional[Mapping[str, float]] = None) -> str:
    """``{"config": RunConfig as data, "state_dict": ..., "metrics": ...}``; reload with
    ``autoeff.build_model(load_config(...))`` + ``load_state_dict``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict(), "metrics": dict(metrics or {})}, path)
    return str(path)


def remeasure(space: Space, rec: TrialRecord) -> TrialRecord:
    """Re-measure a finished trial's deployed model alone on the machine (front candidates)."""
    from ..config import parse_run_config

    cfg = parse_run_config(rec.config, file=f"trial {rec.number}")
    specs = [task_spec(t) for t in cfg.tasks]
    model = build_model(cfg, specs)
    if rec.checkpoint and Path(rec.checkpoint).exists():
        model.load_state_dict(torch.load(rec.checkpoint, weights_only=True)["state_dict"])
    arch = architecture_metrics(cfg, model, specs, space.objectives)
    for k in ("latency_ms", "peak_memory_mb"):
        rec.metrics[f"search_{k}"] = rec.metrics.get(k, float("nan"))
    rec.metrics.update(arch)
    _score(space, rec)
    rec.remeasured = True
    return rec
