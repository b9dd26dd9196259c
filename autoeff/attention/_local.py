"""Banded (local) attention in plain PyTorch, blocked so that no N x N tensor exists: the causal
path of ``sliding_window`` and ``longformer`` and their windowed decoding caches.

The pattern, for a query at position i and a key at position j (``reach`` = how far back a
query sees, ``dilation`` = the gap between neighbours, ``n_global`` = a causal global prefix):

* causal: j <= i and either (i - j <= reach and (i - j) % dilation == 0) or j < n_global;
* bidirectional: |i - j| <= reach and |i - j| % dilation == 0 (no global prefix);
* a query always sees itself (so a padded query row is never empty), and never a padded key.

Queries go in blocks of ``block``; block [s, e) reads the keys [s - reach, e) (+ reach to the
right when bidirectional) and the global prefix, so memory is O(N (block + reach + n_global)).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def allowed(qpos: torch.Tensor, kpos: torch.Tensor, *, reach: int, dilation: int = 1, n_global: int = 0,
            causal: bool = True) -> torch.Tensor:
    """(T, L) bool: may the query at qpos[t] see the key at kpos[l]."""
    diff = qpos[:, None] - kpos[None, :]  # (T, L)
    if causal:
        band = (diff >= 0) & (diff <= reach)
        if dilation > 1:
            band &= diff % dilation == 0
        if n_global > 0:
            band |= (kpos[None, :] < n_global) & (diff >= 0)
    else:
        ad = diff.abs()
        band = ad <= reach
        if dilation > 1:
            band &= ad % dilation == 0
    return band | (diff == 0)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allow: torch.Tensor,
           dropout: float = 0.0) -> torch.Tensor:
    """q (B, H, T, Dh), k/v (B, H, L, Dh), allow (B or 1, 1, T, L) bool -> (B, H, T, Dh)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allow, dropout_p=dropout)


def block_size(reach: int, n: int) -> int:
    return max(1, min(n, max(32, min(128, reach + 1))))


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, reach: int, dilation: int = 1,
                    n_global: int = 0, causal: bool = True, key_mask: Optional[torch.Tensor] = None,
                    expand=None, dropout: float = 0.0) -> torch.Tensor:
    """Blocked banded attention over a whole sequence.

    q (B, H, N, Dh); k, v (B, Hk, N, Dh) (``expand`` maps them to H heads: GQA);
    key_mask (B, N) bool (True = real) or None. Returns (B, H, N, Dh)."""
    n = q.shape[2]
    dev = q.device
    c = block_size(reach, n)
    g = max(0, min(n_global, n)) if causal else 0
    outs = []
    for s in range(0, n, c):
        e = min(n, s + c)
        ks = max(0, s - reach)
        ke = e if causal else min(n, e + reach)
        idx = torch.arange(ks, ke, device=dev)
        if g > ks:  # global keys before the band
            idx = torch.cat([torch.arange(0, ks, device=dev), idx]) if ks > 0 else idx
        elif g > 0:
            idx = torch.cat([torch.arange(0, g, device=dev), idx])
        qpos = torch.arange(s, e, device=dev)
        allow = allowed(qpos, idx, reach=reach, dilation=dilation, n_global=g, causal=causal)[None, None]  # (1, 1, T, L)
        if key_mask is not None:
            allow = allow & (key_mask[:, idx][:, None, None, :] | (qpos[:, None] == idx[None, :]))  # (B, 1, T, L)
        kb, vb = k[:, :, idx], v[:, :, idx]  # (B, Hk, L, Dh)
        if expand is not None:
            kb, vb = expand(kb), expand(vb)  # (B, H, L, Dh)
        outs.append(attend(q[:, :, s:e], kb, vb, allow, dropout))  # (B, H, T, Dh)
    return torch.cat(outs, dim=2)  # (B, H, N, Dh)


def cached_local_step(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, cache, *, reach: int,
                      dilation: int = 1, n_global: int = 0, expand=None) -> torch.Tensor:
    """Attention of T new queries (B, H, T, Dh) (already rotated) over a rolling window cache
    (``cache["k"]``/``["v"]``: the last reach + 1 positions, (B, Hk, W, Dh)) plus a global-prefix
    cache (``cache["gk"]``/``["gv"]``: positions < n_global); updates both and the length.
    Returns (B, H, T, Dh)."""
    L = cache.length
    t = q.shape[2]
    dev = q.device
    wk, wv = cache["k"], cache["v"]
    wlen = wk.shape[2]
    wpos = torch.arange(L - wlen, L, device=dev)
    keep = wpos >= n_global  # window rows that are not global rows (those come from gk)
    parts_k, parts_v, parts_p = [], [], []
    if n_global > 0 and cache["gk"] is not None and cache["gk"].shape[2] > 0:
        gl = cache["gk"].shape[2]
        parts_k.append(cache["gk"]); parts_v.append(cache["gv"]); parts_p.append(torch.arange(gl, device=dev))
    parts_k.append(wk[:, :, keep]); parts_v.append(wv[:, :, keep]); parts_p.append(wpos[keep])
    parts_k.append(k_new); parts_v.append(v_new); parts_p.append(torch.arange(L, L + t, device=dev))
    kk, vv, kpos = torch.cat(parts_k, 2), torch.cat(parts_v, 2), torch.cat(parts_p)  # (B, Hk, L', Dh)
    qpos = torch.arange(L, L + t, device=dev)
    allow = allowed(qpos, kpos, reach=reach, dilation=dilation, n_global=n_global, causal=True)[None, None]
    if expand is not None:
        kk, vv = expand(kk), expand(vv)
    y = attend(q, kk, vv, allow)  # (B, H, T, Dh)
    # update: the rolling window keeps the last reach + 1 positions, the global cache the first g
    wk2, wv2 = torch.cat([wk, k_new], 2), torch.cat([wv, v_new], 2)  # (B, Hk, W + T, Dh)
    w = reach + 1
    cache["k"], cache["v"] = wk2[:, :, -w:].contiguous(), wv2[:, :, -w:].contiguous()
    if n_global > 0:
        have = 0 if cache["gk"] is None else cache["gk"].shape[2]
        if have < n_global and L < n_global:
            take = min(n_global, L + t) - L  # new rows that are global positions
            gk_new, gv_new = k_new[:, :, :take], v_new[:, :, :take]
            cache["gk"] = gk_new if cache["gk"] is None else torch.cat([cache["gk"], gk_new], 2)
            cache["gv"] = gv_new if cache["gv"] is None else torch.cat([cache["gv"], gv_new], 2)
    cache.length = L + t
    return y
