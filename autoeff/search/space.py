"""The search-space file: YAML -> fixed run config + dimensions + objectives + settings.

See README.md ("Search-space reference") for the format. In short::

    name: longseq
    tasks: [...]            # fixed parts: any RunConfig section (model, attention, tasks,
    train: {...}            # train, deploy, data_dir) gives the values every trial shares
    space:                  # dimensions, nested or dotted, named by their config path
      model.depth: {type: int, low: 1, high: 3}
      model.width: [64, 128]              # a plain list is a categorical
      attention.kind: [full, linformer]
      attention.linformer.rank: {type: int, low: 16, high: 128, log: true}
      train.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    objectives: {accuracy: max, latency_ms: min, peak_memory_mb: min}
    constraints: ["latency_ms <= 50"]
    search: {sampler: tpe, n_trials: 16, seed: 0}

Dimensions under ``attention.<family>.`` exist only when ``attention.kind`` is that family
(an implicit condition); any dimension may add ``when: {other.dim: [values]}``.

``attention: {per_layer: true}`` makes hybrid models: every attention dimension is searched
for each encoder layer separately (``attention.layers.<i>.kind``, ``attention.layers.<i>.<family>.<knob>``,
active while ``model.depth > i``), and a candidate's config lists one attention section per
layer (``attention.layers``; identical layers collapse back to one plain section).

``search.strategy`` decides how a candidate is scored: ``standalone`` trains every candidate;
``oneshot`` trains one weight-sharing supernet over the space (the ``oneshot:`` section) and
scores subnets by their inherited weights, then trains the proxy front's best as real trials
(see autoeff/search/oneshot.py).

This module knows nothing about Optuna or Ray: a backend hands :meth:`Space.sample` a
:class:`Suggest` implementation.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

from ..config import AGGREGATES, RUN_SECTIONS, ModelConfig, OneShotConfig, RunConfig, load_yaml, parse_run_config
from .. import metrics as metric_registry
from ..errors import ConfigError
from ..metrics import Condition, parse_condition
from .multifidelity import EarlyStopping, check_early_stopping

DIM_TYPES = ("categorical", "int", "float")
#: what objectives and constraints may name (read from the metric registry, autoeff/metrics.py)
METRICS = metric_registry.objective_metrics()
#: what is measured on the deployed model before training (a relative constraint may bound these)
DEPLOY_METRICS = metric_registry.architecture_metrics()
DIRECTIONS = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
SAMPLERS = ("tpe", "nsga2", "random")
BACKENDS = ("optuna", "ray")
STRATEGIES = ("standalone", "oneshot")
SPACE_SECTIONS = ("name", "space", "objectives", "constraints", "reference", "search", "export", "oneshot")
#: what a one-shot supernet can share weights over; other dimensions need standalone training
ONESHOT_DIMS = ("model.depth", "model.width", "model.heads", "model.ffn_mult")
#: the objectives of a space that names none (directions and aggregates: the registry's defaults)
DEFAULT_OBJECTIVES = ("accuracy", "latency_ms", "peak_memory_mb")


class Suggest(Protocol):
    """What a backend provides to sample one dimension."""

    def categorical(self, name: str, choices: Sequence[Any]) -> Any: ...
    def int(self, name: str, low: int, high: int, *, log: bool, step: int) -> int: ...
    def float(self, name: str, low: float, high: float, *, log: bool, step: Optional[float]) -> float: ...


@dataclass
class Dimension:
    name: str  # dotted config path, also the MLflow param name
    type: str
    choices: Tuple[Any, ...] = ()
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    when: Dict[str, Tuple[Any, ...]] = field(default_factory=dict)

    def active(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(k) in allowed for k, allowed in self.when.items())

    def sample(self, s: Suggest) -> Any:
        if self.type == "categorical":
            return s.categorical(self.name, list(self.choices))
        if self.type == "int":
            return s.int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return s.float(self.name, float(self.low), float(self.high), log=self.log, step=self.step)

    def values_for_check(self) -> List[Any]:
        """Values to check statically: all choices, or the range's ends."""
        if self.type == "categorical":
            return list(self.choices)
        return [self.low, self.high] if self.type == "float" else [int(self.low), int(self.high)]


@dataclass
class Objective:
    name: str
    direction: str  # "maximize" | "minimize"
    aggregate: str  # how per-task values combine: mean | min | max | weighted


