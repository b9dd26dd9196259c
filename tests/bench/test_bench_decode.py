"""`autoeff bench decode` at tiny sizes: every cell is produced, ours next to transformers'.

Our decoders come from ``autoeff.model.decoder`` when the decoder model and the causal families
exist (docs/decoders.md §1, §3); until then a stand-in decoder with the same API takes their
place, so that the bench's own machinery (protocol, HF side, ratios, targets, outputs) is tested.
"""
from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from torch import nn

from autoeff.bench import decode as bench

TINY = ["--contexts", "48,64", "--width", "16", "--depth", "2", "--heads", "2", "--kv-heads", "1",
        "--window", "24", "--vocab", "32", "--warmup", "1", "--repeats", "3", "--prefill-repeats", "1"]


def _real_decoder_available() -> bool:
    try:
        from autoeff.attention import list_attentions
        from autoeff.model import decoder  # noqa: F401
    except ImportError:
        return False
    return {"full", "sliding_window", "gated_deltanet", "linear"} <= set(list_attentions())


class _Cache:
    def __init__(self, n):
        self.state = [None] * n
        self.length = 0

    def tensors(self):
        return [t for s in self.state if s is not None for t in s]


class _Layer(nn.Module):
    """kv: a growing K/V cache (window > 0: the last window tokens); state: a d x d state."""

    def __init__(self, kind, width, kv_dim, window):
        super().__init__()
        self.kind, self.window, self.kv_dim = kind, window, kv_dim
        self.q = nn.Linear(width, kv_dim)
        self.kv = nn.Linear(width, 2 * kv_dim)
        self.out = nn.Linear(kv_dim, width)

    def cache_bytes(self, batch, context, bpv):
        if self.kind in ("gated_deltanet", "linear"):
            return batch * self.kv_dim * self.kv_dim * bpv
        kept = min(context, self.window) if self.kind == "sliding_window" else context
        return 2 * batch * kept * self.kv_dim * bpv

    def step(self, x, st):
        q = self.q(x)  # (B, T, Dk)
        k, v = self.kv(x).chunk(2, -1)  # (B, T, Dk)
        if self.kind in ("gated_deltanet", "linear"):
            s = st[0] if st is not None else x.new_zeros(x.shape[0], self.kv_dim, self.kv_dim)
            ys = []
            for t in range(x.shape[1]):
                s = 0.9 * s + k[:, t, :, None] * v[:, t, None, :]  # (B, Dk, Dk)
                ys.append(torch.einsum("bd,bde->be", q[:, t], s))
            return self.out(torch.stack(ys, 1)), (s,)
        if st is not None:
            k, v = torch.cat([st[0], k], 1), torch.cat([st[1], v], 1)  # (B, S, Dk)
        t, s = q.shape[1], k.shape[1]
        mask = torch.ones(t, s, dtype=torch.bool).tril(s - t)
        att = (q @ k.transpose(1, 2) / math.sqrt(self.kv_dim)).masked_fill(~mask, -math.inf).softmax(-1)
        y = self.out(att @ v)  # (B, T, D)
        if self.kind == "sliding_window":
            k, v = k[:, -self.window:], v[:, -self.window:]
        return y, (k, v)


class _StandIn(nn.Module):
    def __init__(self, kinds, args):
        super().__init__()
        kv_dim = args.width // args.heads * (args.kv_heads or args.heads)
        self.emb = nn.Embedding(args.vocab, args.width)
        self.layers = nn.ModuleList(_Layer(k, args.width, kv_dim, args.window) for k in kinds)
        self.head = nn.Linear(args.width, args.vocab)

    def init_cache(self, batch):
        return _Cache(len(self.layers))

    def forward_cached(self, x, cache):
        h = self.emb(x)  # (B, T, D)
        for i, layer in enumerate(self.layers):
            y, cache.state[i] = layer.step(h, cache.state[i])
            h = h + y
        cache.length += x.shape[1]
        return self.head(h)  # (B, T, V)


def _builder():
    return None if _real_decoder_available() else (lambda kinds, args, max_context: _StandIn(kinds, args))


