"""fit(): train with a Lightning Trainer for a step budget; evaluate(): accuracy per task."""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, ContextManager, Dict, List, Optional, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..compress.distill import SoftTargets
from ..config import TrainConfig
from ..model import AutoEffModel
from ..tasks.base import TaskData
from .data import MixedTaskBatches, eval_batches
from .module import IGNORE, AutoEffLightning

ProgressFn = Callable[[int, int, float], None]  # (step, max_steps, last loss)
#: (rung index from 1, step, validation accuracy per task, validation loss per task) -> continue training?
RungFn = Callable[[int, int, Dict[str, float], Dict[str, float]], bool]
#: a context manager around each unit of work (a step, an evaluation); see isolation
Guard = Callable[[], ContextManager]

for _name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*GPU available but not used.*")
warnings.filterwarnings("ignore", ".*is an invalid version and will not be supported.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")
log = logging.getLogger(__name__)


@dataclass
class FitResult:
    steps: int
    seconds: float
    last_loss: float
    steps_per_task: Dict[str, int] = field(default_factory=dict)
    hit_time_limit: bool = False
    #: validation accuracy per task at each rung reached, as (step, {task: accuracy})
    rungs: List[tuple] = field(default_factory=list)
    #: validation loss per task (mean cross-entropy, nats) at the same rungs: {task: loss} each
    rung_losses: List[Dict[str, float]] = field(default_factory=list)
    stopped_at_rung: int = 0  # rung index (from 1) where on_rung said stop; 0 = ran the budget
    eval_seconds: float = 0.0  # time spent evaluating at rungs (inside ``seconds``)


class _Progress(pl.Callback):
    def __init__(self, fn: ProgressFn, max_steps: int, every: int):
        self.fn, self.max_steps, self.every = fn, max_steps, max(1, every)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or step == self.max_steps:
            self.fn(step, self.max_steps, module.last_loss)


class _StepHooks(pl.Callback):
    """Work inside ``guard`` (a measurement elsewhere on the machine waits for it, and it waits
    for measurements): the Trainer's set-up, then each step, then the wind-down, letting go only
    between steps. At each rung boundary, evaluate on the validation split and ask ``on_rung``
    whether to go on. The learning-rate schedule is not touched: it spans ``max_steps``, so a
    trial that passes every rung is exactly a full-budget trial."""

    def __init__(self, tasks, cfg: TrainConfig, rungs: Sequence[int], on_rung: Optional[RungFn],
                 guard: Optional[Guard], result: FitResult):
        self.tasks, self.cfg = tasks, cfg
        self.rungs = {s: i + 1 for i, s in enumerate(sorted(rungs))}
        self.on_rung, self.guard, self.result = on_rung, guard, result
        self._held = None

    def hold(self) -> None:
        if self.guard is not None and self._held is None:
            self._held = self.guard()
            self._held.__enter__()

    def release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            held.__exit__(None, None, None)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.hold()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        try:
            step = trainer.global_step
            if self.on_rung is not None and step in self.rungs:
                t0 = time.perf_counter()
                acc = _rung_scores(module.model, self, self.result)
                self.result.eval_seconds += time.perf_counter() - t0
                self.result.rungs.append((step, acc))
                if not self.on_rung(self.rungs[step], step, acc, self.result.rung_losses[-1]):
                    self.result.stopped_at_rung = self.rungs[step]
                    trainer.should_stop = True
        finally:
            if not (trainer.should_stop or trainer.global_step >= self.cfg.max_steps):
                self.release()  # between steps: a measurement may run now; the last step keeps it

    def on_exception(self, trainer, module, exception):
        self.release()


