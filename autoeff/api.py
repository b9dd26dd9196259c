"""The Python API: the command line's verbs as functions, and the few types they return.

Every function here is re-exported by ``autoeff`` (``autoeff.load_space``, ``autoeff.create_model``,
...); import them from there. Each one is the code its command runs, not a copy of it:

=====================================  ==========================================
Python                                 command line
=====================================  ==========================================
``load_space(path, overrides)``        ``autoeff validate --space F k=v``
``run_search(space, overrides)``       ``autoeff search --space F k=v``
``load_study(space)``                  ``autoeff pareto`` / ``autoeff report`` (read-only)
``export_trial(space, trial=/rule=)``  ``autoeff export`` (``onnx=``, ``register=``)
``train(config, out)``                 ``autoeff train --config C --out DIR``
``create_model(cfg, deployed=...)``    what ``autoeff train`` builds and saves
=====================================  ==========================================

Heavy libraries are imported by the functions that need them: reading a study imports neither
torch nor MLflow (as ``autoeff pareto`` does not).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .config import RunConfig, TaskSpec, load_config as _load_config_file, parse_run_config
from .errors import ConfigError
from .isolation import gate
from .search.record import TrialRecord
from .search.front import SearchResult, front_of, hypervolume_history, summarize
from .search.progress import Progress
from .search.space import Space, load_space as _load_space

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

SpaceLike = Union[str, Path, Space]
ConfigLike = Union[str, Path, Mapping[str, Any], RunConfig]


# ---- spaces and searches ----------------------------------------------------------------

def load_space(path: Union[str, Path], overrides: Sequence[str] = (), *, check: bool = True) -> Space:
    """A space file (with ``extends:`` presets and ``k=v`` dotlist overrides) as a checked
    :class:`Space`: its fixed parts, dimensions, objectives, constraints and search settings.
    ``check=False`` skips the combination checks that build the families (what the read-only
    commands do)."""
    return _load_space(path, overrides, check=check)


def _space(space: SpaceLike, overrides: Sequence[str], check: bool) -> Space:
    if isinstance(space, Space):
        if overrides:
            raise ConfigError("overrides go with a space file, not a loaded Space (load_space(path, overrides))",
                              key="overrides", value=list(overrides), has_value=True)
        return space
    return _load_space(space, overrides, check=check)


@dataclass
class StudyResult(SearchResult):
    """A search, finished or partial: its space, every trial's :class:`TrialRecord` (``records``),
    the front (``front``, autoeff's front: on re-measured figures) and ``summary`` (counts,
    front size, hypervolume, best accuracy). Returned by :func:`run_search` and :func:`load_study`."""

    def trial(self, number: int) -> TrialRecord:
        """The record of trial ``number``."""
        for r in self.records:
            if r.number == number:
                return r
        raise ConfigError("no such trial in the study", key="trial", value=number,
                          allowed=[r.number for r in self.records] or "none yet", has_value=True)

    def select(self, rule: str) -> TrialRecord:
        """The trial a rule picks among the feasible complete trials, as ``autoeff export --rule``
        does, e.g. ``"highest accuracy with latency_ms <= 30"``."""
        from .export import choose

        return choose(self.space, self.records, rule=rule)

    def table(self, *, all: bool = False, markdown: bool = False) -> str:
        """The front (or every trial) as ``autoeff pareto`` prints it."""
        from .tracking.tables import to_text

        return to_text(self.space, self.records if all else self.front, markdown=markdown)

    def rows(self, *, all: bool = False) -> List[Dict[str, Any]]:
        """The front (or every trial) as plain rows (``autoeff pareto --format json``)."""
        from .tracking.tables import front_rows

        return front_rows(self.space, self.records if all else self.front)

    def hypervolume_history(self) -> List[Tuple[int, float]]:
        """(trial number, hypervolume of the front so far), against the search's reference point."""
        return hypervolume_history(self.space, self.records)

    def create_model(self, trial: Union[int, TrialRecord], *, deployed: bool = True) -> "nn.Module":
        """The trained model of a trial, from its checkpoint (as deployed: compressed)."""
        rec = trial if isinstance(trial, TrialRecord) else self.trial(trial)
        if not rec.config or not rec.checkpoint:
            raise ConfigError(f"trial {rec.number} has no trained model ({rec.status}: {rec.reason})", key="trial",
                              value=rec.number, allowed=[r.number for r in self.records if r.checkpoint], has_value=True)
        cfg = parse_run_config(rec.config, file=f"trial {rec.number}")
        return create_model(cfg, deployed=deployed, checkpoint=rec.checkpoint)


