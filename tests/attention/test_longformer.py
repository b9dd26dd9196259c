"""Longformer: exactness against naive references, global tokens, padding, gradients."""
from __future__ import annotations

import math

import pytest
import torch

from autoeff.attention import get_attention
from autoeff.attention.longformer import LongformerOptions
from autoeff.errors import ConfigError

DIM, HEADS = 16, 2


def build(window, global_tokens=0, dilation=1, *, seed=0, dropout=0.0, dim=DIM, heads=HEADS):
    torch.manual_seed(seed)
    opts = LongformerOptions(window=window, global_tokens=global_tokens, dilation=dilation)
    return get_attention("longformer")(dim, heads, opts, max_len=64, dropout=dropout).double()


def naive(m, x, mask, *, window, global_tokens, dilation):
    """softmax(QK^T / sqrt(d) + allowed-mask) V with the module's own projections."""
    b, n, d = x.shape
    h = m.heads
    q, k, v = m.qkv(x).view(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, Dh)
    s = q @ k.transpose(-1, -2) / math.sqrt(d // h)
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    rel = j - i
    allowed = (rel.abs() <= (window // 2) * dilation) & (rel % dilation == 0)
    allowed = allowed | (i < global_tokens) | (j < global_tokens)
    allowed = allowed[None, None] & (mask[:, None, None, :] if mask is not None else True)
    p = s.masked_fill(~allowed, float("-inf")).softmax(-1)
    return m.out((p @ v).transpose(1, 2).reshape(b, n, d))


def _mask(b, n):
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, n - 5:] = False
    if b > 2:
        mask[2, n // 2:] = False
    return mask


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("n,global_tokens", [(23, 0), (23, 1), (40, 3)])
def test_window_covering_the_sequence_is_full_attention(n, global_tokens, grad):
    """Same weights loaded into ``full``: identical outputs (the window covers every pair)."""
    m = build(window=2 * n, global_tokens=global_tokens)
    full = get_attention("full")(DIM, HEADS, max_len=64).double()
    full.load_state_dict(m.state_dict())
    x = torch.randn(3, n, DIM, dtype=torch.double, requires_grad=grad)
    mask = _mask(3, n)
    ctx = torch.enable_grad() if grad else torch.inference_mode()
    with ctx:
        for mk in (None, mask):
            y = m(x, mk)
            ref = full(x, mk)
            keep = mk if mk is not None else torch.ones(3, n, dtype=torch.bool)
            torch.testing.assert_close(y[keep], ref[keep], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("n,window,g,dil", [
    (37, 8, 0, 1), (37, 8, 1, 1), (50, 6, 2, 2), (64, 16, 3, 3), (130, 40, 1, 1), (29, 2, 1, 1),
])
def test_matches_the_naive_banded_reference(n, window, g, dil, grad):
    m = build(window, g, dil)
    x = torch.randn(3, n, DIM, dtype=torch.double)
    mask = _mask(3, n)
    ref = naive(m, x, mask, window=window, global_tokens=g, dilation=dil)
    with (torch.enable_grad() if grad else torch.inference_mode()):
        y = m(x.requires_grad_(grad), mask)
    torch.testing.assert_close(y[mask], ref[mask].detach(), rtol=1e-10, atol=1e-10)
    assert torch.isfinite(y).all()


def test_global_tokens_see_everything_and_are_seen_by_everything():
    n = 48
    m = build(window=4, global_tokens=1)
    x = torch.randn(2, n, DIM, dtype=torch.double)
    with torch.no_grad():
        y = m(x)
        far = x.clone()
        far[:, -1] += 1.0  # a token far outside everybody's window but the global one
        y_far = m(far)
        cls = x.clone()
        cls[:, 0] += 1.0  # the global token itself
        y_cls = m(cls)
    assert not torch.allclose(y_far[:, 0], y[:, 0])  # position 0 attends to everything
    torch.testing.assert_close(y_far[:, 1:n - 3], y[:, 1:n - 3])  # others only see their window
    assert not torch.allclose(y_cls[:, n // 2], y[:, n // 2])  # everyone attends to position 0
    # without global tokens, position 0 is an ordinary token
    m0 = build(window=4, global_tokens=0)
    with torch.no_grad():
        torch.testing.assert_close(m0(cls)[:, n // 2], m0(x)[:, n // 2])


def test_padding_at_global_positions_is_masked_too():
    n = 30
    m = build(window=6, global_tokens=2)
    x = torch.randn(2, n, DIM, dtype=torch.double)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 1] = False  # a padded global position
    x2 = x.clone()
    x2[1, 1] = 100 * torch.randn(DIM, dtype=torch.double)
    with torch.no_grad():
        torch.testing.assert_close(m(x, mask)[mask], m(x2, mask)[mask])
        torch.testing.assert_close(m(x, mask)[mask], naive(m, x, mask, window=6, global_tokens=2, dilation=1)[mask])


def test_gradcheck_through_the_custom_backward():
    m = build(window=6, global_tokens=1, dilation=2, dim=8, heads=2)
    x = torch.randn(1, 15, 8, dtype=torch.double, requires_grad=True)
    mask = torch.ones(1, 15, dtype=torch.bool)
    mask[0, 12:] = False
    assert torch.autograd.gradcheck(lambda t: m(t, mask), (x,), fast_mode=True)


def test_parameter_gradients_match_the_reference():
    n = 40
    m = build(window=10, global_tokens=2)
    mask = _mask(3, n)
    x = torch.randn(3, n, DIM, dtype=torch.double)
    w = torch.randn(3, n, DIM, dtype=torch.double) * mask[..., None]
    (m(x, mask) * w).sum().backward()
    ours = {k: p.grad.clone() for k, p in m.named_parameters()}
    m.zero_grad()
    (naive(m, x, mask, window=10, global_tokens=2, dilation=1) * w).sum().backward()
    for k, p in m.named_parameters():
        torch.testing.assert_close(ours[k], p.grad, rtol=1e-9, atol=1e-10)


def test_dropout_backward_replays_the_forward_mask():
    m = build(window=6, global_tokens=1, dropout=0.3, dim=8, heads=2).train()
    x = torch.randn(1, 13, 8, dtype=torch.double, requires_grad=True)

    def fn(t):
        torch.manual_seed(0)  # the dropout seed is drawn from torch's RNG
        return m(t)

    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    torch.manual_seed(1)
    a = m(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, m(x))  # dropout is really on


def test_worker_threads_give_the_single_thread_result():
    m = build(window=8, global_tokens=1, dilation=2).float()
    x = torch.randn(3, 61, DIM)
    mask = _mask(3, 61)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            one = m(x, mask)
        torch.set_num_threads(2)
        with torch.no_grad():
            two = m(x, mask)
        assert torch.get_num_threads() == 2  # the workers' own setting does not leak out
    finally:
        torch.set_num_threads(old)
    # the same sums, though 2 threads may block the projections' GEMMs differently
    torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-6)


def test_problems():
    fam = get_attention("longformer")

    def keys(**kw):
        return [p[0] for p in fam.problems(LongformerOptions(**kw), seq_len=512, width=64, heads=4)]

    assert keys() == []
    assert keys(window=512, global_tokens=0) == []
    assert keys(window=513) == ["window"]
    assert keys(window=1) == ["window"]
    assert keys(global_tokens=-1) == ["global_tokens"]
    assert keys(global_tokens=513) == ["global_tokens"]
    assert keys(dilation=0) == ["dilation"]
    assert keys(window=128, dilation=4) == []
    assert keys(window=128, dilation=5) == ["dilation"]  # the dilated span exceeds the sequence
    with pytest.raises(ConfigError, match="attention.longformer.window"):
        fam.check(LongformerOptions(window=1024), seq_len=512, width=64, heads=4, prefix="attention.longformer")


@pytest.mark.parametrize("window,g,dil", [(8, 2, 1), (6, 0, 2), (4, 3, 3)])
def test_causal_form_equals_the_masked_dense_pattern(window, g, dil):
    """Causal Longformer = softmax attention under the explicit mask: j <= i and either
    (i - j) a multiple of the dilation within window // 2 neighbours, or j a global position."""
    from autoeff.attention import get_attention
    fam = get_attention("longformer")
    torch.manual_seed(0)
    m = fam(16, 2, fam.options(window=window, global_tokens=g, dilation=dil), max_len=64).eval()
    n = 41
    x = torch.randn(2, n, 16)
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    d = i - j
    allow = (d >= 0) & (((d <= (window // 2) * dil) & (d % dil == 0)) | (j < g))
    with torch.no_grad():
        got = m(x, causal=True)
        q, k, v = m.qkv(x).view(2, n, 3, 2, 8).permute(2, 0, 3, 1, 4)
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allow)
        want = m.out(o.transpose(1, 2).reshape(2, n, 16))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
