"""Traceable formulations for export: the same attention as the fast eager kernels, written so
that ``torch.export`` can trace it (static shapes, no data-dependent control flow, no
``int(tensor)``, no worker threads) and every operator has an ONNX translation.

The eager kernels stay the training and measuring path. :func:`export_mode` switches the
families of one model to their traceable form for as long as it is held (the ONNX exporter and
the MLflow registry enter it around ``torch.export``)::

    with export_mode(model):
        program = torch.export.export(model, (x, mask))

A family takes part by defining ``enter_export()`` / ``exit_export()`` (which set
``self.exporting`` and prepare what tracing cannot compute, e.g. Reformer's random rotations as
a buffer); families that trace as they are need nothing.

The two formulations (tested equal to the eager kernels, tests/attention/test_traceable.py):

* Longformer (Beltagy et al. 2020): the sequence (per dilation residue) cut into chunks of c
  queries, each chunk's keys gathered with one constant index (its rows [t*c - W, t*c + c + W)),
  the exact band and the padding as the same additive biases as the eager kernel, the global
  keys' scores concatenated to the window scores (one joint softmax), the global queries by
  ``scaled_dot_product_attention`` over all keys. O(N (c + 2W)) memory, no N x N tensor.
* Reformer (Kitaev et al. 2020): hashing with the module's fixed rotations (a buffer while
  exporting), ``argsort`` of (bucket, position), sorted rows gathered, each chunk against itself
  and the previous chunk, the duplicate-key correction -log N_ij computed from every round's
  chunk of every position, rounds merged by their log-sum-exps after un-sorting by gather.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn


@contextlib.contextmanager
def export_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every attention module of ``model`` that has a traceable formulation
    computes with it (``module.exporting`` is True); restored on exit."""
    entered = []
    try:
        for m in model.modules():
            if callable(getattr(m, "enter_export", None)):
                m.enter_export()
                entered.append(m)
        yield model
    finally:
        for m in reversed(entered):
            m.exit_export()


def window_index(chunks: int, c: int, length: int, device) -> torch.Tensor:
    """(chunks, length) rows of chunk t's key window: t*c .. t*c + length - 1 (a constant)."""
    return (torch.arange(chunks, device=device)[:, None] * c
            + torch.arange(length, device=device)[None, :])  # (Mc, L)


