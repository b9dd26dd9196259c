"""Quantization: stored bit widths and sizes, every attention family quantized, int8 accuracy,
checkpoints of quantized models, quantization-aware fine-tuning."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

import autoeff
from autoeff.compress import apply, build_deployed, fake_quantized, quantize, stored_bits
from autoeff.compress.quantize import WeightOnly, dequantize_values, pack4, quantizable, quantize_values, unpack4
from autoeff.config import parse_run_config, task_spec
from autoeff.measure import model_size
from autoeff.model import build_model, example_inputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "attention"))
from test_contract import VARIANTS, _mask, build  # noqa: E402  (the families' tiny test variants)


def _cfg(kind="full", width=128, depth=2, seq_len=64, compress=None, opts=None, **task):
    data = {"model": {"width": width, "heads": 4, "depth": depth, "dropout": 0.0},
            "attention": {"kind": kind, **({kind: opts} if opts else {})},
            "tasks": [{"kind": "listops", "seq_len": seq_len, **task}]}
    if compress:
        data["compress"] = compress
    return parse_run_config(data)


def test_pack4_roundtrip_and_quantization_error_bound():
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-8, 8, (5, 12), generator=g, dtype=torch.int8)
    p = pack4(q)
    assert p.dtype == torch.uint8 and p.shape == (5, 6)
    assert torch.equal(unpack4(p), q)
    w = torch.randn(7, 50, generator=g)  # 50 columns: padded to whole groups of 16
    for bits, group in ((8, 0), (4, 16)):
        vals, scale = quantize_values(w, bits, group)
        assert vals.dtype == torch.int8
        assert int(vals.min()) >= (-127 if bits == 8 else -8) and int(vals.max()) <= (127 if bits == 8 else 7)
        back = dequantize_values(vals, scale, tuple(w.shape))
        # round to nearest: every weight within half a step of its group's scale
        step = scale.float().repeat_interleave(vals.shape[1] // scale.shape[1], dim=1)[:, :50]
        assert ((back - w).abs() <= step / 2 + 1e-7).all()


@pytest.mark.parametrize("kind,opts", [("full", None), ("linformer", {"rank": 32})])
def test_stored_bit_width_and_bytes_per_parameter(kind, opts):
    """bytes per parameter about 4, 2, 1 and at most 0.6 at 32, 16, 8, 4 bits (width 128: the
    biases and norms kept in fp32 are about 1% of the parameters)."""
    model = build_model(_cfg(kind, opts=opts)).eval()
    names = {n for g in quantizable(model).values() for n, _, _ in g}
    # every linear weight (attention projections included), the embedding, the positions
    assert {"encoder.blocks.0.attn.qkv.weight", "encoder.blocks.0.attn.out.weight",
            "encoder.blocks.1.ffn.net.0.weight", "adapters.listops.embed.weight", "adapters.listops.pos"} <= names
    if kind == "linformer":
        assert {"encoder.blocks.0.attn.proj_k", "encoder.blocks.0.attn.proj_v"} <= names
    n = model_size(model)["params"]
    per = {}
    for bits in (32, 16, 8, 4):
        q = copy.deepcopy(model)
        report = quantize(q, bits, group_size=64)
        size = model_size(q)
        assert size["params"] == n  # a quantized weight still counts its elements
        per[bits] = size["size_bytes"] / n
        if bits in (8, 4):
            assert set(stored_bits(q)) == names and set(stored_bits(q).values()) == {bits}
            sd = q.state_dict()
            stored = {k: v for k, v in sd.items() if k.endswith(".original0")}
            assert stored and all(v.dtype == (torch.int8 if bits == 8 else torch.uint8) for v in stored.values())
            w = sd["encoder.blocks.0.attn.qkv.parametrizations.weight.original0"]
            assert w.numel() == (model.encoder.blocks[0].attn.qkv.weight.numel() // (1 if bits == 8 else 2))
            assert report["quantized_params"] + report["float_params"] == n
            assert report["float_params"] < 0.02 * n
        if bits == 16:
            assert all(p.dtype == torch.bfloat16 for p in q.parameters())
    assert per[32] == pytest.approx(4.0, abs=0.01)
    assert per[16] == pytest.approx(2.0, abs=0.01)
    assert 1.0 <= per[8] <= 1.1
    assert per[4] <= 0.6
    assert per[8] / per[32] <= 0.3 and per[4] / per[32] <= 0.2


def _dequantized_copy(model):
    from torch.nn.utils import parametrize

    plain = copy.deepcopy(model)
    for mod in list(plain.modules()):
        if parametrize.is_parametrized(mod):
            for pname in list(mod.parametrizations):
                parametrize.remove_parametrizations(mod, pname, leave_parametrized=True)
    return plain


def _family_cases():
    return [pytest.param(name, ov, id=f"{name}-{i}") for name in autoeff.list_attentions()
            for i, ov in enumerate(VARIANTS.get(name, [{}]))]


@pytest.mark.parametrize("name,opts", _family_cases())
def test_every_family_runs_quantized(name, opts):
    """Every family's weights are stored at 8 and 4 bits (its projections included) and the layer
    still computes what it computed in fp32, within the quantization's error."""
    layer = build(name, opts).eval()
    x, mask = torch.randn(2, 64, 32), _mask(64)
    with torch.no_grad():
        ref = layer(x, mask)
        for bits, tol in ((16, 0.03), (8, 0.03), (4, 0.25)):
            q = copy.deepcopy(layer)
            quantize(q, bits, group_size=16)
            y = q(x.to(torch.bfloat16) if bits == 16 else x, mask).float()
            assert y.shape == ref.shape and torch.isfinite(y[mask]).all(), (bits, name)
            if bits in (8, 4):
                assert any(k.endswith(("qkv.weight", "v.weight")) for k in stored_bits(q)), stored_bits(q)
                assert set(stored_bits(q).values()) == {bits}
                # exactly the fp32 layer holding the dequantized weights: the family computes with
                # the stored integers through every path (fused slices of qkv included)
                plain = _dequantized_copy(q)
                assert not stored_bits(plain)
                torch.testing.assert_close(y, plain(x, mask), rtol=1e-5, atol=1e-5)
            if name == "reformer":
                continue  # LSH: a hash that flips under rounding moves tokens to other buckets
            rel = ((y - ref)[mask].norm() / ref[mask].norm()).item()
            assert rel < tol, (bits, rel)