def _study_result(res: SearchResult) -> StudyResult:
    return StudyResult(space=res.space, records=res.records, front=res.front, summary=dict(res.summary))


def run_search(space: SpaceLike, overrides: Sequence[str] = (), *, quiet: bool = False,
               track: bool = True) -> StudyResult:
    """Run (or resume) the search a space file describes (``autoeff search --space F k=v ...``):
    every trial built, measured, trained and recorded (Optuna or Ray, MLflow unless
    ``track=False``); returns the :class:`StudyResult`. Progress goes to stderr (``quiet``: none)."""
    from .search.presenters import DashboardNote
    from .search.schedulers import make_scheduler

    with gate().work():  # starting up (imports, stores) is work: no trial on this machine measures meanwhile
        space = _space(space, overrides, check=True)
        scheduler = make_scheduler(space)
        progress = Progress(space.search.n_trials, quiet=quiet, space=space)
        presenters = [progress, DashboardNote(scheduler.store.save_note)]
        if track:
            from .tracking import MLflowTracker

            with scheduler.exclusive():  # several workers starting at once must not create the store twice
                presenters.append(MLflowTracker(space.search.mlflow_uri, space.search.experiment,
                                                space.search.artifacts))
    try:
        return _study_result(scheduler.run(presenters))
    finally:
        progress.close()


def load_study(space: SpaceLike, overrides: Sequence[str] = ()) -> StudyResult:
    """The stored search of a space, read-only (what ``autoeff pareto`` and ``autoeff report``
    read): finished and running trials, the front, the summary. Works while the search runs.
    Imports neither torch nor MLflow."""
    from .search.store import load_records

    space = _space(space, overrides, check=False)
    records = load_records(space)
    front = front_of(space, records)
    return StudyResult(space=space, records=records, front=front, summary=summarize(space, records, front))


@dataclass
class Exported:
    """What :func:`export_trial` wrote: the trial, its training config and, when asked, the
    ONNX report (``autoeff.export.onnx.OnnxReport``) and the registered model version."""

    record: TrialRecord
    config_path: Path
    onnx: Any = None
    registered: Any = None
    notes: List[str] = field(default_factory=list)


def export_trial(space: Union[str, Path], *, trial: Optional[int] = None, rule: Optional[str] = None,
                 out: Optional[str] = None, overrides: Sequence[str] = (), onnx: Optional[str] = None,
                 register: Optional[str] = None, alias: str = "chosen") -> Exported:
    """``autoeff export``: one trial of a stored search (``trial=N`` or ``rule="highest accuracy
    with latency_ms <= 30"``) -> a self-contained training config at ``out`` (default
    ``<space>-trial<N>.yaml``). ``onnx=""`` or a path also writes the deployed model as ONNX and
    checks it with onnxruntime (imports torch); ``register=NAME`` logs the trained model to
    MLflow's registry under NAME and points ``alias`` at it."""
    from .export import export_point

    if isinstance(space, Space):  # the overrides it was loaded with are not kept: export reads the file
        raise ConfigError("export_trial reads a space file (and its overrides), as `autoeff export` does",
                          key="space", value=space.file, allowed="a path", has_value=True)
    rec, path, notes = export_point(str(space), overrides, trial=trial, rule=rule, out=out)
    result = Exported(record=rec, config_path=Path(path), notes=list(notes))
    if register:
        from .tracking.model_registry import register_trial_model  # mlflow and torch: only here

        sp = _space(space, overrides, check=False)
        result.registered = register_trial_model(sp, rec, register, alias)
    if onnx is not None:
        if not rec.checkpoint or not Path(rec.checkpoint).exists():
            raise ConfigError("the trial has no checkpoint on this machine (train the exported config, then export "
                              "its model.pt)", key="onnx", value=rec.checkpoint or None, has_value=True)
        from .export.onnx import export_onnx

        cfg = parse_run_config(rec.config, file=f"trial {rec.number}")
        result.onnx = export_onnx(cfg, rec.checkpoint, onnx or str(Path(path).with_suffix(".onnx")))
    return result


# ---- configs, models, data --------------------------------------------------------------

