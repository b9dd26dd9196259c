"""fit(): train with a Lightning Trainer for a step budget; evaluate(): accuracy per task."""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Dict, Optional, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from ..compress.distill import SoftTargets
from ..config import TrainConfig
from ..model import AutoEffModel
from ..tasks.base import TaskData
from .data import MixedTaskBatches, eval_batches
from .module import AutoEffLightning

ProgressFn = Callable[[int, int, float], None]  # (step, max_steps, last loss)

for _name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.ERROR)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*GPU available but not used.*")
warnings.filterwarnings("ignore", ".*is an invalid version and will not be supported.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")


@dataclass
class FitResult:
    steps: int
    seconds: float
    last_loss: float
    steps_per_task: Dict[str, int] = field(default_factory=dict)
    hit_time_limit: bool = False


class _Progress(pl.Callback):
    def __init__(self, fn: ProgressFn, max_steps: int, every: int):
        self.fn, self.max_steps, self.every = fn, max_steps, max(1, every)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or step == self.max_steps:
            self.fn(step, self.max_steps, module.last_loss)


def fit(model: AutoEffModel, tasks: Sequence[TaskData], cfg: TrainConfig, *, weights: Sequence[float] = (),
        progress: Optional[ProgressFn] = None, accelerator: Optional[str] = None,
        distill: Optional[SoftTargets] = None) -> FitResult:
    """Train ``model`` in place on ``tasks`` for ``cfg.max_steps`` steps (or ``cfg.max_time_s``).

    ``weights`` (one per task, default 1.0) drive ``proportional`` mixing: a task's share of the
    steps is proportional to weight x train size. ``distill``: a teacher's soft targets (the loss
    becomes the distillation loss of ``autoeff.compress.distill``).
    """
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    if weights and len(weights) != len(tasks):
        raise ValueError(f"{len(weights)} weights for {len(tasks)} tasks")
    stream = MixedTaskBatches(tasks, batch_size=cfg.batch_size, mix=cfg.mix, weights=list(weights), seed=cfg.seed)
    loader = DataLoader(stream, batch_size=None, num_workers=0)
    module = AutoEffLightning(model, cfg, distill=distill)
    callbacks = [_Progress(progress, cfg.max_steps, max(1, cfg.max_steps // 10))] if progress else []
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
    seconds = time.perf_counter() - t0
    model.eval()
    return FitResult(
        steps=trainer.global_step,
        seconds=seconds,
        last_loss=module.last_loss,
        steps_per_task=dict(module.steps_per_task),
        hit_time_limit=trainer.global_step < cfg.max_steps,
    )


@torch.inference_mode()
def evaluate(model: AutoEffModel, tasks: Sequence[TaskData], split: str = "val", *,
             batch_size: int = 64, max_batches: int = 0) -> Dict[str, float]:
    """Accuracy of ``model`` on ``split`` of every task, keyed by task name."""
    was_training = model.training
    model.eval()
    out: Dict[str, float] = {}
    device = next(model.parameters()).device
    for t in tasks:
        correct = total = 0
        for b in eval_batches(t, split, batch_size, max_batches):
            logits = model(b["x"].to(device), b["mask"].to(device), t.spec.name)
            correct += int((logits.argmax(-1).cpu() == b["y"]).sum())
            total += int(b["y"].numel())
        out[t.spec.name] = correct / max(1, total)
    model.train(was_training)
    return out