def fit(model: AutoEffModel, tasks: Sequence[TaskData], cfg: TrainConfig, *, weights: Sequence[float] = (),
        progress: Optional[ProgressFn] = None, accelerator: Optional[str] = None,
        distill: Optional[SoftTargets] = None, rungs: Sequence[int] = (), on_rung: Optional[RungFn] = None,
        step_guard: Optional[Guard] = None) -> FitResult:
    """Train ``model`` in place on ``tasks`` for ``cfg.max_steps`` steps (or ``cfg.max_time_s``).

    ``weights`` (one per task, default 1.0) drive ``proportional`` mixing: a task's share of the
    steps is proportional to weight x train size. ``distill``: a teacher's soft targets (the loss
    becomes the distillation loss of ``autoeff.compress.distill``).

    ``rungs`` (step counts below ``max_steps``) with ``on_rung``: after each of those steps the
    model is evaluated on the validation split and ``on_rung(rung, step, accuracy per task, loss per task)``
    decides whether training goes on; a stop ends training there (``stopped_at_rung``). The
    schedule still spans ``max_steps``, so surviving every rung equals plain full training. If
    the wall-clock cap (``cfg.max_time_s``) ends training before a rung, the trial is judged at
    each rung it missed with its validation at the step it stopped at (see
    :func:`_judge_missed_rungs`): a cut never lets a trial skip a rung.
    ``step_guard``: a context manager factory holding the work lock of
    :mod:`autoeff.isolation` from the Trainer's set-up to the end of training, let go only
    between steps (so a measurement elsewhere waits at most one step).
    """
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if weights and len(weights) != len(tasks):
        raise ValueError(f"{len(weights)} weights for {len(tasks)} tasks")
    stream = MixedTaskBatches(tasks, batch_size=cfg.batch_size, mix=cfg.mix, weights=list(weights), seed=cfg.seed)
    loader = DataLoader(stream, batch_size=None, num_workers=0)
    module = AutoEffLightning(model, cfg, distill=distill)
    result = FitResult(steps=0, seconds=0.0, last_loss=float("nan"))
    callbacks: List[pl.Callback] = [_Progress(progress, cfg.max_steps, max(1, cfg.max_steps // 10))] if progress else []
    hooks = None
    if (rungs and on_rung is not None) or step_guard is not None:
        hooks = _StepHooks(tasks, cfg, [r for r in rungs if 0 < r < cfg.max_steps], on_rung, step_guard, result)
        callbacks.append(hooks)
        hooks.hold()  # the Trainer's set-up is work too
    try:
        trainer = pl.Trainer(
            accelerator=accelerator or cfg.accelerator,
            devices=1,
            max_steps=cfg.max_steps,
            max_epochs=-1,
            max_time=timedelta(seconds=cfg.max_time_s) if cfg.max_time_s > 0 else None,
            gradient_clip_val=cfg.grad_clip if cfg.grad_clip > 0 else None,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=callbacks,
            deterministic=False,
        )
        t0 = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader)
        result.hit_time_limit = trainer.global_step < cfg.max_steps and not result.stopped_at_rung
        if result.hit_time_limit and hooks is not None and hooks.on_rung is not None:
            hooks.hold()
            _judge_missed_rungs(model, hooks, trainer.global_step, result)
    finally:
        if hooks is not None:
            hooks.release()
    seconds = time.perf_counter() - t0
    model.eval()
    result.steps, result.seconds, result.last_loss = trainer.global_step, seconds, module.last_loss
    result.steps_per_task = dict(module.steps_per_task)
    if result.hit_time_limit:  # never silent: a cut budget changes what the accuracy means
        log.warning(f"training stopped by the wall-clock cap train.max_time_s = {cfg.max_time_s:g} s after "
                    f"{trainer.global_step} of {cfg.max_steps} steps ({seconds:.0f} s); set train.max_time_s=0 "
                    "for the full budget")
    return result


def _judge_missed_rungs(model: AutoEffModel, hooks: _StepHooks, step: int, result: FitResult) -> None:
    """The wall-clock cap ended training at ``step``, before one or more rungs: the trial is judged
    at each rung it did not reach, in order, with one validation at the step it stopped at (its last
    figures; ``result.rungs`` records that step, not the rung's), until a rung stops it or none is
    left. A trial the cap cut therefore never skips the early-stopping rule: if a rung stops it, it
    is stopped there (``stopped_at_rung``; pruned, never on a front), otherwise it ends as any
    capped trial does (``hit_time_limit``)."""
    missed = [(i, s) for s, i in sorted(hooks.rungs.items(), key=lambda kv: kv[1]) if s > step]
    if not missed:
        return
    t0 = time.perf_counter()
    acc = _rung_scores(model, hooks, result, times=len(missed))
    result.eval_seconds += time.perf_counter() - t0
    for i, _ in missed:
        result.rungs.append((step, acc))
        if not hooks.on_rung(i, step, acc, result.rung_losses[-1]):
            result.stopped_at_rung = i
            return


def _rung_scores(model: AutoEffModel, hooks: "_StepHooks", result: FitResult, times: int = 1) -> Dict[str, float]:
    """One validation at a rung: the accuracy per task (returned) and the loss per task (kept in
    ``result.rung_losses``, ``times`` entries: one per rung judged on this validation)."""
    scores = evaluate_tasks(model, hooks.tasks, "val", max_batches=hooks.cfg.val_batches, with_loss=True)
    result.rung_losses.extend({k: s["loss"] for k, s in scores.items()} for _ in range(times))
    return {k: s["accuracy"] for k, s in scores.items()}


def evaluate(model: AutoEffModel, tasks: Sequence[TaskData], split: str = "val", *,
             batch_size: int = 64, max_batches: int = 0) -> Dict[str, float]:
    """Accuracy of ``model`` on ``split`` of every task, keyed by task name (token targets: over
    the scored positions, see :func:`evaluate_tasks`)."""
    scores = evaluate_tasks(model, tasks, split, batch_size=batch_size, max_batches=max_batches)
    return {name: s["accuracy"] for name, s in scores.items()}


@torch.inference_mode()
def evaluate_tasks(model: AutoEffModel, tasks: Sequence[TaskData], split: str = "val", *,
                   batch_size: int = 64, max_batches: int = 0, with_loss: bool = False) -> Dict[str, Dict[str, float]]:
    """Scores of ``model`` on ``split`` of every task, keyed by task name: ``accuracy`` for every
    task; for token-target tasks (docs/decoders.md section 2) accuracy and ``loss`` (mean
    cross-entropy in nats) are over the scored positions (y != -100) of the whole split, and where
    the task has ``bytes_per_token`` > 0 also ``bpb = loss / ln 2 / bytes_per_token``.
    ``with_loss``: classification tasks report their mean cross-entropy (``loss``) too."""
    was_training = model.training
    model.eval()
    out: Dict[str, Dict[str, float]] = {}
    device = next(model.parameters()).device
    for t in tasks:
        correct = total = 0
        nats = 0.0
        token = t.spec.target == "token"
        for b in eval_batches(t, split, batch_size, max_batches):
            logits = model(b["x"].to(device), b["mask"].to(device), t.spec.name)  # (B, C) or (B, N, V)
            y = b["y"].to(device)
            if token:
                scored = y != IGNORE  # (B, N)
                correct += int((logits.argmax(-1) == y)[scored].sum())
                total += int(scored.sum())
                nats += float(F.cross_entropy(logits[scored].float(), y[scored], reduction="sum"))
            else:
                correct += int((logits.argmax(-1) == y).sum())
                total += int(y.numel())
                if with_loss:
                    nats += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        scores = {"accuracy": correct / max(1, total)}
        if token or with_loss:
            scores["loss"] = nats / max(1, total)
        if token and t.spec.bytes_per_token > 0:
            scores["bpb"] = bits_per_byte(scores["loss"], t.spec.bytes_per_token)
        out[t.spec.name] = scores
    model.train(was_training)
    return out


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Bits per byte from a mean cross-entropy per token in nats: loss / ln 2 / bytes_per_token."""
    return loss_nats / math.log(2) / bytes_per_token