def longformer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor, *,
                         w2: int, c: int, dil: int, g: int, neg: float) -> torch.Tensor:
    """Longformer's bidirectional attention (band |i - j| <= w2 in dilated steps, plus g global
    tokens), traceable. q, k, v (B, N, H, Dh) projections; valid (B, N) bool. The geometry (c
    queries per chunk, w2 neighbours per side) is the eager kernel's. Returns (B, N, H, Dh)."""
    b, n, h, dh = q.shape
    dev = q.device
    nd = -(-n // dil)
    mc = -(-nd // c)
    np_ = mc * c
    nq = dil * np_
    wpad = -(-w2 // c) * c
    L = c + 2 * wpad
    scale = dh ** -0.5

    def dilated(t: torch.Tensor) -> torch.Tensor:  # (B, N, H, Dh) -> (B, H, dil, Np, Dh)
        t = F.pad(t, (0, 0, 0, 0, 0, nq - n))  # (B, nq, H, Dh)
        return t.view(b, np_, dil, h, dh).permute(0, 3, 2, 1, 4)  # (B, H, dil, Np, Dh)

    idx = window_index(mc, c, L, dev)  # (Mc, L)
    qc = dilated(q).reshape(b, h, dil, mc, c, dh)  # (B, H, dil, Mc, c, Dh)
    kw = F.pad(dilated(k), (0, 0, wpad, wpad))[:, :, :, idx]  # (B, H, dil, Mc, L, Dh)
    vw = F.pad(dilated(v), (0, 0, wpad, wpad))[:, :, :, idx]  # (B, H, dil, Mc, L, Dh)

    # the eager kernel's additive biases: the band, then real non-global keys
    i = torch.arange(c, device=dev)[:, None]
    j = torch.arange(L, device=dev)[None, :]
    zero = torch.zeros((), dtype=q.dtype, device=dev)
    band = torch.where((j - wpad - i).abs() > w2, zero + neg, zero)  # (c, L)
    key_ok = F.pad(valid, (0, nq - n), value=False) & (torch.arange(nq, device=dev) >= g)  # (B, nq)
    kb = torch.where(key_ok, zero, zero + neg).view(b, np_, dil).transpose(1, 2)  # (B, dil, Np)
    kbias = F.pad(kb, (wpad, wpad), value=neg)[:, :, idx]  # (B, dil, Mc, L)
    s = torch.matmul(qc, kw.transpose(-1, -2)) * scale + band  # (B, H, dil, Mc, c, L)
    s = s + kbias[:, None, :, :, None, :]
    allb = torch.where(valid, zero, zero + neg)[:, None, None, :]  # (B, 1, 1, N)
    if not g:
        p = s.softmax(-1)
        o = torch.matmul(p, vw)  # (B, H, dil, Mc, c, Dh)
    else:
        kg, vg = k[:, :g].transpose(1, 2), v[:, :g].transpose(1, 2)  # (B, H, g, Dh)
        sg = torch.matmul(qc.reshape(b, h, nq, dh), kg.transpose(-1, -2)) * scale  # (B, H, nq, g)
        sg = (sg + allb[..., :g]).view(b, h, dil, mc, c, g)
        p = torch.cat([s, sg], -1).softmax(-1)  # (B, H, dil, Mc, c, L + g): one joint softmax
        o = torch.matmul(p[..., :L], vw) + torch.matmul(p[..., L:], vg[:, :, None, None])  # (B, H, dil, Mc, c, Dh)
    y = o.reshape(b, h, dil, np_, dh).permute(0, 3, 2, 1, 4).reshape(b, nq, h, dh)[:, :n]  # (B, N, H, Dh)
    if g:
        # the global queries attend to every key
        og = F.scaled_dot_product_attention(q[:, :g].transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                            attn_mask=allb)  # (B, H, g, Dh)
        y = torch.cat([og.transpose(1, 2), y[:, g:]], 1)  # (B, N, H, Dh)
    return y


def lsh_buckets(qk: torch.Tensor, rot: torch.Tensor, heads: int, rounds: int, n_buckets: int) -> torch.Tensor:
    """Angular LSH h(x) = argmax([xR; -xR]) of the shared queries/keys qk (B, N, D) with the
    rotations rot (H, Dh, R * nb/2), as ``ReformerAttention.buckets`` computes it, in one matmul
    (no loop over row blocks). Returns (B, H, R, N) int64."""
    b, n, d = qk.shape
    dh, half = d // heads, n_buckets // 2
    rows = qk.reshape(b * n, heads, dh).transpose(0, 1)  # (H, B*N, Dh)
    proj = torch.matmul(rows, rot).view(heads, b * n, rounds, half)  # (H, B*N, R, nb/2)
    vmax, imax = proj.max(-1)
    vmin, imin = proj.min(-1)
    out = torch.where(vmax >= -vmin, imax, imin + half)  # (H, B*N, R)
    return out.view(heads, b, n, rounds).permute(1, 0, 3, 2)  # (B, H, R, N)


def reformer_attention(qk: torch.Tensor, v: torch.Tensor, perm: torch.Tensor, valid: torch.Tensor, *,
                       c: int, neg: float) -> torch.Tensor:
    """Reformer's bidirectional LSH attention after hashing, traceable: every round's sorted
    order ``perm`` (B, H, R, Np) (positions in (bucket, position) order, Np = chunks * c); each
    chunk of c sorted queries attends to itself and the previous chunk (shared QK: keys are the
    unit queries, a query is its unit key times its norm; itself only as a last resort); with
    several rounds, -log N_ij for a key in the query's window in N_ij rounds, and the rounds
    merged by their log-sum-exps. qk, v (B, N, H, Dh); valid (B, N). Returns (B, N, H, Dh)."""
    b, n, h, dh = qk.shape
    R, np_ = perm.shape[2], perm.shape[3]
    mc = np_ // c
    dev = qk.device
    scale = dh ** -0.5
    zero = torch.zeros((), dtype=qk.dtype, device=dev)
    pos = torch.arange(np_, device=dev)
    rank = torch.zeros_like(perm).scatter(-1, perm, pos.expand_as(perm))  # (B, H, R, Np) sorted row of each position

    idx = perm.clamp(max=n - 1)[..., None].expand(b, h, R, np_, dh)  # internal padding: any row (masked)

    def sort(t: torch.Tensor) -> torch.Tensor:  # (B, N, H, Dh) -> (B, H, R, Np, Dh) in sorted order
        return t.transpose(1, 2)[:, :, None].expand(b, h, R, n, dh).gather(3, idx)

    def windows(t: torch.Tensor, fill: float) -> torch.Tensor:  # (..., Mc, c, X) -> (..., Mc, 2c, X)
        prev = F.pad(t[..., :-1, :, :], (0, 0, 0, 0, 1, 0), value=fill)  # chunk t - 1 (none before 0)
        return torch.cat([prev, t], -2)

    ks = sort(qk)
    norm = ks.norm(dim=-1, keepdim=True).clamp_min(1e-6)  # (B, H, R, Np, 1)
    ku = ks / norm  # unit keys
    qc = (ku * norm).view(b, h, R, mc, c, dh)  # queries = |q| * unit key, as the eager kernel
    kw = windows(ku.view(b, h, R, mc, c, dh), 0.0)  # (B, H, R, Mc, 2c, Dh)
    vw = windows(sort(v).view(b, h, R, mc, c, dh), 0.0)  # (B, H, R, Mc, 2c, Dh)

    i = torch.arange(c, device=dev)[:, None]
    j = torch.arange(2 * c, device=dev)[None, :]
    band = torch.where(j == i + c, zero + neg / 4, zero)  # (c, 2c): own position as a last resort
    ok = F.pad(valid, (0, np_ - n), value=False)[:, None, None, :].expand(b, h, R, np_).gather(-1, perm)
    kb = torch.where(ok, zero, zero + neg).view(b, h, R, mc, c, 1)  # (B, H, R, Mc, c, 1)
    kbias = windows(kb, neg).transpose(-1, -2)  # (B, H, R, Mc, 1, 2c)
    s = torch.matmul(qc, kw.transpose(-1, -2)) * scale + band + kbias  # (B, H, R, Mc, c, 2c)
    if R > 1:
        # N_ij: the rounds r' != r in which key j falls in query i's window (chunk diff 0 or 1)
        chunk = torch.div(rank, c, rounding_mode="floor")  # (B, H, R', Np) by position
        tab = chunk[:, :, None].expand(b, h, R, R, np_).gather(
            -1, perm[:, :, :, None].expand(b, h, R, R, np_))  # (B, H, R, R', Np) by round r's sorted rows
        tq = tab.view(b, h, R, R, mc, c, 1)
        tk = windows(tab.view(b, h, R, R, mc, c, 1), -2).view(b, h, R, R, mc, 1, 2 * c)
        dd = tq - tk  # (B, H, R, R', Mc, c, 2c)
        other = (torch.arange(R, device=dev)[:, None] != torch.arange(R, device=dev)[None, :])  # (R, R')
        inside = ((dd == 0) | (dd == 1)) & other[:, :, None, None, None]
        count = inside.to(qk.dtype).sum(3)  # (B, H, R, Mc, c, 2c)
        s = s + (count * -math.log(2.0) if R == 2 else -torch.log1p(count))
    lse = s.logsumexp(-1)  # (B, H, R, Mc, c)
    o = torch.matmul(s.softmax(-1), vw).view(b, h, R, np_, dh)  # (B, H, R, Np, Dh) sorted
    o = o.gather(3, rank[..., None].expand(b, h, R, np_, dh))  # (B, H, R, Np, Dh) by position
    if R > 1:
        w = lse.view(b, h, R, np_).gather(-1, rank).softmax(2)  # (B, H, R, Np): weight of each round
        y = (o * w[..., None]).sum(2)  # (B, H, Np, Dh)
    else:
        y = o[:, :, 0]
    return y[:, :, :n].transpose(1, 2)  # (B, N, H, Dh)


def masked_valid(mask: Optional[torch.Tensor], b: int, n: int, device) -> torch.Tensor:
    """The keep-mask (B, N) bool (all True without a mask)."""
    if mask is None:
        return torch.ones(b, n, dtype=torch.bool, device=device)
    return mask.to(torch.bool)