def test_every_cell_is_produced(tmp_path, capsys):
    pytest.importorskip("transformers")
    out = tmp_path / "bench"
    rc = bench.main([*TINY, "--out", str(out)], builder=_builder())
    doc = json.loads((out / "results.json").read_text())
    rows = doc["rows"]
    labels = {r["label"] for r in rows}
    assert labels == {"full", "sliding_window", "gated_deltanet", "linear", "hybrid", "hf_full", "hf_sliding_window"}
    assert len(rows) == len(labels) * 2
    bad = [(r["label"], r["context"], r["status"]) for r in rows if r["status"] != "ok"]
    assert not bad, bad
    assert rc == 0
    for r in rows:
        assert r["decode_ms"] > 0 and r["prefill_ms"] > 0 and r["cache_mb"] > 0, r
        assert r["cache_mb"] == pytest.approx(r["cache_mb_analytic"], rel=1e-3)
    # the cache of a full-attention decoder grows with the context, a window's stops at the window
    by = {(r["label"], r["context"]): r for r in rows}
    assert by[("full", 64)]["cache_mb"] > by[("full", 48)]["cache_mb"]
    assert by[("hf_full", 64)]["cache_mb"] > by[("hf_full", 48)]["cache_mb"]
    assert by[("hf_sliding_window", 64)]["cache_mb"] == pytest.approx(by[("hf_sliding_window", 48)]["cache_mb"])
    # ours and HF's full attention hold the same K/V: 2 x kv_heads x head_dim x context x layers x fp32
    assert by[("hf_full", 64)]["cache_mb"] * 2**20 == 2 * 1 * 8 * 64 * 2 * 4
    assert {(r["ours"], r["context"]) for r in doc["ratios"]} == {(o, c) for o in ("full", "sliding_window")
                                                                  for c in (48, 64)}
    assert all(t["met"] is not None for t in doc["targets"])
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    md = (out / "results.md").read_text()
    assert "hf_sliding_window" in md and "targets" in md
    assert (out / "decode_bench.png").stat().st_size > 1000
    assert "decode_ms" in capsys.readouterr().out


def test_our_decoders_against_transformers(tmp_path):
    """The real DecoderLM for the families that decode today, next to Llama/Mistral."""
    pytest.importorskip("transformers")
    pytest.importorskip("autoeff.model.decoder")
    from autoeff.attention import get_attention, list_attentions

    fams = [f for f in ("full", "sliding_window", "gated_deltanet", "linear")
            if f in list_attentions() and getattr(get_attention(f), "supports_causal", False)]
    if "full" not in fams:
        pytest.skip("no causal full attention yet")
    out = tmp_path / "real"
    rc = bench.main([*TINY, "--families", ",".join(fams), "--no-plot", "--out", str(out)])
    doc = json.loads((out / "results.json").read_text())
    bad = [(r["label"], r["context"], r["status"]) for r in doc["rows"] if r["status"] != "ok"]
    assert not bad, bad
    assert rc == 0
    by = {(r["label"], r["context"]): r for r in doc["rows"]}
    # the same K/V shapes on both sides: equal full-attention caches
    for c in (48, 64):
        assert by[("full", c)]["cache_mb"] == pytest.approx(by[("hf_full", c)]["cache_mb"])
    if "sliding_window" in fams:  # ours keeps the window, HF window - 1 tokens
        assert by[("sliding_window", 64)]["cache_mb"] == pytest.approx(
            by[("hf_sliding_window", 64)]["cache_mb"] * 24 / 23)


def test_failing_cells_fail_the_bench(tmp_path):
    def broken(kinds, args, max_context):
        raise RuntimeError("no decoder here")

    out = tmp_path / "b"
    rc = bench.main([*TINY, "--no-hf", "--no-plot", "--out", str(out)], builder=broken)
    assert rc == 1
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows and all(r["status"].startswith("error") for r in rows)
    assert all(t["met"] is None for t in json.loads((out / "results.json").read_text())["targets"])


def test_hf_decoder_matches_its_own_full_pass():
    """The HF adapter's incremental decoding (DynamicCache) equals a full causal pass."""
    pytest.importorskip("transformers")
    args = bench._parser().parse_args(TINY)
    for arch in ("llama", "mistral"):
        m = bench.build_hf(arch, args, 128)
        x = torch.randint(1, 32, (2, 40), generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            ref = m(x)  # (B, N, V)
            cache = m.init_cache(2)
            y = torch.cat([m.forward_cached(x[:, :30], cache)] + [m.forward_cached(x[:, i:i + 1], cache)
                                                                  for i in range(30, 40)], 1)
        assert cache.length == 40
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
        expect = m.cache_bytes(2, 40, 4)
        assert sum(t.numel() * t.element_size() for t in cache.tensors()) == expect
        assert expect == 2 * 2 * 1 * 8 * (23 if arch == "mistral" else 40) * 2 * 4


def test_bad_arguments_exit_2(capsys):
    assert bench.main(["--families", "full,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert bench.main(["--heads", "3"]) == 2
    assert bench.main(["--kv-heads", "3"]) == 2
    assert bench.main(["--contexts", "0,12"]) == 2


def test_missing_transformers_is_a_clear_message(monkeypatch, capsys):
    monkeypatch.setattr(bench, "hf_available", lambda: False)
    assert bench.main(TINY) == 2
    err = capsys.readouterr().err
    assert "transformers is not installed" in err and "--no-hf" in err


def test_the_cli_runs_bench_decode(capsys):
    from autoeff.cli import main

    assert main(["bench", "decode", "--families", "full,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["bench", "decode", "--help"])
    assert e.value.code == 0
    assert "--contexts" in capsys.readouterr().out
