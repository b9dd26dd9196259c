"""Gated DeltaNet (Yang, Kautz, Hatamizadeh 2025, "Gated Delta Networks: Improving Mamba2 with
Delta Rule", ICLR 2025): linear attention whose per-head state S (d_k x d_v) is updated by the
gated delta rule

    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,      o_t = S_t^T q_t / sqrt(d_k)

(written here with S as d_k x d_v, the transpose of the paper's), with
* alpha_t = exp(g_t), g_t = -exp(A_log) * softplus(W_a x_t + dt_bias) < 0 (per head, Mamba2's
  decay parametrization as in the paper), beta_t = sigmoid(W_b x_t) (per head);
* q, k, v through a short causal depthwise convolution (``conv_size``, 4 in the paper) and SiLU,
  q and k L2-normalised per head;
* the output RMSNorm(o) * silu(W_g x) per head, then the output projection.

Training and prefill use the chunkwise-parallel form (``chunk_size``): within a chunk the
delta-rule writes u_t (S_t = alpha_t S_{t-1} + k_t u_t^T) solve a unit lower-triangular system
(I + A) U = beta V - beta gamma K S_0 with A_tj = beta_t (gamma_t / gamma_j) k_t.k_j (j < t) and
gamma the within-chunk cumulative decay: the WY / UT-transform form, one triangular solve per
chunk, then O = (gamma Q) S_0 + (Q K^T o decay) U and S_C = gamma_C S_0 + (K gamma_C/gamma)^T U;
only the state passes from chunk to chunk. Decoding uses the recurrent form with a fixed-size
cache: the state per head plus the convolution's last conv_size - 1 inputs (decode_cost
"state"). Core math runs in float32 (a triangular solve in half precision is not available
everywhere and loses the delta rule's accuracy); the output is cast back.

Causal only (``causal_only``): there is no bidirectional form; ``forward`` is causal whatever
``causal`` says, and a search space refuses the family in an encoder. Padding: padded positions
neither decay nor write the state (g = 0, beta = 0) and enter the convolution as zeros.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import register_attention
from .base import AttentionBase
from .cache import LayerCache


@dataclass
class GatedDeltaNetOptions:
    chunk_size: int = 64  # positions per chunk of the chunkwise-parallel form
    conv_size: int = 4  # kernel of the short causal depthwise convolution on q, k, v (1 = none)


def chunk_gated_delta_rule(q, k, v, g, beta, chunk: int, state: Optional[torch.Tensor] = None
                           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Chunkwise-parallel gated delta rule (float32 in, float32 out).

    q, k (B, H, N, Dk) (q already scaled); v (B, H, N, Dv); g, beta (B, H, N); state (B, H, Dk, Dv)
    or None (zeros). Returns o (B, H, N, Dv) and the final state (B, H, Dk, Dv)."""
    b, h, n, dk = k.shape
    dv = v.shape[-1]
    c = max(1, min(chunk, n))
    pad = (-n) % c
    if pad:  # padded steps neither decay (g = 0) nor write (beta = 0)
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
    nc = (n + pad) // c
    q, k, v = (t.reshape(b, h, nc, c, t.shape[-1]) for t in (q, k, v))  # (B, H, nc, C, .)
    g, beta = g.reshape(b, h, nc, c), beta.reshape(b, h, nc, c)  # (B, H, nc, C)
    G = g.cumsum(-1)  # (B, H, nc, C) log of the cumulative decay within the chunk
    lower = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()  # (C, C) j <= t
    decay = (G[..., :, None] - G[..., None, :]).masked_fill(~lower, float("-inf")).exp()  # (B, H, nc, C, C)
    kb = k * beta[..., None]  # (B, H, nc, C, Dk)
    strict = torch.ones(c, c, dtype=torch.bool, device=q.device).tril(-1)
    A = (kb @ k.transpose(-1, -2) * decay).masked_fill(~strict, 0.0)  # (B, H, nc, C, C)
    eye = torch.eye(c, dtype=q.dtype, device=q.device)
    IA = A + eye  # unit lower triangular
    gamma = G.exp()[..., None]  # (B, H, nc, C, 1)
    W = torch.linalg.solve_triangular(IA, kb * gamma, upper=False, unitriangular=True)  # (B, H, nc, C, Dk)
    U0 = torch.linalg.solve_triangular(IA, v * beta[..., None], upper=False, unitriangular=True)  # (B, H, nc, C, Dv)
    QK = (q @ k.transpose(-1, -2)) * decay  # (B, H, nc, C, C), j <= t
    kdec = k * (G[..., -1:] - G).exp()[..., None]  # (B, H, nc, C, Dk) k_j gamma_C / gamma_j
    gq = q * gamma  # (B, H, nc, C, Dk)
    gC = G[..., -1].exp()  # (B, H, nc)
    S = q.new_zeros(b, h, dk, dv) if state is None else state
    outs = []
    for i in range(nc):
        U = U0[:, :, i] - W[:, :, i] @ S  # (B, H, C, Dv)
        outs.append(gq[:, :, i] @ S + QK[:, :, i] @ U)  # (B, H, C, Dv)
        S = gC[:, :, i, None, None] * S + kdec[:, :, i].transpose(-1, -2) @ U  # (B, H, Dk, Dv)
    o = torch.stack(outs, dim=2).reshape(b, h, nc * c, dv)[:, :, :n]  # (B, H, N, Dv)
    return o, S


