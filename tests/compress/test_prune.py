"""Pruning: structured pruning removes exactly the least important units (the pruned model
computes what the unpruned one computes with those units zeroed) and shrinks the model;
magnitude pruning zeroes the requested fraction and keeps it zero through a fine-tune."""
from __future__ import annotations

import copy

import pytest
import torch

from autoeff.compress.prune import HEAD_PRUNERS, bake, kept, prune, prune_ffn
from autoeff.config import parse_run_config, task_spec
from autoeff.measure import model_size
from autoeff.model import build_model, example_inputs
from autoeff.model.encoder import FeedForward
from autoeff.attention import get_attention


def test_kept_units():
    assert kept(4, 0.25) == 3 and kept(4, 0.5) == 2 and kept(4, 0.95) == 1 and kept(2, 0.2) == 2
    assert kept(256, 0.5) == 128


def test_ffn_pruning_equals_zeroing_the_removed_neurons():
    torch.manual_seed(0)
    ffn = FeedForward(16, 64, 0.0).eval()
    x = torch.randn(3, 5, 16)
    ref = copy.deepcopy(ffn)
    removed = prune_ffn(ffn, 0.5)
    assert removed == 32 and ffn.net[0].out_features == 32 and ffn.net[3].in_features == 32
    # the kept neurons are the most important ones; zeroing the others in the original is the same map
    score = ref.net[0].weight.norm(dim=1) * ref.net[3].weight.norm(dim=0)
    drop = score.argsort()[:32]
    with torch.no_grad():
        ref.net[3].weight[:, drop] = 0
    torch.testing.assert_close(ffn(x), ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,opts", [("full", {}), ("full", {"kv_heads": 2}), ("sliding_window", {"window": 8}),
                                       ("sliding_window", {"window": 8, "kv_heads": 2}), ("synthesizer", {"mode": "dense", "mix": True}),
                                       ("synthesizer", {"mode": "random"}), ("synthesizer", {"mode": "factorized", "rank": 8})])
def test_head_pruning_equals_zeroing_the_removed_heads(name, opts):
    """A family in HEAD_PRUNERS computes with the heads it holds: removing heads gives exactly the
    layer whose removed heads' output columns are zeroed."""
    assert name in HEAD_PRUNERS
    torch.manual_seed(0)
    fam = get_attention(name)
    layer = fam(32, 4, fam.options(**opts), max_len=24).eval()
    x, mask = torch.randn(2, 24, 32), torch.ones(2, 24, dtype=torch.bool)
    mask[1, 17:] = False
    ref = copy.deepcopy(layer)
    removed = HEAD_PRUNERS[name](layer, 0.5)
    assert removed == 2 and layer.heads == 2 and layer.out.in_features == 16
    kept_cols = torch.cat([torch.arange(h * 8, h * 8 + 8) for h in range(4)])
    # which heads were kept: the out columns the pruned layer still has
    keep = [h for h in range(4) if any(torch.equal(layer.out.weight[:, i * 8:(i + 1) * 8], ref.out.weight[:, h * 8:(h + 1) * 8])
                                       for i in range(2))]
    assert len(keep) == 2
    with torch.no_grad():
        for h in set(range(4)) - set(keep):
            ref.out.weight[:, h * 8:(h + 1) * 8] = 0
    del kept_cols
    torch.testing.assert_close(layer(x, mask)[mask], ref(x, mask)[mask], rtol=1e-5, atol=1e-5)


def _cfg(kind, **opts):
    return parse_run_config({"model": {"width": 64, "heads": 4, "depth": 2, "dropout": 0.0},
                             "attention": {"kind": kind, **({kind: opts} if opts else {})},
                             "tasks": [{"kind": "listops", "seq_len": 64}]})


@pytest.mark.parametrize("kind,opts,heads_pruned", [("full", {}, True), ("linformer", {"rank": 16}, False),
                                                   ("longformer", {"window": 16}, False)])
def test_structured_pruning_shrinks_the_model(kind, opts, heads_pruned):
    cfg = _cfg(kind, **opts)
    model = build_model(cfg).eval()
    before = model_size(model)["params"]
    report = prune(model, "structured", 0.5)
    assert report["pruned_neurons"] == 2 * 64  # half of 128 hidden neurons, in each of 2 blocks
    assert report["pruned_heads"] == (4 if heads_pruned else 0)
    after = model_size(model)["params"]
    ffn = 2 * 64 * (64 + 1 + 64)  # per block, 64 neurons: their input rows, biases, output columns
    head = 16 * (3 * 64 + 3 + 64)  # a head of 16 dims: its q, k, v rows and biases, its output columns
    assert before - after == ffn + (2 * 2 * head if heads_pruned else 0)
    x, mask = example_inputs(task_spec(cfg.tasks[0]), 2)
    assert torch.isfinite(model(x, mask)).all()


def test_magnitude_pruning_zeroes_the_fraction_and_holds_it_through_training():
    cfg = _cfg("full")
    model = build_model(cfg)
    report = prune(model, "magnitude", 0.5)
    lins = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    total = sum(m.weight.numel() for m in lins)
    assert report["pruned_weights"] == pytest.approx(0.5 * total, rel=0.01)
    zero_before = [(m.weight == 0) for m in lins]
    x, mask = example_inputs(task_spec(cfg.tasks[0]), 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(x, mask).square().mean().backward()
        opt.step()
    bake(model)
    for m, z in zip(lins, zero_before):
        assert not torch.nn.utils.parametrize.is_parametrized(m)
        assert (m.weight[z] == 0).all()  # still zero after the optimizer steps
    assert model_size(model)["params"] == model_size(build_model(cfg))["params"]  # stored densely
