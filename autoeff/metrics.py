"""The one metric schema and the one condition language (see docs/metrics.md).

Every metric a trial records is one :class:`MetricDef` entry in :data:`REGISTRY`: its unit, its
default direction and aggregate across tasks, the phase that produces it (``architecture``:
measured on the deployed model before training; ``training``; ``proxy``: a one-shot supernet's
inherited weights), whether it also exists per task (``<name>.<task>``), and the text of the
MLflow glossary. Which metrics may be objectives or constraints, which a constraint may bound
relative to the reference model, which the tables show, what an export keeps: all are reads of
this registry. Adding a metric is one entry.

Conditions (``latency_ms <= 40``, ``latency_ms <= 0.5 * reference``, ``accuracy >= 0.8``,
``params == 12000``) are parsed and evaluated here, for the space's constraints and for the
export rules alike (:func:`parse_condition`).

Base layer: imports the standard library and :mod:`autoeff.errors` only.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Collection, Dict, FrozenSet, Iterable, List, Mapping, Optional, Tuple

from .errors import ConfigError

PHASES = ("architecture", "training", "proxy")
DIRECTIONS = ("minimize", "maximize")
#: views a metric can appear in: ``table`` (a column beside the objectives in front/trial
#: tables and the MLflow runs view), ``summary`` (the headline figures: the trial note, the
#: registered model's description, what `autoeff export` keeps in the YAML)
VIEWS = ("table", "summary")
#: what a glossary row calls a metric without unit
NO_UNIT = ""


@dataclass(frozen=True)
class MetricDef:
    """One metric: what it is, how it is compared and combined, when it is known."""

    name: str
    unit: str  # "ms", "MiB", "params", "tokens/s", "bits/byte", "s", "" (a fraction or a count)
    direction: str  # minimize | maximize: the default when it is an objective
    aggregate: str  # how per-task values combine by default: mean | min | max | weighted
    phase: str  # architecture | training | proxy
    description: str  # the glossary text (MLflow parent run, docs)
    per_task: bool = False  # also recorded per task as "<name>.<task>" (several tasks)
    objective: bool = False  # may be an objective or a constraint of a search space
    views: FrozenSet[str] = field(default_factory=frozenset)
    noisy: bool = False  # a timing/allocation figure: confirmed by a second measurement, re-measured on the front
    #: what an objective on it counts as for a trial that was never trained (training-phase
    #: objectives only; the sampler needs a value, the tables say "not trained")
    untrained: Optional[float] = None
    short: str = ""  # a compact label (the live display); default: the name

    @property
    def label(self) -> str:
        return self.short or self.name

    @property
    def relative_ok(self) -> bool:
        """Whether a condition may bound it relative to the reference model (which is measured,
        not trained: only architecture figures)."""
        return self.objective and self.phase == "architecture"


def _m(name: str, unit: str, direction: str, aggregate: str, phase: str, description: str, *,
       views: Tuple[str, ...] = (), **kw) -> MetricDef:
    return MetricDef(name, unit, direction, aggregate, phase, description, views=frozenset(views), **kw)


_MIN, _MAX = "minimize", "maximize"
_ARCH, _TRAIN, _PROXY = "architecture", "training", "proxy"

#: every metric, in the order of the glossary and of the tables' extra columns
REGISTRY: Dict[str, MetricDef] = {d.name: d for d in [
    # ---- quality ---------------------------------------------------------------------------
    _m("accuracy", "", _MAX, "mean", _TRAIN,
       "validation accuracy; with several tasks, the per-task values combined by the accuracy objective's "
       "aggregate (train.aggregate); absent for a trial that was never trained (infeasible)",
       per_task=True, objective=True, views=("summary",), untrained=0.0, short="acc"),
    _m("bpb", "bits/byte", _MIN, "mean", _TRAIN,
       "validation bits per byte of a byte-level language-model task: loss in nats / ln 2 / bytes_per_token "
       "(docs/decoders.md)", per_task=True, objective=True, views=("summary",), untrained=8.0),
    _m("test_bpb", "bits/byte", _MIN, "mean", _TRAIN,
       "bits per byte on the test splits of byte-level language-model tasks (recorded, never used to choose)",
       per_task=True),
    _m("val_loss", "nats", _MIN, "mean", _TRAIN,
       "validation cross-entropy per scored position (token-target tasks: per predicted token)", per_task=True),
    _m("test_loss", "nats", _MIN, "mean", _TRAIN, "test cross-entropy per scored position", per_task=True),
    _m("proxy_accuracy", "", _MAX, "mean", _PROXY,
       "one-shot search: validation accuracy of the subnet's weights inherited from the supernet (a proxy, "
       "never the trial's accuracy)", per_task=True, views=("table",), untrained=0.0, short="proxy acc"),
    _m("test_accuracy", "", _MAX, "mean", _TRAIN,
       "the accuracy on the test splits (recorded, never used to choose)", views=("table", "summary")),
    _m("accuracy_fp32", "", _MAX, "mean", _TRAIN,
       "validation accuracy of the trained fp32 model before compression (pruning, quantization)",
       views=("summary",)),
    _m("majority.<task>", "", _MAX, "mean", _TRAIN,
       "validation accuracy of always answering the most frequent class"),
    _m("teacher_accuracy", "", _MAX, "mean", _TRAIN,
       "validation accuracy of the distillation teacher (trained once, cached)"),
    # ---- deployment figures (architecture: measured on the deployed model before training) -----
    _m("latency_ms", "ms", _MIN, "max", _ARCH,
       "median inference latency of the deployed model (eval mode) at deploy.batch_size and each task's "
       "sequence length, after warm-up; the worst task by default",
       per_task=True, objective=True, views=("summary",), noisy=True, short="ms"),
    _m("latency_p10_ms", "ms", _MIN, "max", _ARCH, "10th percentile of the timed passes", per_task=True),
    _m("latency_p90_ms", "ms", _MIN, "max", _ARCH, "90th percentile of the timed passes", per_task=True),
    _m("latency_spread", "", _MIN, "max", _ARCH, "(p90 - p10) / median of the timed passes",
       per_task=True, views=("table",)),
    _m("peak_memory_mb", "MiB", _MIN, "max", _ARCH,
       "deployed memory footprint: parameters and buffers at their stored size plus the peak of the "
       "inference pass (activation_peak_mb); what serving the model takes",
       per_task=True, objective=True, views=("summary",), noisy=True, short="MiB"),
    _m("activation_peak_mb", "MiB", _MIN, "max", _ARCH,
       "peak memory of one inference pass above the idle model, every thread's tensor allocations (not the "
       "Python heap)", per_task=True, objective=True, noisy=True),
    _m("params", "params", _MIN, "max", _ARCH, "parameters (shared ones once)", objective=True,
       views=("table", "summary")),
    _m("size_mb", "MiB", _MIN, "max", _ARCH, "parameters and buffers at their stored size", objective=True,
       views=("table", "summary"), short="size MiB"),
    # decoders (docs/decoders.md section 4)
    _m("prefill_ms", "ms", _MIN, "max", _ARCH,
       "decoders: one prefill pass over deploy.prompt_len tokens (time to first token)",
       objective=True, views=("summary",), noisy=True),
    _m("decode_ms", "ms", _MIN, "max", _ARCH,
       "decoders: median time of one generated token with the cache filled to deploy.context_len",
       objective=True, views=("summary",), noisy=True),
    _m("tokens_per_s", "tokens/s", _MAX, "min", _ARCH,
       "decoders: deploy.batch_size * 1000 / decode_ms", objective=True, views=("summary",), noisy=True),
    _m("cache_mb", "MiB", _MIN, "max", _ARCH,
       "decoders: bytes of the cache's tensors after deploy.context_len tokens (checked against the "
       "families' analytic cache_bytes)", objective=True, views=("summary",)),
    _m("cache_mb_analytic", "MiB", _MIN, "max", _ARCH,
       "decoders: the cache size the families' formulas give (cache_bytes); cache_mb must equal it"),
    _m("prefill_peak_mb", "MiB", _MIN, "max", _ARCH,
       "decoders: peak memory of one prefill pass above the idle model (the new cache included)"),
    _m("decode_peak_mb", "MiB", _MIN, "max", _ARCH,
       "decoders: peak memory of one decode step above the filled cache"),
    _m("prefill_p10_ms", "ms", _MIN, "max", _ARCH, "decoders: 10th percentile of the timed prefill passes"),
    _m("prefill_p90_ms", "ms", _MIN, "max", _ARCH, "decoders: 90th percentile of the timed prefill passes"),
    _m("prefill_spread", "", _MIN, "max", _ARCH, "decoders: (p90 - p10) / median of the timed prefill passes"),
    _m("decode_p10_ms", "ms", _MIN, "max", _ARCH, "decoders: 10th percentile of the timed decode steps"),
    _m("decode_p90_ms", "ms", _MIN, "max", _ARCH, "decoders: 90th percentile of the timed decode steps"),
    _m("decode_spread", "", _MIN, "max", _ARCH, "decoders: (p90 - p10) / median of the timed decode steps",
       views=("table",)),
    _m("threads", "", _MIN, "max", _ARCH,
       "intra-op threads of the measurement (torch's, or the onnxruntime session's)"),
    # deploy.runtime: onnxruntime (autoeff/measure/onnxrt.py; README "deploy.runtime")
    _m("ort_threads", "", _MIN, "max", _ARCH,
       "onnxruntime: intra_op_num_threads; inter-op 1, ORT_SEQUENTIAL, ORT_ENABLE_ALL, CPU provider"),
    _m("ort_mem_arena", "", _MIN, "max", _ARCH,
       "onnxruntime: 1 = CPU memory arena on (activation_peak_mb counts what it reserves in the first run of a "
       "fresh session, memray), 0 = off (the tensors)"),
    _m("ort_bits", "", _MIN, "max", _ARCH, "onnxruntime: graph measured: 32 fp32, 8 dynamic int8, 4 MatMulNBits"),
    _m("onnx_size_mb", "MiB", _MIN, "max", _ARCH,
       "onnxruntime: the graph's weights (initializers); peak_memory_mb = this + activation_peak_mb"),
    _m("measure_time_s", "s", _MIN, "max", _ARCH, "time spent measuring the deployed model"),
    _m("measure_wait_s", "s", _MIN, "max", _ARCH,
       "how long the measurement waited for other trials' steps to finish (the measurement gate)"),
    _m("measure_contended", "", _MIN, "max", _ARCH,
       "1 when another trial's step had to finish before measuring (measure_gate_timeout: it gave up waiting)"),
    _m("search_<metric>", "", _MIN, "max", _ARCH,
       "a front point's figure measured during the search, before the re-measurement alone"),
    # ---- training ---------------------------------------------------------------------------
    _m("trained", "", _MAX, "min", _TRAIN,
       "1 when the trial was trained, 0 when an architecture constraint failed and training was skipped"),
    _m("train_steps", "", _MIN, "max", _TRAIN, "optimizer steps taken"),
    _m("train_time_s", "s", _MIN, "max", _TRAIN, "training wall time", views=("table",)),
    _m("train_loss", "", _MIN, "mean", _TRAIN, "last training loss"),
    _m("quantized_params", "", _MIN, "max", _TRAIN, "weight elements stored at compress.bits"),
    _m("float_params", "", _MIN, "max", _TRAIN, "weight elements still stored in fp32"),
    _m("pruned_neurons", "", _MIN, "max", _TRAIN, "FFN neurons removed (structured pruning)"),
    _m("pruned_heads", "", _MIN, "max", _TRAIN, "attention heads removed (structured pruning)"),
    _m("pruned_weights", "", _MIN, "max", _TRAIN, "weights zeroed (magnitude pruning)"),
    _m("finetune_steps", "", _MIN, "max", _TRAIN,
       "steps of the fine-tune after pruning / with QAT (part of train_steps)"),
    _m("finetune_time_s", "s", _MIN, "max", _TRAIN, "time of the fine-tune after pruning / with QAT"),
    _m("rung_accuracy.<i>", "", _MAX, "mean", _TRAIN,
       "early stopping: validation accuracy after rung i's steps (a low-fidelity figure, never the trial's "
       "accuracy)"),
    _m("rung_loss.<i>", "nats", _MIN, "mean", _TRAIN,
       "early stopping: validation loss (mean cross-entropy, task-weighted mean) after rung i's steps; "
       "recorded beside rung_accuracy.<i>, a low-fidelity figure"),
    _m("rung_steps.<i>", "", _MIN, "max", _TRAIN, "early stopping: the steps rung i ends at"),
    _m("stopped_at_rung", "", _MIN, "max", _TRAIN,
       "early stopping: the rung where a pruned trial stopped (its tag reason says why)"),
    _m("threads_train", "", _MIN, "max", _TRAIN,
       "torch threads a Ray trial trained with (the CPUs it holds, search.ray.cpus_per_trial)"),
    _m("eval_time_s", "s", _MIN, "max", _TRAIN, "time spent evaluating"),
    _m("cpu_time_s", "s", _MIN, "max", _TRAIN, "CPU time of the trial's process (all threads)"),
    _m("trial_wall_s", "s", _MIN, "max", _TRAIN, "the trial's wall time as its backend saw it"),
]}

for _d in REGISTRY.values():  # the schema checks itself at import
    assert _d.phase in PHASES and _d.direction in DIRECTIONS and _d.views <= set(VIEWS), _d
    assert _d.untrained is None or _d.phase != "architecture", _d


def get(name: str) -> Optional[MetricDef]:
    """The definition of ``name``; a per-task name (``accuracy.<task>``) gives its metric's."""
    d = REGISTRY.get(name)
    if d is None and "." in name:
        base = REGISTRY.get(name.split(".", 1)[0])
        d = base if base is not None and base.per_task else None
    return d


