"""Decoder figures: prefill time, per-token decode time, tokens/s and the size of the cache.

The protocol is DESIGN.md's ("Decoders") and docs/decoders.md §4, built from the same pieces as
every other measurement: :func:`~autoeff.measure.latency.measure_latency` (warm-up, median,
p10/p90 spread, thread count), :func:`~autoeff.measure.memory.peak_memory` (every thread's
allocations, memray on CPU), :func:`~autoeff.measure.host.machine_info` (host tags) and the
machine's measurement gate (:func:`autoeff.isolation.gate`).

A decoder is anything with the decoder API of docs/decoders.md §3: ``init_cache(batch)`` returning
a cache with ``length`` and ``tensors()``, and ``forward_cached(x, cache)`` that advances the
cache by ``x.shape[1]`` tokens. The Hugging Face side of ``autoeff bench decode`` wraps
``transformers`` models in that API.

Protocol (``steps = max(warmup, 1) + repeats`` single-token steps):

* **prefill**: one pass of ``forward_cached(prompt, empty cache)`` over ``prompt_len`` tokens is
  what is timed (the time to the first token); ``prefill_warmup`` untimed passes, then the
  median of ``prefill_repeats`` timed ones, each from a fresh empty cache.
* **decode**: the cache is filled once with ``context_len - steps`` tokens (one prefill pass,
  untimed), then single-token ``forward_cached`` steps run without resetting the cache: the
  first step is the memory pass (it doubles as a warm-up), ``max(warmup, 1) - 1`` more warm-up
  steps follow, then ``repeats`` timed steps; the last timed step brings the context to exactly
  ``context_len`` (the timed steps see contexts ``context_len - repeats + 1 .. context_len``,
  a relative spread of ``repeats / context_len``; we chose this over cropping the cache back
  after every step because a fixed-size recurrent state cannot be cropped). ``decode_ms`` is
  the median of the timed steps; ``tokens_per_s = batch_size * 1000 / decode_ms``.
* **cache**: after the last step, ``cache_mb`` sums the bytes of ``cache.tensors()`` (each
  distinct tensor once) and ``cache_mb_analytic`` the analytic size (each attention layer's
  ``cache_bytes(batch, context_len, bytes_per_value)``, or ``model.cache_bytes`` if the model
  has one, or the caller's ``analytic_bytes``); they must agree within ``rtol`` (plus a few
  bytes of bookkeeping, ``atol_bytes``) or :class:`CacheSizeMismatch` is raised.
* **memory**: ``peak_memory_mb`` is the deployed footprint while decoding: the weights, plus the
  larger of the prefill pass's peak (from an empty cache) and the filled cache plus one decode
  step's peak above it.

MiB throughout (1 MiB = 2**20 bytes).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch

from ..isolation import GateStats, gate
from .host import machine_info
from .latency import LatencyResult, measure_latency
from .memory import peak_memory
from .size import model_size

MIB = 2**20


class CacheSizeMismatch(RuntimeError):
    """The cache's tensors do not add up to the analytic ``cache_bytes``."""


