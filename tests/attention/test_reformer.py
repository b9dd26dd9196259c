"""Reformer LSH attention: exactness against naive references, hashing, rounds, padding."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autoeff.attention import get_attention
from autoeff.attention.reformer import ReformerOptions, lsh_geometry
from autoeff.errors import ConfigError

DIM, HEADS = 16, 2


def build(n_hashes=1, bucket_size=8, *, seed=0, dropout=0.0, dim=DIM, heads=HEADS):
    torch.manual_seed(seed)
    opts = ReformerOptions(n_hashes=n_hashes, bucket_size=bucket_size)
    return get_attention("reformer")(dim, heads, opts, max_len=64, dropout=dropout).double()


def _qkv(m, x):
    """Shared queries/keys (unit keys) and values, (B, H, N, Dh), from the module's weights."""
    b, n, d = x.shape
    h, dh = m.heads, d // m.heads
    qk = F.linear(x, m.qkv.weight[:d], m.qkv.bias[:d])
    v = F.linear(x, m.qkv.weight[d:], m.qkv.bias[d:])
    q = qk.view(b, n, h, dh).transpose(1, 2)
    return qk, q, F.normalize(q, dim=-1), v.view(b, n, h, dh).transpose(1, 2)


def attend(m, x, allowed):
    """Naive masked softmax attention with the paper's self rule: a token attends to itself
    only when ``allowed`` gives it no other key. allowed: (B, H, N, N) bool."""
    b, n, d = x.shape
    _, q, k, v = _qkv(m, x)
    s = q @ k.transpose(-1, -2) / math.sqrt(d // m.heads)
    eye = torch.eye(n, dtype=torch.bool)
    other = allowed & ~eye
    allowed = torch.where(other.any(-1, keepdim=True), other, eye.expand_as(other))
    p = s.masked_fill(~allowed, float("-inf")).softmax(-1)
    return m.out((p @ v).transpose(1, 2).reshape(b, n, d))


def union_of_windows(m, x, mask):
    """(B, H, N, N): key j is in query i's window (its chunk or the previous one) in some round."""
    b, n, _ = x.shape
    qk, *_ = _qkv(m, x)
    with torch.no_grad():
        perm, c, _ = m.lsh_sort(qk, mask)
    np_ = perm.shape[-1]
    rank = torch.empty_like(perm).scatter_(-1, perm, torch.arange(np_).expand_as(perm))
    chunk = (rank // c)[..., :n]  # (B, H, R, N)
    diff = chunk[..., :, None] - chunk[..., None, :]  # query chunk - key chunk
    return ((diff == 0) | (diff == 1)).any(2) & mask[:, None, None, :]


def _mask(b, n):
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, n - 5:] = False
    if b > 2:
        mask[2, n // 2:] = False
    return mask


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("n_hashes", [1, 2])
def test_single_bucket_is_full_shared_qk_attention(n_hashes, grad):
    n = 21
    m = build(n_hashes=n_hashes, bucket_size=32)
    assert lsh_geometry(n, 32)[0] == 1 and lsh_geometry(n, 32, 64)[1:] == (n, 1)  # one chunk: every key
    x = torch.randn(3, n, DIM, dtype=torch.double)
    mask = _mask(3, n)
    every = mask[:, None, None, :].expand(3, HEADS, n, n)
    ref = attend(m, x, every)
    with (torch.enable_grad() if grad else torch.inference_mode()):
        y = m(x.requires_grad_(grad), mask)
    torch.testing.assert_close(y[mask], ref[mask].detach(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("n,bucket_size,n_hashes", [(37, 8, 1), (37, 8, 2), (64, 8, 3), (50, 5, 4), (9, 4, 2)])
def test_rounds_combine_to_softmax_over_the_union_of_windows(n, bucket_size, n_hashes, grad):
    """The logsumexp weighting with the duplicate correction is exact attention over the union
    of every round's windows (with the self rule)."""
    m = build(n_hashes=n_hashes, bucket_size=bucket_size)
    x = torch.randn(3, n, DIM, dtype=torch.double)
    mask = _mask(3, n)
    ref = attend(m, x, union_of_windows(m, x, mask))
    with (torch.enable_grad() if grad else torch.inference_mode()):
        y = m(x.requires_grad_(grad), mask)
    torch.testing.assert_close(y[mask], ref[mask].detach(), rtol=1e-10, atol=1e-10)
    # and LSH really restricts attention here: not everything is in the union
    if lsh_geometry(n, bucket_size, 64)[0] > 2:
        assert not union_of_windows(m, x, mask)[0].all()


def test_buckets_are_angular_lsh_with_the_module_rotations():
    n, nb = 40, 6
    m = build(n_hashes=2, bucket_size=8)
    qk = torch.randn(2, n, DIM, dtype=torch.double)
    rot = m.rotations(nb, qk.device, qk.dtype)  # (H, Dh, R * nb/2)
    assert torch.equal(rot, m.rotations(nb, qk.device, qk.dtype))
    q = qk.view(2, n, HEADS, DIM // HEADS).transpose(1, 2)  # (B, H, N, Dh)
    proj = torch.einsum("bhnd,hdk->bhnk", q, rot).view(2, HEADS, n, 2, nb // 2)
    both = torch.cat([proj, -proj], -1)
    want = both.argmax(-1).permute(0, 1, 3, 2)  # (B, H, R, N)
    # einsum and the module's bmm may round differently: compare where the winner is clear
    top2 = both.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1] > 1e-9).permute(0, 1, 3, 2)
    assert clear.float().mean() > 0.99
    assert torch.equal(m.buckets(qk, nb)[clear], want[clear])
    assert want.unique().numel() > 2  # the tokens really spread over buckets


def test_a_token_attends_to_itself_only_without_other_targets():
    n = 20
    m = build(bucket_size=8)
    x = torch.randn(1, n, DIM, dtype=torch.double)
    mask = torch.zeros(1, n, dtype=torch.bool)
    mask[0, 3] = True  # the only real token
    with torch.no_grad():
        y = m(x, mask)
        *_, v = _qkv(m, x)
        own = m.out(v.transpose(1, 2).reshape(1, n, DIM))[0, 3]
    torch.testing.assert_close(y[0, 3], own)


def test_padding_never_moves_the_real_tokens():
    n = 45
    m = build(n_hashes=2, bucket_size=4)
    x = torch.randn(3, n, DIM, dtype=torch.double)
    mask = _mask(3, n)
    x2 = x.clone()
    x2[~mask] = 10 * torch.randn(int((~mask).sum()), DIM, dtype=torch.double)
    with torch.no_grad():
        torch.testing.assert_close(m(x, mask)[mask], m(x2, mask)[mask], rtol=1e-12, atol=1e-12)


def test_deterministic_fixed_rotations_saved_with_the_model():
    x = torch.randn(2, 33, DIM, dtype=torch.double)
    a = build(n_hashes=2, bucket_size=4, seed=5).train()
    with torch.no_grad():
        ya = a(x)
        # the rotations are not resampled per call (train or eval): a resample differs by O(1)
        torch.testing.assert_close(ya, a(x), rtol=1e-12, atol=1e-12)
    b = build(n_hashes=2, bucket_size=4, seed=6)
    assert int(a.hash_seed) != int(b.hash_seed)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ya, b(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_hashes", [1, 2])
def test_gradcheck_through_the_custom_backward(n_hashes):
    m = build(n_hashes=n_hashes, bucket_size=4, dim=8, heads=2)
    x = torch.randn(1, 14, 8, dtype=torch.double, requires_grad=True)
    mask = torch.ones(1, 14, dtype=torch.bool)
    mask[0, 11:] = False
    # small perturbations can move a token to another bucket: check where hashing is stable
    assert torch.autograd.gradcheck(lambda t: m(t, mask), (x,), eps=1e-7, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("n_hashes", [1, 3])
def test_parameter_gradients_match_the_reference(n_hashes):
    n = 40
    m = build(n_hashes=n_hashes, bucket_size=5)
    mask = _mask(3, n)
    x = torch.randn(3, n, DIM, dtype=torch.double)
    w = torch.randn(3, n, DIM, dtype=torch.double) * mask[..., None]
    (m(x, mask) * w).sum().backward()
    ours = {k: p.grad.clone() for k, p in m.named_parameters()}
    m.zero_grad()
    (attend(m, x, union_of_windows(m, x, mask)) * w).sum().backward()
    for k, p in m.named_parameters():
        torch.testing.assert_close(ours[k], p.grad, rtol=1e-9, atol=1e-10)


def test_dropout_backward_replays_the_forward_mask():
    m = build(n_hashes=2, bucket_size=4, dropout=0.3, dim=8, heads=2).train()
    x = torch.randn(1, 11, 8, dtype=torch.double, requires_grad=True)

    def fn(t):
        torch.manual_seed(0)
        return m(t)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-7, atol=1e-5, fast_mode=True)


def test_problems():
    fam = get_attention("reformer")

    def keys(**kw):
        return [p[0] for p in fam.problems(ReformerOptions(**kw), seq_len=256, width=64, heads=4)]

    assert keys() == []
    assert keys(bucket_size=256) == []
    assert keys(bucket_size=257) == ["bucket_size"]
    assert keys(bucket_size=0) == ["bucket_size"]
    assert keys(n_hashes=0) == ["n_hashes"]
    with pytest.raises(ConfigError, match="attention.reformer.bucket_size"):
        fam.check(ReformerOptions(bucket_size=512), seq_len=256, width=64, heads=4, prefix="attention.reformer")


@pytest.mark.parametrize("bucket_size", [2, 4])
def test_causal_lsh_attends_to_the_most_recent_earlier_tokens_of_its_bucket(bucket_size):
    """One round: query i sees the (up to) bucket_size latest earlier positions j < i with
    bucket(j) == bucket(i) (itself only when there is none), written out per query here."""
    from autoeff.attention import get_attention
    from autoeff.attention.reformer import lsh_geometry
    fam = get_attention("reformer")
    torch.manual_seed(0)
    n, d, h = 30, 16, 2
    m = fam(d, h, fam.options(n_hashes=1, bucket_size=bucket_size), max_len=32).eval()
    x = torch.randn(1, n, d)
    with torch.no_grad():
        got = m(x, causal=True)
        qk = torch.nn.functional.linear(x, m.qkv.weight[:d], m.qkv.bias[:d])
        v = torch.nn.functional.linear(x, m.qkv.weight[d:], m.qkv.bias[d:])
        bk = m.buckets(qk, lsh_geometry(n, bucket_size, 32)[0])[0, :, 0]  # (H, N)
        q = qk.view(n, h, 8)
        vh = v.view(n, h, 8)
        y = torch.zeros(n, h, 8)
        for hi in range(h):
            for i in range(n):
                js = [j for j in range(i) if bk[hi, j] == bk[hi, i]][-bucket_size:] or [i]
                kk = q[js, hi] / q[js, hi].norm(dim=-1, keepdim=True)
                p = torch.softmax(kk @ q[i, hi] / 8 ** 0.5, 0)
                y[i, hi] = p @ vh[js, hi]
        want = m.out(y.reshape(1, n, d))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