def names(*, objective: Optional[bool] = None, phase: Optional[str] = None, view: Optional[str] = None,
          per_task: Optional[bool] = None, noisy: Optional[bool] = None) -> Tuple[str, ...]:
    """Metric names, in registry order, filtered by any of the given fields."""
    return tuple(d.name for d in REGISTRY.values()
                 if (objective is None or d.objective == objective) and (phase is None or d.phase == phase)
                 and (view is None or view in d.views) and (per_task is None or d.per_task == per_task)
                 and (noisy is None or d.noisy == noisy))


def objective_metrics() -> Tuple[str, ...]:
    """What a space may name as an objective or a constraint."""
    return names(objective=True)


def architecture_metrics() -> Tuple[str, ...]:
    """Objective metrics measured on the deployed model before training: a constraint on them is
    checked before training, and only they may be relative to the reference model."""
    return tuple(d.name for d in REGISTRY.values() if d.relative_ok)


def unit_label(name: str) -> str:
    """'peak_memory_mb (MiB)', 'accuracy'."""
    d = get(name)
    return f"{name} ({d.unit})" if d is not None and d.unit and d.unit != "params" else name


def better(name: str, a: float, b: float) -> float:
    """The better of two measurements of ``name`` by its default direction."""
    d = get(name)
    return max(a, b) if d is not None and d.direction == "maximize" else min(a, b)


