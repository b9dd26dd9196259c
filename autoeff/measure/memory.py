"""Peak memory of a pass, from the allocator's point of view (tensor allocations, not the
Python heap).

CPU: the PyTorch profiler with ``profile_memory=True`` records every allocation and free of
tensor storage; the running sum of those events, in time order, peaks at the pass's peak
memory above the level at which the pass started (the idle baseline: weights and inputs that
already exist are not counted). CUDA: ``max_memory_allocated`` after a reset, minus the
allocated bytes before the pass.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

import torch


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
    peak_bytes: int  # peak of live tensor bytes above the baseline, during the pass
    device: str
    method: str

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


def peak_memory(fn: Callable[[], object], *, device: str = "cpu", grad: bool = False) -> MemoryResult:
    """Peak tensor memory allocated while ``fn()`` runs, above what was live before it.

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
    return MemoryResult(int(peak), device, "torch.profiler(profile_memory)")
