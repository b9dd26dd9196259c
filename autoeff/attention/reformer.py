"""Reformer LSH attention (Kitaev et al. 2020, "Reformer: The Efficient Transformer").

Queries and keys share one projection (keys are the L2-normalized queries). Angular LSH with
random rotations R hashes every token to one of ``n_buckets`` buckets,
h(x) = argmax([xR; -xR]); tokens are sorted by (bucket, position), the sorted sequence is cut
into chunks of ``bucket_size`` tokens, and each chunk attends to itself and to the previous
chunk, so a query sees the keys nearest to it in angle for O(N * bucket_size) work instead
of O(N^2). ``n_buckets`` = max_len / bucket_size (rounded up to even), so at the layer's
maximum length the average bucket fills one chunk (lucidrains' reformer-pytorch convention).
The bucket count, and so the rotations, depend on the layer's ``max_len`` only, never on the
length an input was padded to: the same sequence gives the same outputs at its real positions
whatever padding its batch carries.

As in the paper:

* a token does not attend to itself unless it has no other valid target (its own score
  carries a large negative bias that still beats the masked keys');
* ``n_hashes`` rounds hash with independent rotations; each round's output o_r and
  log-sum-exp z_r are combined as sum_r exp(z_r - logsumexp_r z_r) o_r, and a key that falls
  in a query's window in N_ij rounds has log N_ij subtracted from its score in each of them,
  so the result is exactly softmax attention over the union of the rounds' windows.

Details of this implementation: the rotations are drawn from a generator seeded by a buffer
(``hash_seed``) drawn from torch's RNG at construction, so they are fixed (the same in training
and eval, saved with the model) and deterministic under ``torch.manual_seed``; a window does
not wrap around from the first chunk to the last; padded tokens are put in a bucket of their
own after all the others, so they never move the real tokens' chunks and never influence them.
The sorted keys and values are gathered with one ``index_select`` each (no expanded index
tensors) into buffers that the chunked kernel of ``_window.py`` (:func:`window_attention`)
reads as overlapping views, and the outputs are scattered back with ``index_copy_`` straight
into the (B, N, H, Dh) layout that the output projection reads.

Causal form (``forward(causal=True)``; the paper's causal masking, made strictly causal): in
each round the tokens are sorted by (bucket, position) as above, and the query at sorted row r
attends to the sorted rows r - bucket_size .. r - 1 that are in its own bucket, i.e. to the (up
to) ``bucket_size`` most recent earlier tokens of its bucket, never to a later position; itself
only as a last resort; rounds combined with the same log-sum-exp weights and -log N_ij
duplicate correction. (Chunking the sorted order as the bidirectional form does would let a
later token in a lower bucket shift an earlier query's chunk, so its keys would depend on the
future; the per-row window does not.) Written in plain PyTorch, blockwise over sorted rows
(O(N bucket_size) memory). Decoding re-runs this over the stored context (decode_cost
"recompute", the generic cache of base.py): honest, and slower than a KV cache. ``rotary``
(a decoder's) rotates the shared query/key vectors by position before hashing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import register_attention
from .base import AttentionBase
from ._window import WindowSpec, needs_autograd, neg_value, window_attention
from ._traceable import lsh_buckets, masked_valid, reformer_attention

# hashing works on row blocks: rows * heads * rounds * buckets / 2 floats at most
_HASH_BLOCK = 1 << 20


@dataclass
class ReformerOptions:
    n_hashes: int = 1  # hash rounds
    bucket_size: int = 64  # tokens per chunk (= average bucket size)


def lsh_geometry(n: int, bucket_size: int, max_len: Optional[int] = None) -> Tuple[int, int, int]:
    """(n_buckets, chunk size c, chunks per round) for a sequence of n tokens in a layer built
    for ``max_len`` (default n). The bucket count depends on max_len only, the chunking on n."""
    ref = n if max_len is None else max_len
    if ref <= bucket_size:
        nb = 1
    else:
        nb = -(-ref // bucket_size)
        nb += nb % 2  # argmax over [xR, -xR] gives an even number of buckets
    if n <= bucket_size:
        return nb, max(n, 1), 1
    return nb, bucket_size, -(-n // bucket_size)


@register_attention("reformer")
class ReformerAttention(AttentionBase):
    options = ReformerOptions
    subquadratic = True
    supports_causal = True
    decode_cost = "recompute"
    projections = {"qkv": ("q", "v"), "out": ("out",)}  # shared QK: the query projection serves keys

    def __init__(self, dim, heads, opts=None, **kw):
        super().__init__(dim, heads, opts, **kw)
        self.qkv = nn.Linear(dim, 2 * dim)  # shared QK, then V
        self.out = nn.Linear(dim, dim)
        self.register_buffer("hash_seed", torch.randint(0, 2**62, ()), persistent=True)
        self._rot_cache: Dict[tuple, torch.Tensor] = {}

    # ---- the traceable formulation (export: _traceable.py) ----------------------------
    exporting = False  # set by attention._traceable.export_mode

    def enter_export(self) -> None:
        """The rotations at the layer's bucket count become a (non-persistent) buffer: tracing
        cannot read ``hash_seed`` as a number, and the exported graph must hold the same ones."""
        nb = lsh_geometry(self.max_len, self.opts.bucket_size, self.max_len)[0]
        w = self.qkv.weight
        self.register_buffer("_export_rot", self.rotations(nb, w.device, w.dtype).clone(), persistent=False)
        self.exporting = True

    def exit_export(self) -> None:
        self.__dict__.pop("exporting", None)
        self._buffers.pop("_export_rot", None)

    def _forward_traceable(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The bidirectional LSH attention of :meth:`forward` in a form torch.export traces."""
        b, n, d = x.shape  # (B, N, D)
        valid = masked_valid(mask, b, n, x.device)  # (B, N)
        qk = F.linear(x, self.qkv.weight[:d], self.qkv.bias[:d])  # (B, N, D) shared queries/keys
        v = F.linear(x, self.qkv.weight[d:], self.qkv.bias[d:])  # (B, N, D)
        perm, c, _ = self.lsh_sort(qk, valid)  # (B, H, R, Np)
        hs = (b, n, self.heads, self.head_dim)
        y = reformer_attention(qk.view(hs), v.view(hs), perm, valid, c=c, neg=neg_value(x.dtype))  # (B, N, H, Dh)
        return self.out(y.reshape(b, n, d))  # (B, N, D)

    # ---- hashing ----------------------------------------------------------------------
    def rotations(self, n_buckets: int, device, dtype) -> torch.Tensor:
        """Random rotations (H, Dh, n_hashes * n_buckets / 2), fixed by ``hash_seed``."""
        rot = self._buffers.get("_export_rot") if self.exporting else None
        if rot is not None and rot.shape[-1] == self.opts.n_hashes * (n_buckets // 2):
            return rot.to(device=device, dtype=dtype)  # exporting: the buffer made by enter_export
        seed = int(self.hash_seed)
        key = (seed, n_buckets, self.opts.n_hashes, str(device), dtype)
        rot = self._rot_cache.get(key)
        if rot is None:
            gen = torch.Generator().manual_seed((seed + n_buckets) % (1 << 62))
            rot = torch.randn(self.heads, self.head_dim, self.opts.n_hashes * (n_buckets // 2), generator=gen)
            rot = rot.to(device=device, dtype=dtype)
            if len(self._rot_cache) > 16:
                self._rot_cache.clear()
            self._rot_cache[key] = rot
        return rot

    @torch.no_grad()
    def buckets(self, qk: torch.Tensor, n_buckets: int) -> torch.Tensor:
        """Angular LSH of the shared query/keys (B, N, D): buckets (B, H, n_hashes, N)."""
        b, n, _ = qk.shape
        h, dh, r = self.heads, self.head_dim, self.opts.n_hashes
        if n_buckets == 1:
            return torch.zeros(b, h, r, n, dtype=torch.long, device=qk.device)
        half = n_buckets // 2
        rot = self.rotations(n_buckets, qk.device, qk.dtype)  # (H, Dh, R * nb/2)
        if self.exporting:  # one matmul, no loop over row blocks (a dynamic batch traces)
            return lsh_buckets(qk, rot, h, r, n_buckets)  # (B, H, R, N)
        rows = qk.reshape(b * n, h, dh)  # (B*N, H, Dh)
        out = torch.empty(h, b * n, r, dtype=torch.long, device=qk.device)  # (H, B*N, R)
        step = max(1, _HASH_BLOCK // (h * r * half))
        for r0 in range(0, b * n, step):
            r1 = min(b * n, r0 + step)
            proj = torch.bmm(rows[r0:r1].transpose(0, 1), rot).view(h, r1 - r0, r, half)  # (H, rows, R, nb/2)
            vmax, imax = proj.max(-1)
            vmin, imin = proj.min(-1)
            out[:, r0:r1] = torch.where(vmax >= -vmin, imax, imin + half)
        return out.view(h, b, n, r).permute(1, 0, 3, 2)  # (B, H, R, N)

    def lsh_sort(self, qk: torch.Tensor, valid: torch.Tensor):
        """Sort order of every round: (perm (B, H, R, Np) positions in sorted order, c, chunks).

        Padded tokens (``valid`` False) and the internal padding up to Np = chunks * c go to
        a bucket of their own after all the others.
        """
        n = qk.shape[1]
        nb, c, mc = lsh_geometry(n, self.opts.bucket_size, self.max_len)
        np_ = mc * c
        bk = self.buckets(qk, nb)  # (B, H, R, N)
        bk = bk.masked_fill(~valid[:, None, None, :], nb)
        bk = F.pad(bk, (0, np_ - n), value=nb)  # (B, H, R, Np)
        keys = bk * np_ + torch.arange(np_, device=qk.device)  # unique: bucket, then position
        return keys.argsort(-1), c, mc

    # ---- forward ------------------------------------------------------------------------
    def _forward_causal(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        b, n, d = x.shape  # (B, N, D)
        h, dh, R, w = self.heads, self.head_dim, self.opts.n_hashes, self.opts.bucket_size
        dev = x.device
        neg = neg_value(x.dtype)
        valid = torch.ones(b, n, dtype=torch.bool, device=dev) if mask is None else mask.to(torch.bool)
        qk = F.linear(x, self.qkv.weight[:d], self.qkv.bias[:d])  # (B, N, D) shared queries/keys
        v = self.split_heads(F.linear(x, self.qkv.weight[d:], self.qkv.bias[d:]))  # (B, H, N, Dh)
        if self.rotary is not None:
            qh = self.rotary.apply(self.split_heads(qk), torch.arange(n, device=dev))  # (B, H, N, Dh)
            qk = self.merge_heads(qh)
        qh = self.split_heads(qk)  # (B, H, N, Dh)
        kn = qh / qh.norm(dim=-1, keepdim=True).clamp_min(1e-6)  # unit keys
        nb = lsh_geometry(n, w, self.max_len)[0]
        bk = self.buckets(qk, nb).masked_fill(~valid[:, None, None, :], nb)  # (B, H, R, N); padding: bucket nb
        pos = torch.arange(n, device=dev)
        perm = (bk * n + pos).argsort(-1)  # (B, H, R, N) positions in (bucket, position) order
        rank = torch.empty_like(perm).scatter_(-1, perm, pos.expand_as(perm))  # (B, H, R, N) row of each position
        sb = bk.gather(-1, perm)  # (B, H, R, N) sorted buckets
        cb = max(1, min(n, max(16, w)))  # query rows per block
        outs, lses = [], []
        for r in range(R):
            o_r = v.new_zeros(b, h, n, dh)
            l_r = v.new_zeros(b, h, n)
            for s0 in range(0, n, cb):
                s1 = min(n, s0 + cb)
                k0 = max(0, s0 - w)
                pq, pk = perm[:, :, r, s0:s1], perm[:, :, r, k0:s1]  # (B, H, T), (B, H, L) positions
                qv = qh.gather(2, pq[..., None].expand(-1, -1, -1, dh))  # (B, H, T, Dh)
                kv = kn.gather(2, pk[..., None].expand(-1, -1, -1, dh))  # (B, H, L, Dh)
                vv = v.gather(2, pk[..., None].expand(-1, -1, -1, dh))
                sc = (qv @ kv.transpose(-1, -2)) * dh ** -0.5  # (B, H, T, L)
                rd = torch.arange(s0, s1, device=dev)[:, None] - torch.arange(k0, s1, device=dev)[None, :]  # (T, L)
                sq, sk = sb[:, :, r, s0:s1], sb[:, :, r, k0:s1]
                allow = (rd >= 1) & (rd <= w) & (sq[..., :, None] == sk[..., None, :]) & (sk[..., None, :] < nb)
                if R > 1:  # -log N_ij: rounds in which j is in i's window
                    bq, bkk = bk.gather(-1, pq[:, :, None].expand(-1, -1, R, -1)), bk.gather(-1, pk[:, :, None].expand(-1, -1, R, -1))
                    rq, rk = rank.gather(-1, pq[:, :, None].expand(-1, -1, R, -1)), rank.gather(-1, pk[:, :, None].expand(-1, -1, R, -1))
                    dd = rq[..., :, None] - rk[..., None, :]  # (B, H, R, T, L)
                    cnt = ((bq[..., :, None] == bkk[..., None, :]) & (dd >= 1) & (dd <= w)).sum(2)  # (B, H, T, L)
                    sc = sc - cnt.clamp_min(1).to(sc.dtype).log()
                sc = torch.where(allow, sc, torch.where(rd == 0, sc + neg / 4, torch.full_like(sc, neg)))
                lse = sc.logsumexp(-1)  # (B, H, T)
                p = (sc - lse[..., None]).exp()
                if self.training and self.dropout > 0:
                    p = F.dropout(p, self.dropout)
                o_r = o_r.scatter(2, pq[..., None].expand(-1, -1, -1, dh), p @ vv)  # (B, H, N, Dh)
                l_r = l_r.scatter(2, pq, lse)
            outs.append(o_r)
            lses.append(l_r)
        if R == 1:
            y = outs[0]
        else:
            wts = torch.stack(lses, 0).softmax(0)  # (R, B, H, N)
            y = sum(wts[i][..., None] * outs[i] for i in range(R))  # (B, H, N, Dh)
        return self.out(self.merge_heads(y))  # (B, N, D)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, causal: bool = False) -> torch.Tensor:
        if causal:
            return self._forward_causal(x, mask)
        if self.exporting:
            return self._forward_traceable(x, mask)
        b, n, d = x.shape  # (B, N, D)
        h, dh, R = self.heads, self.head_dim, self.opts.n_hashes
        fast = not needs_autograd(self, x)  # no graph to build: work in place
        neg = neg_value(x.dtype)
        valid = torch.ones(b, n, dtype=torch.bool, device=x.device) if mask is None else mask.to(torch.bool)

        qk = F.linear(x, self.qkv.weight[:d], self.qkv.bias[:d])  # (B, N, D) shared queries/keys; V later
        perm, c, mc = self.lsh_sort(qk, valid)  # (B, H, R, Np)
        np_ = mc * c
        S = b * h * R  # one sequence per (batch, head, round)

        # rows of (B, N, H, Dh) buffers: position p of head h of batch b is row (b*N + p)*H + h
        base = (torch.arange(b, device=x.device)[:, None, None, None] * (n * h)
                + torch.arange(h, device=x.device)[None, :, None, None])  # (B, H, 1, 1)
        src = base + perm.clamp(max=n - 1) * h  # (B, H, R, Np)
        src = F.pad(src, (c, 0)).reshape(-1)  # c leading rows per sequence: the first chunk's look-back
        ks = qk.view(b * n * h, dh).index_select(0, src)  # (S*(c+Np), Dh) sorted keys
        del qk  # fewer (B, N, D) tensors alive at once
        v = F.linear(x, self.qkv.weight[d:], self.qkv.bias[d:])  # (B, N, D)
        vs = v.view(b * n * h, dh).index_select(0, src)  # (S*(c+Np), Dh) sorted values
        del v, src
        norm = ks.norm(dim=-1, keepdim=True).clamp_min(1e-6)  # (S*(c+Np), 1)
        ks = ks.div_(norm) if fast else ks / norm  # unit keys; queries = |q| * unit key
        rs = norm.view(S, c + np_, 1)[:, c:]  # (S, Np, 1) query norms

        # key bias per chunk window: padded tokens and the missing look-back of chunk 0
        ok = F.pad(valid, (0, np_ - n), value=False)[:, None, None, :].expand(b, h, R, np_)
        ok = ok.gather(-1, perm).reshape(S, np_)  # (S, Np) in sorted order
        kb = torch.zeros(S, np_, dtype=x.dtype, device=x.device).masked_fill_(~ok, neg)
        kbias = F.pad(kb, (c, 0), value=neg).unfold(-1, 2 * c, c).reshape(S, mc, 1, 2 * c)
        # the self-attention rule: own position (window column c + i) only as a last resort
        band = torch.zeros(c, 2 * c, dtype=x.dtype, device=x.device)
        band[:, c:].fill_diagonal_(neg / 4)
        spec = WindowSpec(
            c=c, L=2 * c, chunks=mc, dh=dh, scale=dh ** -0.5, band=band,
            q_off=[s * (c + np_) * dh for s in range(S)], o_off=[s * np_ * dh for s in range(S)],
            k_off=[s * (c + np_) * dh for s in range(S)], q_rs=dh, o_rs=dh, k_rs=dh,
            o_shape=(S * np_, dh), kbias=kbias, kb_of=list(range(S)), qoff=c,
            dropout=self.dropout if self.training else 0.0,
        )
        if spec.dropout > 0:
            spec.seed = int(torch.randint(0, 2**62, (1,)).item())
        if R > 1:
            spec.extra = _duplicate_bias(perm, c, mc, x.dtype)
        o, lse = window_attention(None, ks, vs, spec, rs=rs, want_lse=R > 1)  # (S*Np, Dh), (S, Np, 1)
        del ks, vs, rs, norm

        # back to positions: row (b*N + p)*H + h; internal padding goes to a spare last row
        dst = torch.where(perm < n, base + perm * h, b * n * h).reshape(-1)  # (S*Np,)
        if R > 1:
            # combine the rounds: weights exp(lse_r - logsumexp_r lse_r)
            lse = lse.view(b, h, R, np_)
            lse_pos = torch.zeros_like(lse).scatter_(-1, perm, lse)  # (B, H, R, Np) by position
            w = (lse_pos - lse_pos.logsumexp(2, keepdim=True)).exp()
            w = w.gather(-1, perm).reshape(S * np_, 1)  # back to sorted order
            o = o.mul_(w) if fast else o * w
            y = o.new_zeros(b * n * h + 1, dh)
            y = y.index_add_(0, dst, o) if fast else y.index_add(0, dst, o)
        elif fast:
            y = o.new_empty(b * n * h + 1, dh).index_copy_(0, dst, o)
        else:
            y = o.new_zeros(b * n * h + 1, dh).index_copy(0, dst, o)
        del o
        return self.out(y[:-1].view(b, n, d))  # (B, N, D)

    @classmethod
    def problems(cls, opts, *, seq_len, width, heads):
        out = []
        if opts.n_hashes < 1:
            out.append(("n_hashes", opts.n_hashes, "must be >= 1", "1.."))
        if opts.bucket_size < 1:
            out.append(("bucket_size", opts.bucket_size, "must be >= 1", f"1..{seq_len}"))
        elif opts.bucket_size > seq_len:
            out.append(("bucket_size", opts.bucket_size,
                        f"bucket size is longer than the sequence length ({seq_len})", f"1..{seq_len}"))
        return out


def _duplicate_bias(perm: torch.Tensor, c: int, mc: int, dtype: torch.dtype):
    """The paper's correction for keys seen in several rounds: -log N_ij, where N_ij is the
    number of rounds in which key j is in query i's window (its chunk or the previous one).

    Returns ``extra(j, t0, t1) -> (n, c, 2c)`` for the window kernel. Sequence j is round
    r = j % R, whose windows hold their keys by construction; every other round r' adds one
    where chunk_r'(i) - chunk_r'(j) is 0 or 1.
    """
    b, h, R, np_ = perm.shape
    rank = torch.empty_like(perm).scatter_(-1, perm, torch.arange(np_, device=perm.device).expand_as(perm))
    chunk = (rank // c).to(torch.int32)  # (B, H, R, Np): chunk of each position in each round
    # for the token at each sorted row of each round, its chunks in all rounds
    tab = chunk.transpose(2, 3)  # (B, H, Np, R) by position
    tab = tab[:, :, None].expand(b, h, R, np_, R).gather(
        3, perm[..., None].expand(b, h, R, np_, R))  # (B, H, R, Np, R) by sorted row
    tab = F.pad(tab.reshape(b * h * R, np_, R), (0, 0, c, 0), value=-2)  # c look-back rows
    tab = tab.permute(0, 2, 1).contiguous()  # (S, R, c + Np)

    def extra(j: int, t0: int, t1: int) -> torch.Tensor:
        n = t1 - t0
        count = None
        for r in range(R):
            if r == j % R:
                continue
            seq = tab[j, r]  # (c + Np,) chunks in round r, by this sequence's sorted rows
            own = seq[c + t0 * c:c + t1 * c].view(n, c, 1)
            win = seq.as_strided((n, 1, 2 * c), (c, 0, 1), seq.storage_offset() + t0 * c)
            inside = ((own - win) & -2) == 0  # (n, c, 2c): the difference is 0 or 1
            count = inside.to(torch.uint8) if count is None else count.add_(inside)
        if R == 2:
            return count.to(dtype).mul_(-math.log(2.0))
        return count.to(dtype).log1p_().neg_()

    return extra
