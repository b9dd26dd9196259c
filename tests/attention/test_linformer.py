"""Linformer (Wang et al. 2020): exactness against full attention and the paper's formulation."""
from __future__ import annotations

import math

import pytest
import torch

from autoeff.attention import get_attention

DIM, HEADS = 32, 4
Lin = get_attention("linformer")
Full = get_attention("full")


def build(n, max_len, **opts):
    torch.manual_seed(0)
    return Lin(DIM, HEADS, Lin.options(**opts), max_len=max_len).eval()


def paper_reference(m, x, mask=None):
    """Linformer as written in the paper: K = E (X W_k + b_k), V = F (X W_v + b_v), padded rows zeroed."""
    b, n, d = x.shape
    q, k, v = m.qkv(x).chunk(3, dim=-1)  # (B, N, D)
    if mask is not None:
        k = k * mask[..., None]
        v = v * mask[..., None]
    k = m.proj_k[:, :n] @ k  # (B, k, D)
    v = m.proj_v[:, :n] @ v
    split = lambda t: t.view(b, -1, HEADS, d // HEADS).transpose(1, 2)  # noqa: E731
    att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // HEADS), dim=-1)
    return m.out((att @ split(v)).transpose(1, 2).reshape(b, n, d))


@pytest.mark.parametrize("share_kv", [False, True])
def test_identity_projections_with_k_equal_n_is_full_attention(share_kv):
    n = 24
    m = build(n, n, rank=n, share_kv=share_kv)
    with torch.no_grad():
        m.proj_k.copy_(torch.eye(n))
        if not share_kv:
            m.proj_v.copy_(torch.eye(n))
    full = Full(DIM, HEADS, max_len=n).eval()
    full.load_state_dict({k: v for k, v in m.state_dict().items() if k.startswith(("qkv", "out"))})
    x = torch.randn(3, n, DIM)
    with torch.no_grad():
        torch.testing.assert_close(m(x), full(x), rtol=1e-5, atol=1e-5)


def test_random_projections_are_not_full_attention():
    """The exactness test above can fail: with the random E, F the layer differs from full attention."""
    n = 24
    m = build(n, n, rank=n)
    full = Full(DIM, HEADS, max_len=n).eval()
    full.load_state_dict({k: v for k, v in m.state_dict().items() if k.startswith(("qkv", "out"))})
    x = torch.randn(3, n, DIM)
    with torch.no_grad():
        assert not torch.allclose(m(x), full(x), atol=1e-3)


@pytest.mark.parametrize("share_kv", [False, True])
@pytest.mark.parametrize("n", [40, 29])
def test_fast_path_equals_the_papers_formulation(share_kv, n):
    """autoeff projects X along the length first ((E X) W^T + (E 1) b^T): the same numbers."""
    m = build(n, 40, rank=12, share_kv=share_kv)
    x = torch.randn(3, n, DIM)
    mask = torch.ones(3, n, dtype=torch.bool)
    mask[1, n // 2:] = False
    mask[2, ::3] = False
    with torch.no_grad():
        for mk in (None, mask):
            torch.testing.assert_close(m(x, mk), paper_reference(m, x, mk), rtol=1e-5, atol=1e-5)


def test_shorter_input_equals_padding_to_max_len():
    """An input of length n < max_len gives what the same input padded to max_len (masked) gives."""
    n, max_len = 21, 40
    m = build(n, max_len, rank=16)
    x = torch.randn(2, n, DIM)
    xp = torch.cat([x, torch.randn(2, max_len - n, DIM)], dim=1)
    mask = torch.zeros(2, max_len, dtype=torch.bool)
    mask[:, :n] = True
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(xp, mask)[:, :n], rtol=1e-5, atol=1e-5)


def test_sharing_options():
    m = build(16, 16, rank=8, share_kv=True)
    assert m.proj_k is m.proj_v
    shared = {}
    a = Lin(DIM, HEADS, Lin.options(rank=8, share_layers=True), max_len=16, shared=shared, layer=0)
    b = Lin(DIM, HEADS, Lin.options(rank=8, share_layers=True), max_len=16, shared=shared, layer=1)
    assert a.proj_k is b.proj_k and a.proj_v is b.proj_v and a.proj_k is not a.proj_v
    c = Lin(DIM, HEADS, Lin.options(rank=8), max_len=16, shared=shared, layer=2)
    assert c.proj_k is not a.proj_k


def test_gradients_match_the_papers_formulation():
    n = 20
    m = build(n, n, rank=8)
    x = torch.randn(2, n, DIM)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 13:] = False
    g1 = torch.autograd.grad(m(x, mask)[mask].pow(2).sum(), list(m.parameters()))
    g2 = torch.autograd.grad(paper_reference(m, x, mask)[mask].pow(2).sum(), list(m.parameters()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_rank_longer_than_sequence_is_rejected():
    assert [p[0] for p in Lin.problems(Lin.options(rank=65), seq_len=64, width=DIM, heads=HEADS)] == ["rank"]
    assert Lin.problems(Lin.options(rank=64), seq_len=64, width=DIM, heads=HEADS) == []
