"""Compression: the trained fp32 model -> the deployed model (see docs/architecture.md, the ``compress``
stage of the data flow).

- :mod:`.quantize`: 16 bits (bf16/fp16), 8 and 4 bits (weights stored as integers, read back
  as float by each module: every attention family runs quantized unchanged);
- :mod:`.prune`: structured (FFN neurons, attention heads) and magnitude pruning;
- :mod:`.distill`: the knowledge-distillation loss and what defines a teacher.

This package transforms models and defines losses; it never trains. The fine-tunes after
pruning and with QAT, and the teacher's training, are run by ``autoeff.training``, which calls
these functions (``train_and_evaluate``: train fp32, prune, fine-tune, quantize, evaluate).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

from torch import nn

from ..config import CompressConfig, RunConfig, TaskSpec
from .prune import bake, prune
from .quantize import fake_quantized, quantize, stored_bits

__all__ = ["apply", "build_deployed", "quantize", "prune", "bake", "fake_quantized", "stored_bits"]


def apply(model: nn.Module, c: CompressConfig) -> Dict[str, float]:
    """Compress ``model`` in place as ``c`` says, without any fine-tune: prune, then quantize.

    On a trained model this is the deployment step when no fine-tune is configured; on a freshly
    built model it gives the deployed model's structure (same shapes, same stored dtypes, so the
    same latency, memory and size, and a compressed checkpoint loads into it)."""
    report = prune(model, c.prune, c.sparsity)
    bake(model)
    report.update(quantize(model, c.bits, half=c.half, group_size=c.group_size))
    return report


def build_deployed(cfg: RunConfig, specs: Optional[Sequence[TaskSpec]] = None) -> nn.Module:
    """The model a config deploys, untrained: ``build_model`` plus the structure of its
    compression. ``load_state_dict`` of a checkpoint saved by ``autoeff train`` or a trial fits it."""
    from ..model import build_model

    model = build_model(cfg, specs)
    if cfg.compress.active:
        apply(model, cfg.compress)
    return model
