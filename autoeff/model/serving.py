"""A trained model with a one-input ``forward``, as served (the MLflow pyfunc flavor, ONNX-style
callers): ``logits = ServingModel(model, task)(x)``; the padding mask comes from ``x`` (token id
0 is padding; feature inputs are all real)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

PAD = 0  # the padding token id of every token task (tasks.base.PAD; the model does not import tasks)


class ServingModel(nn.Module):
    """Wraps an ``AutoEffModel`` for one task: ``forward(x[, mask]) -> logits (B, classes)``."""

    def __init__(self, model: nn.Module, task: str, tokens: bool):
        super().__init__()
        self.model = model
        self.task = task
        self.tokens = tokens

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is None:
            # x: (B, N) token ids or (B, N, F) features; pairs add an axis of 2 after B
            mask = (x != PAD) if self.tokens else torch.ones(x.shape[: x.dim() - 1], dtype=torch.bool,
                                                              device=x.device)
        return self.model(x, mask, task=self.task)  # (B, classes)
