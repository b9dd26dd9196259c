"""The contract every attention family follows.

A family is one file: an options dataclass (plain values: the knobs the space can search) and
an ``nn.Module`` subclass of :class:`AttentionBase`, registered by name with
:func:`autoeff.attention.register_attention`. The module is a whole attention layer, input
and output projections included, so families can be compared like for like.

Forward signature, for every family::

    forward(x, mask=None) -> y
      x:    (B, N, D) float
      mask: (B, N) bool, True at real tokens, False at padding; None = no padding
      y:    (B, N, D); values at padded positions are finite but meaningless

Capability flags (class attributes) let the search space reject impossible candidates before
anything is trained. A flag is a promise checked against behaviour by the contract tests
(tests/attention/test_contract.py): a family that sets ``supports_causal`` takes
``forward(x, mask, causal=True)`` and never lets position i see a later one; one that does not
takes no ``causal`` argument at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..errors import ConfigError
from .cache import LayerCache


@dataclass
class NoOptions:
    """For families without knobs."""


Problem = Tuple[str, Any, str, Any]  # (key, value, what is wrong, what is allowed)


class AttentionBase(nn.Module):
    #: registered name (set by ``register_attention``)
    name: str = ""
    #: options dataclass (plain values); the knobs a space can search
    options: type = NoOptions
    #: needs every input padded to one fixed maximum length (e.g. Linformer's projections)
    needs_fixed_length: bool = False
    #: honours a padding mask (padded tokens never influence real ones)
    supports_padding_mask: bool = True
    #: takes ``causal=True`` (decoder-style) and implements init_cache / forward_cached /
    #: cache_bytes (docs/decoders.md §1)
    supports_causal: bool = False
    #: what one decoding step costs: "kv", "window", "state" or "recompute" (None: not causal)
    decode_cost: Optional[str] = None
    #: the options have ``kv_heads`` (grouped-query attention: 0 = heads, else a divisor of heads)
    supports_kv_heads: bool = False
    #: only a causal form exists: ``forward`` is always causal, and a space refuses the family
    #: in an encoder
    causal_only: bool = False
    #: never materializes an N x N tensor
    subquadratic: bool = False
    #: how the layer's input/output projections are laid out, for weight sharing across families
    #: in a one-shot supernet (autoeff/supernet/): submodule name -> the blocks of its rows,
    #: in order, each a (width x width) block of the shared query/key/value/output projections.
    #: Every other parameter and buffer is the family's own there.
    projections: Dict[str, Tuple[str, ...]] = {"qkv": ("q", "k", "v"), "out": ("out",)}

    def __init__(
        self,
        dim: int,
        heads: int,
        opts: Any = None,
        *,
        max_len: int,
        dropout: float = 0.0,
        shared: Optional[Dict[str, nn.Module]] = None,
        layer: int = 0,
    ):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"heads ({heads}) must divide dim ({dim})")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.opts = opts if opts is not None else self.options()
        self.max_len = max_len
        self.dropout = dropout
        self.layer = layer
        #: rotary positions (attention.rotary.Rotary), set by a decoder on every layer
        self.rotary = None
        kvh = int(getattr(self.opts, "kv_heads", 0) or 0)
        if kvh and (kvh < 0 or heads % kvh != 0):
            raise ValueError(f"kv_heads ({kvh}) must divide heads ({heads})")
        #: key/value heads (fewer than ``heads`` under grouped-query attention)
        self.kv_heads = kvh or heads

    # ---- helpers shared by families -------------------------------------------------
    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape  # (B, N, D)
        return t.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, H, N, Dh)

    def merge_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, h, n, dh = t.shape  # (B, H, N, Dh)
        return t.transpose(1, 2).reshape(b, n, h * dh)  # (B, N, D)

    def rope(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        """q (B, H, N, Dh), k (B, Hk, N, Dh) rotated by absolute positions offset.. (no-op
        without ``self.rotary``)."""
        if self.rotary is None:
            return q, k
        return self.rotary.rotate(q, k, offset)

    def expand_kv(self, t: torch.Tensor) -> torch.Tensor:
        """(B, Hk, L, Dh) -> (B, H, L, Dh): each key/value head serves heads // Hk query heads."""
        rep = self.heads // t.shape[1]
        return t if rep == 1 else t.repeat_interleave(rep, dim=1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # ---- incremental decoding (causal families) ----------------------------------------
    # The defaults below are the generic "recompute" form: the cache stores the layer's inputs
    # so far, and each call re-runs forward(causal=True) over them (decode_cost "recompute").
    def init_cache(self, batch: int, device=None, dtype=None) -> LayerCache:
        if not self.supports_causal:
            raise NotImplementedError(f"{self.name} is not causal: no incremental decoding")
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        return LayerCache(0, x=torch.zeros(batch, 0, self.dim, device=device, dtype=dtype))

    def forward_cached(self, x: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        t = x.shape[1]  # x (B, T, D)
        ctx = torch.cat([cache["x"], x], dim=1)  # (B, L + T, D)
        y = self(ctx, causal=True)[:, -t:]  # (B, T, D)
        cache["x"] = ctx
        cache.length += t
        return y

    def cache_bytes(self, batch: int, context: int, bytes_per_value: int) -> int:
        """Size of the cache after ``context`` tokens (recompute: the stored inputs)."""
        return batch * context * self.dim * bytes_per_value

    # ---- validation -----------------------------------------------------------------
    @classmethod
    def problems(cls, opts: Any, *, seq_len: int, width: int, heads: int) -> List[Problem]:
        """Return what is impossible about these options at this size (override per family)."""
        return []

    @classmethod
    def kv_heads_problems(cls, opts: Any, heads: int) -> List[Problem]:
        """``kv_heads`` must be 0 (= heads) or a divisor of heads."""
        kvh = getattr(opts, "kv_heads", 0)
        if kvh is None or kvh == 0:
            return []
        divisors = [d for d in range(1, heads + 1) if heads % d == 0]
        if kvh < 0 or heads % kvh != 0:
            return [("kv_heads", kvh, f"must divide model.heads ({heads})",
                     "0 (= heads) or one of " + ", ".join(map(str, divisors)))]
        return []

    @classmethod
    def check(cls, opts: Any, *, seq_len: int, width: int, heads: int, prefix: str = "") -> None:
        """Raise ConfigError for the first impossible combination."""
        for key, value, what, allowed in cls.problems(opts, seq_len=seq_len, width=width, heads=heads):
            k = f"{prefix}.{key}" if prefix else key
            raise ConfigError(what, key=k, value=value, allowed=allowed, has_value=True)

