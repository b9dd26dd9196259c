"""The shared encoder: a stack of pre-LayerNorm blocks, attention family from the registry."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..attention import get_attention


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, N, D)


class Block(nn.Module):
    def __init__(self, attn: nn.Module, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, hidden, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor], causal: bool = False) -> torch.Tensor:
        # families without causal support take no ``causal`` argument (attention/base.py)
        a = self.attn(self.norm1(x), mask, causal=True) if causal else self.attn(self.norm1(x), mask)  # (B, N, D)
        x = x + self.drop(a)  # (B, N, D)
        return x + self.drop(self.ffn(self.norm2(x)))  # (B, N, D)

    def forward_cached(self, x: torch.Tensor, cache) -> torch.Tensor:
        """x (B, T, D) continuing the sequence held by ``cache`` (docs/decoders.md section 1)."""
        x = x + self.drop(self.attn.forward_cached(self.norm1(x), cache))  # (B, T, D)
        return x + self.drop(self.ffn(self.norm2(x)))  # (B, T, D)


def ffn_hidden(width: int, ffn_mult: float) -> int:
    """Hidden units of a block's feed-forward network."""
    return max(1, int(round(width * ffn_mult)))


class Encoder(nn.Module):
    """depth x Block, then a final LayerNorm. Positions are added by the input adapters (encoders)
    or by rotary embeddings inside the attention (decoders, ``causal=True``).

    ``attention`` is one (family, options) pair per layer: the same for every layer, or each
    layer its own (hybrid models).
    """

    def __init__(self, *, depth: int, width: int, heads: int, ffn_mult: float, dropout: float,
                 attention: Sequence[Tuple[str, Any]], max_len: int):
        super().__init__()
        if len(attention) != depth:
            raise ValueError(f"{len(attention)} attention layers for depth {depth}")
        shared: Dict[str, nn.Module] = {}
        hidden = ffn_hidden(width, ffn_mult)
        self.blocks = nn.ModuleList(
            Block(get_attention(kind)(width, heads, opts, max_len=max_len, dropout=dropout, shared=shared, layer=i),
                  width, hidden, dropout)
            for i, (kind, opts) in enumerate(attention)
        )
        # parameters shared across layers (e.g. Linformer E/F), registered once here
        self.shared = nn.ModuleDict({k.replace(".", "_"): v for k, v in shared.items()})
        self.norm = nn.LayerNorm(width)
        self.max_len = max_len

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, mask, causal)  # (B, N, D)
        return self.norm(x)
