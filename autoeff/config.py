"""Typed configs for one training run (what `autoeff train` and `build_model` consume).

Every config is a plain dataclass holding plain values (names, numbers, lists), so
``dataclasses.asdict(cfg)`` goes straight to YAML and to MLflow params, and each class is
usable as an OmegaConf structured config. Files are read with OmegaConf (YAML, dotlist
overrides, interpolation) and then checked field by field here, so that a bad value gives one
message naming the file, the key, the value and what is allowed.

Attention families and tasks register their own option dataclasses; the ``attention`` and
``tasks`` sections are validated against the registries in ``autoeff.registry`` (which sit at
the base of the data flow; ``autoeff.attention`` and ``autoeff.tasks`` register into them).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError
from .registry import ATTENTIONS, TASKS

INPUT_KINDS = ("tokens", "features")
#: how per-task values combine into one figure (accuracy, latency, memory of a multi-task model)
AGGREGATES = ("mean", "min", "max", "weighted")


def aggregate(per_task: Mapping[str, float], how: str, weights: Optional[Mapping[str, float]] = None) -> float:
    """Combine per-task values: ``mean``, ``min``, ``max``, or ``weighted`` by each task's weight."""
    vals = list(per_task.values())
    if not vals:
        raise ValueError("nothing to aggregate")
    if how == "mean":
        return sum(vals) / len(vals)
    if how == "min":
        return min(vals)
    if how == "max":
        return max(vals)
    if how == "weighted":
        w = {k: (weights or {}).get(k, 1.0) for k in per_task}
        return sum(per_task[k] * w[k] for k in per_task) / sum(w.values())
    raise ValueError(f"unknown aggregate {how!r}; allowed: {', '.join(AGGREGATES)}")

# --------------------------------------------------------------------------------------
# The run config
# --------------------------------------------------------------------------------------


TARGETS = ("class", "token")