def glossary_markdown(only: Optional[Iterable[str]] = None) -> str:
    """The registry as a Markdown table (the MLflow parent run's glossary, docs/metrics.md);
    ``only``: the metric names (per-task ones included) a table of one search holds."""
    rows = ["| metric | unit | meaning |", "|---|---|---|"]
    keep = None if only is None else {n.split(".", 1)[0] if get(n) is not None and n not in REGISTRY else n
                                      for n in only}
    for d in REGISTRY.values():
        base = d.name.split(".<", 1)[0]
        if keep is not None and d.name not in keep and not any(k.startswith(base + ".") or k == base for k in keep):
            continue
        name = f"`{d.name}`" + (f" / `{d.name}.<task>`" if d.per_task else "")
        rows.append(f"| {name} | {d.unit or NO_UNIT} | {d.description} |")
    return "\n".join(rows) + "\n"


# --------------------------------------------------------------------------------------
# the condition language
# --------------------------------------------------------------------------------------

OPS = ("<=", "<", ">=", ">", "==")
CONDITION_FORMS = '"<metric> <op> <number>" or "<metric> <op> [<factor> *] reference", <op> one of ' + \
    " ".join(OPS)
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|<|>)\s*(.*?)\s*$")
_RHS = re.compile(r"^(?:(?P<factor>[^*\s]+)\s*\*\s*)?reference$|^(?P<number>[^*\s]+)$")


