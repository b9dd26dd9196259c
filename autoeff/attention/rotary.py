"""Rotary position embeddings (RoPE; Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary
Position Embedding").

Layout: the "half-split" (GPT-NeoX) convention. For a head vector of size Dh the pairs rotated
together are (x[i], x[i + Dh/2]), i < Dh/2, by the angle ``pos * base ** (-2i / Dh)``. With an
odd Dh the last component is left as is. The object holds no parameters or buffers (nothing
enters a state_dict); cos/sin are computed on the input's device for the positions asked.
"""
from __future__ import annotations

from typing import Tuple, Union

import torch


class Rotary:
    """``rotate(q, k, positions)`` rotates q and k (B, H, N, Dh) by their absolute positions."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        if head_dim < 2:
            raise ValueError(f"rotary needs head_dim >= 2, got {head_dim}")
        if base <= 1.0:
            raise ValueError(f"rotary base must be > 1, got {base}")
        self.head_dim = int(head_dim)
        self.base = float(base)
        self.half = self.head_dim // 2

    def __repr__(self) -> str:
        return f"Rotary(head_dim={self.head_dim}, base={self.base})"

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (N, Dh/2) for absolute positions (N,), computed in fp32 then cast."""
        inv = self.base ** (-torch.arange(self.half, device=positions.device, dtype=torch.float32) / self.half)
        ang = positions.to(torch.float32)[:, None] * inv[None, :]  # (N, Dh/2)
        return ang.cos().to(dtype), ang.sin().to(dtype)

    def apply(self, t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """t (..., N, Dh) rotated by positions (N,)."""
        cos, sin = self.cos_sin(positions, t.dtype)  # (N, Dh/2)
        h = self.half
        a, b, rest = t[..., :h], t[..., h:2 * h], t[..., 2 * h:]
        out = [a * cos - b * sin, b * cos + a * sin]
        if rest.shape[-1]:
            out.append(rest)
        return torch.cat(out, dim=-1)

    def rotate(self, q: torch.Tensor, k: torch.Tensor,
               positions: Union[int, torch.Tensor] = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        """q (B, H, N, Dh) and k (B, Hk, N, Dh) rotated; ``positions`` is the absolute
        position of row 0 (an int) or the (N,) positions themselves."""
        if not torch.is_tensor(positions):
            positions = torch.arange(positions, positions + q.shape[-2], device=q.device)
        return self.apply(q, positions), self.apply(k, positions)
