"""Gated DeltaNet: the chunkwise-parallel form against a plain token-by-token recurrence written
here from the paper's update rule (Yang et al. 2025, eq. for S_t), at chunk sizes that do and do
not divide the length, and with a carried-in state."""
from __future__ import annotations

import pytest
import torch

from autoeff.attention import get_attention
from autoeff.attention.gated_deltanet import chunk_gated_delta_rule, recurrent_gated_delta_rule


def reference(q, k, v, g, beta, S=None):
    """S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T q_t,
    literally, per batch, head and step (S is d_k x d_v)."""
    b, h, n, dk = k.shape
    dv = v.shape[-1]
    out = torch.zeros(b, h, n, dv, dtype=torch.float64)
    S = torch.zeros(b, h, dk, dv, dtype=torch.float64) if S is None else S.double().clone()
    eye = torch.eye(dk, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            s = S[bi, hi]
            for t in range(n):
                kt = k[bi, hi, t].double()[:, None]  # (Dk, 1)
                vt = v[bi, hi, t].double()[:, None]  # (Dv, 1)
                a, bt = float(torch.exp(g[bi, hi, t])), float(beta[bi, hi, t])
                s = a * (eye - bt * kt @ kt.T) @ s + bt * kt @ vt.T
                out[bi, hi, t] = s.T @ q[bi, hi, t].double()
            S[bi, hi] = s
    return out, S


def _inputs(n, seed=0, b=2, h=3, dk=8, dv=6):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, dk, generator=gen) * dk ** -0.5
    k = torch.nn.functional.normalize(torch.randn(b, h, n, dk, generator=gen), dim=-1)
    v = torch.randn(b, h, n, dv, generator=gen)
    g = -torch.rand(b, h, n, generator=gen) * 0.5  # alpha in (0.6, 1]
    beta = torch.rand(b, h, n, generator=gen)
    return q, k, v, g, beta


@pytest.mark.parametrize("n,chunk", [(1, 4), (7, 4), (16, 4), (33, 8), (20, 64)])
def test_chunked_form_equals_the_recurrence(n, chunk):
    q, k, v, g, beta = _inputs(n)
    want, S_want = reference(q, k, v, g, beta)
    o, S = chunk_gated_delta_rule(q, k, v, g, beta, chunk)
    torch.testing.assert_close(o.double(), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(S.double(), S_want, rtol=1e-4, atol=1e-5)
    o2, S2 = recurrent_gated_delta_rule(q, k, v, g, beta, torch.zeros_like(S))
    torch.testing.assert_close(o2.double(), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(S2.double(), S_want, rtol=1e-4, atol=1e-5)


def test_carried_state_and_strong_decay():
    q, k, v, g, beta = _inputs(19, seed=3)
    g = g * 20  # alpha down to e^-10: the within-chunk decay ratios must stay exact
    S0 = torch.randn(2, 3, 8, 6)
    want, S_want = reference(q, k, v, g, beta, S0)
    o, S = chunk_gated_delta_rule(q, k, v, g, beta, 8, S0)
    torch.testing.assert_close(o.double(), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(S.double(), S_want, rtol=1e-4, atol=1e-5)


def test_the_delta_rule_overwrites_a_key():
    """beta = 1, alpha = 1: writing v2 under the same key k replaces v1 (the delta rule), where
    plain linear attention would return v1 + v2."""
    k = torch.nn.functional.normalize(torch.randn(1, 1, 1, 4), dim=-1).expand(1, 1, 2, 4)
    v = torch.randn(1, 1, 2, 3)
    g, beta = torch.zeros(1, 1, 2), torch.ones(1, 1, 2)
    o, _ = chunk_gated_delta_rule(k.clone(), k.clone(), v, g, beta, 2)
    torch.testing.assert_close(o[0, 0, 1], v[0, 0, 1], rtol=1e-5, atol=1e-5)


def test_layer_chunk_size_does_not_change_outputs():
    fam = get_attention("gated_deltanet")
    x = torch.randn(2, 45, 32)
    outs = []
    for c in (4, 16, 64):
        torch.manual_seed(0)
        m = fam(32, 4, fam.options(chunk_size=c), max_len=64).eval()
        with torch.no_grad():
            outs.append(m(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[0], outs[2], rtol=1e-4, atol=1e-5)


def test_flags():
    fam = get_attention("gated_deltanet")
    assert fam.supports_causal and fam.causal_only and fam.decode_cost == "state" and fam.subquadratic
    keys = [p[0] for p in fam.problems(fam.options(chunk_size=0, conv_size=0), seq_len=64, width=32, heads=4)]
    assert keys == ["chunk_size", "conv_size"]
