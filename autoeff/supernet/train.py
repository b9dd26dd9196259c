"""Training a supernet: every step trains several subnets on one batch (the sandwich rule).

Each optimizer step takes one batch (of one task, mixed as in standalone training) and, for
every entry of ``oneshot.sandwich`` (``largest``, ``smallest``, ``random``), the subnet the
sampler returns for it; their gradients are accumulated and applied together (Yu & Huang 2019,
"Universally Slimmable Networks"; BigNAS). With ``oneshot.distill`` the largest subnet goes
first and every other subnet also learns its soft predictions (in-place distillation): loss =
(1 - a) CE(labels) + a KL(largest || subnet), a = ``oneshot.distill_weight``.
"""
from __future__ import annotations

import math
import random
import time
from collections import Counter
from datetime import timedelta
from typing import Callable, ContextManager, Dict, Optional, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..config import OneShotConfig, RunConfig, TrainConfig
from ..tasks.base import TaskData
from ..training.data import MixedTaskBatches
from ..training.module import optimizer_and_schedule
from . import SuperNet

#: which subnet an entry of the sandwich means -> a config (the search stage knows the space)
Sampler = Callable[[str, random.Random], RunConfig]
ProgressFn = Callable[[int, int, float, Dict[str, int]], None]  # step, steps, loss, subnets per family


class SupernetLightning(pl.LightningModule):
    def __init__(self, supernet: SuperNet, sampler: Sampler, oneshot: OneShotConfig, train: TrainConfig):
        super().__init__()
        self.supernet = supernet
        self.sampler = sampler
        self.oneshot = oneshot
        self.train_cfg = train
        self.automatic_optimization = False  # several subnets per step, one backward each
        self.rng = random.Random(oneshot.seed)
        order = list(oneshot.sandwich)
        if oneshot.distill:  # the teacher first
            order.sort(key=lambda e: e != "largest")
        self.order = order
        self.last_loss = float("nan")
        self.subnets_per_family: Counter = Counter()

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        sched = self.lr_schedulers()
        opt.zero_grad(set_to_none=True)
        x, mask, y, task = batch["x"], batch["mask"], batch["y"], batch["task"]
        teacher: Optional[torch.Tensor] = None
        a = self.oneshot.distill_weight
        total = 0.0
        for which in self.order:
            cfg = self.sampler(which, self.rng)
            logits = self.supernet(cfg, x, mask, task)  # (B, C)
            loss = F.cross_entropy(logits, y)
            if teacher is not None:
                kd = F.kl_div(F.log_softmax(logits, -1), teacher, reduction="batchmean")
                loss = (1 - a) * loss + a * kd
            elif which == "largest" and self.oneshot.distill:
                teacher = F.softmax(logits.detach(), -1)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite supernet loss at step {self.global_step} ({which} subnet, task {task})")
            self.manual_backward(loss / len(self.order))
            total += float(loss.detach())
            self.subnets_per_family.update(cfg.attention.kinds)
        if self.train_cfg.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.train_cfg.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        sched.step()
        self.last_loss = total / len(self.order)

    def configure_optimizers(self):
        o, t = self.oneshot, self.train_cfg
        return optimizer_and_schedule(
            self.supernet.named_canonical_parameters(), lr=o.lr or t.lr, weight_decay=t.weight_decay,
            max_steps=o.steps, warmup_steps=t.warmup_steps if o.warmup_steps < 0 else o.warmup_steps)


class _Progress(pl.Callback):
    def __init__(self, fn: ProgressFn, steps: int):
        self.fn, self.steps, self.every = fn, steps, max(1, steps // 20)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or step == self.steps:
            self.fn(step, self.steps, module.last_loss, dict(module.subnets_per_family))


class _StepGuard(pl.Callback):
    """Each step inside ``guard()`` (the work lock of :mod:`autoeff.isolation`): a measurement
    elsewhere on the machine waits for the step in flight, and the next step waits for it."""

    def __init__(self, guard):
        self.guard, self.held = guard, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.held = self.guard()
        self.held.__enter__()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._release()

    def on_exception(self, trainer, module, exception):
        self._release()

    def _release(self):
        if self.held is not None:
            held, self.held = self.held, None
            held.__exit__(None, None, None)


def train_supernet(supernet: SuperNet, data: Sequence[TaskData], sampler: Sampler, oneshot: OneShotConfig,
                   train: TrainConfig, *, weights: Sequence[float] = (), progress: Optional[ProgressFn] = None,
                   accelerator: Optional[str] = None,
                   step_guard: Optional[Callable[[], ContextManager]] = None) -> Dict[str, float]:
    """Train ``supernet`` in place for ``oneshot.steps`` steps (or ``oneshot.max_time_s``).
    ``step_guard``: a context manager factory held around every step (the machine's work lock,
    so that measurements of other searches on the machine never overlap a step).
    Returns statistics: steps, seconds, last loss, subnets trained per family."""
    if train.threads > 0:
        torch.set_num_threads(train.threads)
    pl.seed_everything(oneshot.seed, workers=True, verbose=False)
    stream = MixedTaskBatches(data, batch_size=oneshot.batch_size or train.batch_size, mix=train.mix,
                              weights=list(weights), seed=oneshot.seed)
    module = SupernetLightning(supernet, sampler, oneshot, train)
    trainer = pl.Trainer(
        accelerator=accelerator or train.accelerator, devices=1, max_steps=oneshot.steps, max_epochs=-1,
        max_time=timedelta(seconds=oneshot.max_time_s) if oneshot.max_time_s > 0 else None,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, deterministic=False,
        callbacks=([_Progress(progress, oneshot.steps)] if progress else [])
        + ([_StepGuard(step_guard)] if step_guard is not None else []),
    )
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader(stream, batch_size=None, num_workers=0))
    supernet.eval()
    stats: Dict[str, float] = {"supernet_steps": float(trainer.global_step), "supernet_train_s": time.perf_counter() - t0,
                               "supernet_loss": module.last_loss if math.isfinite(module.last_loss) else float("nan")}
    for fam, n in module.subnets_per_family.items():
        stats[f"supernet_subnets.{fam}"] = float(n)
    return stats
