"""One trial, independent of the backend that runs it.

Order of work (issue: architecture-only figures do not depend on training):

1. sampled params -> RunConfig (an impossible combination fails the trial with its reason);
2. build the model and measure it as deployed (compressed as ``compress`` says): latency and
   peak memory per task input shape, parameter count and size;
3. if a hard constraint on those figures already fails, stop: status ``infeasible``, training
   skipped, the reason recorded (no accuracy is recorded: the tables say "not trained"; the
   sampler is told the registry's ``untrained`` value, accuracy 0.0, and the constraint keeps it
   off the front);
4. train with Lightning for the budget, compress (prune, fine-tune, quantize), evaluate accuracy
   per task on the validation split (and the test split, recorded), aggregate, measure the
   compressed model again as deployed, save the checkpoint (of the deployed model). With early
   stopping (``search.early_stopping``), the backend's ``rung_judge`` is asked at every rung
   whether the trial goes on (see :mod:`autoeff.search.multifidelity`); a stopped trial is
   ``pruned``.

Measurements run inside the machine's measurement gate and every unit of work inside its work
lock (:mod:`autoeff.isolation`), so no other trial trains while a model is timed.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from ..compress import build_deployed
from ..config import RunConfig, aggregate, parse_run_config, task_spec
from ..errors import ConfigError
from ..isolation import gate
from ..measure.host import machine_info
from ..measure.model import measure_model
from ..metrics import better, names as metric_names
from ..model import build_model
from ..tasks import load_task
from ..training import save_checkpoint, train_and_evaluate
from .record import TrialRecord
from .space import DEPLOY_METRICS, Objective, Space

ARCH_METRICS = DEPLOY_METRICS  # measured before training: a constraint on them is checked first
#: measured per task input shape, then aggregated (registry: architecture phase, per task)
PER_TASK_METRICS = metric_names(phase="architecture", per_task=True)
#: timing/allocation figures: a failed constraint is confirmed by a second measurement
NOISY_METRICS = metric_names(phase="architecture", noisy=True)
Log = Callable[[str], None]
#: (rung index from 1, step, point: objective values with the rung's quality signal, learned:
#: whether the point shows learning, None when not judged) -> None to go on, or the reason to stop
#: (provided by the backend, which knows the other trials' rung points)
RungJudge = Callable[[int, int, List[float], Optional[bool]], Optional[str]]


def _agg_rule(objectives: Sequence[Objective], metric: str, default: str) -> str:
    for o in objectives:
        if o.name == metric:
            return o.aggregate
    return default


def architecture_metrics(cfg: RunConfig, model, specs, objectives: Sequence[Objective]) -> Dict[str, float]:
    """Deployment figures of a model, per task and aggregated by the objectives' rules (a cost
    that is no objective aggregates by ``max``: the model must serve every task). Measured while
    no other trial on the machine works (the measurement gate); ``measure_wait_s`` is how long
    that took to arrange, ``measure_contended`` 1 when another trial's step had to finish first."""
    t0 = time.perf_counter()
    with gate().measure() as waited:
        per = measure_model(model, specs, cfg.deploy)
    weights = {t.name: t.weight for t in cfg.tasks}
    tasks = [s.name for s in specs]
    m: Dict[str, float] = {}
    for key in (*PER_TASK_METRICS, *(k for k in ARCH_METRICS if k not in PER_TASK_METRICS)):
        if key not in per[tasks[0]]:  # e.g. the decoder figures of an encoder, or a model-level one
            continue
        vals = {t: per[t][key] for t in tasks}
        m[key] = aggregate(vals, _agg_rule(objectives, key, "max"), weights)
        if len(tasks) > 1:
            for t in tasks:
                m[f"{key}.{t}"] = vals[t]
    m["threads"] = per[tasks[0]]["threads"]
    m.update(per["_model"])
    m["measure_time_s"] = time.perf_counter() - t0
    m["measure_wait_s"] = waited.wait_s
    m["measure_contended"] = float(waited.contended)
    if waited.timed_out:
        m["measure_gate_timeout"] = 1.0
    return m


