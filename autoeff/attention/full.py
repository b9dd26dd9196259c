"""Full softmax attention (Vaswani et al. 2017) through ``scaled_dot_product_attention``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import register_attention
from .base import AttentionBase


@dataclass
class FullOptions:
    """Full attention has no knobs beyond the model's heads."""


@register_attention("full")
class FullAttention(AttentionBase):
    options = FullOptions

    def __init__(self, dim, heads, opts=None, **kw):
        super().__init__(dim, heads, opts, **kw)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, d = x.shape  # (B, N, D)
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, Dh)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, N) True = attend
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, N, Dh)
        return self.out(self.merge_heads(y))  # (B, N, D)
