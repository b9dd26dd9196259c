"""Knowledge distillation (Hinton et al. 2015; as used for TinyBERT, Jiao et al. 2020): the
student is trained on ``(1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T)``
with both distributions softened by temperature T. Soft targets only: the teacher's logits on
the training split are computed once, when the teacher is trained, and cached with it, so a
distilled training step costs what a plain one costs (hidden-state matching, which needs the
teacher's forward pass at every step, is not implemented).

This module holds the loss and what defines a teacher (its config and fingerprint); training it
and caching it on disk is ``autoeff.training.teacher``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict

import torch
import torch.nn.functional as F

from ..config import AttentionConfig, CompressConfig, ModelConfig, RunConfig

#: bump when the teacher's training or the cached file changes, so old teachers are not reused
TEACHER_VERSION = 1


@dataclass
class SoftTargets:
    """What a distilled training run needs: per task, the teacher's logits on every training
    example (row i = example i of the train split), and the loss weights."""

    logits: Dict[str, torch.Tensor]
    alpha: float = 0.5
    temperature: float = 2.0
    metrics: Dict[str, float] = field(default_factory=dict)  # the teacher's own (teacher_accuracy, ...)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch (B, C)."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                    log_target=True, reduction="batchmean") * (t * t)


def distill_loss(student: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor, alpha: float,
                 temperature: float) -> torch.Tensor:
    """(1 - alpha) cross-entropy on the labels + alpha KD loss."""
    ce = F.cross_entropy(student, labels)
    if alpha <= 0:
        return ce
    return (1 - alpha) * ce + alpha * kd_loss(student, teacher, temperature)


def teacher_config(cfg: RunConfig) -> RunConfig:
    """The teacher of a run: a full-attention model of ``compress.teacher``'s size on the same
    tasks, trained ``teacher.max_steps`` steps (0 = 3 x the student's) with the student's
    other training settings (but no wall-time cap); never compressed or distilled itself."""
    t = cfg.compress.teacher
    train = dataclasses.replace(cfg.train, max_steps=t.max_steps or 3 * cfg.train.max_steps,
                                lr=t.lr or cfg.train.lr, max_time_s=0.0,  # trained once: never cut short
                                warmup_steps=min(cfg.train.warmup_steps * 3, max(0, (t.max_steps or 3 * cfg.train.max_steps) - 1)))
    model = dataclasses.replace(cfg.model, depth=t.depth, width=t.width, heads=t.heads, ffn_mult=t.ffn_mult)
    return dataclasses.replace(cfg, model=model, attention=AttentionConfig(kind="full"), train=train,
                               compress=CompressConfig())


def teacher_fingerprint_data(tcfg: RunConfig, task_fingerprints: Any) -> Dict[str, Any]:
    """What identifies a trained teacher: its architecture, its training (not the thread count or
    the device), and its tasks' data (each task's own cache fingerprint)."""
    train = dataclasses.asdict(tcfg.train)
    for k in ("threads", "accelerator", "val_batches"):
        train.pop(k, None)
    return {"version": TEACHER_VERSION, "model": dataclasses.asdict(tcfg.model), "attention": tcfg.attention.to_dict(),
            "tasks": [{"name": t.name, "weight": t.weight} for t in tcfg.tasks], "data": task_fingerprints,
            "train": train}
