"""The LightningModule that trains an AutoEffModel on one or several tasks."""
from __future__ import annotations

import math
from typing import Dict, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from ..compress.distill import SoftTargets, distill_loss
from ..config import TrainConfig
from ..model import AutoEffModel


IGNORE = -100  # token targets: y where nothing is scored (docs/decoders.md section 2)


def token_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (B, N, V) against y (B, N) over the positions where y != -100."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), ignore_index=IGNORE)


class AutoEffLightning(pl.LightningModule):
    """Cross-entropy on each batch's task (plus a distillation loss with a teacher's soft targets;
    token-target tasks: next-token cross-entropy over the scored positions); AdamW with linear
    warm-up and cosine decay."""

    def __init__(self, model: AutoEffModel, train_cfg: TrainConfig, distill: Optional[SoftTargets] = None):
        super().__init__()
        self.model = model
        self.cfg = train_cfg
        self.distill = distill  # soft targets of a teacher: the loss becomes CE + KD (compress/distill.py)
        self.last_loss = float("nan")
        self.steps_per_task: Dict[str, int] = {name: 0 for name in model.task_names}

    def forward(self, x, mask, task=None):
        return self.model(x, mask, task)

    def training_step(self, batch, batch_idx):
        task = batch["task"]
        logits = self.model(batch["x"], batch["mask"], task)  # (B, C), or (B, N, V) for token targets
        if logits.dim() == 3:  # next-token cross-entropy over the scored positions (docs/decoders.md)
            if self.distill is not None:
                raise NotImplementedError("distillation is not implemented for decoders")
            loss = token_loss(logits, batch["y"])
        elif self.distill is None:
            loss = F.cross_entropy(logits, batch["y"])
        else:
            d = self.distill
            teacher = d.logits[task][batch["idx"].cpu()].to(logits.device)  # (B, C)
            loss = distill_loss(logits, batch["y"], teacher, d.alpha, d.temperature)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at step {self.global_step} (task {task})")
        self.last_loss = float(loss.detach())
        self.steps_per_task[task] = self.steps_per_task.get(task, 0) + 1
        return loss

    def configure_optimizers(self):
        return optimizer_and_schedule(self.model.named_parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay,
                                      max_steps=self.cfg.max_steps, warmup_steps=self.cfg.warmup_steps)


def optimizer_and_schedule(named_parameters, *, lr: float, weight_decay: float, max_steps: int, warmup_steps: int):
    """AdamW (no decay on biases, norms, positions and CLS vectors) with a linear warm-up and a
    cosine decay to 5% over ``max_steps``, stepped every optimizer step (Lightning's format)."""
    decay, no_decay = [], []
    for name, p in named_parameters:
        if not p.requires_grad:
            continue
        name = name.replace(".parametrizations.", ".").removesuffix(".original")  # QAT / pruning masks
        (no_decay if p.dim() < 2 or "norm" in name or name.endswith(".pos") or name.endswith(".cls") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr)
    total = max(1, max_steps)
    warm = min(warmup_steps, total - 1)

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / max(1, warm)
        progress = (step - warm) / max(1, total - warm)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
