"""The attention contract (autoeff/attention/base.py), checked for every registered family.

Parametrized over ``autoeff.list_attentions()``, so a newly registered family is picked up
automatically. ``VARIANTS`` lists option sets that fit the tiny test sizes for the known
families (and exercise their modes); a family not listed there runs with its defaults, which
must then be valid at these sizes (add it to VARIANTS otherwise).
"""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import autoeff
from autoeff.attention import get_attention
from autoeff.errors import ConfigError
from autoeff.measure import peak_memory

DIM, HEADS, MAX_LEN, BATCH = 32, 4, 64, 2
LENGTHS = (MAX_LEN, 61, 37, 7)  # max_len, not a multiple of anything, shorter, very short

VARIANTS = {
    "full": [{}, {"kv_heads": 2}],
    "sliding_window": [{"window": 8}, {"window": 16, "kv_heads": 1}],
    "gated_deltanet": [{"chunk_size": 16}, {"chunk_size": 64, "conv_size": 2}],
    "linformer": [{"rank": 16}, {"rank": 16, "share_kv": True}],
    "linear": [{"feature_map": "elu"}, {"feature_map": "favor", "features": 16}],
    "synthesizer": [{"mode": m, "rank": 8, "mix": mix} for m in ("dense", "random", "factorized")
                    for mix in (False, True)],
    "longformer": [{"window": 16, "global_tokens": 1}, {"window": 8, "global_tokens": 0, "dilation": 2}],
    "reformer": [{"n_hashes": 1, "bucket_size": 8}, {"n_hashes": 2, "bucket_size": 16}],
}

# options each family must reject at seq_len=MAX_LEN: (options, the key that is wrong)
IMPOSSIBLE = {
    "full": [({"kv_heads": 3}, "kv_heads")],
    "gated_deltanet": [({"chunk_size": 0}, "chunk_size"), ({"conv_size": 0}, "conv_size")],
    "sliding_window": [({"window": 0}, "window"), ({"window": MAX_LEN + 1}, "window"), ({"kv_heads": 3}, "kv_heads")],
    "linformer": [({"rank": MAX_LEN + 1}, "rank"), ({"rank": 0}, "rank")],
    "linear": [({"feature_map": "relu"}, "feature_map"), ({"feature_map": "favor", "features": 0}, "features")],
    "synthesizer": [({"mode": "factorized", "rank": MAX_LEN + 1}, "rank"), ({"mode": "conv"}, "mode")],
    "longformer": [({"window": MAX_LEN + 2}, "window"), ({"window": 1}, "window")],
    "reformer": [({"bucket_size": MAX_LEN * 2}, "bucket_size"), ({"n_hashes": 0}, "n_hashes")],
}


def _options(name, overrides):
    fam = get_attention(name)
    fields = {f.name for f in dataclasses.fields(fam.options)}
    unknown = set(overrides) - fields
    if unknown:  # a known family renamed a knob: fail loudly rather than test the defaults
        raise AssertionError(f"{name}: VARIANTS uses unknown options {sorted(unknown)}; has {sorted(fields)}")
    return fam.options(**overrides)


def _cases():
    out = []
    for name in autoeff.list_attentions():
        for i, ov in enumerate(VARIANTS.get(name, [{}])):
            out.append(pytest.param(name, ov, id=f"{name}-{i}" if len(VARIANTS.get(name, [{}])) > 1 else name))
    return out


CASES = _cases()


def build(name, overrides, *, seed=0, max_len=MAX_LEN, dropout=0.0):
    torch.manual_seed(seed)
    fam = get_attention(name)
    return fam(DIM, HEADS, _options(name, overrides), max_len=max_len, dropout=dropout)


