"""measure_decoder: the decode protocol (docs/decoders.md §4, DESIGN.md "Decoders") on a tiny
stand-in decoder with the documented API (init_cache / forward_cached / cache_bytes)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from autoeff.measure.decode import (CacheSizeMismatch, analytic_cache_bytes, cache_tensor_bytes,
                                    measure_decoder)


class StandInCache:
    """A LayerCache-like list of per-layer (k, v) tensors that grow with the context."""

    def __init__(self, layers: int):
        self.kv = [None] * layers
        self.length = 0

    def tensors(self):
        return [t for kv in self.kv if kv is not None for t in kv]


class StandInAttention(nn.Module):
    """Single-head causal attention with a growing K/V cache (window=0: unbounded)."""

    def __init__(self, width: int, window: int = 0):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)
        self.window = window

    def cache_bytes(self, batch: int, context: int, bytes_per_value: int) -> int:
        kept = min(context, self.window) if self.window else context
        return 2 * batch * kept * self.qkv.in_features * bytes_per_value

    def step(self, x, kv):
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # (B, T, D) each
        if kv is not None:
            k, v = torch.cat([kv[0], k], 1), torch.cat([kv[1], v], 1)  # (B, S, D)
        t, s = q.shape[1], k.shape[1]
        mask = torch.ones(t, s, dtype=torch.bool).tril(s - t)
        y = torch.softmax((q @ k.transpose(1, 2)).masked_fill(~mask, -math.inf) / math.sqrt(q.shape[-1]), -1) @ v
        if self.window:
            k, v = k[:, -self.window:], v[:, -self.window:]
        return y, (k, v)


class StandInDecoder(nn.Module):
    def __init__(self, vocab=17, width=8, depth=2, window=0):
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(StandInAttention(width, window) for _ in range(depth))
        self.head = nn.Linear(width, vocab)
        self.calls = []  # number of tokens of each forward_cached call

    def init_cache(self, batch):
        return StandInCache(len(self.layers))

    def forward_cached(self, x, cache):
        self.calls.append(x.shape[1])
        h = self.emb(x)  # (B, T, D)
        for i, layer in enumerate(self.layers):
            y, cache.kv[i] = layer.step(h, cache.kv[i])
            h = h + y
        cache.length += x.shape[1]
        return self.head(h)  # (B, T, V)


def _measure(model, **kw):
    args = dict(batch_size=2, prompt_len=5, context_len=40, warmup=2, repeats=16, prefill_warmup=1,
                prefill_repeats=2, gated=False)
    args.update(kw)
    return measure_decoder(model, **args)


def test_cache_mb_equals_the_analytic_size():
    torch.manual_seed(0)
    model = StandInDecoder(width=8, depth=2)
    r = _measure(model)
    expected = 2 * 2 * 2 * 40 * 8 * 4  # layers x (k, v) x batch x context x width x fp32
    assert r.cache_bytes == expected
    assert r.cache_bytes_analytic == expected
    assert r.cache_mb == pytest.approx(expected / 2**20)
    assert r.cache_mb_analytic == pytest.approx(r.cache_mb)
    m = r.as_metrics()
    for key in ("prefill_ms", "decode_ms", "tokens_per_s", "cache_mb", "cache_mb_analytic", "peak_memory_mb",
                "decode_spread", "prefill_spread", "threads"):
        assert key in m and m[key] >= 0, key
    assert m["tokens_per_s"] == pytest.approx(2 * 1000 / m["decode_ms"])
    assert r.peak_memory_mb >= r.weights_mb + r.cache_mb
    assert r.machine["host"] and "cpu" in r.machine


def test_a_window_cache_stays_at_the_window():
    model = StandInDecoder(width=8, depth=1, window=12)
    r = _measure(model, batch_size=1)
    assert r.cache_bytes == 2 * 12 * 8 * 4


def test_a_wrong_analytic_size_raises():
    model = StandInDecoder(width=8, depth=2)
    with pytest.raises(CacheSizeMismatch):
        _measure(model, analytic_bytes=2 * 2 * 2 * 39 * 8 * 4 * 2)  # twice the truth
    # a layer that under-reports by a window it does not apply
    model = StandInDecoder(width=8, depth=1)
    model.layers[0].window = 0
    model.layers[0].cache_bytes = lambda b, c, bpv: 2 * b * min(c, 10) * 8 * bpv
    with pytest.raises(CacheSizeMismatch):
        _measure(model)


def test_the_protocol_runs_the_steps_it_claims():
    model = StandInDecoder()
    r = _measure(model, warmup=3, repeats=16, prefill_warmup=2, prefill_repeats=3, context_len=50, prompt_len=7)
    steps = 3 + 16
    assert r.decode_steps == steps
    assert r.decode.repeats == 16 and len(r.decode.samples_ms) == 16
    assert r.prefill.repeats == 3 and len(r.prefill.samples_ms) == 3
    # prefill passes (memory pass + 1 more warm-up + 3 timed) over the prompt, one cache fill,
    # then single-token steps that end exactly at context_len
    assert model.calls == [7] * (1 + 1 + 3) + [50 - steps] + [1] * steps
    # warmup=0 still runs one untimed step first (the memory pass)
    model = StandInDecoder()
    r = _measure(model, warmup=0, repeats=16, prefill_warmup=1, prefill_repeats=1, context_len=30)
    assert model.calls == [5, 5, 30 - 17] + [1] * 17


def test_context_too_short_for_the_steps_is_refused():
    with pytest.raises(ValueError, match="context_len"):
        _measure(StandInDecoder(), context_len=18, warmup=2, repeats=16)


def test_analytic_sum_counts_outermost_layers_once():
    model = StandInDecoder(width=8, depth=3)
    assert analytic_cache_bytes(model, 2, 10, 4) == 3 * 2 * 2 * 10 * 8 * 4
    cache = model.init_cache(1)
    model.forward_cached(torch.ones(1, 4, dtype=torch.long), cache)
    assert cache_tensor_bytes(cache) == 3 * 2 * 4 * 8 * 4


def test_the_measurement_takes_the_gate(tmp_path, monkeypatch):
    from autoeff import isolation

    g = isolation.MeasureGate(directory=tmp_path, enabled=True, timeout_s=5)
    monkeypatch.setattr(isolation, "_GATE", g)
    monkeypatch.setattr(isolation, "_GATE_PID", __import__("os").getpid())
    seen = []
    model = StandInDecoder()
    orig = model.forward_cached

    def spy(x, cache):
        seen.append(g._measure_depth)
        return orig(x, cache)

    model.forward_cached = spy
    _measure(model, gated=True)
    assert seen and all(d == 1 for d in seen)
    assert g._measure_depth == 0