#: readings per deployment measurement (:func:`deployment_figures`): candidates, the reference
#: model and re-measured front points alike
MEASURE_READINGS = 2


def deployment_figures(cfg: RunConfig, model, specs, objectives: Sequence[Objective],
                       readings: int = MEASURE_READINGS) -> Dict[str, float]:
    """The one measurement protocol for every figure a constraint judges: the candidates before
    and after training, the ``reference:`` model whose figures set relative bounds, and the front
    re-measured after the search. ``readings`` calls of :func:`architecture_metrics`; for the
    timing and allocation figures (the registry's noisy metrics, per task too) the better reading by
    the metric's direction is kept (one noisy spike must neither discard a candidate nor loosen a
    bound), the rest is the first
    reading's; ``measure_time_s`` / ``measure_wait_s`` add up, ``measure_readings`` says how many."""
    runs = [architecture_metrics(cfg, model, specs, objectives) for _ in range(max(1, readings))]
    m = dict(runs[0])
    for k in m:
        if k.split(".")[0] in NOISY_METRICS:
            for r in runs[1:]:
                m[k] = better(k.split(".")[0], m[k], r[k])
    for k in ("measure_time_s", "measure_wait_s"):
        m[k] = sum(r[k] for r in runs)
    m["measure_contended"] = max(r["measure_contended"] for r in runs)
    if any("measure_gate_timeout" in r for r in runs):
        m["measure_gate_timeout"] = 1.0
    m["measure_readings"] = float(len(runs))
    return m


def measure_architecture(space: Space, cfg: RunConfig, model, specs, rec: TrialRecord) -> bool:
    """Measure ``model`` as deployed into ``rec.metrics`` (:func:`deployment_figures`, the
    protocol the reference model is measured with); if a hard constraint on those figures fails,
    mark the record ``infeasible`` with the reason and return False."""
    arch = deployment_figures(cfg, model, specs, space.objectives)
    rec.metrics.update(arch)
    arch_constraints = [c for c in space.constraints if c.metric in ARCH_METRICS]
    broken = rec.broken(arch_constraints)
    if not broken:
        return True
    rec.status = "infeasible"
    rec.reason = "; ".join(f"{c.metric} = {arch[c.metric]:.4g} breaks '{c.label}'" for c in broken) + \
        " (architecture alone: training skipped)"
    rec.metrics["trained"] = 0.0  # no accuracy: never trained (TrialRecord.score stands in for the sampler)
    return False


#: the reference config's sections that decide its measured figures (its fingerprint)
REFERENCE_SECTIONS = ("model", "attention", "compress", "deploy", "tasks")