@dataclass
class DecodeResult:
    """What :func:`measure_decoder` measured (times in ms, sizes in MiB)."""

    prefill: LatencyResult
    decode: LatencyResult
    batch_size: int
    prompt_len: int
    context_len: int
    decode_steps: int  # single-token forward_cached calls after the cache fill (memory + warm-up + timed)
    cache_bytes: int
    cache_bytes_analytic: int
    weights_mb: float
    prefill_peak_mb: float  # activation peak of one prefill pass (the new cache included)
    decode_peak_mb: float  # activation peak of one decode step above the filled cache
    memory_method: str
    machine: Dict[str, str] = field(default_factory=dict)
    measure_wait_s: float = 0.0
    measure_contended: bool = False
    measure_gate_timeout: bool = False

    @property
    def prefill_ms(self) -> float:
        return self.prefill.median_ms

    @property
    def decode_ms(self) -> float:
        return self.decode.median_ms

    @property
    def tokens_per_s(self) -> float:
        return self.batch_size * 1000.0 / self.decode_ms if self.decode_ms > 0 else float("inf")

    @property
    def cache_mb(self) -> float:
        return self.cache_bytes / MIB

    @property
    def cache_mb_analytic(self) -> float:
        return self.cache_bytes_analytic / MIB

    @property
    def peak_memory_mb(self) -> float:
        return self.weights_mb + max(self.prefill_peak_mb, self.cache_mb + self.decode_peak_mb)

    def as_metrics(self) -> Dict[str, float]:
        """The docs/decoders.md §4 figures plus their spread, threads and the gate's record."""
        m = {"prefill_ms": self.prefill_ms, "decode_ms": self.decode_ms, "tokens_per_s": self.tokens_per_s,
             "cache_mb": self.cache_mb, "cache_mb_analytic": self.cache_mb_analytic,
             "peak_memory_mb": self.peak_memory_mb, "prefill_peak_mb": self.prefill_peak_mb,
             "decode_peak_mb": self.decode_peak_mb, "size_mb": self.weights_mb,
             "threads": float(self.decode.threads), "measure_wait_s": self.measure_wait_s,
             "measure_contended": float(self.measure_contended)}
        m.update({k: v for k, v in self.prefill.as_metrics("prefill").items() if k != "prefill_ms"})
        m.update({k: v for k, v in self.decode.as_metrics("decode").items() if k != "decode_ms"})
        if self.measure_gate_timeout:
            m["measure_gate_timeout"] = 1.0
        return m


def cache_tensor_bytes(cache: Any) -> int:
    """Bytes of the cache's tensors (``cache.tensors()``), each distinct tensor counted once."""
    seen = set()
    total = 0
    for t in cache.tensors():
        if t is None:
            continue
        key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() and key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return int(total)


def analytic_cache_bytes(model: torch.nn.Module, batch: int, context: int, bytes_per_value: int) -> int:
    """``model.cache_bytes(...)`` if the model has one, else the sum of ``cache_bytes`` over its
    outermost submodules that have one (the attention layers: docs/decoders.md §1)."""
    own = getattr(model, "cache_bytes", None)
    if callable(own):
        return int(own(batch, context, bytes_per_value))
    total, found = 0, False
    covered: List[str] = []
    for name, mod in model.named_modules():
        if not name or not callable(getattr(mod, "cache_bytes", None)):
            continue
        if any(name.startswith(c + ".") for c in covered):
            continue  # a submodule of a layer already counted
        covered.append(name)
        total += int(mod.cache_bytes(batch, context, bytes_per_value))
        found = True
    if not found:
        raise TypeError(f"{type(model).__name__} has no cache_bytes and no submodule with one; "
                        "pass analytic_bytes=")
    return total


def _vocab_size(model: torch.nn.Module) -> int:
    v = getattr(model, "vocab_size", None)
    if isinstance(v, int) and v > 0:
        return v
    for mod in model.modules():
        if isinstance(mod, torch.nn.Embedding):
            return mod.num_embeddings
    raise TypeError(f"cannot tell the vocabulary size of {type(model).__name__}; pass vocab_size=")