#: a hard constraint of the space: a :class:`~autoeff.metrics.Condition` (the one condition
#: language, shared with export rules): ``latency_ms <= 40`` or ``latency_ms <= 0.5 * reference``
Constraint = Condition


@dataclass
class RaySettings:
    """``search.ray``: how the Ray backend runs trials (``search.backend: ray``)."""

    address: str = ""  # "" = a local Ray instance for this search; "auto" or "host:port" joins a cluster
    cpus_per_trial: float = 1.0  # each trial's torch thread count is pinned to its CPUs
    gpus_per_trial: float = 0.0
    max_concurrent: int = 0  # trials at once; 0 = as many as the cluster's CPUs (and GPUs) allow
    num_cpus: int = 0  # local instance only: CPUs Ray may use (0 = all of the machine's)
    object_store_mb: int = 128  # local instance only (Ray needs at least 80)
    temp_dir: str = ""  # local instance only: Ray's session folder ("" = <artifacts>/ray, or /tmp if too long)
    #: Ray custom resources every trial needs, e.g. {bench_node: 1}: pins every measurement to one
    #: kind of node, so a front compares like with like (a search setting: not in the model's config)
    resources: Dict[str, float] = field(default_factory=dict)


@dataclass
class SearchSettings:
    backend: str = "optuna"
    strategy: str = "standalone"  # standalone: train every candidate; oneshot: score subnets of a supernet
    sampler: str = ""  # tpe | nsga2 | random; default tpe (standalone), nsga2 (oneshot)
    n_trials: int = 16
    timeout_s: float = 0.0  # stop starting trials after this many seconds of the search (0 = none)
    seed: int = 0
    storage: str = "sqlite:///autoeff.db"
    study_name: str = ""  # default: the space's name
    mlflow_uri: str = "sqlite:///mlflow.db"
    experiment: str = ""  # default: the space's name
    artifacts: str = "mlartifacts"  # local folder for MLflow artifacts and trial checkpoints
    remeasure_front: bool = True
    startup_trials: int = 0  # random trials before TPE models the space (0 = Optuna's default rule)
    early_stopping: Optional[EarlyStopping] = None  # set = multi-objective early stopping (rungs, eta)
    ray: RaySettings = field(default_factory=RaySettings)


