"""The contract every task follows (built-in generators and loaders of users' data alike).

A task is one file: an options dataclass and a :class:`Task` subclass registered with
``@register_task("kind")``. ``spec`` says what the model needs to know (input kind, sequence
length, classes, vocabulary or feature size) without building the data; ``build`` returns the
splits. Generated tasks are deterministic by seed and cached on disk by a hash of their
options, so a second trial loads instead of regenerating.

Split tensors:
  tokens:   x (n, L) int64, 0 = padding;      mask (n, L) bool, True at real tokens
  features: x (n, L, F) float32;              mask (n, L) bool
  pair tasks add a leading axis of 2 after n: x (n, 2, L[, F]), mask (n, 2, L)
  y (n,) int64 class index (``TaskSpec.target == "class"``)
  token targets (``TaskSpec.target == "token"``, docs/decoders.md §2): y (n, L) int64, the id each
  position must predict, -100 where nothing is scored

``TaskData.info`` carries what identifies the data beyond the options (e.g. ``lm_text``'s corpus
file list and hash); a task fills it from ``Task.info`` and the cache stores it with the splits.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict

import torch

from ..config import TaskSpec  # noqa: F401  (TaskSpec is part of the task contract)
from ..errors import ConfigError

SPLITS = ("train", "val", "test")
PAD = 0


@dataclass
class Split:
    x: torch.Tensor
    mask: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class TaskData:
    spec: TaskSpec
    splits: Dict[str, Split]
    #: plain values (str, numbers, lists, dicts) that identify the data, stored with it in the cache
    info: Dict[str, Any] = field(default_factory=dict)

    def majority_accuracy(self, split: str = "val") -> float:
        """Accuracy of always answering the most frequent target (token targets: over scored positions)."""
        y = self.splits[split].y.reshape(-1)
        y = y[y >= 0]
        return float(torch.bincount(y).max().item() / len(y)) if len(y) else 0.0

    def prior_loss(self, split: str = "val") -> float:
        """Cross-entropy (nats) on ``split`` of always answering the training split's target
        frequencies (the loss of a model that has learned only the class prior; token targets:
        over scored positions). A target the training split never shows counts at frequency
        1 / (training targets + 1)."""
        tr = self.splits["train"].y.reshape(-1)
        tr = tr[tr >= 0]
        y = self.splits[split].y.reshape(-1)
        y = y[y >= 0]
        if not len(tr) or not len(y):
            return 0.0
        n = int(max(tr.max().item(), y.max().item())) + 1
        counts = torch.bincount(tr, minlength=n).double()
        p = torch.where(counts > 0, counts / counts.sum(), torch.full_like(counts, 1.0 / (len(tr) + 1)))
        return float(-torch.log(p[y]).mean().item())


class Task:
    """Base class; subclasses set ``options`` and implement ``spec`` and ``build``."""

    kind: str = ""
    options: type = None  # dataclass of plain values
    #: bump when the generator's output changes, so old caches are not reused
    version: int = 1
    #: generated tasks are cached by content hash; loaders of users' files may opt out
    cacheable: bool = True

    @classmethod
    def spec(cls, opts) -> TaskSpec:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def build(cls, opts) -> Dict[str, Split]:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def info(cls, opts) -> Dict[str, Any]:
        """Plain values recorded with the built data (``TaskData.info``); empty by default."""
        return {}

    @classmethod
    def check_options(cls, opts, key: str) -> None:
        """Raise ConfigError for impossible options (override per task)."""

    @classmethod
    def fingerprint(cls, opts) -> Dict[str, Any]:
        """What the cache key hashes; loaders add file sizes and mtimes."""
        return {"kind": cls.kind, "version": cls.version, "options": dataclasses.asdict(opts)}


def cache_dir(configured: str = "") -> Path:
    d = configured or os.environ.get("AUTOEFF_CACHE") or str(Path.home() / ".cache" / "autoeff")
    return Path(d).expanduser()


def content_hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_positive(opts, key: str, *names: str) -> None:
    for n in names:
        v = getattr(opts, n)
        if v <= 0:
            raise ConfigError("must be > 0", key=f"{key}.{n}", value=v, has_value=True)
