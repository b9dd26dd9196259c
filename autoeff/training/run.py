"""Train, evaluate and save one model: the one function behind a trial and `autoeff train`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence

import torch

from ..config import RunConfig, aggregate, save_config, task_spec
from ..model import AutoEffModel, build_model
from ..tasks import load_task
from ..tasks.base import TaskData
from .fit import ProgressFn, evaluate, fit


def train_and_evaluate(model: AutoEffModel, data: Sequence[TaskData], cfg: RunConfig, *,
                       progress: Optional[ProgressFn] = None) -> Dict[str, float]:
    """Train ``model`` in place for ``cfg.train``'s budget (task weights drive the mixing), then
    evaluate every task. Returns the metrics: ``accuracy`` (validation, per-task values combined
    by ``cfg.train.aggregate`` and the task weights), ``test_accuracy`` (the same over the test
    splits), ``accuracy.<task>``, ``test_accuracy.<task>``, ``majority.<task>`` (the majority
    class's validation accuracy), ``train_steps`` (and ``train_steps.<task>`` with several tasks),
    ``train_time_s``, ``train_loss``."""
    weights = {t.name: t.weight for t in cfg.tasks}
    fr = fit(model, data, cfg.train, weights=[weights[t.spec.name] for t in data], progress=progress)
    val = evaluate(model, data, "val", max_batches=cfg.train.val_batches)
    test = evaluate(model, data, "test")
    rule = cfg.train.aggregate
    metrics: Dict[str, float] = {"accuracy": aggregate(val, rule, weights), "test_accuracy": aggregate(test, rule, weights)}
    for t in data:
        n = t.spec.name
        metrics[f"accuracy.{n}"] = val[n]
        metrics[f"test_accuracy.{n}"] = test[n]
        metrics[f"majority.{n}"] = t.majority_accuracy("val")
    metrics.update({"train_steps": float(fr.steps), "train_time_s": fr.seconds, "train_loss": fr.last_loss})
    if len(data) > 1:
        metrics.update({f"train_steps.{k}": float(v) for k, v in fr.steps_per_task.items()})
    return metrics


def save_checkpoint(model: AutoEffModel, cfg: RunConfig, path: Path,
                    metrics: Optional[Mapping[str, float]] = None) -> str:
    """``{"config": RunConfig as data, "state_dict": ..., "metrics": ...}``; reload with
    ``autoeff.build_model(load_config(...))`` + ``load_state_dict``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict(), "metrics": dict(metrics or {})}, path)
    return str(path)


def train_config(cfg: RunConfig, out_dir: str, *, log: Callable[[str], None] = print,
                 progress: Optional[ProgressFn] = None) -> Dict[str, float]:
    """`autoeff train`: train ``cfg``'s model from scratch; write ``model.pt`` (config +
    state_dict + metrics), ``metrics.json`` and ``config.yaml`` to ``out_dir``; return the metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = [task_spec(t) for t in cfg.tasks]
    log(f"loading {len(cfg.tasks)} task(s): {', '.join(s.name for s in specs)}")
    data = [load_task(t, cfg.data_dir) for t in cfg.tasks]
    model = build_model(cfg, specs)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"training {cfg.attention.kind} encoder ({n_params:,} parameters) for {cfg.train.max_steps} steps")
    metrics = train_and_evaluate(model, data, cfg, progress=progress)
    save_checkpoint(model, cfg, out / "model.pt", metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    save_config(cfg, out / "config.yaml")
    return metrics