@dataclass
class Condition:
    """``latency_ms <= 40`` (an absolute bound), or ``latency_ms <= 0.5 * reference`` (relative:
    a factor of the reference model's figure, measured on the machine at the start of the search;
    the bound is set by :meth:`resolve`). Used by the space's constraints and by export rules."""

    metric: str
    op: str
    bound: float
    text: str
    factor: Optional[float] = None  # relative conditions: bound = factor x the reference's metric
    resolved: bool = True  # False for a relative condition until the reference is measured

    @property
    def label(self) -> str:
        """The text, with a relative condition's bound once known."""
        return f"{self.text} (= {self.bound:.4g})" if self.factor is not None and self.resolved else self.text

    def resolve(self, reference: Mapping[str, float]) -> None:
        """Set a relative condition's bound from the reference model's figures."""
        if self.factor is not None:
            self.bound = self.factor * float(reference[self.metric])
            self.resolved = True

    def violation(self, metrics: Mapping[str, float]) -> float:
        """<= 0 exactly when the condition holds (Optuna's convention); how far off otherwise.
        A strict bound that is met with equality, or a missing/NaN value, counts as violated."""
        if not self.resolved:
            raise RuntimeError(f"condition '{self.text}' is relative to the reference model, which has not been "
                               "measured yet (Space.resolve_reference)")
        v = float(metrics[self.metric])
        if math.isnan(v):
            return math.inf
        b = self.bound
        if self.op == "==":
            return abs(v - b)
        gap = v - b if self.op in ("<=", "<") else b - v
        if self.op in ("<", ">") and gap == 0:
            return math.ulp(b) or math.ulp(1.0)  # strict: equality breaks it
        return gap

    def holds(self, metrics: Mapping[str, float]) -> bool:
        """True when the metric is present and satisfies the condition."""
        return self.metric in metrics and self.violation(metrics) <= 0

    satisfied = holds  # the old name