def reference_fingerprint(config: Mapping[str, Any]) -> str:
    """A short hash of what decides the reference model's figures (:data:`REFERENCE_SECTIONS` of
    its config as a dict): a resumed study compares it with the stored one."""
    import hashlib
    import json

    blob = json.dumps({k: config.get(k) for k in REFERENCE_SECTIONS}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def host_tag(machine: Mapping[str, Any]) -> str:
    """The kind of machine figures were measured on: CPU model, CPU count and GPU (not the host
    name: workers on several machines of one kind share one reference)."""
    tag = f"{machine.get('cpu') or '?'} x{machine.get('cpus') or '?'}"
    return tag + (f" + {machine['gpu']}" if machine.get("gpu") else "")


def measure_reference(space: Space) -> Dict[str, Any]:
    """The ``reference:`` model's deployment figures on this machine, measured exactly as a
    candidate's (:func:`deployment_figures`: deployed as its config says, in the measurement
    gate, the same readings): relative constraints take their bounds from them. Returns
    ``{"metrics", "config", "machine", "fingerprint", "host_tag"}`` (stored in the study, so that
    a resumed search and every worker keep the same bounds, and a resume can tell whether the
    ``reference:`` section or the kind of machine changed)."""
    cfg = space.reference_config()
    specs = [task_spec(t) for t in cfg.tasks]
    with gate().work():
        model = build_deployed(cfg, specs) if cfg.compress.active else build_model(cfg, specs)
    figures = deployment_figures(cfg, model, specs, space.objectives)
    metrics = {k: float(figures[k]) for k in ARCH_METRICS if k in figures}
    machine = machine_info(cfg.deploy.device)
    config = cfg.to_dict()
    return {"metrics": metrics, "config": config, "machine": machine, "fingerprint": reference_fingerprint(config),
            "host_tag": host_tag(machine), "readings": int(figures["measure_readings"])}


def record_failure(rec: TrialRecord, e: BaseException) -> None:
    """A trial's own failure: recorded with its reason (the search goes on)."""
    rec.status = "failed"
    if isinstance(e, ConfigError):
        rec.reason = f"invalid candidate: {e}"
        return
    tb = traceback.format_exc(limit=4).strip().splitlines()
    rec.reason = f"{type(e).__name__}: {e}" + (f" [at {tb[-3].strip()}]" if len(tb) >= 3 else "")


def deployed_metrics(cfg: RunConfig, model, specs, objectives: Sequence[Objective]) -> Dict[str, float]:
    """The final deployment figures of a trained model that ``cfg.compress`` compressed.

    Before training, a compressed trial is measured on its untrained model compressed the same
    way (the same shapes and stored dtypes: the same latency, memory and size), so a candidate that
    already breaks a hard constraint is skipped; after training its figures are measured again on
    the model as deployed. An uncompressed model is the one measured before training: nothing to do."""
    return deployment_figures(cfg, model, specs, objectives) if cfg.compress.active else {}


def run_trial(space: Space, params: Mapping[str, Any], number: int, *, artifacts_dir: str,
              log: Log = lambda s: None, progress=None, overrides: Optional[Mapping[str, Any]] = None,
              init_state: Optional[Mapping[str, torch.Tensor]] = None,
              rung_judge: Optional[RungJudge] = None) -> TrialRecord:
    """Run one trial end to end and return its record (never raises for a trial's own failure).

    ``overrides`` (nested or dotted config values) change the materialized config, e.g. a
    finalist's training budget; ``init_state`` starts training from these weights (a state dict
    of the candidate's model, e.g. extracted from a supernet) instead of a fresh initialization.
    ``rung_judge`` (with ``search.early_stopping``) decides at each rung whether training goes on.
    """
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    rec = TrialRecord(number=number, status="running", params=dict(params))
    try:
        cfg = space.materialize(params, extra=overrides)
        rec.config = cfg.to_dict()
        specs = [task_spec(t) for t in cfg.tasks]
        with gate().work():
            model = build_model(cfg, specs)
            if init_state is not None:
                model.load_state_dict(init_state)
            deployed = build_deployed(cfg, specs) if cfg.compress.active else model  # see deployed_metrics
        rec.machine = machine_info(cfg.deploy.device)
        if measure_architecture(space, cfg, deployed, specs, rec):
            with gate().work():
                data = [load_task(t, cfg.data_dir, log) for t in cfg.tasks]
            del deployed
            rungs, on_rung, stop = _early_stopping(space, cfg, dict(rec.metrics), rung_judge, data)
            rec.metrics.update(train_and_evaluate(model, data, cfg, progress=progress, rungs=rungs, on_rung=on_rung,
                                                  step_guard=gate().work))  # model: now as deployed
            rec.metrics["trained"] = 1.0
            if stop:  # pruned: no accuracy, no objective values, no checkpoint; never on a front
                rec.status, rec.reason = "pruned", stop[0]
                rec.metrics["cpu_time_s"] = time.process_time() - cpu0
                rec.duration_s = time.perf_counter() - t0
                return rec
            rec.metrics.update(deployed_metrics(cfg, model, specs, space.objectives))
            with gate().work():
                rec.checkpoint = save_checkpoint(model, cfg, Path(artifacts_dir) / f"trial-{number:04d}" / "model.pt",
                                                 metrics=rec.metrics)
            rec.status = "complete"
        _score(space, rec)
    except Exception as e:  # a failing trial is recorded with its reason; the search goes on
        record_failure(rec, e)
    rec.metrics["cpu_time_s"] = time.process_time() - cpu0
    rec.duration_s = time.perf_counter() - t0
    return rec


def _early_stopping(space: Space, cfg: RunConfig, arch: Mapping[str, float], judge: Optional[RungJudge],
                    data: Sequence[Any] = ()):
    """Rung steps and the ``on_rung`` callback for :func:`train_and_evaluate` (none without
    ``search.early_stopping`` or a judge). The callback builds the trial's point at a rung (the
    rung's accuracy and the deployed model's costs measured before training, in the objectives'
    order), tells whether it shows learning (``learned_first``: against the tasks' majority class
    and class-prior loss in ``data``, combined as the rung's figures are; None without data), asks
    the judge, and on a stop keeps the reason in ``stop`` (a one-element list once stopped)."""
    es = space.search.early_stopping
    stop: List[str] = []
    if es is None or judge is None:
        return (), None, stop
    from .multifidelity import has_learned, rung_steps

    max_steps = cfg.train.max_steps
    baselines = None
    if es.learned_first and data:
        weights = {t.name: t.weight for t in cfg.tasks}
        baselines = (aggregate({t.spec.name: t.majority_accuracy("val") for t in data}, cfg.train.aggregate, weights),
                     aggregate({t.spec.name: t.prior_loss("val") for t in data}, "weighted", weights))

    def on_rung(i: int, step: int, accuracy: float, per_task: Mapping[str, float], loss: float) -> bool:
        # the quality column (the accuracy objective's place, maximized): the accuracy so far, or
        # with signal: loss the negated validation loss
        quality = accuracy if es.signal == "accuracy" else -loss
        point = [quality if o.name == "accuracy" else float(arch[o.name]) for o in space.objectives]
        learned = None if baselines is None else has_learned(es, accuracy, baselines[0], loss, baselines[1])
        reason = judge(i, step, point, learned)
        if reason:
            on = ", ".join((f"validation loss {loss:.4g}" if es.signal == "loss" else f"accuracy {accuracy:.4g}")
                           if o.name == "accuracy" else f"{o.name} {v:.4g}" for o, v in zip(space.objectives, point))
            stop.append(f"stopped at rung {i} (step {step} of {max_steps}): ranked on {on}: {reason}")
        return not reason

    return rung_steps(max_steps, es), on_rung, stop


def _score(space: Space, rec: TrialRecord) -> None:
    """Objective values and constraint violations from the record's metrics."""
    rec.score(space.objectives, space.constraints)


def remeasure(space: Space, rec: TrialRecord) -> TrialRecord:
    """Re-measure a finished trial's deployed model alone on the machine (front candidates)."""
    cfg = parse_run_config(rec.config, file=f"trial {rec.number}")
    specs = [task_spec(t) for t in cfg.tasks]
    model = build_deployed(cfg, specs)  # a compressed trial's checkpoint holds the deployed model
    if rec.checkpoint and Path(rec.checkpoint).exists():
        model.load_state_dict(torch.load(rec.checkpoint, weights_only=True)["state_dict"])
    arch = deployment_figures(cfg, model, specs, space.objectives)
    for k in NOISY_METRICS:
        if k in rec.metrics or k in arch:
            rec.metrics[f"search_{k}"] = rec.metrics.get(k, float("nan"))
    rec.metrics.update(arch)
    if rec.machine:  # where the search measured it, and where it was measured again
        rec.machine = {**{f"search_{k}": v for k, v in rec.machine.items() if not k.startswith("search_")},
                       **machine_info(cfg.deploy.device)}
    else:
        rec.machine = machine_info(cfg.deploy.device)
    _score(space, rec)
    rec.remeasured = True
    return rec