def test_quantized_checkpoint_loads_into_build_model_of_its_config(tmp_path):
    for compress in ({"bits": 8}, {"bits": 4}, {"bits": 16}, {"bits": 4, "prune": "structured", "sparsity": 0.5}):
        cfg = _cfg("linformer", width=64, opts={"rank": 16, "share_kv": True, "share_layers": True}, compress=compress)
        model = build_model(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))  # "trained": differs from a fresh build
        apply(model, cfg.compress)
        torch.save({"state_dict": model.state_dict()}, tmp_path / "m.pt")
        fresh = autoeff.build_model(cfg)
        fresh.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"])
        x, mask = example_inputs(task_spec(cfg.tasks[0]), 2)
        assert torch.equal(fresh.eval()(x, mask), model.eval()(x, mask)), compress
        # a weight shared by every layer (Linformer share_layers) is stored once
        if compress.get("bits") in (8, 4):
            assert model_size(fresh)["size_bytes"] == model_size(model)["size_bytes"]
            stored = {t.data_ptr() for t in fresh.state_dict().values()}
            assert len(stored) < len(fresh.state_dict())  # shared tensors share storage, not copied


def test_int8_accuracy_close_to_fp32_on_a_trained_model():
    from autoeff.tasks import load_task
    from autoeff.training import evaluate, fit

    cfg = _cfg("full", width=64, depth=1, seq_len=64, min_len=8, max_depth=4, n_train=512, n_val=256, n_test=32)
    cfg.train.max_steps, cfg.train.lr, cfg.train.warmup_steps = 80, 3e-3, 8
    data = [load_task(t) for t in cfg.tasks]
    model = build_model(cfg)
    fit(model, data, cfg.train)
    acc32 = evaluate(model, data, "val")["listops"]
    val = data[0].splits["val"]
    with torch.no_grad():
        p32 = model.eval()(val.x, val.mask).argmax(-1)
    q = copy.deepcopy(model)
    quantize(q, 8)
    acc8 = evaluate(q, data, "val")["listops"]
    with torch.no_grad():
        p8 = q.eval()(val.x, val.mask).argmax(-1)
    assert acc32 > data[0].majority_accuracy("val") + 0.02  # it learned something
    assert abs(acc8 - acc32) <= 0.01
    assert (p8 == p32).float().mean() >= 0.97


def test_fake_quantized_forward_is_the_quantized_model_and_gradients_reach_fp32_weights():
    cfg = _cfg("full", width=64, depth=1)
    model = build_model(cfg).eval()
    x, mask = example_inputs(task_spec(cfg.tasks[0]), 2)
    for bits in (8, 4):
        real = copy.deepcopy(model)
        quantize(real, bits, group_size=32)
        with fake_quantized(model, bits, 32):
            y = model(x, mask)
            torch.testing.assert_close(y, real(x, mask), rtol=1e-5, atol=1e-5)
            y.sum().backward()
        w = model.encoder.blocks[0].attn.qkv.weight
        assert isinstance(w, torch.nn.Parameter) and w.grad is not None and w.grad.abs().sum() > 0
        assert not any(isinstance(m, WeightOnly) for m in model.modules())  # back to plain fp32
        model.zero_grad()


def test_build_deployed_measures_like_the_compressed_trained_model():
    """The trial measures the untrained model compressed the same way before training: same
    stored sizes and parameter count as the trained, compressed model."""
    cfg = _cfg("full", width=64, compress={"bits": 4, "prune": "structured", "sparsity": 0.25})
    trained = build_model(cfg)
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(1.5)
    apply(trained, cfg.compress)
    probe = build_deployed(cfg)
    assert model_size(probe) == model_size(trained)
    assert model_size(probe)["params"] < model_size(build_model(cfg))["params"]


def test_docstring_states_the_default_group_size():
    """The module docstring's group size and bits per weight are the config's default."""
    import importlib

    from autoeff.config import CompressConfig

    q = importlib.import_module("autoeff.compress.quantize")  # the module (autoeff.compress.quantize is a function)

    g = CompressConfig().group_size
    doc = " ".join(q.__doc__.split())
    assert f"groups of {g} by default" in doc
    assert f"{4 + 16 / g:g} bits per weight" in doc  # 4-bit weights plus one fp16 scale per group