def _mask(n, scattered=False):
    """(B, n) keep-mask: row 0 has no padding, row 1 is padded (at the end, or scattered)."""
    m = torch.ones(BATCH, n, dtype=torch.bool)
    if scattered:
        g = torch.Generator().manual_seed(n)
        m[1] = torch.rand(n, generator=g) > 0.4
        m[1, 0] = True  # at least one real token (and position 0 real for global-token families)
    else:
        m[1, max(1, (2 * n) // 3):] = False
    return m


def test_registry_has_the_issue_families():
    names = autoeff.list_attentions()
    for name in ("full", "linformer", "linear", "synthesizer"):
        assert name in names


@pytest.mark.parametrize("name,ov", CASES)
def test_options_are_valid_at_test_size(name, ov):
    fam = get_attention(name)
    assert fam.problems(_options(name, ov), seq_len=MAX_LEN, width=DIM, heads=HEADS) == []
    assert fam.name == name and issubclass(fam, autoeff.attention.AttentionBase)
    for flag in ("needs_fixed_length", "supports_padding_mask", "supports_causal", "subquadratic",
                 "supports_kv_heads", "causal_only"):
        assert isinstance(getattr(fam, flag), bool)


@pytest.mark.parametrize("name,ov", CASES)
@pytest.mark.parametrize("n", LENGTHS)
def test_output_shape_and_finite(name, ov, n):
    m = build(name, ov).eval()
    x = torch.randn(BATCH, n, DIM)
    with torch.no_grad():
        y = m(x)
        ym = m(x, _mask(n))
    assert y.shape == (BATCH, n, DIM) and ym.shape == (BATCH, n, DIM)
    assert y.dtype == x.dtype
    assert torch.isfinite(y).all() and torch.isfinite(ym).all()


@pytest.mark.parametrize("name,ov", CASES)
@pytest.mark.parametrize("n", [37, 61])
def test_padding_length_never_changes_real_outputs(name, ov, n):
    """The same sequence alone and padded to longer lengths (a fixed-length family: to its
    max_len) gives the same outputs at its real positions: nothing (bucket counts, rotations,
    chunking, normalizers) may depend on how much padding a batch carries."""
    m = build(name, ov).eval()
    x = torch.randn(1, n, DIM)
    with torch.no_grad():
        alone = m(x)
        for total in sorted({n + 3, (n + MAX_LEN) // 2, MAX_LEN}):
            xp = torch.cat([x, 3.0 * torch.randn(1, total - n, DIM)], dim=1)
            mask = torch.zeros(1, total, dtype=torch.bool)
            mask[:, :n] = True
            torch.testing.assert_close(m(xp, mask)[:, :n], alone, rtol=1e-5, atol=1e-5,
                                       msg=lambda s: f"{name} {ov}: {n} real tokens padded to {total}: {s}")


@pytest.mark.parametrize("name,ov", CASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_outputs_are_finite(name, ov, dtype):
    """bf16 and fp16 give finite outputs on inputs scaled up to 8x (with padding too), at a
    width (128) where sums over keys and features reach fp16's range."""
    n, dim = 256, 128
    torch.manual_seed(0)
    m = get_attention(name)(dim, HEADS, _options(name, ov), max_len=n).eval()
    try:
        m = m.to(dtype)
        probe = m(torch.randn(1, 8, dim, dtype=dtype))
    except (RuntimeError, NotImplementedError) as e:
        pytest.skip(f"{dtype} is not supported here for this family's ops: {e}")
    assert probe.dtype == dtype
    mask = _mask(n, scattered=True)
    for scale in (1.0, 4.0, 8.0):
        x = (scale * torch.randn(BATCH, n, dim)).to(dtype)
        with torch.no_grad():
            for mk in (None, mask):
                y = m(x, mk)
                bad = ~torch.isfinite(y) if mk is None else ~torch.isfinite(y[mk])
                assert not bad.any(), f"{name} {ov} {dtype} scale {scale}: {int(bad.sum())} non-finite outputs"


@pytest.mark.parametrize("name,ov", CASES)
def test_capability_flags_hold(name, ov):
    """Each flag is checked against behaviour, not its type."""
    fam = get_attention(name)
    m = build(name, ov).eval()
    x = torch.randn(BATCH, 40, DIM)
    takes_causal = "causal" in inspect.signature(fam.forward).parameters
    if fam.supports_causal:  # position i never sees a later position
        x2 = x.clone()
        x2[:, 25:] = torch.randn(BATCH, 15, DIM)
        with torch.no_grad():
            a, b = m(x, causal=True), m(x2, causal=True)
        torch.testing.assert_close(a[:, :25], b[:, :25], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(a[:, 25:], b[:, 25:])
    else:  # no way to ask it for causal attention, so no caller can believe it does it
        assert not takes_causal, f"{name} takes a causal argument but says supports_causal = False"
    if not fam.supports_padding_mask:  # a mask it cannot honour is refused, not ignored
        with pytest.raises(ValueError):
            m(x, _mask(40))
    # needs_fixed_length: test_length_flag; subquadratic: test_subquadratic_families_...


@pytest.mark.parametrize("name,ov", CASES)
def test_projection_layout_matches_the_modules(name, ov):
    """``projections`` (how a one-shot supernet shares weights across families) names real
    linear modules of (blocks x width) rows, and the layer reads them as such."""
    fam = get_attention(name)
    m = build(name, ov)
    mods = dict(m.named_modules())
    assert fam.projections, name
    found = 0
    for module, blocks in fam.projections.items():
        if module not in mods:  # e.g. Synthesizer's dot-product projection exists only with mix
            continue
        lin = mods[module]
        assert isinstance(lin, torch.nn.Linear), (name, module)
        assert (lin.in_features, lin.out_features) == (DIM, len(blocks) * DIM), (name, module)
        assert set(blocks) <= {"q", "k", "v", "out"}, (name, blocks)
        found += 1
    assert found >= 2, f"{name}: fewer than two projections found"


@pytest.mark.parametrize("name,ov", CASES)
def test_length_flag(name, ov):
    """Families without needs_fixed_length take inputs longer than max_len; the others refuse them."""
    m = build(name, ov).eval()
    x = torch.randn(BATCH, MAX_LEN + 13, DIM)
    if get_attention(name).needs_fixed_length:
        with pytest.raises(ValueError):
            m(x)
    else:
        with torch.no_grad():
            assert m(x).shape == x.shape


@pytest.mark.parametrize("name,ov", CASES)
@pytest.mark.parametrize("n,scattered", [(MAX_LEN, False), (37, False), (61, True)])
def test_padding_never_changes_real_outputs(name, ov, n, scattered):
    if not get_attention(name).supports_padding_mask:
        pytest.skip("family does not support padding masks")
    m = build(name, ov).eval()
    mask = _mask(n, scattered)
    x = torch.randn(BATCH, n, DIM)
    x2 = x.clone()
    x2[~mask] = 5.0 * torch.randn(int((~mask).sum()), DIM)  # different content at padded positions
    with torch.no_grad():
        y, y2 = m(x, mask), m(x2, mask)
    assert torch.isfinite(y).all() and torch.isfinite(y2).all()
    torch.testing.assert_close(y[mask], y2[mask], rtol=1e-4, atol=1e-5)
    # and the padding did change something, so the comparison above is not vacuous for the real rows
    # (a causal-only family: only real rows after a padded one can see it)
    with torch.no_grad():
        y_nomask = m(x2)
    rows = mask[1].clone()
    if get_attention(name).causal_only:
        rows &= (~mask[1]).long().cumsum(0) > 0
    if rows.any():
        assert not torch.allclose(y_nomask[1][rows], y2[1][rows], atol=1e-4)


@pytest.mark.parametrize("name,ov", CASES)
def test_gradients_finite_for_every_parameter(name, ov):
    m = build(name, ov).train()
    x = torch.randn(BATCH, MAX_LEN, DIM, requires_grad=True)
    mask = _mask(MAX_LEN)
    y = m(x, mask if get_attention(name).supports_padding_mask else None)
    (y[mask] ** 2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: parameter {pname} has a non-finite gradient"


@pytest.mark.parametrize("name,ov", CASES)
def test_deterministic_under_seed(name, ov):
    x = torch.randn(BATCH, 37, DIM)
    mask = _mask(37)
    outs = []
    for _ in range(2):
        m = build(name, ov, seed=123).eval()
        torch.manual_seed(7)
        with torch.no_grad():
            outs.append(m(x, mask))
    # the same computation twice: equal up to float noise (reseeding bugs differ by O(1))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)
    a = build(name, ov, seed=1).state_dict()
    b = build(name, ov, seed=2).state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a), "the seed does not reach the parameters"


@pytest.mark.parametrize("name,ov", CASES)
def test_subquadratic_families_never_hold_an_n_by_n_tensor(name, ov):
    fam = get_attention(name)
    if not fam.subquadratic:
        pytest.skip("family may materialize N x N")
    n, dim, heads = 1024, 16, 2
    torch.manual_seed(0)
    m = fam(dim, heads, _options(name, ov), max_len=n).eval()
    x = torch.randn(1, n, dim)
    peak = peak_memory(lambda: m(x)).peak_bytes
    assert peak < n * n * 4, f"{name}: {peak} bytes at N={n}, one N x N fp32 matrix is {n * n * 4}"


@pytest.mark.parametrize("name", autoeff.list_attentions())
def test_problems_reject_impossible_options(name):
    fam = get_attention(name)
    cases = IMPOSSIBLE.get(name)
    if not cases:
        pytest.skip("no impossible options listed for this family")
    for ov, key in cases:
        opts = _options(name, ov)
        keys = [p[0] for p in fam.problems(opts, seq_len=MAX_LEN, width=DIM, heads=HEADS)]
        assert key in keys, f"{name}: {ov} not rejected (problems: {keys})"
        with pytest.raises(ConfigError) as err:
            fam.check(opts, seq_len=MAX_LEN, width=DIM, heads=HEADS, prefix=f"attention.{name}")
        assert f"attention.{name}." in str(err.value)


@pytest.mark.parametrize("name", autoeff.list_attentions())
def test_decoding_flags_are_consistent(name):
    """decode_cost is set exactly for causal families; causal_only implies causal; kv_heads is
    an option exactly where supports_kv_heads says so."""
    fam = get_attention(name)
    if fam.supports_causal:
        assert fam.decode_cost in ("kv", "window", "state", "recompute"), name
        for meth in ("init_cache", "forward_cached", "cache_bytes"):
            assert callable(getattr(fam, meth))
    else:
        assert fam.decode_cost is None and not fam.causal_only, name
    fields = {f.name for f in dataclasses.fields(fam.options)}
    assert ("kv_heads" in fields) == fam.supports_kv_heads, name
