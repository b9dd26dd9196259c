"""Synthesizer (Tay et al. 2020, "Synthesizer: Rethinking Self-Attention in Transformer Models").

The attention logits are synthesized instead of computed from query-key dot products. The
three variants Long Range Arena evaluates (Tay et al. 2020, "Long Range Arena"), with the
shapes of its reference implementation:

* ``dense``: a per-token two-layer MLP maps each token to its row of logits over the
  ``max_len`` positions, ``B_i = W2 relu(W1 x_i + b1) + b2``, with a hidden layer of Dh units
  per head (W1: D -> H x Dh) and W2: Dh -> max_len shared by the heads.
* ``random``: a learned (H, max_len, max_len) logit matrix, the same for every input.
* ``factorized``: the random matrix in factorized form, ``R = R1 R2^T`` with R1, R2 of shape
  (H, max_len, rank).

``mix=True`` adds the dot-product logits, ``QK^T / sqrt(Dh) + synthetic`` (the paper's
"+ Vanilla" variants; LRA's ``ignore_dot_product=False``, which sums the two as here; the
paper's learned mixture weights are absorbed by the learned synthetic parameters and W_q).
Without mix the layer has only value and output projections, and for ``random`` and
``factorized`` its attention weights do not depend on the input at all.

The logits are tied to absolute positions, so the family needs a fixed maximum length: an
input of length N <= max_len uses the first N rows and columns (equivalently: it is padded
to max_len and the padding is masked).

Masks: a padded key gets logit -inf before the softmax, in every mode (also in the synthetic
ones: LRA's code skips the padding mask when the dot product is ignored, we do not), so
padding never changes the outputs at real positions. Rows of padded queries are computed like
any other and are meaningless.

Cost: the logits of every mode are low-rank products except ``random``'s, so ``dense`` and
``factorized`` (mixed or not) run through ``scaled_dot_product_attention`` with concatenated
query/key features (dense: [relu(W1 x), 1] . [W2_j, b2_j]; factorized: R1_i . R2_j; mix:
[q / sqrt(Dh), ...] . [k, ...]) and never materialize an N x N tensor; they still cost
O(N^2) time. ``random`` materializes the (H, N, N) logits (its parameters are that size
anyway), and (B, H, N, N) with a padding mask or mix.

Causal form (``forward(causal=True)``): the synthesized (and mixed) logits under the causal mask
j <= i (Tay et al. 2020 use Synthesizers in decoders the same way). Decoding re-runs the layer
over the stored context (decode_cost "recompute", base.py's generic cache); ``rotary`` is
ignored (the logits are tied to absolute positions already).
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

MODES = ("dense", "random", "factorized")


@dataclass
class SynthesizerOptions:
    mode: str = "factorized"  # dense (per-token MLP) | random (learned N x N) | factorized (random, rank k)
    rank: int = 32  # k of the factorized random matrix (LRA uses 32)
    mix: bool = False  # add dot-product logits QK^T / sqrt(Dh) (the "+ Vanilla" variants)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
          dropout: float, causal: bool = False) -> torch.Tensor:
    """softmax(q k^T + mask) v with logits exactly q . k (scale 1), via the fused kernel.

    q, k: (B or 1, H, N, E); v: (B, H, N, Dh). The fused CPU kernel needs one head width for
    q, k and v, so the narrower side is zero-padded (zeros change neither q . k nor the output
    columns that are kept).
    """
    b, h, n, dv = v.shape  # (B, H, N, Dh)
    e = q.shape[-1]
    if e < dv:
        q, k = F.pad(q, (0, dv - e)), F.pad(k, (0, dv - e))  # (*, H, N, Dh)
    elif e > dv:
        v = F.pad(v, (0, e - dv))  # (B, H, N, E)
    q = q.expand(b, h, n, q.shape[-1])  # (B, H, N, E')
    k = k.expand(b, h, n, k.shape[-1])  # (B, H, N, E')
    attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, N) True = attend
    if causal:
        attn_mask = _causal_mask(attn_mask, n, v.device)  # (B or 1, 1, N, N)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout, scale=1.0)  # (B, H, N, E')
    return y[..., :dv]  # (B, H, N, Dh)


def _causal_mask(key_mask: Optional[torch.Tensor], n: int, device) -> torch.Tensor:
    """j <= i (and j a real key), the diagonal always kept (no empty row): (B or 1, 1, N, N)."""
    tri = torch.ones(n, n, dtype=torch.bool, device=device).tril()  # (N, N)
    m = tri[None, None] if key_mask is None else key_mask & tri
    return m | torch.eye(n, dtype=torch.bool, device=device)


@register_attention("synthesizer")
class SynthesizerAttention(AttentionBase):
    """Dense / random / factorized-random Synthesizer attention (Tay et al. 2020)."""

    options = SynthesizerOptions
    needs_fixed_length = True  # the synthetic logits are tied to positions 0..max_len-1
    supports_causal = True
    decode_cost = "recompute"
    projections = {"qk": ("q", "k"), "v": ("v",), "out": ("out",)}

    def __init__(self, dim, heads, opts=None, **kw):
        super().__init__(dim, heads, opts, **kw)
        o, h, dh, L = self.opts, self.heads, self.head_dim, self.max_len
        if o.mode not in MODES:
            raise ValueError(f"synthesizer mode must be one of {MODES}, got {o.mode!r}")
        self.qk = nn.Linear(dim, 2 * dim) if o.mix else None  # dot-product queries and keys
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        if o.mode == "dense":
            self.dense1 = nn.Linear(dim, dim)  # D -> H x Dh hidden units, relu
            self.dense2 = nn.Linear(dh, L)  # Dh -> max_len logits, shared by the heads
        elif o.mode == "random":
            # logits start near 0 (near-uniform attention), LeCun-normal fan-in as in LRA
            self.random = nn.Parameter(torch.randn(h, L, L) / math.sqrt(L))  # (H, L, L)
        else:
            # R1 R2^T starts with logits of std rank^-1/2 (near-uniform attention)
            self.r1 = nn.Parameter(torch.randn(h, L, o.rank) / math.sqrt(o.rank))  # (H, L, k)
            self.r2 = nn.Parameter(torch.randn(h, L, o.rank) / math.sqrt(o.rank))  # (H, L, k)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        b, n, d = x.shape  # (B, N, D)
        h, dh = self.heads, self.head_dim
        if n > self.max_len:
            raise ValueError(f"synthesizer built for length {self.max_len}, got {n}")
        mode, mix = self.opts.mode, self.opts.mix
        drop = self.dropout if self.training else 0.0
        v = self.split_heads(self.v(x))  # (B, H, N, Dh)
        if mix:
            q, k = self.qk(x).chunk(2, dim=-1)  # 2 x (B, N, D)
            q = self.split_heads(q) * dh ** -0.5  # (B, H, N, Dh)
            k = self.split_heads(k)  # (B, H, N, Dh)

        if mode == "random":
            logits = self.random[:, :n, :n].unsqueeze(0)  # (1, H, N, N)
            if mix:
                logits = logits + torch.matmul(q, k.transpose(-1, -2))  # (B, H, N, N)
            if causal:
                logits = logits.masked_fill(~_causal_mask(None if mask is None else mask[:, None, None, :], n, x.device),
                                            float("-inf"))  # (B or 1, H, N, N)
            elif mask is not None:
                logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))  # (B, H, N, N)
            attn = F.dropout(torch.softmax(logits, dim=-1), drop, self.training)  # (B or 1, H, N, N)
            y = torch.matmul(attn, v)  # (B, H, N, Dh)
        else:
            if mode == "dense":
                hid = torch.relu(self.split_heads(self.dense1(x)))  # (B, H, N, Dh)
                w2 = self.dense2.weight[:n]  # (N, Dh)   logits_ij = hid_i . w2_j + b2_j
                b2 = self.dense2.bias[:n, None]  # (N, 1)
                sq = torch.cat([hid, hid.new_ones(b, h, n, 1)], dim=-1)  # (B, H, N, Dh+1)
                sk = torch.cat([w2, b2], dim=-1).expand(1, 1, n, dh + 1)  # (1, 1, N, Dh+1)
            else:
                sq = self.r1[:, :n].unsqueeze(0)  # (1, H, N, k)   logits_ij = r1_i . r2_j
                sk = self.r2[:, :n].unsqueeze(0)  # (1, H, N, k)
            if mix:
                rows = q.shape[0]
                sq = torch.cat([q, sq.expand(rows, h, n, sq.shape[-1])], dim=-1)  # (B, H, N, Dh+E)
                sk = torch.cat([k, sk.expand(rows, h, n, sk.shape[-1])], dim=-1)  # (B, H, N, Dh+E)
            y = _sdpa(sq, sk, v, mask, drop, causal)  # (B, H, N, Dh)
        return self.out(self.merge_heads(y))  # (B, N, D)

    @classmethod
    def problems(cls, opts, *, seq_len, width, heads):
        out = []
        if opts.mode not in MODES:
            out.append(("mode", opts.mode, "unknown synthesizer mode", list(MODES)))
        elif opts.mode == "factorized":
            if opts.rank < 1:
                out.append(("rank", opts.rank, "must be >= 1", f"1..{seq_len}"))
            elif opts.rank > seq_len:
                out.append(("rank", opts.rank, f"rank is longer than the sequence length ({seq_len})",
                            f"1..{seq_len}"))
        return out
