"""Peak memory of a pass, from the allocator's point of view (tensor storage, not the Python
heap), on every thread.

CPU: `memray <https://github.com/bloomberg/memray>`_ records every allocation and free that
any thread of the process makes through the C allocator. Tensor storage on CPU is allocated
with ``posix_memalign`` (c10's ``alloc_cpu``), as are the workspaces of oneDNN and the BLAS, so
the running sum of the aligned allocations and their frees, in time order, peaks at the pass's
peak memory above the level at which the pass started (the idle baseline: weights and inputs
that already exist are not counted). Worker threads (the window kernel of Longformer and
Reformer, OpenMP and BLAS threads) are counted like the calling thread, which the PyTorch
profiler's memory events do not do: it sees the calling thread only. Where memray is not
available (Windows) or already tracking this process, the profiler is used and the result says
so in ``method``.

CUDA: ``max_memory_allocated`` after a reset, minus the allocated bytes before the pass (the
caching allocator serves every thread and stream).
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

METHOD_MEMRAY = "memray: aligned C allocations of every thread (tensor storage, BLAS/oneDNN workspaces)"
METHOD_PROFILER = "torch.profiler(profile_memory): calling thread only"


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's C++ side prints start/stop lines on fd 2; hide them, keep Python's."""
    try:
        sys.stderr.flush()
        fd = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): do nothing
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


@dataclass
class MemoryResult:
    peak_bytes: int  # peak of live allocated bytes above the baseline, during the pass
    device: str
    method: str

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


def peak_memory(fn: Callable[[], object], *, device: str = "cpu", grad: bool = False) -> MemoryResult:
    """Peak memory allocated while ``fn()`` runs, above what was live before it, whichever
    thread allocates it.

    ``grad=False`` runs under ``torch.inference_mode`` (a deployed forward pass).
    """
    ctx = torch.enable_grad() if grad else torch.inference_mode()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with ctx:
            out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out
        return MemoryResult(int(max(0, peak)), device, "cuda.max_memory_allocated")
    peak = _memray_peak(fn, ctx)
    if peak is not None:
        return MemoryResult(peak, device, METHOD_MEMRAY)
    return MemoryResult(_profiler_peak(fn, ctx), device, METHOD_PROFILER)


def _memray_peak(fn: Callable[[], object], ctx) -> "int | None":
    """Peak of aligned allocations (all threads) during ``fn()``, or None without memray."""
    try:
        import memray
        from memray import AllocatorType, FileReader
    except ImportError:
        return None
    aligned = {AllocatorType.POSIX_MEMALIGN, AllocatorType.ALIGNED_ALLOC, AllocatorType.MEMALIGN,
               AllocatorType.VALLOC, AllocatorType.PVALLOC}
    with tempfile.TemporaryDirectory(prefix="autoeff-mem-") as tmp:
        path = os.path.join(tmp, "pass.bin")
        try:
            tracker = memray.Tracker(path, native_traces=False, trace_python_allocators=False, follow_fork=False)
            tracker.__enter__()
        except RuntimeError:  # another tracker is active in this process
            return None
        try:
            with ctx:
                out = fn()
            del out
        finally:
            tracker.__exit__(None, None, None)
        live = {}
        cur = peak = 0
        free = AllocatorType.FREE
        for rec in FileReader(path).get_allocation_records():
            kind = rec.allocator
            if kind in aligned:
                live[rec.address] = rec.size
                cur += rec.size
                if cur > peak:
                    peak = cur
            elif kind is free or kind == free:
                size = live.pop(rec.address, None)  # frees of blocks from before the pass: ignored
                if size is not None:
                    cur -= size
    return int(peak)


def _profiler_peak(fn: Callable[[], object], ctx) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
            with ctx:
                out = fn()
            del out
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        if "cpu" not in str(e.device_type()).lower():
            continue
        live += e.nbytes()
        peak = max(peak, live)
    return int(peak)
