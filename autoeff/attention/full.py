"""Full softmax attention (Vaswani et al. 2017) through ``scaled_dot_product_attention``.

Causal form: the SDPA causal path (a padding mask joins the causal mask; a query always sees
itself). ``kv_heads``: grouped-query attention (Ainslie et al. 2023, "GQA: Training Generalized
Multi-Query Transformer Models from Multi-Head Checkpoints"): K and V have ``kv_heads`` heads,
each shared by ``heads // kv_heads`` query heads; the decoding cache holds K and V with
``kv_heads`` heads and grows with the context (decode_cost "kv").

Layout: without GQA one ``qkv`` projection (3 width x width blocks, shared by a one-shot
supernet); with GQA a ``q`` projection (shared) and the family's own ``kv`` projection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import register_attention
from .base import AttentionBase
from .cache import LayerCache


@dataclass
class FullOptions:
    kv_heads: int = 0  # 0 = heads; else a divisor of heads (grouped-query attention)


class _QKVAttention(AttentionBase):
    """Shared projections of the dot-product families with GQA (full, sliding_window)."""

    projections = {"qkv": ("q", "k", "v"), "q": ("q",), "out": ("out",)}
    supports_kv_heads = True

    def __init__(self, dim, heads, opts=None, **kw):
        super().__init__(dim, heads, opts, **kw)
        self.kv_dim = self.kv_heads * self.head_dim
        if self.kv_heads == heads:
            self.qkv = nn.Linear(dim, 3 * dim)
        else:
            self.q = nn.Linear(dim, dim)
            self.kv = nn.Linear(dim, 2 * self.kv_dim)
        self.out = nn.Linear(dim, dim)

    def project(self, x: torch.Tensor):
        """x (B, N, D) -> q (B, H, N, Dh), k and v (B, Hk, N, Dh)."""
        b, n, _ = x.shape
        if self.kv_heads == self.heads:
            q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, Dh)
            return q, k, v
        q = self.split_heads(self.q(x))  # (B, H, N, Dh)
        k, v = self.kv(x).view(b, n, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 2 x (B, Hk, N, Dh)
        return q, k, v

    def init_cache(self, batch: int, device=None, dtype=None) -> LayerCache:
        """Empty key/value buffers with ``kv_heads`` heads (a growing cache, or sliding_window's rolling one)."""
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        empty = torch.zeros(batch, self.kv_heads, 0, self.head_dim, device=device, dtype=dtype)
        return LayerCache(0, k=empty, v=empty.clone())

    @classmethod
    def problems(cls, opts, *, seq_len, width, heads):
        return cls.kv_heads_problems(opts, heads)


@register_attention("full")
class FullAttention(_QKVAttention):
    options = FullOptions
    supports_causal = True
    decode_cost = "kv"

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        b, n, d = x.shape  # (B, N, D)
        q, k, v = self.project(x)  # (B, H, N, Dh), (B, Hk, N, Dh)
        q, k = self.rope(q, k, 0)
        k, v = self.expand_kv(k), self.expand_kv(v)  # (B, H, N, Dh)
        p = self.dropout if self.training else 0.0
        if causal and mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, N, Dh)
        else:
            attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, N) True = attend
            if causal:
                tri = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()  # (N, N)
                attn_mask = (attn_mask & tri) | torch.eye(n, dtype=torch.bool, device=x.device)  # (B, 1, N, N)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # (B, H, N, Dh)
        return self.out(self.merge_heads(y))  # (B, N, D)

    def forward_cached(self, x: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        t = x.shape[1]  # x (B, T, D)
        L = cache.length
        q, k, v = self.project(x)  # (B, H, T, Dh), (B, Hk, T, Dh)
        q, k = self.rope(q, k, L)
        k = torch.cat([cache["k"], k], dim=2)  # (B, Hk, L + T, Dh)
        v = torch.cat([cache["v"], v], dim=2)
        cache["k"], cache["v"] = k, v
        cache.length = L + t
        gqa = self.kv_heads != self.heads  # SDPA serves each key/value head to its query heads: no copy
        if t == 1:
            y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)  # (B, H, 1, Dh)
        elif L == 0:  # prefill: SDPA's causal kernel, no (T, T) mask built
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)  # (B, H, T, Dh)
        else:
            allow = torch.ones(t, L + t, dtype=torch.bool, device=x.device).tril(L)  # (T, L + T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allow, enable_gqa=gqa)  # (B, H, T, Dh)
        return self.out(self.merge_heads(y))  # (B, T, D)

    def cache_bytes(self, batch: int, context: int, bytes_per_value: int) -> int:
        return 2 * batch * self.kv_heads * self.head_dim * context * bytes_per_value