def load_config(source: ConfigLike, overrides: Sequence[str] = ()) -> RunConfig:
    """A validated :class:`RunConfig` from a training-config YAML (what ``autoeff export`` writes;
    ``k=v`` overrides on top) or from a plain mapping with the same sections."""
    if isinstance(source, RunConfig):
        if overrides:
            raise ConfigError("overrides go with a config file or mapping", key="overrides",
                              value=list(overrides), has_value=True)
        return source
    if isinstance(source, Mapping):
        if overrides:
            from omegaconf import OmegaConf

            merged = OmegaConf.merge(OmegaConf.create(dict(source)), OmegaConf.from_dotlist(list(overrides)))
            source = OmegaConf.to_container(merged, resolve=True)
        return parse_run_config(source)
    return _load_config_file(source, overrides)


def create_model(cfg: ConfigLike, specs: Optional[Sequence[TaskSpec]] = None, *, deployed: bool = False,
                 checkpoint: Optional[Union[str, Path]] = None) -> "nn.Module":
    """The model a config describes (a RunConfig, a training-config path or a mapping).

    ``deployed=False``: the fp32 model as trained (what a trial trains before compressing it).
    ``deployed=True``: with its ``compress`` section applied (pruned, quantized structure), so a
    checkpoint of ``autoeff train`` or a trial (``model.pt``) loads into it. ``checkpoint`` loads
    those weights (it needs the deployed form when the config compresses). Untrained weights are
    seeded by ``train.seed``: the same config gives the same weights. ``specs`` default to the
    config's tasks."""
    import torch

    cfg = load_config(cfg)
    if checkpoint is not None and not deployed and cfg.compress.active:
        raise ConfigError("a checkpoint holds the deployed (compressed) model: use deployed=True",
                          key="deployed", value=False, has_value=True)
    if deployed:
        from .compress import build_deployed

        model = build_deployed(cfg, specs)
    else:
        from .model import build_model

        model = build_model(cfg, specs)
    if checkpoint is not None:
        blob = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"] if isinstance(blob, Mapping) and "state_dict" in blob else blob)
    return model


def task_spec(task_cfg) -> TaskSpec:
    """What the model needs to know about a configured task (``cfg.tasks[i]``): input kind,
    sequence length, classes, vocabulary or feature size; built without building the data."""
    from .config import task_spec as _spec

    return _spec(task_cfg)


def example_inputs(spec: TaskSpec, batch: int = 1, device: str = "cpu", seed: int = 0):
    """Random full-length inputs of a task's shape: ``x`` (B, N) token ids or (B, N, F) features
    (a pair task: (B, 2, N[, F])) and ``mask`` (B, N) bool, all True."""
    from .model import example_inputs as _ex

    return _ex(spec, batch, device, seed)


def load_task(task_cfg, data_dir: str = ""):
    """The splits of a configured task (``TaskData``: ``.spec``, ``.splits["train"|"val"|"test"]``
    with ``x``, ``mask``, ``y``), generated or read, cached on disk by a hash of its options."""
    from .tasks import load_task as _load

    return _load(task_cfg, data_dir)


def evaluate(model, data, split: str = "val", *, batch_size: int = 64) -> Dict[str, float]:
    """Accuracy of ``model`` on ``split`` of every task in ``data`` (a list of ``load_task``
    results), keyed by task name."""
    from .training import evaluate as _evaluate

    return _evaluate(model, data, split, batch_size=batch_size)


def measure_model(cfg: RunConfig, model, specs: Optional[Sequence[TaskSpec]] = None,
                  objectives: Sequence[Any] = ()) -> Dict[str, float]:
    """The deployment figures a trial records for ``model`` (latency, deployed memory,
    parameters, size; per task and aggregated), measured as DESIGN.md's protocol says, with the
    config's ``deploy`` settings, waiting for the machine's measurement gate."""
    from .search.objective import architecture_metrics

    if specs is None:
        specs = [task_spec(t) for t in cfg.tasks]
    return architecture_metrics(cfg, model, specs, objectives)


def train(config: ConfigLike, out: Union[str, Path], overrides: Sequence[str] = (), *,
          log=lambda s: None) -> Dict[str, float]:
    """``autoeff train``: train a config's model from scratch with its full budget, compress it
    as configured, write ``out/model.pt`` (load it with ``create_model(cfg, deployed=True,
    checkpoint=...)``), ``metrics.json`` and ``config.yaml``; returns the metrics."""
    from .training.run import train_config

    return train_config(load_config(config, overrides), str(out), log=log)


def list_attentions() -> List[str]:
    """Names of the registered attention families (built-in and plugins)."""
    from .registry import ATTENTIONS

    return ATTENTIONS.names()


def list_tasks() -> List[str]:
    """Kinds of the registered tasks (built-in generators, loaders of users' data, plugins)."""
    from .registry import TASKS

    return TASKS.names()
