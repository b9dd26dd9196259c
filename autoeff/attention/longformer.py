"""Longformer (Beltagy et al. 2020, "Longformer: The Long-Document Transformer").

Each token attends to a sliding window of ``window // 2`` neighbours on each side, optionally
dilated (neighbours ``dilation`` positions apart), plus the first ``global_tokens`` positions
(position 0 is the CLS token in our models), which attend to every token and are attended by
every token. Cost O(N (window + g)) instead of O(N^2).

How it is computed, without any N x N tensor (nor an N x window one for the whole sequence):

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

The paper uses a second set of projections for global attention; here the global and the
sliding-window attention share the layer's projections, so a window covering the whole
sequence is exactly full attention with the same weights.
"""
from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import register_attention
from .base import AttentionBase

# scores per block (c * L * chunks floats): 1 MiB, in L2 with the block's keys and values
_BLOCK_SCORES = 1 << 18


def plain_linear(lin: nn.Module) -> bool:
    """A plain nn.Linear whose weight may be sliced (not quantized, no hooks such as pruning's)."""
    return type(lin) is nn.Linear and not lin._forward_pre_hooks and not lin._forward_hooks


def needs_autograd(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether this forward must build an autograd graph (else buffers are reused in place)."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in module.parameters()))


def neg_value(dtype: torch.dtype) -> float:
    """Additive mask value: exp() of it is 0, yet a few of them added stay finite."""
    return -torch.finfo(dtype).max / 8


# ---------------------------------------------------------------------------------------
# the chunked window kernel (shared with reformer.py)
# ---------------------------------------------------------------------------------------
@dataclass
class WindowSpec:
    """Geometry and constant biases of a chunked window attention over J independent sequences.

    Sequence j (a head of a batch element, a dilation residue, a hash round...) has
    ``chunks`` chunks of c queries. Its row i of queries / outputs / keys starts at element
    ``off[j] + i * rs`` of the q / o / k (and v) buffers, so chunks are read and written in
    place as strided views. Chunk t's queries are its rows [t*c, t*c + c); its keys are the key
    rows [t*c, t*c + L) (the key buffer carries the left context as leading rows). L is a
    multiple of c.
    """

    c: int
    L: int
    chunks: int
    dh: int  # head dim: a row of a sequence is dh consecutive elements
    scale: float
    band: torch.Tensor  # (c, L) additive bias, the same for every chunk
    q_off: List[int]  # per sequence, element offsets of row 0 in q (or in k, see qoff), o, k
    o_off: List[int]
    k_off: List[int]
    q_rs: int  # row strides (elements)
    o_rs: int
    k_rs: int
    o_shape: Tuple[int, ...]  # shape of the output buffer (same layout as q)
    kbias: torch.Tensor  # (Jb, chunks, 1, L) additive per-key bias (padding, edges)
    kb_of: List[int]  # sequence -> row of kbias
    qoff: int = 0  # q taken from k: a chunk's own rows are its window rows [qoff, qoff + c)
    extra: Optional[Callable[[int, int, int], torch.Tensor]] = None  # (j, t0, t1) -> (n, c, L) bias
    o_inplace: bool = False  # write the output over q (same layout; chunk by chunk)
    dropout: float = 0.0
    seed: int = 0
    block: int = 1  # chunks per block
    kb_nz: Optional[List[List[bool]]] = None  # per kbias row, per block: any non-zero bias


def _rows(buf: torch.Tensor, off: int, rs: int, t0: int, n: int, c: int, length: int, dh: int) -> torch.Tensor:
    """Chunks t0..t0+n of a sequence as a strided view (n, length, Dh): rows t*c .. t*c+length."""
    return buf.as_strided((n, length, dh), (c * rs, rs, 1), buf.storage_offset() + off + t0 * c * rs)


def _dropout_mask(spec: WindowSpec, j: int, t0: int, like: torch.Tensor) -> torch.Tensor:
    """Scaled keep-mask for one block, replayed identically in backward (seeded per block)."""
    gen = torch.Generator(device=like.device)
    gen.manual_seed((spec.seed + 1_000_003 * j + t0) % (1 << 62))
    keep = 1.0 - spec.dropout
    return torch.empty_like(like).bernoulli_(keep, generator=gen).div_(keep)


def _block_scores(spec: WindowSpec, j: int, bi: int, t0: int, t1: int, qb, kw, out) -> torch.Tensor:
    """Biased, scaled window scores of one block of chunks, written into ``out``: (n, c, L)."""
    s = torch.baddbmm(spec.band, qb, kw.transpose(1, 2), alpha=spec.scale, out=out)  # (n, c, L)
    kb = spec.kb_of[j]
    if spec.kb_nz is None or spec.kb_nz[kb][bi]:
        s.add_(spec.kbias[kb, t0:t1])  # (n, 1, L)
    if spec.extra is not None:
        s.add_(spec.extra(j, t0, t1))
    return s


def _softmax_lse(s: torch.Tensor) -> torch.Tensor:
    """In-place softmax over the last dim; returns the log-sum-exp (..., 1).

    torch.exp is ~100x slower on masked scores (around -1e37 or -inf) than the fused softmax,
    so the log-sum-exp is recovered as max(s) - log(max(softmax(s))).
    """
    m = s.amax(-1, keepdim=True)
    torch.softmax(s, -1, out=s)
    return m - s.amax(-1, keepdim=True).log()


def _forward_jobs(jobs, q, rs, k, v, spec: WindowSpec, o, lse, sbuf) -> None:
    """Forward of the sequences ``jobs``, block by block, writing o (and lse) in place;
    ``sbuf`` (block, c, L) is the reused score buffer."""
    c, L, mc, dh = spec.c, spec.L, spec.chunks, spec.dh
    want_lse = lse.numel() > 0
    for j in jobs:
        for bi, t0 in enumerate(range(0, mc, spec.block)):
            t1 = min(mc, t0 + spec.block)
            n = t1 - t0
            kw = _rows(k, spec.k_off[j], spec.k_rs, t0, n, c, L, dh)  # (n, L, Dh)
            vw = _rows(v, spec.k_off[j], spec.k_rs, t0, n, c, L, dh)  # (n, L, Dh)
            if q is not None:
                qb = _rows(q, spec.q_off[j], spec.q_rs, t0, n, c, c, dh)  # (n, c, Dh)
            else:
                qb = kw[:, spec.qoff:spec.qoff + c] * rs[j, t0 * c:t1 * c].view(n, c, 1)
            ob = _rows(o, spec.o_off[j], spec.o_rs, t0, n, c, c, dh)  # (n, c, Dh)
            p = _block_scores(spec, j, bi, t0, t1, qb, kw, sbuf[:n])  # (n, c, L)
            if want_lse:
                lse[j, t0 * c:t1 * c] = _softmax_lse(p).view(n * c, 1)
            else:
                torch.softmax(p, -1, out=p)
            if spec.dropout > 0:
                p.mul_(_dropout_mask(spec, j, t0, p))
            torch.bmm(p, vw, out=ob)  # (n, c, Dh)


def _backward_jobs(jobs, q, rs, k, v, spec: WindowSpec, o, do, dlse, dq, drs, dk, dv) -> None:
    """Backward of the sequences ``jobs``: recompute each block's scores, accumulate grads."""
    c, L, mc, dh = spec.c, spec.L, spec.chunks, spec.dh
    sbuf = k.new_empty(min(spec.block, mc), c, L)
    pbuf = k.new_empty(min(spec.block, mc), c, L)
    for j in jobs:
        for bi, t0 in enumerate(range(0, mc, spec.block)):
            t1 = min(mc, t0 + spec.block)
            n = t1 - t0
            kw = _rows(k, spec.k_off[j], spec.k_rs, t0, n, c, L, dh)
            vw = _rows(v, spec.k_off[j], spec.k_rs, t0, n, c, L, dh)
            if q is not None:
                qb = _rows(q, spec.q_off[j], spec.q_rs, t0, n, c, c, dh)
                kown = None
            else:
                kown = kw[:, spec.qoff:spec.qoff + c]
                qb = kown * rs[j, t0 * c:t1 * c].view(n, c, 1)
            ob = _rows(o, spec.o_off[j], spec.o_rs, t0, n, c, c, dh)
            dob = _rows(do, spec.o_off[j], spec.o_rs, t0, n, c, c, dh)  # (n, c, Dh)
            ddb = (dob * ob).sum(-1, keepdim=True)  # (n, c, 1): D = rowsum(dO * O)
            if dlse is not None:
                ddb = ddb - dlse[j, t0 * c:t1 * c].view(n, c, 1)
            p = _block_scores(spec, j, bi, t0, t1, qb, kw, sbuf[:n])
            torch.softmax(p, -1, out=p)  # (n, c, L) attention weights
            dp = torch.bmm(dob, vw.transpose(1, 2), out=pbuf[:n])  # (n, c, L) dP = dO V^T
            pd = p
            if spec.dropout > 0:
                mask = _dropout_mask(spec, j, t0, p)
                pd = p * mask
                dp.mul_(mask)
            dvw = torch.bmm(pd.transpose(1, 2), dob)  # (n, L, Dh)
            ds = dp.sub_(ddb).mul_(p)  # (n, c, L): dS = P * (dP - D)
            dqb = torch.bmm(ds, kw).mul_(spec.scale)  # (n, c, Dh)
            dkw = torch.bmm(ds.transpose(1, 2), qb).mul_(spec.scale)  # (n, L, Dh)
            for jw in range(L // c):  # windows overlap: add them back chunk by chunk
                _rows(dk, spec.k_off[j], spec.k_rs, t0 + jw, n, c, c, dh).add_(dkw[:, jw * c:(jw + 1) * c])
                _rows(dv, spec.k_off[j], spec.k_rs, t0 + jw, n, c, c, dh).add_(dvw[:, jw * c:(jw + 1) * c])
            if q is not None:
                _rows(dq, spec.q_off[j], spec.q_rs, t0, n, c, c, dh).add_(dqb)
            else:
                drs[j, t0 * c:t1 * c] = (dqb * kown).sum(-1).view(n * c, 1)
                _rows(dk, spec.k_off[j] + spec.qoff * spec.k_rs, spec.k_rs, t0, n, c, c, dh).addcmul_(
                    dqb, rs[j, t0 * c:t1 * c].view(n, c, 1).expand_as(dqb))


class _WindowAttention(torch.autograd.Function):
    """Forward and backward of :func:`window_attention`.

    Backward recomputes the block scores (as FlashAttention does) from the saved inputs and
    the output. The sequences are shared out among worker threads (see :func:`_run_parallel`).
    """

    @staticmethod
    def forward(ctx, q, rs, k, v, spec: WindowSpec, want_lse: bool):
        J, nc = len(spec.k_off), spec.chunks * spec.c
        need_grad = any(ctx.needs_input_grad[:4])
        o = q if spec.o_inplace and not need_grad else k.new_empty(spec.o_shape)
        lse = k.new_empty(J, nc, 1) if want_lse else k.new_empty(0)  # (J, Nc, 1)
        # score buffers are allocated here, on the calling thread, where memory profilers look
        bufs = [k.new_empty(min(spec.block, spec.chunks), spec.c, spec.L) for _ in range(_shares(spec))]
        _run_parallel(spec, lambda i, jobs: _forward_jobs(jobs, q, rs, k, v, spec, o, lse, bufs[i]))
        if need_grad:
            ctx.save_for_backward(q, rs, k, v, o)
            ctx.spec = spec
        if not want_lse:
            ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    def backward(ctx, do, dlse):
        q, rs, k, v, o = ctx.saved_tensors
        spec: WindowSpec = ctx.spec
        do = do.contiguous()
        dlse = dlse if dlse is not None and dlse.numel() > 0 else None
        need = ctx.needs_input_grad
        dq = torch.zeros_like(q) if q is not None else None
        drs = torch.zeros_like(rs) if rs is not None else None
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        _run_parallel(spec, lambda i, jobs: _backward_jobs(jobs, q, rs, k, v, spec, o, do, dlse, dq, drs, dk, dv))
        return (dq if need[0] else None, drs if need[1] else None, dk if need[2] else None,
                dv if need[3] else None, None, None)


# ---------------------------------------------------------------------------------------
# worker threads
# ---------------------------------------------------------------------------------------
class _Workers:
    """Threads whose torch ops run single-threaded (each thread has its own OpenMP setting).

    The window kernel is hundreds of small ops; run on the calling thread, each op is an
    OpenMP parallel region with a barrier, and on a busy machine every barrier waits for a
    descheduled thread. Sharing whole sequences out among single-threaded workers instead has
    no barriers at all and scales with the cores.
    """

    def __init__(self, n: int):
        self.n = n
        self.queues: List[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(n)]
        ready = threading.Barrier(n + 1)
        threads = torch.get_num_threads()
        for i in range(n):
            threading.Thread(target=self._loop, args=(self.queues[i], ready), daemon=True,
                             name=f"autoeff-window-{i}").start()
        ready.wait()
        torch.set_num_threads(threads)  # the workers' set_num_threads(1) also set the process default

    @staticmethod
    def _loop(inbox: queue.SimpleQueue, ready: threading.Barrier) -> None:
        torch.set_num_threads(1)  # this thread's OpenMP / MKL setting only
        ready.wait()
        while True:
            item = inbox.get()
            if item is None:
                return
            fn, fut = item
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed back to the caller
                fut.set_exception(e)
            del item, fn, fut  # the closure holds the caller's buffers: do not keep them alive

    def close(self) -> None:
        for q in self.queues:
            q.put(None)

    def run(self, fns: List[Callable[[], None]]) -> None:
        futs = []
        for i, fn in enumerate(fns):
            fut: Future = Future()
            self.queues[i % self.n].put((fn, fut))
            futs.append(fut)
        for fut in futs:
            fut.result()


_WORKERS: Optional[_Workers] = None
_WORKERS_LOCK = threading.Lock()


def _workers(n: int) -> _Workers:
    global _WORKERS
    with _WORKERS_LOCK:
        if _WORKERS is None or _WORKERS.n != n:
            if _WORKERS is not None:
                _WORKERS.close()
            _WORKERS = _Workers(n)
        return _WORKERS


def _reset_workers() -> None:  # a forked child has none of the parent's threads
    global _WORKERS
    _WORKERS = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_workers)


def _shares(spec: WindowSpec) -> int:
    """How many parts :func:`_run_parallel` splits the sequences into."""
    if spec.kbias.device.type != "cpu" or threading.current_thread().name.startswith("autoeff-window"):
        return 1
    return max(1, min(torch.get_num_threads(), len(spec.k_off)))


def _run_parallel(spec: WindowSpec, run: Callable[[int, List[int]], None]) -> None:
    """Run ``run(i, jobs)`` for share i of the sequences: inline with one thread, else one share
    per worker thread (the sequences write disjoint parts of the outputs and gradients)."""
    J = len(spec.k_off)
    n = _shares(spec)
    if n == 1:
        run(0, list(range(J)))
        return
    shares = [list(range(i, J, n)) for i in range(n)]
    workers = _workers(torch.get_num_threads())
    mode = torch.inference_mode if torch.is_inference_mode_enabled() else torch.no_grad

    def share(i: int, js: List[int]) -> Callable[[], None]:
        def fn() -> None:
            with mode():
                run(i, js)
        return fn

    workers.run([share(i, js) for i, js in enumerate(shares) if js])


def window_attention(
    q: Optional[torch.Tensor], k: torch.Tensor, v: torch.Tensor, spec: WindowSpec, *,
    rs: Optional[torch.Tensor] = None, want_lse: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Chunked window attention over the sequences described by ``spec``.

    q: query buffer (contiguous), or None to take a chunk's queries from its own key rows
       (window rows [qoff, qoff + c)) times the row scales ``rs`` (J, chunks*c, 1)
       (Reformer's shared QK with normalized keys).
    k, v: key / value buffers (contiguous, same layout).
    Returns the output buffer (shape ``spec.o_shape``, the layout of q) and, with ``want_lse``,
    the log-sum-exp of every query's scores (J, chunks*c, 1) (differentiable), else an empty
    tensor.
    """
    q = q.contiguous() if q is not None else None
    k, v = k.contiguous(), v.contiguous()
    mc = spec.chunks
    spec.block = max(1, min(mc, _BLOCK_SCORES // (spec.c * spec.L)))
    nz = (spec.kbias != 0).flatten(2).any(-1)  # (Jb, chunks)
    pad = (-mc) % spec.block
    if pad:
        nz = torch.cat([nz, nz.new_zeros(nz.shape[0], pad)], 1)
    spec.kb_nz = nz.view(nz.shape[0], -1, spec.block).any(-1).tolist()
    return _WindowAttention.apply(q, rs, k, v, spec, want_lse)


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

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
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
        if fast and plain_linear(self.qkv):  # straight into the buffers, one at a time
            qb = self._project(x, 0, nq, 0)  # (B, nq, D)
            kb = self._project(x, 1, nk, dil * wpad)  # (B, nk, D)
            vb = self._project(x, 2, nk, dil * wpad)  # (B, nk, D)
        elif plain_linear(self.qkv):  # autograd: one projection at a time too
            w, bias = self.qkv.weight, self.qkv.bias
            qb = F.linear(x, w[:d], bias[:d])  # (B, N, D)
            qb = qb if nq == n else F.pad(qb, (0, 0, 0, nq - n))  # (B, nq, D)
            kb = F.pad(F.linear(x, w[d:2 * d], bias[d:2 * d]), (0, 0, dil * wpad, nk - n - dil * wpad))  # (B, nk, D)
            vb = F.pad(F.linear(x, w[2 * d:], bias[2 * d:]), (0, 0, dil * wpad, nk - n - dil * wpad))
        else:  # a quantized / hooked projection: call the module
            q, k, v = self.qkv(x).split(d, dim=-1)  # 3 x (B, N, D)
            qb = F.pad(q, (0, 0, 0, nq - n))  # (B, nq, D)
            kb = F.pad(k, (0, 0, dil * wpad, nk - n - dil * wpad))  # (B, nk, D)
            vb = F.pad(v, (0, 0, dil * wpad, nk - n - dil * wpad))
            del q, k, v

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
