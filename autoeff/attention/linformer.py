"""Linformer (Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity").

Keys and values are projected along the length axis from N to rank k with learned matrices
E, F (k x N), so attention costs O(N k). The projections have a fixed input length, so the
family needs a fixed maximum length: shorter inputs are padded to ``max_len`` and padded keys
and values are zeroed before projection, so padding never changes real outputs.

Implementation note (exact, not an approximation): the length projection commutes with the
key/value projection, ``E (X W_k^T + 1 b_k^T) = (E X) W_k^T + (E 1) b_k^T``, so keys and values
are never computed for all N tokens: the layer projects the input along the length axis first
(one k x N by N x D product per projection) and applies W_k, W_v to k rows only. Only the
queries are N x D. Zeroing padded keys/values equals zeroing the padded columns of E and F.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import register_attention
from .base import AttentionBase


@dataclass
class LinformerOptions:
    rank: int = 64  # k: projected length
    share_kv: bool = False  # one projection for K and V (E = F)
    share_layers: bool = False  # one projection for every layer of the encoder


def _projection(k: int, n: int) -> nn.Parameter:
    p = torch.empty(k, n)
    nn.init.normal_(p, std=1.0 / math.sqrt(k))
    return nn.Parameter(p)


@register_attention("linformer")
class LinformerAttention(AttentionBase):
    options = LinformerOptions
    needs_fixed_length = True
    subquadratic = True

    def __init__(self, dim, heads, opts=None, *, shared=None, **kw):
        super().__init__(dim, heads, opts, shared=shared, **kw)
        k, n = self.opts.rank, self.max_len
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        store = shared if (self.opts.share_layers and shared is not None) else None

        def get(name: str) -> nn.Parameter:
            if store is not None:
                key = f"linformer.{name}.{k}x{n}"
                if key not in store:
                    store[key] = _ParamHolder(_projection(k, n))
                return store[key].weight
            return _projection(k, n)

        self.proj_k = get("E")
        self.proj_v = self.proj_k if self.opts.share_kv else get("F")

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, d = x.shape  # (B, N, D)
        if n > self.max_len:
            raise ValueError(f"linformer built for length {self.max_len}, got {n}")
        w, bias = self.qkv.weight, self.qkv.bias  # (3D, D), (3D,): rows are [W_q; W_k; W_v]
        e = self.proj_k[:, :n]  # (k, N): the first N columns == zero-padding to max_len
        f = self.proj_v[:, :n]  # (k, N)
        if mask is not None:
            keep = mask[:, None, :].to(e.dtype)  # (B, 1, N)
            e = e * keep  # (B, k, N): padded keys contribute nothing
            f = e if self.opts.share_kv else f * keep  # (B, k, N)
        ex = torch.bmm(e.expand(b, -1, -1), x)  # (B, k, D)  E X (bmm: no transposed copy of x)
        e1 = e.sum(-1, keepdim=True)  # (k, 1) or (B, k, 1)  E 1 (carries the bias)
        if self.opts.share_kv:
            kv = torch.addcmul(F.linear(ex, w[d:]), e1, bias[d:])  # (B, k, 2D) = E (X W^T + b)
            k, v = kv.chunk(2, dim=-1)  # 2 x (B, k, D)
        else:
            fx = torch.bmm(f.expand(b, -1, -1), x)  # (B, k, D)  F X
            f1 = f.sum(-1, keepdim=True)  # (k, 1) or (B, k, 1)
            k = torch.addcmul(F.linear(ex, w[d:2 * d]), e1, bias[d:2 * d])  # (B, k, D)
            v = torch.addcmul(F.linear(fx, w[2 * d:]), f1, bias[2 * d:])  # (B, k, D)
        q = F.linear(x, w[:d], bias[:d])  # (B, N, D): only the queries are full length
        y = F.scaled_dot_product_attention(
            self.split_heads(q), self.split_heads(k), self.split_heads(v),
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, N, Dh)
        del q
        return self.out(self.merge_heads(y))  # (B, N, D)

    @classmethod
    def problems(cls, opts, *, seq_len, width, heads):
        out = []
        if opts.rank < 1:
            out.append(("rank", opts.rank, "must be >= 1", f"1..{seq_len}"))
        elif opts.rank > seq_len:
            out.append(("rank", opts.rank, f"rank is longer than the sequence length ({seq_len})", f"1..{seq_len}"))
        return out


class _ParamHolder(nn.Module):
    """Wraps a parameter shared across layers so every layer registers the same tensor."""

    def __init__(self, p: nn.Parameter):
        super().__init__()
        self.weight = p
