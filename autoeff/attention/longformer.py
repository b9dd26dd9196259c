"""Longformer (Beltagy et al. 2020, "Longformer: The Long-Document Transformer").

Each token attends to a sliding window of ``window // 2`` neighbours on each side, optionally
dilated (neighbours ``dilation`` positions apart), plus the first ``global_tokens`` positions
(position 0 is the CLS token in our models), which attend to every token and are attended by
every token. Cost O(N (window + g)) instead of O(N^2).

How it is computed, without any N x N tensor (nor an N x window one for the whole sequence),
by the chunked kernel in ``_window.py``:

* Q, K and V are projected straight into zero-padded (B, rows, D) buffers. A sequence (batch
  b, head h, dilation residue r) is the rows r, r+d, r+2d, ... at columns h*Dh..(h+1)*Dh of
  them: a strided view, so nothing is packed or transposed, and dilation is a row stride.
* Each sequence is cut into chunks of c queries; the keys of chunk t are the rows
  [t*c - W, t*c + c + W) (W = window // 2 rounded up to whole chunks), an overlapping
  ``as_strided`` view. A block of chunks is scored with one batched matmul on views into one
  reused score buffer; the exact band |i - j| <= window // 2 and the padding mask are additive
  biases; the output is written in place (in inference over the block's own queries, so the
  peak is the Q, K, V buffers plus one block of scores).
* The window kernel also returns each query's log-sum-exp, through which its attention is
  merged with the attention to the g global keys (an exact joint softmax, computed for all
  queries at once); the global queries' rows are ``scaled_dot_product_attention`` over all keys.
* :class:`_WindowAttention` is a custom autograd Function that recomputes the block scores in
  backward (as FlashAttention does), so training memory is linear in N too.
* The sequences are shared out among worker threads that run single-threaded ops, so the many
  small ops of the kernel cost no OpenMP barriers (see :class:`_Workers`).

The same chunked kernel, :func:`window_attention`, serves Reformer's LSH attention (chunk plus
the previous chunk, after sorting by bucket); see ``reformer.py``.

Causal form (``forward(causal=True)``, a decoder): Longformer's pattern restricted to j <= i,
i.e. the window // 2 left neighbours (dilated) and the query itself, plus the global prefix
(the first ``global_tokens`` positions stay causal as a prefix: every later token sees them,
and they see only what precedes them). Computed blockwise in plain PyTorch (``_local.py``, no
N x N tensor); q and k rotated by ``rotary`` when a decoder sets it (the bidirectional kernel
ignores rotary: encoders have none). Decoding keeps the global prefix's keys and values plus a
rolling window of the last (window // 2) * dilation + 1 positions (decode_cost "window").

The paper uses a second set of projections for global attention; here the global and the
sliding-window attention share the layer's projections, so a window covering the whole
sequence is exactly full attention with the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import register_attention
from ._window import WindowSpec, needs_autograd, neg_value, window_attention
from ._local import cached_local_step, local_attention
from ._traceable import longformer_attention, masked_valid
from .base import AttentionBase
from .cache import LayerCache


# ---------------------------------------------------------------------------------------
# Longformer
# ---------------------------------------------------------------------------------------
@dataclass
class LongformerOptions:
    window: int = 128  # total span: window // 2 neighbours on each side
    global_tokens: int = 1  # the first g positions attend to all and are attended by all
    dilation: int = 1  # gap between window neighbours


def _chunk_size(w2: int, n: int) -> int:
    """Queries per chunk: 64 keeps the matmuls efficient and the band waste low (L/(2w+1))."""
    c = 64 if w2 >= 48 else max(16, 1 << max(0, (w2 - 1).bit_length()))
    return max(1, min(c, n))


@register_attention("longformer")
class LongformerAttention(AttentionBase):
    options = LongformerOptions
    subquadratic = True
    supports_causal = True
    decode_cost = "window"

    def __init__(self, dim, heads, opts=None, **kw):
        super().__init__(dim, heads, opts, **kw)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def _project(self, x: torch.Tensor, i: int, rows: int, front: int) -> torch.Tensor:
        """Projection i (0 q, 1 k, 2 v) of x (B, N, D) into a zero-padded (B, rows, D) buffer,
        the N real rows starting at row ``front`` (no autograd: written in place)."""
        b, n, d = x.shape
        w = self.qkv.weight[i * d:(i + 1) * d]
        bias = self.qkv.bias[i * d:(i + 1) * d]
        buf = x.new_empty(b, rows, d)
        if rows == n:
            torch.addmm(bias, x.reshape(b * n, d), w.t(), out=buf.view(b * n, d))
        else:
            for bi in range(b):
                torch.addmm(bias, x[bi], w.t(), out=buf[bi, front:front + n])
            buf[:, :front].zero_()
            buf[:, front + n:].zero_()
        return buf

    # ---- causal form and decoding ---------------------------------------------------
    def _reach(self) -> int:
        return (self.opts.window // 2) * max(1, self.opts.dilation)

    def _qkv_heads(self, x: torch.Tensor):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
        return q, k, v

    def _forward_causal(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        q, k, v = self._qkv_heads(x)  # (B, H, N, Dh)
        q, k = self.rope(q, k, 0)
        y = local_attention(q, k, v, reach=self._reach(), dilation=max(1, self.opts.dilation),
                            n_global=max(0, self.opts.global_tokens), causal=True, key_mask=mask,
                            dropout=self.dropout if self.training else 0.0)  # (B, H, N, Dh)
        return self.out(self.merge_heads(y))  # (B, N, D)

    def init_cache(self, batch: int, device=None, dtype=None) -> LayerCache:
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        empty = torch.zeros(batch, self.heads, 0, self.head_dim, device=device, dtype=dtype)
        return LayerCache(0, k=empty, v=empty.clone(), gk=None, gv=None)

    def forward_cached(self, x: torch.Tensor, cache: LayerCache) -> torch.Tensor:
        q, k, v = self._qkv_heads(x)  # (B, H, T, Dh)
        q, k = self.rope(q, k, cache.length)
        y = cached_local_step(q, k, v, cache, reach=self._reach(), dilation=max(1, self.opts.dilation),
                              n_global=max(0, self.opts.global_tokens))  # (B, H, T, Dh)
        return self.out(self.merge_heads(y))  # (B, T, D)

    def cache_bytes(self, batch: int, context: int, bytes_per_value: int) -> int:
        rows = min(context, self._reach() + 1) + min(context, max(0, self.opts.global_tokens))
        return 2 * batch * self.heads * self.head_dim * rows * bytes_per_value

    # ---- the traceable formulation (export: _traceable.py) ----------------------------
    exporting = False  # set by attention._traceable.export_mode

    def enter_export(self) -> None:
        self.exporting = True

    def exit_export(self) -> None:
        self.__dict__.pop("exporting", None)

    def _forward_traceable(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The bidirectional attention of :meth:`forward` in a form torch.export traces."""
        b, n, d = x.shape  # (B, N, D)
        h, dh = self.heads, self.head_dim
        dil = max(1, self.opts.dilation)
        nd = -(-n // dil)
        w2 = max(0, min(self.opts.window // 2, nd - 1))
        q, k, v = self.qkv(x).view(b, n, 3, h, dh).unbind(2)  # 3 x (B, N, H, Dh)
        y = longformer_attention(q, k, v, masked_valid(mask, b, n, x.device), w2=w2, c=_chunk_size(w2, nd),
                                 dil=dil, g=max(0, min(self.opts.global_tokens, n)),
                                 neg=neg_value(x.dtype))  # (B, N, H, Dh)
        return self.out(y.reshape(b, n, d))  # (B, N, D)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        if causal:
            return self._forward_causal(x, mask)
        if self.exporting:
            return self._forward_traceable(x, mask)
        b, n, d = x.shape  # (B, N, D)
        h, dh = self.heads, self.head_dim
        dil = max(1, self.opts.dilation)
        g = max(0, min(self.opts.global_tokens, n))
        nd = -(-n // dil)  # length of each dilated sequence (positions r, r+d, r+2d, ...)
        w2 = max(0, min(self.opts.window // 2, nd - 1))  # neighbours on each side
        c = _chunk_size(w2, nd)
        mc = -(-nd // c)  # chunks per sequence
        np_ = mc * c
        wpad = -(-w2 // c) * c  # half window rounded up to whole chunks
        L = c + 2 * wpad
        nq, nk = dil * np_, dil * (np_ + 2 * wpad)  # rows of the query / key buffers
        neg = neg_value(x.dtype)
        fast = not needs_autograd(self, x)  # no graph to build: work in place
        x = x.contiguous()

        # projections into zero-padded buffers in the natural layout; position p is query row p
        # and key row dil*wpad + p, head h is columns h*Dh..(h+1)*Dh
        if fast:  # straight into the buffers, one at a time
            qb = self._project(x, 0, nq, 0)  # (B, nq, D)
            kb = self._project(x, 1, nk, dil * wpad)  # (B, nk, D)
            vb = self._project(x, 2, nk, dil * wpad)  # (B, nk, D)
        else:  # autograd: one projection at a time too
            w, bias = self.qkv.weight, self.qkv.bias
            qb = F.linear(x, w[:d], bias[:d])  # (B, N, D)
            qb = qb if nq == n else F.pad(qb, (0, 0, 0, nq - n))  # (B, nq, D)
            kb = F.pad(F.linear(x, w[d:2 * d], bias[d:2 * d]), (0, 0, dil * wpad, nk - n - dil * wpad))  # (B, nk, D)
            vb = F.pad(F.linear(x, w[2 * d:], bias[2 * d:]), (0, 0, dil * wpad, nk - n - dil * wpad))

        # one sequence per (batch, head, residue r): rows r, r + dil, ... in steps of dil rows
        q_off, k_off, kb_of = [], [], []
        for bi in range(b):
            for hi in range(h):
                for r in range(dil):
                    q_off.append(bi * nq * d + r * d + hi * dh)
                    k_off.append(bi * nk * d + r * d + hi * dh)
                    kb_of.append(bi * dil + r)

        # per-key bias in the dilated layout: real, unmasked and not global (those come apart)
        valid = torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask.to(torch.bool)
        key_ok = F.pad(valid, (0, nq - n), value=False)  # (B, nq)
        key_ok[:, :g] = False
        kbias = torch.zeros(b, np_, dil, dtype=x.dtype, device=x.device)
        kbias.masked_fill_(~key_ok.view(b, np_, dil), neg)
        kbias = F.pad(kbias.transpose(1, 2), (wpad, wpad), value=neg).unfold(-1, L, c)  # (B, d, Mc, L)
        kbias = kbias.reshape(b * dil, mc, 1, L)
        i = torch.arange(c, device=x.device)[:, None]
        j = torch.arange(L, device=x.device)[None, :]
        band = torch.zeros(c, L, dtype=x.dtype, device=x.device).masked_fill_((j - wpad - i).abs() > w2, neg)
        spec = WindowSpec(
            c=c, L=L, chunks=mc, dh=dh, scale=dh ** -0.5, band=band,
            q_off=q_off, o_off=q_off, k_off=k_off, q_rs=dil * d, o_rs=dil * d, k_rs=dil * d,
            o_shape=(b, nq, d), kbias=kbias, kb_of=kb_of,
            dropout=self.dropout if self.training else 0.0,
        )
        if spec.dropout > 0:
            spec.seed = int(torch.randint(0, 2**62, (1,)).item())
        og = sg = None
        if g:
            # the global queries attend to every key
            qg = qb[:, :g].view(b, g, h, dh).transpose(1, 2)  # (B, H, g, Dh)
            kall = kb[:, dil * wpad:dil * wpad + n].view(b, n, h, dh).transpose(1, 2)  # (B, H, N, Dh)
            vall = vb[:, dil * wpad:dil * wpad + n].view(b, n, h, dh).transpose(1, 2)
            allb = torch.zeros(b, 1, 1, n, dtype=x.dtype, device=x.device).masked_fill_(~valid[:, None, None], neg)
            og = F.scaled_dot_product_attention(
                qg, kall, vall, attn_mask=allb, dropout_p=spec.dropout)  # (B, H, g, Dh)
            og = og.transpose(1, 2).reshape(b, g, d)  # (B, g, D)
            # every query against the global keys: (B, N, H, g), merged after the window part
            kg = kall[:, :, :g].clone()  # (B, H, g, Dh), copies: the buffers can go early
            vg = vall[:, :, :g].transpose(1, 2).clone()  # (B, g, H, Dh)
            sg = torch.stack([torch.bmm(qb[bi, :n].view(n, h, dh).transpose(0, 1), kg[bi].transpose(1, 2))
                              for bi in range(b)])  # (B, H, N, g)
            sg = (sg * spec.scale + allb[:, :, :, :g]).permute(0, 2, 1, 3)  # (B, N, H, g)
            del qg, kall, vall  # views: they would keep the buffers alive
        # the window part (global keys excluded by the key bias); in inference each chunk's
        # output overwrites its own queries (read just before)
        spec.o_inplace = fast
        o, lse = window_attention(qb, kb, vb, spec, want_lse=g > 0)  # (B, nq, D), (B*H*d, Np, 1)
        del qb, kb, vb  # free the buffers before the output projection
        y = o[:, :n]  # (B, N, D)
        if g:
            # joint softmax over window + global keys, from the two log-sum-exps
            lw = lse.view(b, h, dil, np_).permute(0, 3, 2, 1).reshape(b, nq, h)[:, :n]  # (B, N, H)
            lg = sg.logsumexp(-1) if g > 1 else sg[..., 0]  # (B, N, H)
            pg = torch.sigmoid(lg - lw)[..., None]  # (B, N, H, 1) weight of the global keys
            pg = pg * sg.softmax(-1) if g > 1 else pg  # (B, N, H, g)
            if spec.dropout > 0:
                pg = F.dropout(pg, spec.dropout)
            keep = torch.sigmoid(lw - lg)[..., None]  # (B, N, H, 1) weight of the window
            yh = y.view(b, n, h, dh)  # (B, N, H, Dh)
            if fast:
                yh.mul_(keep)
                for i in range(g):
                    yh.addcmul_(pg[..., i:i + 1], vg[:, i:i + 1])  # (B, N, H, 1) x (B, 1, H, Dh)
                o[:, :g] = og
            else:
                yh = yh * keep
                for i in range(g):
                    yh = torch.addcmul(yh, pg[..., i:i + 1], vg[:, i:i + 1])
                y = torch.cat([og, yh.reshape(b, n, d)[:, g:]], dim=1)  # (B, N, D)
        return self.out(y)  # (B, N, D)

    @classmethod
    def problems(cls, opts, *, seq_len, width, heads):
        out = []
        if opts.window < 2:
            out.append(("window", opts.window, "must be >= 2 (window // 2 neighbours on each side)",
                        f"2..{seq_len}"))
        elif opts.window > seq_len:
            out.append(("window", opts.window, f"window is longer than the sequence length ({seq_len})",
                        f"2..{seq_len}"))
        if opts.global_tokens < 0:
            out.append(("global_tokens", opts.global_tokens, "must be >= 0", f"0..{seq_len}"))
        elif opts.global_tokens > seq_len:
            out.append(("global_tokens", opts.global_tokens,
                        f"more global tokens than the sequence length ({seq_len})", f"0..{seq_len}"))
        if opts.dilation < 1:
            out.append(("dilation", opts.dilation, "must be >= 1", "1.."))
        elif 2 <= opts.window <= seq_len and opts.window * opts.dilation > seq_len:
            most = max(1, seq_len // opts.window)
            out.append(("dilation", opts.dilation,
                        f"the dilated window ({opts.window} x {opts.dilation}) spans more than the sequence "
                        f"length ({seq_len})", f"1..{most}"))
        return out