def parse_condition(text: object, *, key: str, file: Optional[str] = None,
                    metrics: Optional[Collection[str]] = None, what: str = "condition") -> Condition:
    """Parse one condition. ``metrics``: the names allowed (None: any name). Only an
    architecture figure (:func:`architecture_metrics`) may be relative to the reference.
    Raises ConfigError naming file, key, value and what is allowed."""
    m = _CONDITION.match(text) if isinstance(text, str) else None
    rhs = _RHS.match(m.group(3)) if m else None
    if not m or not rhs:
        raise ConfigError(f"expected {CONDITION_FORMS}", file=file, key=key, value=text, has_value=True)
    metric, op = m.group(1), m.group(2)
    if metrics is not None and metric not in metrics:
        raise ConfigError(f"unknown metric in {what}", file=file, key=key, value=metric, allowed=list(metrics),
                          has_value=True)
    factor_s, number = rhs.group("factor"), rhs.group("number")
    if number is None:  # relative to the reference
        relative = architecture_metrics()
        if metric not in relative:
            raise ConfigError("only a deployment figure can be relative to the reference model", file=file, key=key,
                              value=metric, allowed=list(relative), has_value=True)
        try:
            f = 1.0 if factor_s is None else float(factor_s)
        except ValueError:
            raise ConfigError("factor is not a number", file=file, key=key, value=factor_s, has_value=True) from None
        if not f > 0:
            raise ConfigError("factor must be > 0", file=file, key=key, value=factor_s, has_value=True)
        norm = f"{metric} {op} {factor_s + ' * ' if factor_s is not None else ''}reference"
        return Condition(metric, op, float("nan"), norm, factor=f, resolved=False)
    try:
        bound = float(number)
    except ValueError:
        raise ConfigError("bound is not a number", file=file, key=key, value=number, has_value=True) from None
    if math.isnan(bound):
        raise ConfigError("bound is not a number", file=file, key=key, value=number, has_value=True)
    return Condition(metric, op, bound, f"{metric} {op} {number}")


def unmet(conditions: Collection[Condition], metrics: Mapping[str, float]) -> List[Condition]:
    """The conditions that ``metrics`` breaks (a missing metric breaks its condition)."""
    return [c for c in conditions if not c.holds(metrics)]