@dataclass(frozen=True)
class TaskSpec:
    """What the model must know about a task's inputs and outputs."""

    input_kind: str  # "tokens" | "features"
    seq_len: int  # maximum number of positions fed to the encoder (before any CLS token)
    num_classes: int
    vocab_size: int = 0  # tokens: ids in [0, vocab_size), 0 = padding
    feature_dim: int = 0  # features: size of each position's vector
    pair: bool = False  # two sequences per example (e.g. retrieval)
    metric: str = "accuracy"
    name: str = ""  # the task's name within the run
    # "class": y (n,) one label per example; "token": y (n, L) the id each position must
    # predict, -100 where unscored (language-model tasks, docs/decoders.md section 2)
    target: str = "class"
    # bytes of text per token (1.0 for byte-level text; 0 where bits per byte means nothing):
    # bpb = loss_nats / ln 2 / bytes_per_token
    bytes_per_token: float = 0.0

    def __post_init__(self):
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {self.input_kind!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")


def task_spec(task_cfg: "TaskConfig") -> TaskSpec:
    """What the model needs to know about a configured task (built without building its data)."""
    spec = TASKS.get(task_cfg.kind).spec(task_cfg.options_typed())
    return dataclasses.replace(spec, name=task_cfg.name)


ARCHS = ("encoder", "decoder")


@dataclass
class ModelConfig:
    """The shared trunk: depth x (attention + FFN) blocks, pre-LayerNorm.

    ``arch``: ``encoder`` (classification heads over a bidirectional encoder) or ``decoder`` (a
    causal language model, docs/decoders.md section 3: every layer causal, rotary positions with
    base ``rope_base``, an LM head tied to the token embedding unless ``tie_embeddings`` is false;
    ``pool`` means nothing there)."""

    depth: int = 2
    width: int = 128
    heads: int = 4
    ffn_mult: float = 2.0
    dropout: float = 0.1
    pool: str = field(default="cls", metadata={"choices": ("cls", "mean")})
    arch: str = field(default="encoder", metadata={"choices": ARCHS})
    tie_embeddings: bool = True
    rope_base: float = 10000.0


@dataclass
class AttentionConfig:
    """Which attention family, plus option blocks keyed by family name.

    YAML: ``attention: {kind: linformer, linformer: {rank: 64}}``. Only the block of the
    chosen family is used; its keys are checked against that family's options dataclass.

    Hybrid models give every encoder layer its own family and knobs with ``layers``, one entry
    per layer (as many as ``model.depth``), each an attention section of its own::

        attention: {layers: [{kind: linear, linear: {feature_map: elu}}, {kind: full}]}

    ``kind`` and ``options`` then describe nothing; ``kind`` reads ``hybrid``.
    """

    kind: str = "full"
    options: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    layers: List["AttentionConfig"] = field(default_factory=list)

    def options_for(self, kind: Optional[str] = None):
        """The typed options dataclass of ``kind`` (default: the chosen family)."""
        kind = kind or self.kind
        fam = ATTENTIONS.get(kind)
        return build_dataclass(fam.options, self.options.get(kind, {}), prefix=f"attention.{kind}")

    def layer(self, i: int) -> "AttentionConfig":
        """The attention of encoder layer ``i`` (the same for every layer unless hybrid)."""
        return self.layers[i] if self.layers else self

    @property
    def kinds(self) -> List[str]:
        """The families the model uses (one per layer for hybrids, in layer order)."""
        return [a.kind for a in self.layers] if self.layers else [self.kind]

    def to_dict(self) -> Dict[str, Any]:
        if self.layers:
            return {"kind": HYBRID, "layers": [a.to_dict() for a in self.layers]}
        out: Dict[str, Any] = {"kind": self.kind}
        opts = self.options.get(self.kind)
        if opts:
            out[self.kind] = dict(opts)
        return out


#: ``attention.kind`` of a model whose layers have their own families (``attention.layers``)
HYBRID = "hybrid"


@dataclass
class TaskConfig:
    """One task: a registered kind (built-in generator or a loader for user data) + its options.

    YAML: ``{kind: listops, seq_len: 512, n_train: 2000}``. ``name`` defaults to the kind and
    must be unique within a run; ``weight`` is used by weighted aggregation and proportional
    mixing.
    """

    kind: str = "listops"
    name: str = ""
    weight: float = 1.0
    options: Dict[str, Any] = field(default_factory=dict)

    def options_typed(self):
        return build_dataclass(TASKS.get(self.kind).options, self.options, prefix=f"task {self.name}")

    def to_dict(self) -> Dict[str, Any]:
        out = {"kind": self.kind, "name": self.name, "weight": self.weight}
        out.update(self.options)
        return out


@dataclass
class TrainConfig:
    max_steps: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip: float = 1.0
    seed: int = 0
    mix: str = field(default="round_robin", metadata={"choices": ("round_robin", "proportional")})
    val_batches: int = 0  # 0 = the whole validation split
    #: how per-task validation accuracies combine into ``accuracy`` (a search sets it from its
    #: accuracy objective, so a trial and `autoeff train` of its exported config agree)
    aggregate: str = field(default="mean", metadata={"choices": AGGREGATES})
    threads: int = 0  # 0 = torch's default
    max_time_s: float = 0.0  # 0 = no wall-clock cap
    accelerator: str = field(default="cpu", metadata={"choices": ("cpu", "gpu", "auto")})


#: deploy.runtime: where the deployed model is measured
RUNTIMES = ("torch", "onnxruntime")


@dataclass
class DeployConfig:
    """How the deployable model is measured (see docs/architecture.md, measurement protocol)."""

    batch_size: int = 1
    warmup: int = 3
    repeats: int = 15
    threads: int = 0  # 0 = torch's default; recorded either way
    device: str = field(default="cpu", metadata={"choices": ("cpu", "cuda")})
    #: decoders: tokens in the prefill pass that ``prefill_ms`` times (0 = ``context_len``)
    prompt_len: int = 0
    #: decoders: tokens already in the cache when ``decode_ms`` and ``cache_mb`` are measured
    #: (0 = the longest task's ``seq_len``, the context the model was trained on)
    context_len: int = 0

    def decode_lengths(self, seq_len: int) -> Tuple[int, int]:
        """``(prompt_len, context_len)`` with the zeros resolved for tasks of ``seq_len`` tokens."""
        ctx = self.context_len or seq_len
        return (self.prompt_len or ctx), ctx
    #: where latency and memory are measured: ``torch`` (the eager PyTorch model) or
    #: ``onnxruntime`` (the exported ONNX graph in an ONNX Runtime CPU session; int8 models on
    #: onnxruntime's dynamically quantized graph, 4-bit on MatMulNBits; see autoeff/measure/onnxrt.py)
    runtime: str = field(default="torch", metadata={"choices": RUNTIMES})
    #: onnxruntime: the session's CPU memory arena (``enable_cpu_mem_arena``); recorded as ``ort_mem_arena``
    ort_mem_arena: bool = True


#: quantization bit widths: 32 = fp32 as trained, 16 = bf16/fp16, 8 = int8 weights, 4 = packed 4-bit weights
BITS = (32, 16, 8, 4)
PRUNE_METHODS = ("none", "structured", "magnitude")


@dataclass
class TeacherConfig:
    """The distillation teacher: a full-attention model trained once on the run's tasks, cached
    on disk by a fingerprint of this block, the tasks and the training settings."""

    depth: int = 2
    width: int = 128
    heads: int = 4
    ffn_mult: float = 2.0
    max_steps: int = 0  # 0 = 3 x train.max_steps
    lr: float = 0.0  # 0 = train.lr


@dataclass
class CompressConfig:
    """What turns the trained fp32 model into the deployed one (see autoeff/compress/).

    ``bits``: 32 fp32 as trained; 16 the whole model in ``half`` (bf16 or fp16); 8 int8 weights
    (per-row scales); 4 weights packed two per byte with one fp16 scale per ``group_size``
    weights. ``prune``: ``structured`` removes the ``sparsity`` fraction of FFN neurons (and of
    attention heads where the family supports it), ``magnitude`` zeroes that fraction of each
    linear weight (stored dense: for comparison). Pruning and ``qat`` (quantization-aware
    fine-tuning, 8 and 4 bits) take their fine-tune, ``finetune`` x ``train.max_steps`` steps,
    out of the training budget. ``distill``: knowledge distillation from ``teacher``.
    """

    bits: int = field(default=32, metadata={"choices": BITS})
    half: str = field(default="bf16", metadata={"choices": ("bf16", "fp16")})
    group_size: int = field(default=64, metadata={"min": 2})
    qat: bool = False
    prune: str = field(default="none", metadata={"choices": PRUNE_METHODS})
    sparsity: float = field(default=0.0, metadata={"min": 0.0, "max": 0.95})
    finetune: float = field(default=0.2, metadata={"min": 0.0, "max": 0.9})
    distill: bool = False
    distill_alpha: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    distill_temperature: float = field(default=2.0, metadata={"min": 0.1})
    teacher: TeacherConfig = field(default_factory=TeacherConfig)

    @property
    def active(self) -> bool:
        """Whether the deployed model differs from the trained fp32 model."""
        return self.bits != 32 or self.prune != "none"

    def finetune_steps(self, max_steps: int) -> int:
        """Steps of the fine-tune after pruning / with QAT (taken out of ``max_steps``)."""
        if (self.prune == "none" and not self.qat) or self.finetune <= 0:
            return 0
        return min(max_steps - 1, max(1, int(round(self.finetune * max_steps)))) if max_steps > 1 else 0


@dataclass
class RunConfig:
    """Everything needed to build, train and measure one model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    tasks: List[TaskConfig] = field(default_factory=lambda: [TaskConfig()])
    train: TrainConfig = field(default_factory=TrainConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    data_dir: str = ""  # cache for generated tasks; "" = $AUTOEFF_CACHE or ~/.cache/autoeff
    compress: CompressConfig = field(default_factory=CompressConfig)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "model": dataclasses.asdict(self.model),
            "attention": self.attention.to_dict(),
            "tasks": [t.to_dict() for t in self.tasks],
            "train": dataclasses.asdict(self.train),
            "deploy": dataclasses.asdict(self.deploy),
            "data_dir": self.data_dir,
            "compress": dataclasses.asdict(self.compress),
        }


RUN_SECTIONS = ("model", "attention", "tasks", "train", "deploy", "data_dir", "compress")

SANDWICH_ENTRIES = ("largest", "smallest", "random")
FINALIST_INITS = ("finetune", "scratch")


@dataclass
class OneShotConfig:
    """How a one-shot search trains its weight-sharing supernet and turns the proxy front into
    real models (the space file's ``oneshot:`` section; see autoeff/supernet/)."""

    steps: int = 600  # supernet optimizer steps
    max_time_s: float = 0.0  # wall-clock cap on supernet training (0 = none)
    batch_size: int = 0  # 0 = train.batch_size
    lr: float = 0.0  # 0 = train.lr
    warmup_steps: int = -1  # -1 = train.warmup_steps
    #: subnets per step, gradients accumulated: the sandwich rule (Yu et al. 2019, BigNAS)
    sandwich: List[str] = field(default_factory=lambda: ["largest", "smallest", "random", "random"])
    #: in-place distillation: every other subnet also learns the largest one's soft predictions
    distill: bool = True
    distill_weight: float = 0.5  # share of the distillation loss (the rest: the labels)
    eval_batches: int = 4  # validation batches per task for a subnet's proxy accuracy (0 = all)
    eval_batch_size: int = 64
    finalists: int = 4  # top-k of the proxy front trained as real (standalone) trials
    finalist_init: str = field(default="finetune", metadata={"choices": FINALIST_INITS})
    finalist_steps: int = 0  # finalists' training steps (0 = train.max_steps)
    #: finalists' peak learning rate (0 = train.lr); a fine-tune from inherited weights may want a
    #: lower one, so as not to wash out what the supernet learned
    finalist_lr: float = field(default=0.0, metadata={"min": 0.0})
    #: how well the proxy ranks: this many more proxy candidates, spread over the families and
    #: the proxy accuracies, trained from scratch as standalone trials; the Kendall tau between
    #: their proxy and real accuracies is logged (0 = off; then only the finalists' tau)
    rank_check: int = 0
    seed: int = 0


# --------------------------------------------------------------------------------------
# Checked construction of dataclasses from plain dicts
# --------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"expected {_type_name(tp)}", key=key, value=value, has_value=True)
    if origin in (list, List, Sequence, tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError("expected a list", key=key, value=value, has_value=True)
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        return [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError("expected a mapping", key=key, value=value, has_value=True)
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError("expected true or false", key=key, value=value, has_value=True)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError("expected an integer", key=key, value=value, has_value=True)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("expected a number", key=key, value=value, has_value=True)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError("expected a string", key=key, value=value, has_value=True)
        return value
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, prefix=key)
    return value


def build_dataclass(cls, data: Any, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types.

    Field metadata may carry ``choices`` (allowed values) and ``min``/``max`` bounds.
    """
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping", key=prefix or None, value=data, has_value=True)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        raise ConfigError(
            "unknown key",
            key=f"{prefix}.{k}" if prefix else str(k),
            allowed=sorted(fields),
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        f = fields[name]
        v = coerce(value, hints[name], key)
        choices = f.metadata.get("choices")
        if choices is not None and v not in choices:
            raise ConfigError("value not allowed", key=key, value=v, allowed=choices, has_value=True)
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if lo is not None and v is not None and v < lo:
            raise ConfigError(f"must be >= {lo}", key=key, value=v, has_value=True)
        if hi is not None and v is not None and v > hi:
            raise ConfigError(f"must be <= {hi}", key=key, value=v, has_value=True)
        kwargs[name] = v
    return cls(**kwargs)


# --------------------------------------------------------------------------------------
# Sections with registries (attention families, tasks)
# --------------------------------------------------------------------------------------


def parse_attention(data: Any, prefix: str = "attention", *, allow_layers: bool = True) -> AttentionConfig:
    if data is None:
        data = {}
    if isinstance(data, str):
        data = {"kind": data}
    if not isinstance(data, Mapping):
        raise ConfigError("expected a mapping with 'kind'", key=prefix, value=data, has_value=True)
    data = dict(data)
    layers = data.pop("layers", None)
    if layers is not None and allow_layers:
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ConfigError("expected a non-empty list, one attention section per encoder layer",
                              key=f"{prefix}.layers", value=layers, has_value=True)
        if data.get("kind", HYBRID) != HYBRID or set(data) - {"kind"}:
            extra = sorted(set(data) - {"kind"}) or ["kind"]
            raise ConfigError(f"with 'layers', give each layer its own family and knobs (kind: {HYBRID})",
                              key=f"{prefix}.{extra[0]}", allowed=["layers", f"kind: {HYBRID}"])
        return AttentionConfig(kind=HYBRID, layers=[parse_attention(a, f"{prefix}.layers[{i}]", allow_layers=False)
                                                    for i, a in enumerate(layers)])
    if layers is not None:
        raise ConfigError("layers do not nest", key=f"{prefix}.layers", allowed=["kind", *ATTENTIONS.names()])
    kind = data.pop("kind", "full")
    known = ATTENTIONS.names()
    if kind not in known:
        raise ConfigError("unknown attention type", key=f"{prefix}.kind", value=kind, allowed=known, has_value=True)
    options: Dict[str, Dict[str, Any]] = {}
    for fam, opts in data.items():
        if fam not in known:
            raise ConfigError(
                "unknown key (option blocks are named after attention families)",
                key=f"{prefix}.{fam}",
                allowed=["kind", *known],
            )
        typed = build_dataclass(ATTENTIONS.get(fam).options, opts, prefix=f"{prefix}.{fam}")
        options[fam] = dataclasses.asdict(typed)
    return AttentionConfig(kind=kind, options=options)


def parse_tasks(data: Any, prefix: str = "tasks") -> List[TaskConfig]:
    if data is None:
        data = [{"kind": "listops"}]
    if isinstance(data, Mapping):  # a single task
        data = [data]
    if not isinstance(data, (list, tuple)) or not data:
        raise ConfigError("expected a non-empty list of tasks", key=prefix, value=data, has_value=True)
    out: List[TaskConfig] = []
    seen = set()
    known = TASKS.names()
    for i, t in enumerate(data):
        key = f"{prefix}[{i}]"
        if isinstance(t, str):
            t = {"kind": t}
        if not isinstance(t, Mapping):
            raise ConfigError("expected a mapping with 'kind'", key=key, value=t, has_value=True)
        t = dict(t)
        kind = t.pop("kind", None)
        if kind not in known:
            raise ConfigError("unknown task kind", key=f"{key}.kind", value=kind, allowed=known, has_value=True)
        name = t.pop("name", None) or kind
        if not isinstance(name, str):
            raise ConfigError("expected a string", key=f"{key}.name", value=name, has_value=True)
        if name in seen:
            raise ConfigError("duplicate task name (give each task a distinct 'name')", key=f"{key}.name", value=name, has_value=True)
        seen.add(name)
        weight = coerce(t.pop("weight", 1.0), float, f"{key}.weight")
        if weight <= 0:
            raise ConfigError("must be > 0", key=f"{key}.weight", value=weight, has_value=True)
        typed = build_dataclass(TASKS.get(kind).options, t, prefix=key)
        TASKS.get(kind).check_options(typed, key)
        out.append(TaskConfig(kind=kind, name=name, weight=weight, options=dataclasses.asdict(typed)))
    return out


def parse_run_config(data: Mapping[str, Any], file: Optional[str] = None, *, registered: bool = True) -> RunConfig:
    """Plain mapping (already loaded by OmegaConf) -> validated RunConfig.

    ``registered=False`` takes the ``attention`` and ``tasks`` sections as they are (plain data
    that was validated before, e.g. a finished trial's config) instead of checking them against
    the registries, which would import every family and task (and torch); the other sections are
    checked as usual. The architecture checks need the registries and are skipped then.
    """
    try:
        if not isinstance(data, Mapping):
            raise ConfigError("expected a mapping at the top level", value=data, has_value=True)
        unknown = [k for k in data if k not in RUN_SECTIONS]
        if unknown:
            raise ConfigError("unknown key", key=str(unknown[0]), allowed=RUN_SECTIONS)
        if registered:
            attention, tasks = parse_attention(data.get("attention")), parse_tasks(data.get("tasks"))
        else:
            attention, tasks = _trusted_attention(data.get("attention")), _trusted_tasks(data.get("tasks"))
        cfg = RunConfig(
            model=build_dataclass(ModelConfig, data.get("model"), "model"),
            attention=attention,
            tasks=tasks,
            train=build_dataclass(TrainConfig, data.get("train"), "train"),
            deploy=build_dataclass(DeployConfig, data.get("deploy"), "deploy"),
            data_dir=coerce(data.get("data_dir", ""), str, "data_dir"),
            compress=build_dataclass(CompressConfig, data.get("compress"), "compress"),
        )
        check_ranges(cfg)
        check_compress(cfg)
        check_runtime(cfg)
        if registered:
            check_architecture(cfg)
        return cfg
    except ConfigError as e:
        raise e.with_file(file)


def _trusted_attention(data: Any) -> AttentionConfig:
    data = dict(data or {})
    layers = data.pop("layers", None)
    if layers:
        return AttentionConfig(kind=HYBRID, layers=[_trusted_attention(a) for a in layers])
    kind = data.pop("kind", "full")
    return AttentionConfig(kind=kind, options={k: dict(v) for k, v in data.items()})


def _trusted_tasks(data: Any) -> List[TaskConfig]:
    out = []
    for t in data or []:
        t = dict(t)
        kind = t.pop("kind")
        out.append(TaskConfig(kind=kind, name=t.pop("name", kind), weight=float(t.pop("weight", 1.0)), options=t))
    return out


def check_ranges(cfg: RunConfig) -> None:
    positive = {
        "model.depth": cfg.model.depth,
        "model.width": cfg.model.width,
        "model.heads": cfg.model.heads,
        "model.ffn_mult": cfg.model.ffn_mult,
        "train.max_steps": cfg.train.max_steps,
        "train.batch_size": cfg.train.batch_size,
        "train.lr": cfg.train.lr,
        "deploy.batch_size": cfg.deploy.batch_size,
        "deploy.repeats": cfg.deploy.repeats,
    }
    for k, v in positive.items():
        if v <= 0:
            raise ConfigError("must be > 0", key=k, value=v, has_value=True)
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError("must be in [0, 1)", key="model.dropout", value=cfg.model.dropout, has_value=True)
    for k, v in {"deploy.prompt_len": cfg.deploy.prompt_len, "deploy.context_len": cfg.deploy.context_len,
                 "deploy.warmup": cfg.deploy.warmup, "train.warmup_steps": cfg.train.warmup_steps,
                 "train.threads": cfg.train.threads, "deploy.threads": cfg.deploy.threads}.items():
        if v < 0:
            raise ConfigError("must be >= 0", key=k, value=v, has_value=True)


def check_runtime(cfg: RunConfig) -> None:
    """``deploy.runtime: onnxruntime`` measures encoders on the CPU at 32, 8 or 4 bits."""
    d = cfg.deploy
    if d.runtime != "onnxruntime":
        return
    if cfg.model.arch == "decoder":
        raise ConfigError("deploy.runtime onnxruntime measures encoders only (a decoder's cached decoding has no "
                          "ONNX graph here); measure decoders with runtime torch", key="deploy.runtime",
                          value=d.runtime, allowed=["torch"], has_value=True)
    if d.device != "cpu":
        raise ConfigError("deploy.runtime onnxruntime measures on the CPU execution provider", key="deploy.device",
                          value=d.device, allowed=["cpu"], has_value=True)
    if cfg.compress.bits == 16:
        raise ConfigError("deploy.runtime onnxruntime has no 16-bit graph (the CPU provider has no bf16 kernels and "
                          "few fp16 ones): fp32, int8 (dynamic quantization) or 4-bit weights (MatMulNBits)",
                          key="compress.bits", value=16, allowed=[32, 8, 4], has_value=True)
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        raise ConfigError("the onnxruntime package is not installed (pip install onnxruntime)",
                          key="deploy.runtime", value=d.runtime, allowed=["torch"], has_value=True)


def check_compress(cfg: RunConfig) -> None:
    """Combinations of the compress section that cannot mean anything."""
    c = cfg.compress
    if c.qat and c.bits not in (8, 4):
        raise ConfigError("quantization-aware fine-tuning applies to 8 and 4 bits (condition it with "
                          "when: {compress.bits: [8, 4]})", key="compress.qat", value=c.qat,
                          allowed=[False], has_value=True)
    if c.prune == "none" and c.sparsity > 0:
        raise ConfigError("a sparsity needs a pruning method (condition it with "
                          "when: {compress.prune: [structured, magnitude]})", key="compress.sparsity",
                          value=c.sparsity, allowed=[0.0], has_value=True)
    if c.prune != "none" and c.sparsity <= 0:
        raise ConfigError(f"pruning '{c.prune}' needs a sparsity > 0", key="compress.sparsity",
                          value=c.sparsity, allowed="0 < sparsity <= 0.95", has_value=True)
    if c.distill and cfg.model.arch == "decoder":
        raise ConfigError("distillation is not implemented for decoders (model.arch: decoder)",
                          key="compress.distill", value=c.distill, allowed=[False], has_value=True)
    if (c.prune != "none" or c.qat) and cfg.train.max_steps < 2:
        raise ConfigError("pruning and QAT fine-tune out of the training budget: train.max_steps must be >= 2",
                          key="train.max_steps", value=cfg.train.max_steps, allowed=">= 2", has_value=True)
    if c.distill:
        t = c.teacher
        for k in ("depth", "width", "heads", "ffn_mult"):
            if getattr(t, k) <= 0:
                raise ConfigError("must be > 0", key=f"compress.teacher.{k}", value=getattr(t, k), has_value=True)
        if t.width % t.heads:
            raise ConfigError(f"must divide compress.teacher.width ({t.width})", key="compress.teacher.heads",
                              value=t.heads, allowed=[h for h in range(1, t.width + 1) if t.width % h == 0 and h <= 64],
                              has_value=True)
        if t.max_steps < 0 or t.lr < 0:
            k = "max_steps" if t.max_steps < 0 else "lr"
            raise ConfigError("must be >= 0 (0 = the student's)", key=f"compress.teacher.{k}",
                              value=getattr(t, k), has_value=True)


def max_seq_len(cfg: RunConfig) -> int:
    """Longest input sequence over the run's tasks (what fixed-length families must cover)."""
    return max(task_spec(t).seq_len for t in cfg.tasks)


def decode_lengths(cfg: RunConfig, seq_len: Optional[int] = None) -> Tuple[int, int]:
    """A decoder's ``(prompt_len, context_len)`` with the zeros resolved: ``context_len`` 0 = the
    longest task's ``seq_len`` (``seq_len`` if given, to avoid recomputing it); ``prompt_len`` 0 =
    ``context_len``."""
    return cfg.deploy.decode_lengths(seq_len if seq_len is not None else max_seq_len(cfg))


def model_max_len(cfg: RunConfig, seq_len: Optional[int] = None) -> int:
    """The length a model's layers are built for: the longest task sequence, and for a decoder
    also the deployed prompt and context (a fixed-length family must cover all of them)."""
    n = seq_len if seq_len is not None else max_seq_len(cfg)
    if cfg.model.arch == "decoder":
        n = max(n, *decode_lengths(cfg, n))
    return n


def check_decoder(cfg: RunConfig, seq_len: int) -> None:
    """What a model.arch (encoder or decoder) cannot do with these tasks and families."""
    decoder = cfg.model.arch == "decoder"
    for i, t in enumerate(cfg.tasks):
        target = task_spec(t).target
        if decoder and target != "token":
            raise ConfigError("a decoder (model.arch: decoder) needs token-target tasks (language modelling); "
                              "this task predicts one class per example",
                              key=f"tasks[{i}].kind", value=t.kind,
                              allowed=[k for k in TASKS.names() if _target_of(k) == "token"], has_value=True)
        if not decoder and target == "token":
            raise ConfigError(f"task {t.name!r} ({t.kind}) has token targets: it needs a decoder",
                              key="model.arch", value=cfg.model.arch, allowed=["decoder"], has_value=True)
    att = cfg.attention
    if not decoder:
        for i in range(len(att.layers) or 1):
            a = att.layer(i)
            if getattr(ATTENTIONS.get(a.kind), "causal_only", False):
                raise ConfigError(f"{a.kind} exists only in causal form: it needs a decoder",
                                  key=f"attention.layers[{i}].kind" if att.layers else "attention.kind",
                                  value=a.kind, allowed=[k for k in ATTENTIONS.names()
                                                         if not getattr(ATTENTIONS.get(k), "causal_only", False)],
                                  has_value=True)
        return
    causal = [k for k in ATTENTIONS.names() if ATTENTIONS.get(k).supports_causal]
    prompt, ctx = decode_lengths(cfg, seq_len)
    for i in range(len(att.layers) or 1):
        a = att.layer(i)
        fam = ATTENTIONS.get(a.kind)
        where = f"attention.layers[{i}].kind" if att.layers else "attention.kind"
        if not fam.supports_causal:
            raise ConfigError("a decoder needs a causal attention family", key=where, value=a.kind,
                              allowed=causal, has_value=True)
        if fam.needs_fixed_length and max(prompt, ctx) > seq_len:
            key, val = ("deploy.context_len", ctx) if ctx >= prompt else ("deploy.prompt_len", prompt)
            raise ConfigError(f"{a.kind} is built for a fixed length: the longest task sequence ({seq_len})",
                              key=key, value=val, allowed=f"<= {seq_len}", has_value=True)


def _target_of(kind: str) -> str:
    """A task kind's target: its class attribute ``target`` if it has one, else its spec's with
    the default options ('' when those cannot build a spec, e.g. a loader that needs a path)."""
    task = TASKS.get(kind)
    if isinstance(getattr(task, "target", None), str):
        return task.target
    try:
        return task.spec(build_dataclass(task.options, {})).target
    except Exception:  # e.g. a loader whose default options name no file
        return ""


def check_architecture(cfg: RunConfig) -> None:
    """Impossible combinations: heads must divide width; the family's knobs must fit."""
    m = cfg.model
    if m.width % m.heads != 0:
        raise ConfigError(
            f"model.heads must divide model.width ({m.width})",
            key="model.heads",
            value=m.heads,
            allowed=[h for h in range(1, m.width + 1) if m.width % h == 0 and h <= 64],
            has_value=True,
        )
    att = cfg.attention
    if att.layers and len(att.layers) != m.depth:
        raise ConfigError(f"a hybrid model needs one attention section per layer (model.depth = {m.depth})",
                          key="attention.layers", value=f"{len(att.layers)} sections", allowed=[m.depth],
                          has_value=True)
    seq_len = max_seq_len(cfg)
    check_decoder(cfg, seq_len)
    seq_len = model_max_len(cfg, seq_len)
    for i in range(len(att.layers) or 1):
        a = att.layer(i)
        where = f"attention.layers[{i}].{a.kind}" if att.layers else f"attention.{a.kind}"
        ATTENTIONS.get(a.kind).check(a.options_for(), seq_len=seq_len, width=m.width, heads=m.heads, prefix=where)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _load_conf(path: Path, chain: Sequence[Path] = ()):
    """One YAML file as an OmegaConf mapping, with ``extends: <file>`` (a path relative to the
    file) merged under it: the file's own keys win, mappings merge key by key, lists and plain
    values are replaced. The parent's ``name`` is not inherited (a preset is named by its own
    file). Chains are followed; a cycle is an error."""
    if not path.exists():
        raise ConfigError("file not found", file=str(path))
    try:
        conf = OmegaConf.load(path)
    except (OmegaConfBaseException, Exception) as e:  # yaml.YAMLError and friends
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"not valid YAML: {first}", file=str(path))
    if conf is None or not OmegaConf.is_dict(conf):
        raise ConfigError("expected a mapping at the top level", file=str(path))
    parent = conf.pop("extends", None)
    if parent is None:
        return conf
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError("expected the path of the file this one extends (relative to this file)",
                          file=str(path), key="extends", value=parent, has_value=True)
    ppath = (path.parent / parent).resolve()
    if ppath in chain or ppath == path.resolve():
        raise ConfigError("extends forms a cycle", file=str(path), key="extends", value=parent, has_value=True)
    if not ppath.exists():
        raise ConfigError(f"the file it extends does not exist ({ppath})", file=str(path), key="extends",
                          value=parent, has_value=True)
    base = _load_conf(ppath, [*chain, path.resolve()])
    base.pop("name", None)
    return OmegaConf.merge(base, conf)


def load_yaml(path: Union[str, Path], overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """Read a YAML file with OmegaConf (following ``extends:``), merge ``key=value`` dotlist
    overrides, resolve."""
    path = Path(path)
    conf = _load_conf(path)
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError("override must look like key=value", file="command line", key=ov)
        try:
            conf = OmegaConf.merge(conf, OmegaConf.from_dotlist([ov]))
        except OmegaConfBaseException as e:
            raise ConfigError(f"cannot apply override: {str(e).splitlines()[0]}", file="command line", key=ov)
    try:
        data = OmegaConf.to_container(conf, resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(f"cannot resolve: {str(e).splitlines()[0]}", file=str(path), key=key)
    return data  # type: ignore[return-value]


def load_config(path: Union[str, Path], overrides: Sequence[str] = ()) -> RunConfig:
    """Load a training config (as written by ``autoeff export``) into a validated RunConfig."""
    data = load_yaml(path, overrides)
    data = {k: v for k, v in data.items() if k != "autoeff"}  # provenance block, informational
    return parse_run_config(data, file=str(path))


def save_config(cfg: RunConfig, path: Union[str, Path], extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write a self-contained training config YAML."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = cfg.to_dict()
    if extra:
        doc = {"autoeff": extra, **doc}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
