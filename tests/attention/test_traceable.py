"""The traceable formulations used for export (attention/_traceable.py, ``export_mode``) compute
the same outputs as the fast eager kernels: every family, with padding masks, at a deployment
length (1024), and Longformer's and Reformer's traced graphs (torch.export, a dynamic batch)
reproduce the eager modules."""
from __future__ import annotations

import pytest
import torch

import autoeff
from autoeff.attention import get_attention
from autoeff.attention._traceable import export_mode

N, DIM, HEADS = 1024, 16, 2
# options sized for N = 1024 (the families' modes that take a different path in the kernels)
VARIANTS = {
    "full": [{}],
    "sliding_window": [{"window": 64}],
    "gated_deltanet": [{"chunk_size": 64}],
    "linformer": [{"rank": 32}],
    "linear": [{"feature_map": "favor", "features": 16}],
    "synthesizer": [{"mode": "factorized", "rank": 8}],
    "longformer": [{"window": 128, "global_tokens": 1}, {"window": 16, "global_tokens": 3, "dilation": 3},
                   {"window": 8, "global_tokens": 0}],
    "reformer": [{"bucket_size": 64, "n_hashes": 1}, {"bucket_size": 32, "n_hashes": 2},
                 {"bucket_size": 16, "n_hashes": 3}],
}
TRACEABLE = {"longformer", "reformer"}  # the families whose export form differs from the eager kernel


def _layer(kind, opts, seed=0):
    torch.manual_seed(seed)
    fam = get_attention(kind)
    return fam(DIM, HEADS, fam.options(**opts), max_len=N).eval()


def _inputs(b=2, n=N, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, DIM, generator=g)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, 5:9] = False  # a hole
    mask[1, n - 300:] = False  # trailing padding
    return x, mask


def _cases():
    return [(k, o) for k in autoeff.list_attentions() for o in VARIANTS.get(k, [{}])]


def test_every_family_has_a_case():
    assert set(VARIANTS) == set(autoeff.list_attentions()), "add the new family to VARIANTS"


@pytest.mark.parametrize("kind,opts", _cases(), ids=lambda v: v if isinstance(v, str) else str(v))
def test_export_mode_computes_what_the_eager_kernel_does(kind, opts):
    m = _layer(kind, opts)
    x, mask = _inputs()
    causal = [True] if m.causal_only else [False, True] if m.supports_causal else [False]
    for c in causal:
        kw = {"causal": True} if c else {}
        with torch.no_grad():
            eager = m(x, mask, **kw)  # (B, N, D)
            with export_mode(m):
                assert m.exporting if kind in TRACEABLE else True
                traced_form = m(x, mask, **kw)
        # padded rows are "finite but meaningless" (base.py): compared at the real rows
        torch.testing.assert_close(traced_form[mask], eager[mask], rtol=1e-4, atol=2e-5, msg=f"{kind} causal={c}")
        assert torch.isfinite(traced_form).all()


@pytest.mark.parametrize("kind", sorted(TRACEABLE))
def test_export_mode_is_left_cleanly(kind):
    m = _layer(kind, VARIANTS[kind][-1])
    keys = set(m.state_dict())
    buffers = {n for n, _ in m.named_buffers()}
    with export_mode(m):
        assert m.exporting
    assert not m.exporting and set(m.state_dict()) == keys and {n for n, _ in m.named_buffers()} == buffers
    with pytest.raises(RuntimeError):
        with export_mode(m):
            raise RuntimeError("boom")
    assert not m.exporting and {n for n, _ in m.named_buffers()} == buffers


@pytest.mark.parametrize("kind,opts", [(k, VARIANTS[k][1]) for k in sorted(TRACEABLE)])
@pytest.mark.parametrize("causal", [False, True])
def test_traced_graph_matches_eager_with_any_batch(kind, opts, causal):
    """torch.export traces the family in export mode (a dynamic batch, as the MLflow registry
    exports), and the graph computes the eager kernel's outputs, also at another batch size."""
    m = _layer(kind, opts)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = m

        def forward(self, x, mask):
            return self.attn(x, mask, causal=causal)  # (B, N, D)

    n = 128 if causal else N  # the causal forms are plain PyTorch loops over blocks: a shorter trace
    x, mask = _inputs(n=n)
    batch = torch.export.Dim("batch", min=1, max=64)
    with export_mode(m):
        prog = torch.export.export(Wrap().eval(), (x, mask), dynamic_shapes=({0: batch}, {0: batch}), strict=False)
    x3, mask3 = _inputs(b=3, n=n, seed=2)
    mask3[2, -17:] = False
    with torch.no_grad():
        for xx, mm in ((x, mask), (x3, mask3)):
            got, want = prog.module()(xx, mm), m(xx, mm, causal=causal)
            torch.testing.assert_close(got[mm], want[mm], rtol=1e-4, atol=2e-5)
