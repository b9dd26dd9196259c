"""The serving contract: one module, the same inputs, for every exported form of a trained model
(the ONNX graph of ``autoeff export --onnx`` and the MLflow-registered model of ``--register``).

``logits = ServingModel(model, task)(x, mask)``, both inputs required:

* ``x``: the task's input, (B, N) int64 token ids or (B, N, F) float features (a pair task adds
  an axis of 2 after B);
* ``mask``: (B, N) bool (pairs: (B, 2, N)), True at real positions, False at padding; a caller
  without padding passes all True (``full_mask``);
* returns the task's logits in fp32 (whatever precision the model computes in): (B, classes) for
  a classifier, (B, N, vocab) for a decoder (its prefill pass).

A multi-task model is served one task per module (one ONNX file and one registered model per
task): each has its own input shape and head.
"""
from __future__ import annotations

import torch
from torch import nn


def full_mask(x: torch.Tensor, tokens: bool) -> torch.Tensor:
    """The all-True mask (no padding) for an input ``x`` of token ids (``tokens``) or features."""
    lead = x.shape if tokens else x.shape[:-1]
    return torch.ones(lead, dtype=torch.bool, device=x.device)


class ServingModel(nn.Module):
    """Wraps an ``AutoEffModel`` (or a ``DecoderLM``) for one task: ``forward(x, mask) -> logits``."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, N) ids or (B, N, F) features (pairs: (B, 2, ...)); mask: (B, N) bool (pairs: (B, 2, N))
        return self.model(x, mask, task=self.task).float()  # (B, classes) or (B, N, vocab), fp32