@dataclass
class Space:
    file: str
    name: str
    base: Dict[str, Any]  # the fixed RunConfig sections
    dims: List[Dimension]
    objectives: List[Objective]
    constraints: List[Constraint]
    search: SearchSettings
    export_overrides: Dict[str, Any]
    per_layer: bool = False  # hybrid models: attention dimensions per layer
    oneshot: Optional[OneShotConfig] = None  # settings of a one-shot search
    #: ``reference:``: run-config overrides (on the fixed parts) giving the model that relative
    #: constraints are measured against; its figures once measured (:meth:`resolve_reference`)
    reference: Dict[str, Any] = field(default_factory=dict)
    reference_metrics: Optional[Dict[str, float]] = None

    def reference_config(self) -> RunConfig:
        """The reference model's config: the fixed parts with ``reference:`` on top (what neither
        gives takes the config defaults; no dimension's value is used)."""
        return self.materialize({}, extra=self.reference)

    def resolve_reference(self, metrics: Mapping[str, float]) -> None:
        """Set every relative constraint's bound from the reference model's measured figures."""
        self.reference_metrics = {k: float(v) for k, v in metrics.items()}
        for c in self.constraints:
            c.resolve(self.reference_metrics)

    # ---- sampling ---------------------------------------------------------------------
    def sample(self, s: Suggest) -> Dict[str, Any]:
        """Sample every active dimension, parents before children; returns {name: value}."""
        values: Dict[str, Any] = {}
        fixed = flatten(self.base)
        for d in self.dims:
            context = {**fixed, **values}
            if d.active(context):
                values[d.name] = d.sample(s)
        return values

    def materialize(self, params: Mapping[str, Any], extra: Optional[Mapping[str, Any]] = None) -> RunConfig:
        """Fixed parts + sampled values (+ ``extra`` overrides, nested or dotted) -> a validated
        RunConfig (ConfigError if impossible)."""
        data = json.loads(json.dumps(self.base))  # deep copy of plain data
        for name, v in params.items():
            set_path(data, name, v)
        for name, v in flatten(extra or {}).items():
            set_path(data, name, v)
        if self.per_layer:
            per_layer_sections(data)
        return parse_run_config(prune_attention(data), file=self.file)

    @property
    def directions(self) -> List[str]:
        return [o.direction for o in self.objectives]

    @property
    def objective_names(self) -> List[str]:
        return [o.name for o in self.objectives]

    def fingerprint(self) -> str:
        blob = json.dumps({"dims": [dataclasses.asdict(d) for d in self.dims],
                           "objectives": [dataclasses.asdict(o) for o in self.objectives],
                           "base": self.base, "per_layer": self.per_layer}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------
# helpers over dotted paths
# --------------------------------------------------------------------------------------


def flatten(d: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def set_path(d: Dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def per_layer_sections(data: Dict[str, Any]) -> None:
    """Turn a per-layer candidate's ``attention.layers.<i>`` values (plus the fixed family
    blocks) into one attention section per layer, in place; identical layers collapse into one
    plain section."""
    att = data.get("attention")
    att = dict(att) if isinstance(att, dict) else {}
    depth = (data.get("model") or {}).get("depth", ModelConfig.depth)
    per = att.pop("layers", None) or {}
    kind0 = att.pop("kind", "full")
    layers = []
    for i in range(depth if isinstance(depth, int) else 0):
        mine = per.get(str(i), {}) if isinstance(per, dict) else {}
        kind = mine.get("kind", kind0)
        block = {**(att.get(kind) or {}), **(mine.get(kind) or {})}
        layers.append({"kind": kind, **({kind: block} if block else {})})
    if layers and all(sec == layers[0] for sec in layers):
        data["attention"] = layers[0]
    else:
        data["attention"] = {"layers": layers}


def prune_attention(data: Dict[str, Any]) -> Dict[str, Any]:
    """Keep only the chosen family's option block (others may carry fixed defaults)."""
    att = data.get("attention")
    if isinstance(att, dict) and "layers" not in att:
        kind = att.get("kind", "full")
        data["attention"] = {k: v for k, v in att.items() if k == "kind" or k == kind}
    return data


# --------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------

_DIM_KEYS = {"type", "choices", "low", "high", "log", "step", "when"}


def _is_dim_spec(v: Any) -> bool:
    return isinstance(v, list) or (isinstance(v, Mapping) and ("type" in v or "choices" in v or "low" in v))


def _collect_dims(node: Any, prefix: str, out: List[Tuple[str, Any]]) -> None:
    if not isinstance(node, Mapping):
        raise ConfigError("expected a dimension (a list of choices or a mapping with type/low/high)",
                          key=f"space.{prefix}" if prefix else "space", value=node, has_value=True)
    for k, v in node.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if v is None:  # `null`: a preset (extends:) removes its parent's dimension
            continue
        if _is_dim_spec(v):
            out.append((name, v))
        else:
            _collect_dims(v, name, out)


def _parse_dim(name: str, spec: Any) -> Dimension:
    key = f"space.{name}"
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    spec = dict(spec)
    unknown = [k for k in spec if k not in _DIM_KEYS]
    if unknown:
        raise ConfigError("unknown key in a dimension", key=f"{key}.{unknown[0]}", allowed=sorted(_DIM_KEYS))
    typ = spec.get("type", "categorical" if "choices" in spec else None)
    if typ is None:
        low, high = spec.get("low"), spec.get("high")
        typ = "int" if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool) else "float"
    if typ not in DIM_TYPES:
        raise ConfigError("unknown dimension type", key=f"{key}.type", value=typ, allowed=DIM_TYPES, has_value=True)
    when = spec.get("when") or {}
    if not isinstance(when, Mapping):
        raise ConfigError("expected a mapping {dimension: [values]}", key=f"{key}.when", value=when, has_value=True)
    when = {str(k): tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in when.items()}
    if typ == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError("a categorical needs a non-empty list of choices", key=f"{key}.choices", value=choices, has_value=True)
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError("choices repeat", key=f"{key}.choices", value=choices, has_value=True)
        for extra in ("low", "high", "log", "step"):
            if extra in spec:
                raise ConfigError(f"'{extra}' does not apply to a categorical", key=f"{key}.{extra}", allowed=["choices", "when"])
        return Dimension(name, "categorical", choices=tuple(choices), when=when)
    if "choices" in spec:
        raise ConfigError(f"'choices' does not apply to type {typ}", key=f"{key}.choices", allowed=["low", "high", "log", "step", "when"])
    low, high = spec.get("low"), spec.get("high")
    for b, v in (("low", low), ("high", high)):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        if typ == "int":
            ok = ok and float(v).is_integer()
        if not ok:
            raise ConfigError(f"expected {'an integer' if typ == 'int' else 'a number'}", key=f"{key}.{b}", value=v, has_value=True)
    if low > high:
        raise ConfigError(f"low must be <= high ({high})", key=f"{key}.low", value=low, has_value=True)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError("expected true or false", key=f"{key}.log", value=log, has_value=True)
    if log and low <= 0:
        raise ConfigError("a log-scale dimension needs low > 0", key=f"{key}.low", value=low, has_value=True)
    step = spec.get("step")
    if step is not None:
        if not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0:
            raise ConfigError("step must be a positive number", key=f"{key}.step", value=step, has_value=True)
        if log:
            raise ConfigError("step and log cannot be combined", key=f"{key}.step", value=step, has_value=True)
    return Dimension(name, typ, low=low, high=high, log=log, step=step, when=when)


def _task_names(base: Mapping[str, Any]) -> List[str]:
    """The task names of a space's base config (a task's name defaults to its kind)."""
    out = []
    for t in base.get("tasks") or []:
        if isinstance(t, str):
            out.append(t)
        elif isinstance(t, Mapping):
            out.append(str(t.get("name") or t.get("kind")))
    return out


def _parse_objectives(raw: Any, tasks: Sequence[str] = ()) -> List[Objective]:
    """``{metric: direction}``; a per-task metric may name one task (``accuracy.mqar``): that
    task's own figure is then the objective (no aggregate across tasks)."""
    if raw is None:
        return [Objective(n, metric_registry.REGISTRY[n].direction, metric_registry.REGISTRY[n].aggregate)
                for n in DEFAULT_OBJECTIVES]
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError("expected a mapping {metric: max|min} or {metric: {direction, aggregate}}",
                          key="objectives", value=raw, has_value=True)
    out = []
    for name, spec in raw.items():
        key = f"objectives.{name}"
        base_name, _, task = str(name).partition(".")
        if name not in METRICS and not (task and base_name in METRICS):
            raise ConfigError("unknown objective", key=key, value=name, allowed=METRICS, has_value=True)
        if task:
            if not metric_registry.REGISTRY[base_name].per_task:
                raise ConfigError(f"{base_name} is not measured per task", key=key, value=name,
                                  allowed=[m for m in METRICS if metric_registry.REGISTRY[m].per_task], has_value=True)
            if task not in tasks:
                raise ConfigError(f"no task named {task!r} in this space", key=key, value=name,
                                  allowed=[f"{base_name}.{t}" for t in tasks], has_value=True)
        default_agg = metric_registry.REGISTRY[base_name].aggregate
        if isinstance(spec, str):
            spec = {"direction": spec}
        if not isinstance(spec, Mapping):
            raise ConfigError("expected max|min or {direction, aggregate}", key=key, value=spec, has_value=True)
        unknown = [k for k in spec if k not in ("direction", "aggregate")]
        if unknown:
            raise ConfigError("unknown key", key=f"{key}.{unknown[0]}", allowed=["direction", "aggregate"])
        d = spec.get("direction")
        if d not in DIRECTIONS:
            raise ConfigError("unknown direction", key=f"{key}.direction", value=d, allowed=["max", "min"], has_value=True)
        agg = spec.get("aggregate", default_agg)
        if agg not in AGGREGATES:
            raise ConfigError("unknown aggregate", key=f"{key}.aggregate", value=agg, allowed=AGGREGATES, has_value=True)
        out.append(Objective(name, DIRECTIONS[d], agg))
    return out


def _parse_constraints(raw: Any) -> List[Constraint]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise ConfigError('expected a list like ["latency_ms <= 50"]', key="constraints", value=raw, has_value=True)
    return [parse_condition(c, key=f"constraints[{i}]", metrics=METRICS, what="constraint") for i, c in enumerate(raw)]


def _parse_reference(raw: Any, constraints: Sequence[Constraint]) -> Dict[str, Any]:
    """``reference:``: run-config overrides (model, attention, compress, ...) of the model that
    relative constraints are measured against."""
    relative = [i for i, c in enumerate(constraints) if c.factor is not None]
    if raw is None:
        if relative:
            raise ConfigError("a constraint relative to the reference needs a 'reference:' section giving that "
                              "model", key=f"constraints[{relative[0]}]", value=constraints[relative[0]].text,
                              allowed="reference: {attention: {kind: full}, model: {depth: 1, width: 64, heads: 4}}",
                              has_value=True)
        return {}
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError("expected a mapping of model config overrides", key="reference", value=raw,
                          allowed="e.g. {attention: {kind: full}, model: {depth: 1, width: 64}}", has_value=True)
    bad = [k for k in raw if k not in ("model", "attention", "compress")]
    if bad:
        raise ConfigError("the reference is a model: it may set model, attention and compress (it is measured on "
                          "the space's tasks with its deploy settings, like every candidate)", key=f"reference.{bad[0]}",
                          allowed=["model", "attention", "compress"])
    return json.loads(json.dumps(dict(raw)))


def load_space(path: Union[str, Path], overrides: Sequence[str] = (), *, check: bool = True) -> Space:
    """Read and check a search-space file. Raises ConfigError naming file, key, value, allowed.

    ``check=False`` (the read-only commands: `pareto`, `export`) reads the file's structure,
    objectives, constraints and settings but does not try candidates against the attention and
    task registries, which would import torch; a search always checks.
    """
    from ..config import build_dataclass

    file = str(path)
    data = load_yaml(path, overrides)
    if not check:
        return _load_space(file, data, check, build_dataclass)
    from ..tasks.userdata import files_unchanged  # (imports torch: checking does anyway)

    with files_unchanged():  # tens of candidates over the same data files: each task scanned once
        return _load_space(file, data, check, build_dataclass)


def _load_space(file: str, data: Dict[str, Any], check: bool, build_dataclass) -> Space:
    try:
        unknown = [k for k in data if k not in RUN_SECTIONS and k not in SPACE_SECTIONS]
        if unknown:
            raise ConfigError("unknown key", key=str(unknown[0]), allowed=[*SPACE_SECTIONS, *RUN_SECTIONS])
        name = data.get("name") or Path(file).stem
        if not isinstance(name, str):
            raise ConfigError("expected a string", key="name", value=name, has_value=True)
        base = json.loads(json.dumps({k: data[k] for k in RUN_SECTIONS if k in data}))
        per_layer = False
        if isinstance(base.get("attention"), dict) and "per_layer" in base["attention"]:
            per_layer = base["attention"].pop("per_layer")
            if not isinstance(per_layer, bool):
                raise ConfigError("expected true or false", key="attention.per_layer", value=per_layer, has_value=True)
        raw_dims: List[Tuple[str, Any]] = []
        if data.get("space") is not None:
            _collect_dims(data["space"], "", raw_dims)
        if not raw_dims:
            raise ConfigError("nothing to search: the file has no dimensions under 'space'", key="space",
                              value=data.get("space"), has_value=True,
                              allowed="a mapping of config paths to choices or ranges, e.g. "
                                      "space: {model.depth: [1, 2], attention.kind: [full, linformer]}")
        dims = [_parse_dim(n, s) for n, s in raw_dims]
        if per_layer:
            dims = _expand_per_layer(dims, base)
        search = build_dataclass(SearchSettings, data.get("search"), "search")
        search.study_name = search.study_name or name
        search.experiment = search.experiment or name
        if search.strategy not in STRATEGIES:
            raise ConfigError("unknown strategy", key="search.strategy", value=search.strategy, allowed=STRATEGIES,
                              has_value=True)
        search.sampler = search.sampler or ("nsga2" if search.strategy == "oneshot" else "tpe")
        if search.sampler not in SAMPLERS:
            raise ConfigError("unknown sampler", key="search.sampler", value=search.sampler, allowed=SAMPLERS, has_value=True)
        if search.backend not in BACKENDS:
            raise ConfigError("unknown backend", key="search.backend", value=search.backend, allowed=BACKENDS, has_value=True)
        if search.n_trials < 1:
            raise ConfigError("must be >= 1", key="search.n_trials", value=search.n_trials, has_value=True)
        _check_distributed(search, base)
        if search.strategy == "oneshot" and (search.early_stopping is not None or search.backend == "ray"):
            what = "search.early_stopping" if search.early_stopping is not None else "search.backend"
            raise ConfigError("one-shot proxy trials are not trained, so they have no rungs, and they run in the "
                              "process that holds the supernet (the optuna backend)", key=what,
                              value="set" if what == "search.early_stopping" else search.backend,
                              allowed="search.strategy: standalone with early stopping or the ray backend",
                              has_value=True)
        from .stores import MLFLOW_TABLES, OPTUNA_TABLES, check_sqlite_store

        check_sqlite_store(search.storage, what="an Optuna study database", tables=OPTUNA_TABLES,
                           key="search.storage")
        check_sqlite_store(search.mlflow_uri, what="an MLflow tracking store", tables=MLFLOW_TABLES,
                           key="search.mlflow_uri")
        export = data.get("export") or {}
        if not isinstance(export, Mapping):
            raise ConfigError("expected a mapping of run-config overrides", key="export", value=export, has_value=True)
        objectives = _parse_objectives(data.get("objectives"), _task_names(base))
        if search.early_stopping is not None:
            bad = check_early_stopping(search.early_stopping, [o.name for o in objectives])
            if bad:
                key, value, problem, allowed = bad
                raise ConfigError(problem, key=key, value=value, allowed=allowed, has_value=True)
        _set_accuracy_aggregate(base, objectives)
        oneshot = build_dataclass(OneShotConfig, data.get("oneshot"), "oneshot") \
            if search.strategy == "oneshot" or data.get("oneshot") is not None else None
        constraints = _parse_constraints(data.get("constraints"))
        space = Space(file=file, name=name, base=base, dims=dims, objectives=objectives,
                      constraints=constraints, search=search, export_overrides=dict(export), per_layer=per_layer,
                      oneshot=oneshot, reference=_parse_reference(data.get("reference"), constraints))
        _check_dims(space, check)
        if search.strategy == "oneshot":
            _check_oneshot(space)
        if check:
            _check_combinations(space)
            if space.reference:  # the reference model must be valid too
                try:
                    space.reference_config()
                except ConfigError as e:
                    raise ConfigError(e.problem, key=f"reference.{e.key}" if e.key else "reference", value=e.value,
                                      allowed=e.allowed, has_value=e.has_value) from None
            if space.export_overrides:  # the exported config must be valid too
                try:
                    space.materialize(_candidate(space, {}), extra=space.export_overrides)
                except ConfigError as e:
                    raise ConfigError(e.problem, key=f"export.{e.key}" if e.key else "export", value=e.value,
                                      allowed=e.allowed, has_value=e.has_value) from None
    except ConfigError as e:
        raise e.with_file(file)
    return space


def _check_distributed(search: SearchSettings, base: Mapping[str, Any]) -> None:
    """``search.ray``, its ``resources`` (Ray custom resources a trial needs) included."""
    r = search.ray
    for key, v, low in (("cpus_per_trial", r.cpus_per_trial, 0.0), ("gpus_per_trial", r.gpus_per_trial, None),
                        ("max_concurrent", r.max_concurrent, None), ("num_cpus", r.num_cpus, None)):
        if v < 0 or (low is not None and v <= low):
            raise ConfigError("must be > 0" if low is not None else "must be >= 0", key=f"search.ray.{key}",
                              value=v, has_value=True)
    if r.object_store_mb < 80:
        raise ConfigError("Ray's object store needs at least 80 MB", key="search.ray.object_store_mb",
                          value=r.object_store_mb, has_value=True)
    deploy = base.get("deploy")
    if isinstance(deploy, Mapping) and "resources" in deploy:
        raise ConfigError("Ray custom resources are a search setting now (they were exported with every model): "
                          "move them to search.ray.resources", key="deploy.resources", value=deploy["resources"],
                          allowed="search.ray.resources: {resource: amount}", has_value=True)
    res = r.resources
    if not isinstance(res, Mapping):
        raise ConfigError("expected a mapping {resource: amount}", key="search.ray.resources", value=res,
                          has_value=True)
    for k, v in res.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError("a resource amount must be a number > 0", key=f"search.ray.resources.{k}", value=v,
                              has_value=True)
        if str(k).upper() in ("CPU", "GPU", "MEMORY", "OBJECT_STORE_MEMORY"):
            raise ConfigError("search.ray.resources names custom Ray resources; CPUs and GPUs per trial are "
                              "search.ray.cpus_per_trial / gpus_per_trial", key=f"search.ray.resources.{k}",
                              value=v, has_value=True)


def _set_accuracy_aggregate(base: Dict[str, Any], objectives: Sequence[Objective]) -> None:
    """The accuracy objective's aggregate rule becomes ``train.aggregate`` of every trial, so a
    trial and `autoeff train` of its exported config compute ``accuracy`` the same way."""
    acc = next((o for o in objectives if o.name == "accuracy"), None)
    if acc is None:
        return
    train = base.get("train")
    if train is None:
        train = base["train"] = {}
    if not isinstance(train, dict):
        return  # reported by the config check
    given = train.get("aggregate")
    if given is not None and given != acc.aggregate:
        raise ConfigError(f"conflicts with objectives.accuracy.aggregate ({acc.aggregate}); set one of them",
                          key="train.aggregate", value=given, allowed=[acc.aggregate], has_value=True)
    train["aggregate"] = acc.aggregate


def _check_dims(space: Space, check_families: bool = True) -> None:
    from ..registry import ATTENTIONS

    names = {d.name for d in space.dims}
    fixed = flatten(space.base)
    families = set(ATTENTIONS.names()) if check_families else None
    ordered: List[Dimension] = []
    for d in space.dims:
        section = d.name.split(".")[0]
        if section not in RUN_SECTIONS or section in ("tasks", "data_dir"):
            raise ConfigError("dimensions must name a config path under model., attention., train., deploy. or compress.",
                              key=f"space.{d.name}", allowed=["model.*", "attention.*", "train.*", "deploy.*", "compress.*"])
        parts = d.name.split(".")
        layer = section == "attention" and len(parts) >= 3 and parts[1] == "layers"  # expanded per layer
        rest = parts[3:] if layer else parts[1:]
        kind_dim = ".".join(parts[:3] + ["kind"]) if layer else "attention.kind"
        if section == "attention" and len(rest) >= 2:
            fam = rest[0]
            if families is not None and fam not in families:
                raise ConfigError("unknown attention family", key=f"space.{d.name}", value=fam,
                                  allowed=sorted(families), has_value=True)
            if not layer:
                d.when.setdefault("attention.kind", (fam,))
        if section == "attention" and rest == ["kind"] and families is not None:
            bad = [c for c in d.choices if c not in families] if d.type == "categorical" else ["<not categorical>"]
            if bad:
                raise ConfigError("unknown attention type", key=f"space.{d.name}", value=bad[0],
                                  allowed=sorted(families), has_value=True)
        for parent in d.when:
            if parent not in names and parent not in fixed and parent != kind_dim:
                raise ConfigError("condition refers to an unknown dimension", key=f"space.{d.name}.when",
                                  value=parent, allowed=sorted(names), has_value=True)
        ordered.append(d)
    # parents before children: stable topological order
    done: List[Dimension] = []
    pending = list(ordered)
    while pending:
        progressed = False
        for d in list(pending):
            if all(p not in names or any(x.name == p for x in done) for p in d.when):
                done.append(d)
                pending.remove(d)
                progressed = True
        if not progressed:
            raise ConfigError("conditions form a cycle", key=f"space.{pending[0].name}.when")
    space.dims[:] = done


def _candidate(space: Space, forced: Mapping[str, Any]) -> Dict[str, Any]:
    """A candidate: forced values where given, else each active dimension's first value."""
    fixed = flatten(space.base)
    params: Dict[str, Any] = {}
    for d in space.dims:
        if d.active({**fixed, **params}):
            params[d.name] = forced[d.name] if d.name in forced else d.values_for_check()[0]
    return params


def _check_combinations(space: Space) -> None:
    """Impossible combinations, before anything is trained.

    Every value of every dimension (each end of a range) is tried with the other dimensions
    at their first values (its parents set so that it is active), and every width x heads
    pair when both are categorical; a value that can never give a valid model is an error
    naming that dimension, its value, and the underlying rule.
    """
    dims = {d.name: d for d in space.dims}

    def attempt(forced: Dict[str, Any], blame: str, value: Any) -> None:
        params = _candidate(space, forced)
        if blame not in params:
            return  # not active under the fixed parts: nothing to check
        try:
            space.materialize(params)
        except ConfigError as e:
            detail = f"{e.key}: {e.problem}" + (f"; allowed: {e.allowed}" if e.allowed is not None else "")
            raise ConfigError(f"impossible combination ({detail})", key=f"space.{blame}", value=value,
                              has_value=True) from None

    space.materialize(_candidate(space, {}))  # the fixed parts (and first values) alone: errors as they are
    for d in space.dims:
        parents = {k: allowed[0] for k, allowed in d.when.items() if k in dims}
        for v in d.values_for_check():
            attempt({**parents, d.name: v}, d.name, v)
    w, h = dims.get("model.width"), dims.get("model.heads")
    if w and h and w.type == "categorical" and h.type == "categorical":
        for wv, hv in itertools.product(w.choices, h.choices):
            attempt({"model.width": wv, "model.heads": hv}, "model.heads", hv)


def _expand_per_layer(dims: List[Dimension], base: Dict[str, Any]) -> List[Dimension]:
    """Every attention dimension once per encoder layer (hybrid models): ``attention.X`` becomes
    ``attention.layers.<i>.X``, active while ``model.depth > i``; a family's knobs in layer i
    are active when that layer's kind is the family."""
    depth_dim = next((d for d in dims if d.name == "model.depth"), None)
    if depth_dim is None:
        depths = [(base.get("model") or {}).get("depth", ModelConfig.depth)]
    elif depth_dim.type == "categorical":
        depths = list(depth_dim.choices)
    elif depth_dim.type == "int":
        depths = list(range(int(depth_dim.low), int(depth_dim.high) + 1))
    else:
        raise ConfigError("model.depth must be an int or categorical dimension", key="space.model.depth",
                          value=depth_dim.type, has_value=True, allowed=["int", "categorical"])
    if not all(isinstance(v, int) and v >= 1 for v in depths):
        raise ConfigError("depths must be positive integers", key="space.model.depth", value=depths, has_value=True)
    att_dims = [d for d in dims if d.name.startswith("attention.")]
    kind_is_dim = any(d.name == "attention.kind" for d in att_dims)
    fixed_kind = (base.get("attention") or {}).get("kind", "full")
    out = [d for d in dims if not d.name.startswith("attention.")]
    for i in range(max(depths)):
        alive = {"model.depth": tuple(v for v in depths if v > i)} if min(depths) <= i else {}
        for d in att_dims:
            rest = d.name[len("attention."):]
            if rest == "layers" or rest.startswith("layers."):
                raise ConfigError("with attention.per_layer, name dimensions as for one layer "
                                  "(attention.kind, attention.<family>.<knob>); they are searched per layer",
                                  key=f"space.{d.name}", allowed=["attention.kind", "attention.<family>.<knob>"])
            when = {(k.replace("attention.", f"attention.layers.{i}.", 1) if k.startswith("attention.") else k): v
                    for k, v in d.when.items()}
            if rest != "kind":
                fam = rest.split(".")[0]
                if kind_is_dim:
                    when.setdefault(f"attention.layers.{i}.kind", (fam,))
                elif fam != fixed_kind:
                    continue  # the family is never chosen: its knobs are never active
            when.update(alive)
            out.append(dataclasses.replace(d, name=f"attention.layers.{i}.{rest}", when=when))
    return out


def _check_oneshot(space: Space) -> None:
    """What a weight-sharing supernet can cover: the architecture's depth, width, heads, FFN
    width and attention (families, their knobs, per layer); training and deployment settings are
    shared by every subnet, so they cannot be dimensions of a one-shot search."""
    for d in space.dims:
        if d.name in ONESHOT_DIMS or d.name.startswith("attention."):
            continue
        raise ConfigError("a one-shot search shares one supernet's training among all candidates, so this cannot "
                          "be searched with it; fix it in the fixed part, or use search.strategy: standalone",
                          key=f"space.{d.name}", allowed=[*ONESHOT_DIMS, "attention.*"])
    att = space.base.get("attention") or {}
    share = (att.get("linformer") or {}).get("share_layers") if isinstance(att, dict) else None
    if share:
        raise ConfigError("the supernet gives every layer its own Linformer projections", key="attention.linformer.share_layers",
                          value=share, allowed=[False], has_value=True)
    sandwich = ("largest", "smallest", "random")  # what OneShot.sample() draws for an entry
    entries = space.oneshot.sandwich if space.oneshot is not None else []
    if not isinstance(entries, (list, tuple)) or not entries or any(e not in sandwich for e in entries):
        raise ConfigError("each entry of the sandwich names the subnet trained at that place of a step",
                          key="oneshot.sandwich", value=entries, allowed=f"a non-empty list of {list(sandwich)}",
                          has_value=True)
    for d in space.dims:
        if d.name.endswith("linformer.share_layers") and True in d.choices:
            raise ConfigError("the supernet gives every layer its own Linformer projections", key=f"space.{d.name}",
                              value=list(d.choices), allowed=[[False]], has_value=True)
