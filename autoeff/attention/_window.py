"""The chunked sliding-window attention kernel shared by Longformer and Reformer.

How it is computed, without any N x N tensor (nor an N x window one for the whole sequence):

* Q, K and V live in zero-padded (B, rows, D) buffers. A sequence (batch b, head h, dilation
  residue r) is the rows r, r+d, r+2d, ... at columns h*Dh..(h+1)*Dh of them: a strided view,
  so nothing is packed or transposed, and dilation is a row stride.
* Each sequence is cut into chunks of c queries; the keys of chunk t are the rows
  [t*c - W, t*c + c + W), an overlapping ``as_strided`` view. A block of chunks is scored with
  one batched matmul on views into one reused score buffer; the exact band and the padding
  mask are additive biases; the output is written in place.
* The kernel also returns each query's log-sum-exp, so callers can merge its attention with
  other keys exactly (Longformer's global tokens, Reformer's hash rounds).
* :class:`_WindowAttention` is a custom autograd Function that recomputes the block scores in
  backward (as FlashAttention does), so training memory is linear in N too.
* The sequences are shared out among worker threads that run single-threaded ops, so the many
  small ops of the kernel cost no OpenMP barriers (see :class:`_Workers`). Allocations made in
  those threads are not seen by the CPU memory profiler; the score buffers are allocated on the
  calling thread, so inference peaks are measured, while a few MB of per-block temporaries in
  training are not.
"""
from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

# scores per block (c * L * chunks floats): 1 MiB, in L2 with the block's keys and values
_BLOCK_SCORES = 1 << 18


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
