"""The causal contract (docs/decoders.md §1), checked for every family with supports_causal:
no look-ahead, incremental decoding equals the causal forward (prefill + single-token steps, at
lengths crossing windows and chunks), padding, bf16, grouped-query attention, cache sizes, rotary.
Parametrized over the registry, so a new causal family is picked up automatically."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import autoeff
from autoeff.attention import LayerCache, Rotary, get_attention

DIM, HEADS, BATCH = 32, 4, 2

# option sets for the causal tests: small windows / chunks, so that the lengths below cross them
VARIANTS = {
    "full": [{}, {"kv_heads": 2}, {"kv_heads": 1}],
    "sliding_window": [{"window": 8}, {"window": 5, "kv_heads": 2}],
    "longformer": [{"window": 8, "global_tokens": 2}, {"window": 6, "global_tokens": 0, "dilation": 2}],
    "linear": [{"feature_map": "elu", "chunk": 8}, {"feature_map": "favor", "features": 16, "chunk": 8}],
    "reformer": [{"n_hashes": 1, "bucket_size": 8}, {"n_hashes": 2, "bucket_size": 4}],
    "synthesizer": [{"mode": "dense"}, {"mode": "factorized", "rank": 8, "mix": True}],
    "gated_deltanet": [{"chunk_size": 8}, {"chunk_size": 16, "conv_size": 3}],
}
MAX_LEN = 64


def _opts(name, ov):
    fam = get_attention(name)
    fields = {f.name for f in dataclasses.fields(fam.options)}
    ov = {k: v for k, v in ov.items() if k in fields or pytest.fail(f"{name}: unknown option {k}")}
    return fam.options(**ov)


def _cases():
    out = []
    for name in autoeff.list_attentions():
        fam = get_attention(name)
        if not fam.supports_causal:
            continue
        for i, ov in enumerate(VARIANTS.get(name, [{}])):
            out.append(pytest.param(name, ov, id=f"{name}-{i}"))
    return out


CASES = _cases()


def build(name, ov, *, seed=0, dim=DIM, max_len=MAX_LEN):
    torch.manual_seed(seed)
    return get_attention(name)(dim, HEADS, _opts(name, ov), max_len=max_len).eval()


def test_the_causal_families_are_registered():
    names = {n for n in autoeff.list_attentions() if get_attention(n).supports_causal}
    assert {"full", "sliding_window", "longformer", "linear", "reformer", "synthesizer", "gated_deltanet"} <= names
    assert not get_attention("linformer").supports_causal
    for n in names:
        assert get_attention(n).decode_cost in ("kv", "window", "state", "recompute"), n


@pytest.mark.parametrize("name,ov", CASES)
@pytest.mark.parametrize("i", [0, 9, 30])
def test_no_position_sees_a_later_one(name, ov, i):
    m = build(name, ov)
    n = 40
    x = torch.randn(BATCH, n, DIM)
    x2 = x.clone()
    x2[:, i + 1:] = 3.0 * torch.randn(BATCH, n - i - 1, DIM)
    with torch.no_grad():
        a, b = m(x, causal=True), m(x2, causal=True)
    torch.testing.assert_close(a[:, :i + 1], b[:, :i + 1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[:, i + 1:], b[:, i + 1:], atol=1e-4)


def _decode(m, x, prefill):
    """prefill tokens at once, then one token at a time."""
    cache = m.init_cache(x.shape[0], x.device, x.dtype)
    assert isinstance(cache, LayerCache) and cache.length == 0
    ys = [m.forward_cached(x[:, :prefill], cache)] if prefill else []
    for t in range(prefill, x.shape[1]):
        ys.append(m.forward_cached(x[:, t:t + 1], cache))
    assert cache.length == x.shape[1]
    return torch.cat(ys, dim=1), cache


@pytest.mark.parametrize("name,ov", CASES)
@pytest.mark.parametrize("n,prefill", [(23, 0), (23, 1), (37, 11), (50, 17)])
@pytest.mark.parametrize("rope", [False, True], ids=["norope", "rope"])
def test_cached_decoding_equals_the_causal_forward(name, ov, n, prefill, rope):
    m = build(name, ov)
    if rope:
        m.rotary = Rotary(m.head_dim, 100.0)
    x = torch.randn(BATCH, n, DIM)
    with torch.no_grad():
        want = m(x, causal=True)
        got, _ = _decode(m, x, prefill)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,ov", CASES)
def test_cached_decoding_in_uneven_pieces(name, ov):
    m = build(name, ov)
    x = torch.randn(BATCH, 45, DIM)
    with torch.no_grad():
        want = m(x, causal=True)
        cache = m.init_cache(BATCH, x.device, x.dtype)
        ys, s = [], 0
        for t in (5, 1, 9, 3, 1, 17, 2, 7):
            ys.append(m.forward_cached(x[:, s:s + t], cache))
            s += t
    torch.testing.assert_close(torch.cat(ys, 1), want, rtol=1e-4, atol=1e-4)


def test_rotary_changes_the_outputs_of_dot_product_families():
    for name, ov in (("full", {}), ("sliding_window", {"window": 8})):
        m = build(name, ov)
        x = torch.randn(1, 20, DIM)
        with torch.no_grad():
            a = m(x, causal=True)
            m.rotary = Rotary(m.head_dim)
            b = m(x, causal=True)
        assert not torch.allclose(a[:, 1:], b[:, 1:], atol=1e-4), name
        torch.testing.assert_close(a[:, :1], b[:, :1])  # position 0 is not rotated


def test_rotary_is_relative():
    """<R(p) q, R(p') k> depends only on p - p'."""
    r = Rotary(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def dot(pq, pk):
        return (r.apply(q, torch.tensor([pq])) * r.apply(k, torch.tensor([pk]))).sum()
    torch.testing.assert_close(dot(5, 2), dot(13, 10))
    assert not torch.allclose(dot(5, 2), dot(5, 3))


@pytest.mark.parametrize("name,ov", CASES)
@pytest.mark.parametrize("n", [29, 40])
def test_causal_padding_never_changes_real_outputs(name, ov, n):
    m = build(name, ov)
    mask = torch.ones(BATCH, n, dtype=torch.bool)
    mask[1, (2 * n) // 3:] = False
    x = torch.randn(BATCH, n, DIM)
    x2 = x.clone()
    x2[~mask] = 5.0 * torch.randn(int((~mask).sum()), DIM)
    with torch.no_grad():
        y, y2 = m(x, mask, causal=True), m(x2, mask, causal=True)
        alone = m(x[1:, :(2 * n) // 3], causal=True)
    assert torch.isfinite(y).all() and torch.isfinite(y2).all()
    torch.testing.assert_close(y[mask], y2[mask], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y[1, mask[1]], alone[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,ov", CASES)
def test_bf16_causal_and_decoding_stay_finite(name, ov):
    n, dim = 96, 64
    torch.manual_seed(0)
    m = get_attention(name)(dim, HEADS, _opts(name, ov), max_len=128).eval().to(torch.bfloat16)
    m.rotary = Rotary(dim // HEADS)
    x = (4.0 * torch.randn(BATCH, n, dim)).to(torch.bfloat16)
    with torch.no_grad():
        y = m(x, causal=True)
        got, _ = _decode(m, x[:, :40], 20)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
    # bf16 keeps ~3 significant digits: the cached path stays near the forward
    assert (got.float() - y[:, :40].float()).abs().max() < 0.1 * y.float().abs().max() + 0.05


@pytest.mark.parametrize("name,ov", CASES)
@pytest.mark.parametrize("context", [1, 7, 30])
def test_cache_bytes_is_the_size_of_the_cache(name, ov, context):
    m = build(name, ov)
    x = torch.randn(BATCH, context, DIM)
    with torch.no_grad():
        _, cache = _decode(m, x, min(context, 3))
    have = sum(t.numel() * t.element_size() for t in cache.tensors())
    assert have == m.cache_bytes(BATCH, context, 4), (name, ov, context, cache)
    assert cache.nbytes() == have


@pytest.mark.parametrize("name", [n for n in autoeff.list_attentions() if get_attention(n).supports_kv_heads])
def test_grouped_query_attention(name):
    fam = get_attention(name)
    assert "kv_heads" in {f.name for f in dataclasses.fields(fam.options)}
    ov = dict(VARIANTS.get(name, [{}])[0])
    for kvh in (1, 2, 4):
        ov["kv_heads"] = kvh
        assert fam.problems(_opts(name, ov), seq_len=MAX_LEN, width=DIM, heads=HEADS) == []
        m = build(name, ov)
        x = torch.randn(BATCH, 12, DIM)
        with torch.no_grad():
            assert m(x, causal=True).shape == x.shape
            _, cache = _decode(m, x, 4)
        for t in cache.tensors():
            assert t.shape[1] == kvh, (name, kvh, t.shape)
    smaller = build(name, dict(ov, kv_heads=1)).cache_bytes(1, 32, 2)
    assert smaller * HEADS == build(name, dict(ov, kv_heads=0)).cache_bytes(1, 32, 2)
    for bad in (3, -1, 8):
        keys = [p[0] for p in fam.problems(_opts(name, dict(ov, kv_heads=bad)), seq_len=MAX_LEN, width=DIM, heads=HEADS)]
        assert "kv_heads" in keys, (name, bad)