def _dtype_of(model: torch.nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def measure_decoder(model: torch.nn.Module, *, batch_size: int = 1, prompt_len: int, context_len: int,
                    warmup: int = 3, repeats: int = 16, prefill_warmup: int = 1, prefill_repeats: int = 3,
                    threads: int = 0, device: str = "cpu", vocab_size: Optional[int] = None,
                    analytic_bytes: Optional[int] = None, bytes_per_value: Optional[int] = None,
                    rtol: float = 1e-3, atol_bytes: int = 256, seed: int = 0, gated: bool = True,
                    progress: Optional[Callable[[str], None]] = None) -> DecodeResult:
    """Prefill and decode figures of a decoder as deployed (eval mode), by the protocol of this
    module's docstring (DESIGN.md "Decoders", docs/decoders.md §4).

    ``repeats`` >= 16 is the protocol's minimum for a reported figure (smaller values are allowed
    for smoke tests). Raises :class:`CacheSizeMismatch` when the cache's tensors and the analytic
    size disagree, ``ValueError`` when ``context_len`` leaves no room for the steps.
    """
    if repeats < 1 or prefill_repeats < 1:
        raise ValueError("repeats and prefill_repeats must be >= 1")
    steps = max(warmup, 1) + repeats
    fill = context_len - steps
    if fill < 1:
        raise ValueError(f"context_len={context_len} must exceed the {steps} decode steps "
                         f"(max(warmup, 1) + repeats)")
    if prompt_len < 1:
        raise ValueError("prompt_len must be >= 1")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device is cuda but no CUDA device is available")
    say = progress or (lambda _msg: None)
    vocab = vocab_size or _vocab_size(model)
    was_training = model.training
    model.eval().to(device)
    weights_mb = model_size(model)["size_bytes"] / MIB
    bpv = bytes_per_value or torch.empty((), dtype=_dtype_of(model)).element_size()
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(1, max(2, vocab), (batch_size, prompt_len), generator=g).to(device)
    context = torch.randint(1, max(2, vocab), (batch_size, fill), generator=g).to(device)
    step_ids = torch.randint(1, max(2, vocab), (batch_size, steps), generator=g).to(device)

    def prefill():
        return model.forward_cached(prompt, model.init_cache(batch_size))

    old_threads = torch.get_num_threads()
    lock = gate().measure() if gated else contextlib.nullcontext(GateStats())
    try:
        with lock as waited:
            if threads > 0:
                torch.set_num_threads(threads)
            say(f"prefill {prompt_len} tokens")
            pre_mem = peak_memory(prefill, device=device)  # doubles as the first prefill warm-up
            pre = measure_latency(prefill, warmup=max(prefill_warmup - 1, 0), repeats=prefill_repeats,
                                  device=device, threads=threads)
            say(f"fill the cache to {fill} tokens")
            with torch.inference_mode():
                cache = model.init_cache(batch_size)
                model.forward_cached(context, cache)
            i = [0]

            def step():
                k = i[0]
                i[0] += 1
                return model.forward_cached(step_ids[:, k:k + 1], cache)  # (B, 1) -> (B, 1, V)

            dec_mem = peak_memory(step, device=device)  # the first step; it doubles as a warm-up
            say(f"{steps - 1} more decode steps up to context {context_len}")
            dec = measure_latency(step, warmup=max(warmup, 1) - 1, repeats=repeats, device=device,
                                  threads=threads)
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    if i[0] != steps:
        raise RuntimeError(f"ran {i[0]} decode steps, expected {steps}")
    length = int(getattr(cache, "length", context_len))
    if length != context_len:
        raise RuntimeError(f"the cache holds {length} tokens after the steps, expected {context_len}")
    actual = cache_tensor_bytes(cache)
    analytic = int(analytic_bytes) if analytic_bytes is not None else \
        analytic_cache_bytes(model, batch_size, context_len, bpv)
    del cache
    if abs(actual - analytic) > rtol * analytic + atol_bytes:
        raise CacheSizeMismatch(
            f"the cache holds {actual} bytes ({actual / MIB:.3f} MiB) after {context_len} tokens; "
            f"the analytic cache_bytes says {analytic} ({analytic / MIB:.3f} MiB)")
    return DecodeResult(
        prefill=pre, decode=dec, batch_size=batch_size, prompt_len=prompt_len, context_len=context_len,
        decode_steps=steps, cache_bytes=actual, cache_bytes_analytic=analytic, weights_mb=weights_mb,
        prefill_peak_mb=pre_mem.peak_mb, decode_peak_mb=dec_mem.peak_mb,
        memory_method=pre_mem.method, machine=machine_info(device),
        measure_wait_s=waited.wait_s, measure_contended=bool(waited.contended),
        measure_gate_timeout=bool(waited.timed_out),
    )
