"""Inference latency: warm-up passes, then the median of repeated timed passes."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, List

import torch


@dataclass
class LatencyResult:
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    spread: float  # (p90 - p10) / median: how noisy the repeats were
    repeats: int
    threads: int
    device: str
    samples_ms: List[float] = field(default_factory=list, repr=False)

    def as_metrics(self, prefix: str = "latency") -> dict:
        return {
            f"{prefix}_ms": self.median_ms,
            f"{prefix}_p10_ms": self.p10_ms,
            f"{prefix}_p90_ms": self.p90_ms,
            f"{prefix}_spread": self.spread,
        }


def _quantile(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def measure_latency(fn: Callable[[], object], *, warmup: int = 3, repeats: int = 15,
                    device: str = "cpu", threads: int = 0) -> LatencyResult:
    """Time ``fn()`` (one inference pass): ``warmup`` untimed calls, then ``repeats`` timed ones.

    ``threads`` > 0 sets torch's intra-op thread count for the measurement (restored after).
    On CUDA the timed region is synchronized on both sides.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    old_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                fn()
            samples = []
            for _ in range(repeats):
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                if cuda:
                    torch.cuda.synchronize()
                samples.append((time.perf_counter() - t0) * 1e3)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    med = statistics.median(samples)
    p10, p90 = _quantile(samples, 0.1), _quantile(samples, 0.9)
    return LatencyResult(
        median_ms=med, p10_ms=p10, p90_ms=p90, min_ms=min(samples),
        spread=(p90 - p10) / med if med > 0 else 0.0, repeats=repeats, threads=used,
        device=device, samples_ms=samples,
    )