def recurrent_gated_delta_rule(q, k, v, g, beta, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The same, one step at a time (decoding). Shapes as :func:`chunk_gated_delta_rule`."""
    outs = []
    S = state  # (B, H, Dk, Dv)
    for t in range(q.shape[2]):
        S = S * g[:, :, t].exp()[..., None, None]  # alpha_t S
        kt = k[:, :, t]  # (B, H, Dk)
        old = (kt[..., None] * S).sum(-2)  # (B, H, Dv) k_t^T S
        S = S + beta[:, :, t, None, None] * kt[..., None] * (v[:, :, t] - old)[..., None, :]  # (B, H, Dk, Dv)
        outs.append((q[:, :, t, :, None] * S).sum(-2))  # (B, H, Dv) S^T q_t
    return torch.stack(outs, dim=2), S  # (B, H, T, Dv)


@register_attention("gated_deltanet")
class GatedDeltaNetAttention(AttentionBase):
    options = GatedDeltaNetOptions
    supports_causal = True
    causal_only = True
    decode_cost = "state"
    subquadratic = True
    projections = {"qkv": ("q", "k", "v"), "out": ("out",)}

    def __init__(self, dim, heads, opts=None, **kw):
        super().__init__(dim, heads, opts, **kw)
        h = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.conv_size = max(1, int(self.opts.conv_size))
        self.conv = nn.Parameter(torch.empty(3 * dim, 1, self.conv_size))  # depthwise, causal
        nn.init.kaiming_uniform_(self.conv, a=math.sqrt(5))
        self.a_proj = nn.Linear(dim, h)
        self.b_proj = nn.Linear(dim, h)
        self.g_proj = nn.Linear(dim, dim)
        # Mamba2-style decay init: A ~ U(1, 16), dt ~ logU(1e-3, 1e-1), dt_bias = softplus^-1(dt)
        self.A_log = nn.Parameter(torch.empty(h).uniform_(1.0, 16.0).log())
        dt = torch.exp(torch.empty(h).uniform_(math.log(1e-3), math.log(1e-1))).clamp_min(1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.norm_weight = nn.Parameter(torch.ones(self.head_dim))
        self.out = nn.Linear(dim, dim)

    # ---- pieces shared by forward and forward_cached --------------------------------
    def _conv(self, p: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
        """Causal depthwise conv of p (B, T, 3D) with ``left`` (B, K-1, 3D) before it, then SiLU."""
        z = torch.cat([left, p], dim=1).transpose(1, 2)  # (B, 3D, K-1+T)
        return F.silu(F.conv1d(z, self.conv, groups=z.shape[1])).transpose(1, 2)  # (B, T, 3D)

    def _heads(self, x: torch.Tensor, qkv: torch.Tensor, keep: Optional[torch.Tensor]):
        """q, k, v (B, H, T, Dh) fp32 (q, k normalised, q scaled), g and beta (B, H, T) fp32."""
        b, t, d = x.shape
        f = torch.float32
        q, k, v = qkv.float().view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
        q = F.normalize(q, dim=-1) * self.head_dim ** -0.5
        k = F.normalize(k, dim=-1)
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias.float())  # (B, T, H)
        beta = torch.sigmoid(self.b_proj(x).float())  # (B, T, H)
        if keep is not None:  # padded steps: no decay, no write
            g = g * keep[..., None].to(f)
            beta = beta * keep[..., None].to(f)
        return q, k, v, g.transpose(1, 2), beta.transpose(1, 2)

    def _output(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """RMSNorm(o) * silu(W_g x) per head, then the output projection. o (B, H, T, Dh) fp32."""
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * self.norm_weight.float()  # (B, H, T, Dh)
        o = self.merge_heads(o).to(x.dtype)  # (B, T, D)
        return self.out(o * F.silu(self.g_proj(x)))  # (B, T, D)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, causal: bool = True) -> torch.Tensor:
        b, n, d = x.shape  # (B, N, D); always causal (causal_only)
        p = self.qkv(x)  # (B, N, 3D)
        if mask is not None:
            p = p * mask[..., None].to(p.dtype)  # padded positions enter the convolution as zeros
        p = self._conv(p, p.new_zeros(b, self.conv_size - 1, 3 * d))  # (B, N, 3D)
        q, k, v, g, beta = self._heads(x, p, mask)
        o, _ = chunk_gated_delta_rule(q, k, v, g, beta, self.opts.chunk_size)  # (B, H, N, Dh)
        if self.training and self.dropout > 0:
            o = F.dropout(o, self.dropout)
        return self._output(x, o)

    def init_cache(self, batch: int, device=None, dtype=None) -> LayerCache:
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        return LayerCache(
            0,
            state=torch.zeros(batch, self.heads, self.head_dim, self.head_dim, device=device, dtype=torch.float32),
            conv=torch.zeros(batch, self.conv_size - 1, 3 * self.dim, device=device, dtype=dtype),
        )

    def forward_cached(self, x: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        t = x.shape[1]  # x (B, T, D)
        p = self.qkv(x)  # (B, T, 3D)
        left = cache["conv"].to(p.dtype)
        pc = self._conv(p, left)  # (B, T, 3D)
        q, k, v, g, beta = self._heads(x, pc, None)
        if t == 1:
            o, S = recurrent_gated_delta_rule(q, k, v, g, beta, cache["state"])  # (B, H, 1, Dh)
        else:
            o, S = chunk_gated_delta_rule(q, k, v, g, beta, self.opts.chunk_size, cache["state"])
        cache["state"] = S
        if self.conv_size > 1:
            cache["conv"] = torch.cat([left, p], dim=1)[:, -(self.conv_size - 1):].to(cache["conv"].dtype)
        cache.length += t
        return self._output(x, o)

    def cache_bytes(self, batch: int, context: int, bytes_per_value: int) -> int:
        """The fp32 state (d_k x d_v per head) plus the convolution's conv_size - 1 inputs."""
        return batch * (self.heads * self.head_dim * self.head_dim * 4
                        + (self.conv_size - 1) * 3 * self.dim * bytes_per_value)

    @classmethod
    def problems(cls, opts, *, seq_len, width, heads):
        out = []
        if opts.chunk_size < 1:
            out.append(("chunk_size", opts.chunk_size, "must be >= 1", "1..256"))
        if opts.conv_size < 1:
            out.append(("conv_size", opts.conv_size, "must be >= 1 (1 = no convolution window)", "1..8"))
        return out
