"""Train, evaluate and save one model: the one function behind a trial and `autoeff train`."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence

import torch

from .. import compress
from ..compress.distill import SoftTargets
from ..config import RunConfig, aggregate, save_config, task_spec
from ..model import AutoEffModel, build_model
from ..tasks import load_task
from ..tasks.base import TaskData
from .fit import FitResult, Guard, ProgressFn, evaluate, evaluate_tasks, fit
from .teacher import load_or_train_teacher

#: (rung, step, accuracy so far aggregated like ``accuracy``, accuracy per task, task-weighted
#: validation loss) -> continue training?
RungAccuracyFn = Callable[[int, int, float, Dict[str, float], float], bool]


def train_and_evaluate(model: AutoEffModel, data: Sequence[TaskData], cfg: RunConfig, *,
                       progress: Optional[ProgressFn] = None, rungs: Sequence[int] = (),
                       on_rung: Optional[RungAccuracyFn] = None,
                       step_guard: Optional[Guard] = None) -> Dict[str, float]:
    """Train ``model`` in place for ``cfg.train``'s budget (task weights drive the mixing), then
    compress it as ``cfg.compress`` says (in place: ``model`` becomes the deployed model), then
    evaluate every task. Returns the metrics: ``accuracy`` (validation, per-task values combined
    by ``cfg.train.aggregate`` and the task weights), ``test_accuracy`` (the same over the test
    splits), ``accuracy.<task>``, ``test_accuracy.<task>``, ``majority.<task>`` (the majority
    class's validation accuracy), ``train_steps`` (and ``train_steps.<task>`` with several tasks),
    ``train_time_s``, ``train_loss``; with compression also ``accuracy_fp32`` (the trained fp32
    model before compression) and :func:`compress_trained`'s report; with distillation the
    teacher's ``teacher_accuracy``; ``eval_time_s``. Token-target (decoder) tasks add
    :func:`lm_metrics`' ``val_loss.<task>``, ``bpb``, ... (accuracy is over the scored positions).

    Early stopping (``rungs``, ``on_rung``): at each rung step (of the training before any
    compression fine-tune) the validation accuracy so far is aggregated like ``accuracy`` and
    handed to ``on_rung``; it is recorded as ``rung_accuracy.<i>`` at step ``rung_steps.<i>``
    (never as ``accuracy``). If ``on_rung`` says stop, training ends there and the metrics hold
    the rung figures, ``stopped_at_rung`` and the training figures, but no ``accuracy`` or
    ``test_accuracy``: a low-fidelity accuracy is never reported as the model's accuracy (nor is
    the model compressed). ``step_guard`` is the work lock of :mod:`autoeff.isolation`: held
    through training (let go between steps), compression and evaluation."""
    weights = {t.name: t.weight for t in cfg.tasks}
    rule = cfg.train.aggregate
    guard = step_guard or contextlib.nullcontext
    rung_cb = None
    if on_rung is not None:
        def rung_cb(i: int, step: int, per_task: Dict[str, float], loss: Dict[str, float]) -> bool:
            return on_rung(i, step, aggregate(per_task, rule, weights), per_task, aggregate(loss, "weighted", weights))
    soft = load_or_train_teacher(cfg, data) if cfg.compress.distill else None
    ft_steps = cfg.compress.finetune_steps(cfg.train.max_steps)
    main = cfg.train
    if ft_steps:  # the fine-tune's share of the budget: steps and (with a cap) wall time
        share = (cfg.train.max_steps - ft_steps) / cfg.train.max_steps
        main = dataclasses.replace(cfg.train, max_steps=cfg.train.max_steps - ft_steps,
                                   max_time_s=cfg.train.max_time_s * share)
    fr = fit(model, data, main, weights=[weights[t.spec.name] for t in data], progress=progress, distill=soft,
             rungs=rungs, on_rung=rung_cb, step_guard=step_guard)
    metrics: Dict[str, float] = _rung_metrics(fr, rule, weights)
    if fr.stopped_at_rung:
        metrics.update({"train_steps": float(fr.steps), "train_time_s": fr.seconds - fr.eval_seconds,
                        "train_loss": fr.last_loss, "eval_time_s": fr.eval_seconds,
                        # 1 when the cap ended training before the rung that stopped it (fit.py)
                        "stopped_by_time_cap": float(fr.hit_time_limit)})
        return metrics
    extra: Dict[str, float] = dict(soft.metrics) if soft is not None else {}
    if cfg.compress.active or ft_steps:
        extra.update(compress_trained(model, data, cfg, ft_steps, soft=soft, done=fr.steps, progress=progress,
                                      step_guard=step_guard))
    t0 = time.perf_counter()
    with guard():
        val_scores = evaluate_tasks(model, data, "val", max_batches=cfg.train.val_batches)
        test_scores = evaluate_tasks(model, data, "test")
    eval_s = time.perf_counter() - t0 + fr.eval_seconds
    val = {k: s["accuracy"] for k, s in val_scores.items()}
    test = {k: s["accuracy"] for k, s in test_scores.items()}
    metrics.update(lm_metrics(val_scores, test_scores, weights))
    metrics.update({"accuracy": aggregate(val, rule, weights), "test_accuracy": aggregate(test, rule, weights)})
    for t in data:
        n = t.spec.name
        metrics[f"accuracy.{n}"] = val[n]
        metrics[f"test_accuracy.{n}"] = test[n]
        metrics[f"majority.{n}"] = t.majority_accuracy("val")
    metrics.update({"train_steps": float(fr.steps), "train_time_s": fr.seconds - fr.eval_seconds,
                    "train_loss": fr.last_loss, "eval_time_s": eval_s,
                    # 1 when train.max_time_s cut the training (or the compression fine-tune) short
                    "stopped_by_time_cap": float(bool(extra.pop("finetune_hit_time_limit", 0.0)) or fr.hit_time_limit)})
    if len(data) > 1:
        metrics.update({f"train_steps.{k}": float(v) for k, v in fr.steps_per_task.items()})
    for k in ("train_steps", "train_time_s"):  # the fine-tune is part of the training budget
        metrics[k] += extra.get(f"finetune_{k.split('_', 1)[1]}", 0.0)
    metrics.update(extra)
    return metrics


def compress_trained(model: AutoEffModel, data: Sequence[TaskData], cfg: RunConfig, ft_steps: int, *,
                     soft: Optional[SoftTargets] = None, done: int = 0,
                     progress: Optional[ProgressFn] = None, step_guard: Optional[Guard] = None) -> Dict[str, float]:
    """The trained fp32 model -> the deployed model, in place (autoeff/compress): evaluate it in
    fp32 (``accuracy_fp32``), prune, fine-tune ``ft_steps`` steps (with pruned weights held at zero,
    and with the weights seen quantized if ``compress.qat``), quantize. Returns ``accuracy_fp32``,
    the pruning and quantization reports and the fine-tune's ``finetune_steps`` / ``finetune_time_s``.
    ``step_guard``: see :func:`train_and_evaluate`."""
    c = cfg.compress
    weights = {t.name: t.weight for t in cfg.tasks}
    guard = step_guard or contextlib.nullcontext
    with guard():
        val = evaluate(model, data, "val", max_batches=cfg.train.val_batches)
        out: Dict[str, float] = {"accuracy_fp32": aggregate(val, cfg.train.aggregate, weights)}
        if len(data) > 1:
            out.update({f"accuracy_fp32.{k}": v for k, v in val.items()})
        out.update(compress.prune(model, c.prune, c.sparsity))
    if ft_steps:
        ft = dataclasses.replace(cfg.train, max_steps=ft_steps, warmup_steps=min(cfg.train.warmup_steps, ft_steps // 5),
                                 max_time_s=cfg.train.max_time_s * ft_steps / cfg.train.max_steps)
        total = cfg.train.max_steps
        shifted = (lambda s, m, loss: progress(done + s, total, loss)) if progress else None
        model.train()
        with compress.fake_quantized(model, c.bits, c.group_size) if c.qat else contextlib.nullcontext():
            fr = fit(model, data, ft, weights=[weights[t.spec.name] for t in data], progress=shifted, distill=soft,
                     step_guard=step_guard)
        out.update({"finetune_steps": float(fr.steps), "finetune_time_s": fr.seconds,
                    "finetune_hit_time_limit": float(fr.hit_time_limit)})
    with guard():
        compress.bake(model)
        out.update(compress.quantize(model, c.bits, half=c.half, group_size=c.group_size))
    return out


def lm_metrics(val: Mapping[str, Mapping[str, float]], test: Mapping[str, Mapping[str, float]],
               weights: Mapping[str, float]) -> Dict[str, float]:
    """Language-model figures of token-target tasks (docs/decoders.md section 4): ``val_loss.<task>``
    and ``test_loss.<task>`` (nats per scored token), ``bpb.<task>`` / ``test_bpb.<task>`` for tasks
    with bytes per token, and ``bpb`` / ``test_bpb``: the task-weighted mean over those tasks."""
    out: Dict[str, float] = {}
    for prefix, scores in (("", val), ("test_", test)):
        bpb = {}
        for name, s in scores.items():
            if "loss" in s:
                out[f"{prefix or 'val_'}loss.{name}"] = s["loss"]
            if "bpb" in s:
                out[f"{prefix}bpb.{name}"] = bpb[name] = s["bpb"]
        if bpb:
            out[f"{prefix}bpb"] = aggregate(bpb, "weighted", weights)
    return out


def _rung_metrics(fr: FitResult, rule: str, weights: Mapping[str, float]) -> Dict[str, float]:
    """``rung_accuracy.<i>``, ``rung_loss.<i>`` (the task-weighted mean validation loss),
    ``rung_steps.<i>`` (and ``stopped_at_rung``) from a fit."""
    out: Dict[str, float] = {}
    for i, ((step, per_task), loss) in enumerate(zip(fr.rungs, fr.rung_losses), 1):  # one loss per rung
        out[f"rung_accuracy.{i}"] = aggregate(per_task, rule, weights)
        out[f"rung_loss.{i}"] = aggregate(loss, "weighted", weights)
        out[f"rung_steps.{i}"] = float(step)
    if fr.stopped_at_rung:
        out["stopped_at_rung"] = float(fr.stopped_at_rung)
    return out


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
    """`autoeff train`: train ``cfg``'s model from scratch and compress it as configured; write
    ``model.pt`` (config + the deployed model's state_dict + metrics; reload with
    ``autoeff.build_model(cfg)``), ``metrics.json`` and ``config.yaml`` to ``out_dir``; return the metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = [task_spec(t) for t in cfg.tasks]
    log(f"loading {len(cfg.tasks)} task(s): {', '.join(s.name for s in specs)}")
    data = [load_task(t, cfg.data_dir, log) for t in cfg.tasks]
    model = build_model(cfg, specs)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"training {cfg.attention.kind} {cfg.model.arch} ({n_params:,} parameters) for {cfg.train.max_steps} steps")
    if cfg.compress.active or cfg.compress.distill:
        c = cfg.compress
        log(f"compression: {c.bits} bits" + (f", {c.prune} pruning at {c.sparsity:g}" if c.prune != "none" else "")
            + (", quantization-aware fine-tune" if c.qat else "") + (", distilled from a teacher" if c.distill else ""))
    metrics = train_and_evaluate(model, data, cfg, progress=progress)
    save_checkpoint(model, cfg, out / "model.pt", metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    save_config(cfg, out / "config.yaml")
    return metrics
