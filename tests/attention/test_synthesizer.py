"""Synthesizer (Tay et al. 2020): every mode against a naive reference; what ``mix`` means."""
from __future__ import annotations

import math

import pytest
import torch

from autoeff.attention import get_attention

DIM, HEADS, MAX_LEN = 32, 4, 48
DH = DIM // HEADS
Syn = get_attention("synthesizer")
Full = get_attention("full")
MODES = ("dense", "random", "factorized")


def build(mode, mix=False, rank=6, seed=0):
    torch.manual_seed(seed)
    return Syn(DIM, HEADS, Syn.options(mode=mode, mix=mix, rank=rank), max_len=MAX_LEN).eval()


def naive(m, x, mask=None):
    """The LRA formulation, with an explicit (B, H, N, N) logit tensor."""
    b, n, d = x.shape
    split = lambda t: t.view(b, n, HEADS, DH).transpose(1, 2)  # noqa: E731
    v = split(m.v(x))
    if m.opts.mode == "dense":
        logits = torch.relu(split(m.dense1(x))) @ m.dense2.weight[:n].T + m.dense2.bias[:n]
    elif m.opts.mode == "random":
        logits = m.random[:, :n, :n].expand(b, HEADS, n, n)
    else:
        logits = (m.r1[:, :n] @ m.r2[:, :n].transpose(-1, -2)).expand(b, HEADS, n, n)
    if m.opts.mix:
        q, k = m.qk(x).chunk(2, dim=-1)
        logits = logits + split(q) @ split(k).transpose(-1, -2) / math.sqrt(DH)
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    return m.out((torch.softmax(logits, -1) @ v).transpose(1, 2).reshape(b, n, d))


def _mask(n):
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, n // 2:] = False
    return mask


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("mix", [False, True])
@pytest.mark.parametrize("rank", [3, 12])  # rank below and above Dh (zero-padding of either side)
def test_each_mode_matches_naive_reference(mode, mix, rank):
    m = build(mode, mix, rank)
    x = torch.randn(2, 37, DIM)
    with torch.no_grad():
        for mask in (None, _mask(37)):
            torch.testing.assert_close(m(x, mask), naive(m, x, mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_match_naive_reference(mode):
    m = build(mode, mix=True).train()
    x = torch.randn(2, 30, DIM, requires_grad=True)
    mask = _mask(30)
    params = [x] + list(m.parameters())
    g1 = torch.autograd.grad(m(x, mask)[mask].pow(2).sum(), params)
    g2 = torch.autograd.grad(naive(m, x, mask)[mask].pow(2).sum(), params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["random", "factorized"])
def test_without_mix_random_weights_ignore_the_input(mode):
    """mix=False: the attention weights do not depend on x, so the layer is affine in x."""
    m = build(mode)
    x1, x2 = torch.randn(2, 2, 40, DIM)
    zero = torch.zeros_like(x1)
    with torch.no_grad():
        torch.testing.assert_close(m(x1 + x2) + m(zero), m(x1) + m(x2), rtol=1e-4, atol=1e-5)
        mixed = build(mode, mix=True)
        assert not torch.allclose(mixed(x1 + x2) + mixed(zero), mixed(x1) + mixed(x2), atol=1e-3)


@pytest.mark.parametrize("mode", MODES)
def test_mix_adds_dot_product_logits(mode):
    """mix=True with the synthetic logits zeroed is exactly full dot-product attention."""
    m = build(mode, mix=True)
    with torch.no_grad():
        if mode == "dense":
            m.dense2.weight.zero_()
            m.dense2.bias.zero_()
        elif mode == "random":
            m.random.zero_()
        else:
            m.r1.zero_()
    full = Full(DIM, HEADS, max_len=MAX_LEN).eval()
    full.load_state_dict({
        "qkv.weight": torch.cat([m.qk.weight, m.v.weight]), "qkv.bias": torch.cat([m.qk.bias, m.v.bias]),
        "out.weight": m.out.weight, "out.bias": m.out.bias,
    })
    x = torch.randn(2, 40, DIM)
    mask = _mask(40)
    with torch.no_grad():
        torch.testing.assert_close(m(x, mask)[mask], full(x, mask)[mask], rtol=1e-5, atol=1e-5)
        build_plain = build(mode, mix=False)
        assert build_plain.qk is None  # without mix there are no query/key projections


@pytest.mark.parametrize("mode", MODES)
def test_shorter_input_equals_padding_to_max_len(mode):
    m = build(mode, mix=True)
    n = 29
    x = torch.randn(2, n, DIM)
    xp = torch.cat([x, torch.randn(2, MAX_LEN - n, DIM)], dim=1)
    mask = torch.zeros(2, MAX_LEN, dtype=torch.bool)
    mask[:, :n] = True
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(xp, mask)[:, :n], rtol=1e-5, atol=1e-5)


def test_dense_and_factorized_use_the_fused_kernel():
    """No N x N tensor: peak memory of dense/factorized is far below one (B, H, N, N) logit tensor."""
    from autoeff.measure import peak_memory

    n = 1024
    for mode, mix in (("dense", False), ("factorized", False), ("factorized", True)):
        torch.manual_seed(0)
        m = Syn(16, 2, Syn.options(mode=mode, mix=mix, rank=8), max_len=n).eval()
        x = torch.randn(1, n, 16)
        assert peak_memory(lambda: m(x)).peak_bytes < n * n * 4, (mode, mix)


def test_problems_and_fixed_length():
    keys = lambda o, L=64: [p[0] for p in Syn.problems(o, seq_len=L, width=DIM, heads=HEADS)]  # noqa: E731
    assert keys(Syn.options()) == []
    assert keys(Syn.options(mode="factorized", rank=65)) == ["rank"]
    assert keys(Syn.options(mode="factorized", rank=0)) == ["rank"]
    assert keys(Syn.options(mode="random", rank=65)) == []  # rank only matters when factorized
    assert keys(Syn.options(mode="sparse")) == ["mode"]
    assert Syn.needs_fixed_length
    with pytest.raises(ValueError):
        build("factorized")(torch.randn(1, MAX_LEN + 1, DIM))
