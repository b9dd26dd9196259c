"""Batches for joint multi-task training.

Each training step sees one batch from one task; which task is decided by the mixing rule:

- ``round_robin``: tasks in turn (every task gets the same number of steps);
- ``proportional``: tasks drawn at random with probability proportional to
  ``weight x train size``, from a seeded generator.

Within a task, examples are reshuffled every pass (seeded), so runs are reproducible.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Sequence

import torch
from torch.utils.data import IterableDataset

from ..tasks.base import Split, TaskData


def _take(split: Split, idx: torch.Tensor) -> Dict[str, torch.Tensor]:
    return {"x": split.x[idx], "mask": split.mask[idx], "y": split.y[idx], "idx": idx}


class MixedTaskBatches(IterableDataset):
    """An endless stream of ``{"task", "x", "mask", "y"}`` batches for ``max_steps`` training."""

    def __init__(self, tasks: Sequence[TaskData], *, batch_size: int, mix: str = "round_robin",
                 weights: Sequence[float] = (), seed: int = 0):
        if mix not in ("round_robin", "proportional"):
            raise ValueError(f"unknown mixing rule {mix!r}")
        self.tasks = list(tasks)
        self.batch_size = batch_size
        self.mix = mix
        w = list(weights) or [1.0] * len(self.tasks)
        sizes = [len(t.splits["train"]) for t in self.tasks]
        self.probs = torch.tensor([wi * si for wi, si in zip(w, sizes)], dtype=torch.float64)
        self.probs /= self.probs.sum()
        self.seed = seed

    def __iter__(self) -> Iterator[Dict[str, object]]:
        g = torch.Generator().manual_seed(self.seed)
        orders: List[torch.Tensor] = [torch.empty(0, dtype=torch.long) for _ in self.tasks]
        pos = [0] * len(self.tasks)
        step = 0
        while True:
            if self.mix == "round_robin":
                t = step % len(self.tasks)
            else:
                t = int(torch.multinomial(self.probs, 1, generator=g).item())
            split = self.tasks[t].splits["train"]
            n = len(split)
            bs = min(self.batch_size, n)
            if pos[t] + bs > orders[t].numel():
                orders[t] = torch.randperm(n, generator=g)
                pos[t] = 0
            idx = orders[t][pos[t]: pos[t] + bs]
            pos[t] += bs
            step += 1
            yield {"task": self.tasks[t].spec.name, **_take(split, idx)}


def eval_batches(task: TaskData, split: str, batch_size: int, max_batches: int = 0):
    """Deterministic batches over a split (in order)."""
    sp = task.splits[split]
    n = len(sp)
    for i, start in enumerate(range(0, n, batch_size)):
        if max_batches and i >= max_batches:
            break
        idx = torch.arange(start, min(n, start + batch_size))
        yield _take(sp, idx)
