"""Sliding-window attention (the local attention of Beltagy et al. 2020 "Longformer" and
Child et al. 2019, as used causally in e.g. Mistral 7B, Jiang et al. 2023).

Causal: the query at position i sees the ``window`` positions i - window + 1 .. i. Decoding keeps
a rolling cache of the last ``window`` keys and values (decode_cost "window"), with ``kv_heads``
heads (grouped-query attention). Bidirectional use (an encoder): the symmetric band
|i - j| <= window - 1 (2 window - 1 keys), so the family also serves encoder searches.
Computed blockwise (attention/_local.py): no N x N tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from . import register_attention
from ._local import cached_local_step, local_attention
from .cache import LayerCache
from .full import _QKVAttention


@dataclass
class SlidingWindowOptions:
    window: int = 64  # keys each query sees (itself included) in the causal form
    kv_heads: int = 0  # 0 = heads; else a divisor of heads (grouped-query attention)


@register_attention("sliding_window")
class SlidingWindowAttention(_QKVAttention):
    options = SlidingWindowOptions
    supports_causal = True
    decode_cost = "window"
    subquadratic = True

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        q, k, v = self.project(x)  # (B, H, N, Dh), (B, Hk, N, Dh)
        q, k = self.rope(q, k, 0)
        y = local_attention(q, k, v, reach=self.opts.window - 1, causal=causal, key_mask=mask,
                            expand=self.expand_kv, dropout=self.dropout if self.training else 0.0)  # (B, H, N, Dh)
        return self.out(self.merge_heads(y))  # (B, N, D)

    def forward_cached(self, x: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        q, k, v = self.project(x)  # (B, H, T, Dh), (B, Hk, T, Dh)
        q, k = self.rope(q, k, cache.length)
        if q.shape[2] == 1:  # one token: the rolling buffer plus it is exactly what it sees, no mask
            w = self.opts.window
            kk = torch.cat([cache["k"], k], 2)[:, :, -w:]  # (B, Hk, <= window, Dh)
            vv = torch.cat([cache["v"], v], 2)[:, :, -w:]
            y = F.scaled_dot_product_attention(q, kk, vv, enable_gqa=self.kv_heads != self.heads)  # (B, H, 1, Dh)
            cache["k"], cache["v"] = kk, vv
            cache.length += 1
        elif cache.length == 0:  # a prefill: the blockwise causal band (no T x T tensor), then keep the last window
            w = self.opts.window
            y = local_attention(q, k, v, reach=w - 1, causal=True, expand=self.expand_kv)  # (B, H, T, Dh)
            cache["k"], cache["v"] = k[:, :, -w:].contiguous(), v[:, :, -w:].contiguous()
            cache.length = q.shape[2]
        else:
            y = cached_local_step(q, k, v, cache, reach=self.opts.window - 1, expand=self.expand_kv)  # (B, H, T, Dh)
        return self.out(self.merge_heads(y))  # (B, T, D)

    def cache_bytes(self, batch: int, context: int, bytes_per_value: int) -> int:
        return 2 * batch * self.kv_heads * self.head_dim * min(context, self.opts.window) * bytes_per_value

    @classmethod
    def problems(cls, opts, *, seq_len, width, heads):
        out = cls.kv_heads_problems(opts, heads)
        if opts.window < 1:
            out.append(("window", opts.window, "must be >= 1 (keys each query sees, itself included)",
                        f"1..{seq_len}"))
        elif opts.window > seq_len:
            out.append(("window", opts.window, f"window is longer than the sequence length ({seq_len})",
                        f"1..{seq_len}"))
        return out
