"""Linear (kernelized) attention: softmax(QK^T) replaced by a feature map, phi(Q) phi(K)^T.

Two feature maps:

* ``elu``: phi(x) = elu(x) + 1 (Katharopoulos et al. 2020, "Transformers are RNNs: Fast
  Autoregressive Transformers with Linear Attention"). A kernel of its own, not an
  approximation of softmax.
* ``favor``: FAVOR+ positive orthogonal random features (Choromanski et al. 2020, "Rethinking
  Attention with Performers"): phi(x) = exp(w_i . x' - |x'|^2 / 2) for ``features`` random
  directions w_i, x' = x / Dh^(1/4). Its expectation is the softmax kernel exp(q . k / sqrt(Dh)),
  so the layer approximates full attention and the error shrinks as ``features`` grows.

Per head, with phi_q, phi_k of width F (Dh for elu, ``features`` for favor)::

    y_i = phi(q_i)^T S / phi(q_i)^T z,    S = sum_j phi(k_j) v_j^T  (F x Dh),   z = sum_j phi(k_j)

so no N x N tensor exists and time and memory are linear in N. Padded keys get phi(k_j) = 0,
so they contribute nothing to S or z: padding never changes the outputs at real positions.

How it is computed (what makes it fast and small on a CPU): each batch element is processed in
chunks of consecutive tokens, in two passes (keys and values into the per-head state, then
the queries against it), so every operand is a contiguous 2-D slab (no head transposes are
copied, bias adds are fused into the GEMMs) and the temporaries stay about
``CHUNK_ELEMENTS`` floats whatever N is; only the (B, N, D) output grows with N. For the elu
map (F = Dh, so H F = D) both value and output projections are folded into the state: values
are never computed per token (``P_h = sum_j phi_h(k_j) x_j^T``, ``S_h = P_h W_v,h^T + z_h
b_v,h^T``), and ``sum_h (phi_q,h / den_h) S_h W_o,h^T + b_o = [phi_q,h / den_h]_h @ M + b_o``
with ``M = [S_h W_o,h^T]_h`` (D x D), so the read-out is a single N x D by D x D product, the
cost of one linear layer: 4 such products in all, against full attention's 4 projections plus
its 4 B H N^2 Dh attention FLOPs. The FAVOR+
stabilizers (a per-query max, and a running per-(batch, head) max over real keys, rescaling
the state as it grows) cancel exactly between numerator and denominator.

Random-feature redraw policy (favor): the directions are drawn once when the layer is built,
from torch's global generator (so a seed fixes them), and kept in a buffer that is saved with
the model, so evaluation and export use exactly the features the model was trained with.
With ``redraw_interval`` = n > 0 they are redrawn every n forward passes in training mode
(Performer's periodic redraw); never in eval mode. The default, 0, never redraws.

Half precision (bf16, fp16): the projections run in the input's dtype, the feature maps, the
state and the normalizer in fp32 (the state is a sum over every key, and FAVOR+'s normalizer of
a query far from all keys is below fp16's smallest normal number), and the output is cast back.
Without this, fp16 outputs were 0/0 = NaN or overflowed at widths of 64 and more.

Attention dropout does not apply (there are no attention weights to drop); the encoder's
residual dropout still applies.

Causal form (``forward(causal=True)``, Katharopoulos et al. 2020 section 3.4): y_i uses
S_i = sum_{j<=i} phi(k_j) v_j^T and z_i = sum_{j<=i} phi(k_j), computed in blocks of ``chunk``
tokens: inside a block the (chunk x chunk) masked products phi_q phi_k^T, across blocks the
running state, so memory stays linear in N. Decoding keeps that state, (F x Dh) plus z (F) per
head in fp32 (decode_cost "state"); a decoding step is the same routine on a block of one.
FAVOR+ stabilizers in the causal form: the per-query max as above, and for keys the constant
max_i |w_i|^2 / 2, an upper bound of every key exponent (w.x' - |x'|^2/2 <= |w|^2/2) that does
not depend on the data, so forward and decoding use the same features exactly (no running max
to rescale).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import nn

from . import register_attention
from .base import AttentionBase
from .cache import LayerCache

FEATURE_MAPS = ("elu", "favor")

#: floats in one chunk's feature tensor (c tokens x H heads x F features): 512K = 2 MB in fp32
CHUNK_ELEMENTS = 1 << 19


@dataclass
class LinearOptions:
    feature_map: str = "elu"  # elu (elu+1, Katharopoulos 2020) | favor (Performer FAVOR+)
    features: int = 256  # favor: random features per head (m); unused by elu
    redraw_interval: int = 0  # favor: redraw the features every n training passes; 0 = never
    chunk: int = 64  # causal form: tokens per block (intra-block products are chunk x chunk)


def orthogonal_gaussian(m: int, d: int, *, dtype=torch.float32) -> torch.Tensor:
    """(m, d) block-orthogonal Gaussian directions (Choromanski et al. 2020, section 2.4).

    Rows come in blocks of d exactly orthogonal directions (QR of a Gaussian matrix), each row
    rescaled by the norm of an independent d-dimensional Gaussian vector, so that every row is
    marginally N(0, I_d) while rows within a block stay orthogonal.
    """
    blocks = []
    for _ in range(math.ceil(m / d)):
        q, r = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))  # sign fix: makes q Haar-distributed (Mezzadri 2007)
        blocks.append(q.T)  # rows orthonormal, isotropic
    w = torch.cat(blocks, 0)[:m]  # (m, d)
    norms = torch.randn(m, d, dtype=torch.float64).norm(dim=1, keepdim=True)  # chi(d)
    return (w * norms).to(dtype)


def favor_exponent(x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """FAVOR+ exponents w_i . x' - |x'|^2 / 2 with x' = x / Dh^(1/4) (Choromanski et al. 2020).

    x (c, H, Dh) contiguous, omega (m, Dh) -> (c, H, m). phi(x) = exp(exponent - const) for any
    constant that cancels in the attention's ratio (see the stabilizers in ``forward``).
    """
    s = x.shape[-1] ** -0.25
    dash = torch.matmul(x, omega.t() * s)  # (c, H, m)  w . x'
    half_sq = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square().mul_(0.5 * s * s)  # (c, H, 1)
    return dash.sub_(half_sq)  # (c, H, m)


class EluPlusOne(torch.autograd.Function):
    """phi(x) = elu(x) + 1 = exp(min(x, 0)) + max(x, 0), the map of Katharopoulos et al. 2020.

    Same values as ``F.elu(x) + 1``, but about 25% faster on CPU (torch's elu kernel is slow
    there), and it saves only its output for backward: d phi / dx = min(phi, 1).
    """

    @staticmethod
    def forward(ctx, x):
        neg = x.clamp(max=0)  # min(x, 0)
        phi = torch.exp(neg).add_(x).sub_(neg)  # exp(min(x, 0)) + max(x, 0)
        ctx.save_for_backward(phi)
        return phi

    @staticmethod
    def backward(ctx, grad):
        (phi,) = ctx.saved_tensors
        return grad * phi.clamp(max=1)


def chunk_len(n: int, h: int, f: int) -> int:
    """Tokens per chunk, so that a chunk's features (c, H, F) hold about CHUNK_ELEMENTS floats."""
    return max(1, min(n, CHUNK_ELEMENTS // max(1, h * f)))


@register_attention("linear")
class LinearAttention(AttentionBase):
    """Kernelized attention (Katharopoulos et al. 2020; Performer FAVOR+, Choromanski et al. 2020)."""

    options = LinearOptions
    subquadratic = True
    supports_causal = True
    decode_cost = "state"

    def __init__(self, dim, heads, opts=None, **kw):
        super().__init__(dim, heads, opts, **kw)
        self.qkv = nn.Linear(dim, 3 * dim)  # rows [W_q; W_k; W_v]
        self.out = nn.Linear(dim, dim)
        self._calls = 0  # training passes seen (for the favor redraw policy)
        if self.opts.feature_map == "favor":
            self.register_buffer("omega", orthogonal_gaussian(self.opts.features, self.head_dim))  # (m, Dh)
        else:
            self.omega = None

    @torch.no_grad()
    def redraw_features(self) -> None:
        """Draw fresh FAVOR+ directions (from torch's global generator)."""
        if self.omega is not None:
            self.omega.copy_(orthogonal_gaussian(self.omega.shape[0], self.head_dim, dtype=self.omega.dtype))

    # ---- causal form and decoding ---------------------------------------------------
    def _features(self, x: torch.Tensor, mask: Optional[torch.Tensor]):
        """phi(q), phi(k) (B, H, T, F) and v (B, H, T, Dh), fp32; padded keys get phi = 0."""
        b, t, d = x.shape
        acc = torch.float32
        q, k, v = self.qkv(x).to(acc).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
        if self.opts.feature_map == "favor":
            omega = self.omega.to(acc)  # (m, Dh)
            eq = favor_exponent(q.contiguous(), omega)  # (B, H, T, m)
            ek = favor_exponent(k.contiguous(), omega)
            phq = torch.exp(eq - eq.detach().amax(dim=-1, keepdim=True))  # per-query max: cancels
            phk = torch.exp(ek - 0.5 * omega.square().sum(-1).amax())  # data-free bound: <= 1
        else:
            phq, phk = EluPlusOne.apply(q), EluPlusOne.apply(k)  # (B, H, T, Dh)
        if mask is not None:
            phk = phk * mask[:, None, :, None].to(acc)
        return phq, phk, v

    def _causal(self, phq, phk, v, S, z):
        """Blocked causal linear attention from state S (B, H, F, Dh), z (B, H, F).
        Returns (B, H, T, Dh) and the new S, z."""
        t = phq.shape[2]
        c = max(1, min(self.opts.chunk, t))
        tri = torch.ones(c, c, dtype=torch.bool, device=phq.device).tril()
        outs = []
        for s0 in range(0, t, c):
            s1 = min(t, s0 + c)
            pq, pk, vc = phq[:, :, s0:s1], phk[:, :, s0:s1], v[:, :, s0:s1]  # (B, H, c, .)
            a = (pq @ pk.transpose(-1, -2)).masked_fill(~tri[:s1 - s0, :s1 - s0], 0.0)  # (B, H, c, c)
            num = a @ vc + pq @ S  # (B, H, c, Dh)
            den = a.sum(-1) + (pq * z[:, :, None, :]).sum(-1)  # (B, H, c)
            outs.append(num / den.clamp_min(torch.finfo(den.dtype).tiny)[..., None])
            S = S + pk.transpose(-1, -2) @ vc  # (B, H, F, Dh)
            z = z + pk.sum(2)  # (B, H, F)
        return torch.cat(outs, dim=2), S, z  # (B, H, T, Dh)

    def _nfeatures(self) -> int:
        return self.opts.features if self.opts.feature_map == "favor" else self.head_dim

    def _read_out(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        return self.out(self.merge_heads(o).to(x.dtype))  # (B, T, D)

    def init_cache(self, batch: int, device=None, dtype=None) -> LayerCache:
        f = self._nfeatures()
        return LayerCache(0, S=torch.zeros(batch, self.heads, f, self.head_dim, device=device, dtype=torch.float32),
                          z=torch.zeros(batch, self.heads, f, device=device, dtype=torch.float32))

    def forward_cached(self, x: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        phq, phk, v = self._features(x, None)
        o, cache["S"], cache["z"] = self._causal(phq, phk, v, cache["S"], cache["z"])  # (B, H, T, Dh)
        cache.length += x.shape[1]
        return self._read_out(x, o)

    def cache_bytes(self, batch: int, context: int, bytes_per_value: int) -> int:
        """The fp32 state S (F x Dh) and normalizer z (F) per head, whatever the context."""
        f = self._nfeatures()
        return batch * self.heads * (f * self.head_dim + f) * 4

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        b, n, d = x.shape  # (B, N, D)
        h, dh = self.heads, self.head_dim
        favor = self.opts.feature_map == "favor"
        if favor and self.training and self.opts.redraw_interval > 0:
            if self._calls > 0 and self._calls % self.opts.redraw_interval == 0:
                self.redraw_features()
            self._calls += 1
        if causal:
            phq, phk, v = self._features(x, mask)  # (B, H, N, F), (B, H, N, Dh)
            f = phq.shape[-1]
            S = phq.new_zeros(b, h, f, dh)
            o, _, _ = self._causal(phq, phk, v, S, phq.new_zeros(b, h, f))  # (B, H, N, Dh)
            return self._read_out(x, o)  # (B, N, D)
        # feature maps, state and normalizer in fp32 for half-precision inputs (see the module doc)
        acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        omega = self.omega.to(acc) if favor else None  # (m, Dh)
        f = omega.shape[0] if favor else dh  # features per head
        w, bias = self.qkv.weight, self.qkv.bias  # (3D, D), (3D,)
        wq, wk = w[:d].t(), w[d:2 * d].t()  # 2 x (D, D), the input's dtype
        bq, bk = bias[:d], bias[d:2 * d]  # 2 x (D,)
        wv, bv = w[2 * d:].t().to(acc), bias[2 * d:].to(acc)  # (D, D), (D,): values enter the state
        wo_t, bo = self.out.weight.t().to(acc), self.out.bias.to(acc)  # (D, D), (D,)
        c = chunk_len(n, h, f)
        chunks = [(s, min(n, s + c)) for s in range(0, n, c)]
        grad = torch.is_grad_enabled()
        y = None if grad else x.new_empty(b, n, d)  # (B, N, D), written chunk by chunk
        rows: List[torch.Tensor] = []

        # fold W_v into the state when that is cheaper (elu: H*F = D): with P_h = sum_j phi_h(k_j) x_j^T
        # (F x D), S_h = P_h W_v,h^T + z_h b_v,h^T, so values are never computed token by token
        fold_v = h * f <= d
        # split once (unbind, split): their backward is one stack/cat, where slicing x[bi, s0:s1]
        # in the loops would give every slice a full-size (B, N, D) gradient, O(N^2) in total
        for bi, x_b in enumerate(x.unbind(0)):
            x_chunks = x_b.split(c, dim=0)  # (c, D) views
            # pass 1, keys (and values) -> per-head state: S (H, F, Dh) or P (H, F, D); z (H, F)
            s_st = z_st = run = None  # run: favor's running max of real-key exponents, (H,)
            for (s0, s1), xc in zip(chunks, x_chunks):  # xc: (c, D) contiguous
                k = torch.addmm(bk, xc, wk).to(acc)  # (c, D)
                xc = xc.to(acc)
                keep = None if mask is None else mask[bi, s0:s1]  # (c,)
                scale = None
                if favor:
                    e = favor_exponent(k.view(-1, h, dh), omega)  # (c, H, m)
                    if keep is not None:
                        e = e.masked_fill(~keep[:, None, None], float("-inf"))  # padded keys: phi = 0
                    top = e.detach().amax(dim=(0, 2))  # (H,)
                    new = top if run is None else torch.maximum(run, top)
                    new = torch.where(torch.isinf(new), torch.zeros_like(new), new)  # only padding so far
                    if run is not None:
                        scale = torch.exp(run - new)  # (H,): rescales the earlier chunks' state
                    run = new
                    phi = torch.exp(e - new[None, :, None])  # (c, H, m), at most 1
                else:
                    phi = EluPlusOne.apply(k).view(-1, h, dh)  # (c, H, Dh)
                    if keep is not None:
                        phi = phi * keep[:, None, None].to(phi.dtype)  # padded keys: phi = 0
                phi_t = phi.permute(1, 2, 0)  # (H, F, c) strided view
                if fold_v:
                    si = torch.mm(phi.view(-1, h * f).t(), xc).view(h, f, d)  # (H, F, D)  P_h
                else:
                    v = torch.addmm(bv, xc, wv).view(-1, h, dh).transpose(0, 1)  # (H, c, Dh) strided view
                    si = torch.bmm(phi_t, v)  # (H, F, Dh)  S_h = sum_j phi(k_j) v_j^T
                zi = phi_t.sum(-1)  # (H, F)
                if s_st is None:
                    s_st, z_st = si, zi
                elif scale is not None:
                    s_st = torch.addcmul(si, s_st, scale[:, None, None])
                    z_st = torch.addcmul(zi, z_st, scale[:, None])
                else:
                    s_st, z_st = s_st + si, z_st + zi
            if fold_v:  # S_h = P_h W_v,h^T + z_h b_v,h^T
                s_st = torch.baddbmm(z_st[:, :, None] * bv.view(h, 1, dh), s_st, wv.view(d, h, dh).transpose(0, 1))
            # den_h = phi_q,h . z_h for all heads at once: phi_q (c, H*F) @ zblock (H*F, H)
            zblock = torch.block_diag(*z_st[:, :, None])  # (H*F, H)
            if f <= dh:  # elu: fold W_o into the state, M = [S_h W_o,h^T]_h  (H*F, D)
                m_st = torch.bmm(s_st, wo_t.view(h, dh, d)).reshape(h * f, d)

            # pass 2, queries against the state
            outs: List[torch.Tensor] = []
            for (s0, s1), xc in zip(chunks, x_chunks):  # xc: (c, D)
                q = torch.addmm(bq, xc, wq).to(acc)  # (c, D)
                if favor:
                    e = favor_exponent(q.view(-1, h, dh), omega)  # (c, H, m)
                    phi = torch.exp(e - e.detach().amax(dim=-1, keepdim=True)).view(-1, h * f)  # (c, H*m), row max 1
                else:
                    phi = EluPlusOne.apply(q)  # (c, H*Dh)
                den = torch.mm(phi, zblock).clamp_min(torch.finfo(acc).tiny)  # (c, H)
                a = (phi.view(-1, h, f) / den[:, :, None]).view(-1, h * f)  # (c, H*F)
                dst = None if grad or acc != x.dtype else y[bi, s0:s1]  # (c, D) contiguous slice of the output
                if f <= dh:
                    o = torch.addmm(bo, a, m_st, out=dst) if dst is not None else torch.addmm(bo, a, m_st)  # (c, D)
                else:
                    num = torch.bmm(a.view(-1, h, f).transpose(0, 1), s_st)  # (H, c, Dh)
                    num = num.transpose(0, 1).reshape(-1, d)  # (c, D)
                    o = torch.addmm(bo, num, wo_t, out=dst) if dst is not None else torch.addmm(bo, num, wo_t)  # (c, D)
                if dst is None and not grad:
                    y[bi, s0:s1] = o  # cast back to the input's dtype
                outs.append(o)
            if grad:
                rows.append(torch.cat(outs, 0) if len(outs) > 1 else outs[0])  # (N, D)
        return torch.stack(rows, 0).to(x.dtype) if grad else y  # (B, N, D)

    @classmethod
    def problems(cls, opts, *, seq_len, width, heads):
        out = []
        if opts.feature_map not in FEATURE_MAPS:
            out.append(("feature_map", opts.feature_map, "unknown feature map", list(FEATURE_MAPS)))
        if opts.features < 1:
            out.append(("features", opts.features, "must be >= 1", ">= 1"))
        if opts.redraw_interval < 0:
            out.append(("redraw_interval", opts.redraw_interval, "must be >= 0", ">= 0 (0 = never redraw)"))
        if opts.chunk < 1:
            out.append(("chunk", opts.chunk, "must be >= 1", "1..256"))
        return out
