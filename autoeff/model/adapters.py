"""Per-task input adapters (tokens, feature vectors such as patches or frames) and heads."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..config import TaskSpec


class InputAdapter(nn.Module):
    """Turns a task's raw input into (B, N(+1), D) encoder input plus a keep-mask.

    tokens:   nn.Embedding (padding id 0)
    features: nn.Linear from the per-position feature size (image patches, audio frames)
    A learned CLS vector is prepended when pooling by CLS; learned absolute positions follow.
    """

    def __init__(self, spec: TaskSpec, width: int, dropout: float, cls_token: bool):
        super().__init__()
        self.kind = spec.input_kind
        if self.kind == "tokens":
            self.embed = nn.Embedding(spec.vocab_size, width, padding_idx=0)
        else:
            self.embed = nn.Linear(spec.feature_dim, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width)) if cls_token else None
        n = spec.seq_len + (1 if cls_token else 0)
        self.pos = nn.Parameter(torch.randn(1, n, width) * 0.02)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.is_floating_point():
            x = x.to(self.pos.dtype)  # features in the model's dtype (a bf16/fp16 deployment)
        h = self.embed(x)  # (B, N, D)
        if self.cls is not None:
            b = h.shape[0]
            h = torch.cat([self.cls.expand(b, -1, -1), h], dim=1)  # (B, N+1, D)
            mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        h = h + self.pos[:, : h.shape[1]]
        return self.drop(h), mask


class ClassifierHead(nn.Module):
    """Pools the encoder output (CLS or masked mean) and classifies; pair tasks combine
    the two pooled vectors as [u, v, u*v, u-v] (LRA's dual encoder for retrieval)."""

    def __init__(self, spec: TaskSpec, width: int, pool: str):
        super().__init__()
        self.pool = pool
        self.pair = spec.pair
        d_in = 4 * width if spec.pair else width
        self.mlp = nn.Sequential(nn.Linear(d_in, width), nn.GELU(), nn.Linear(width, spec.num_classes))

    def pooled(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pool == "cls":
            return h[:, 0]  # (B, D)
        m = mask[..., None].to(h.dtype)  # (B, N, 1)
        return (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, D)

    def forward(self, u: torch.Tensor, v: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.pair:
            u = torch.cat([u, v, u * v, u - v], dim=-1)  # (B, 4D)
        return self.mlp(u)  # (B, C)
