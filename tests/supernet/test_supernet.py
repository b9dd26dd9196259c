"""The supernet: extraction is exact for every family (and hybrids), slices never leak."""
from __future__ import annotations

import pytest
import torch

import autoeff
from autoeff.attention import get_attention
from autoeff.config import parse_run_config, task_spec
from autoeff.model import example_inputs
from autoeff.supernet import SuperNet

TASKS = [
    {"kind": "listops", "seq_len": 48, "min_len": 8, "n_train": 10, "n_val": 5, "n_test": 5},
    {"kind": "image", "input": "patches", "image_size": 24, "patch": 4, "n_train": 10, "n_val": 10, "n_test": 10},
    {"kind": "retrieval", "seq_len": 256, "n_train": 10, "n_val": 10, "n_test": 10},  # a pair task
]
KNOBS = {  # the largest knobs of the known families in the supernet below (others: their defaults)
    "full": {}, "linformer": {"rank": 16}, "reformer": {"bucket_size": 8, "n_hashes": 2},
    "longformer": {"window": 16, "global_tokens": 1}, "linear": {"feature_map": "favor", "features": 16},
    "synthesizer": {"mode": "factorized", "rank": 8, "mix": True},
}
# every registered family an encoder can hold (a causal-only family exists only in decoders)
FAMILIES = {k: KNOBS.get(k, {}) for k in autoeff.list_attentions() if not get_attention(k).causal_only}


def cfg(depth, width, heads, ffn, attention, tasks=TASKS):
    return parse_run_config({"model": {"depth": depth, "width": width, "heads": heads, "ffn_mult": ffn, "dropout": 0.0},
                             "attention": attention, "tasks": tasks})


@pytest.fixture(scope="module")
def supernet():
    corners = [cfg(3, 32, h, 2.0, {"kind": k, k: o}) for k, o in FAMILIES.items() for h in (2, 4)]
    corners += [cfg(3, 32, h, 2.0, {"kind": "synthesizer", "synthesizer": {"mode": m}})
                for m in ("dense", "random") for h in (2, 4)]
    corners += [cfg(3, 32, 2, 2.0, {"kind": "linear", "linear": {"feature_map": "elu"}})]
    corners += [cfg(3, 32, 2, 2.0, {"kind": "linformer", "linformer": {"rank": 16, "share_kv": True}})]
    specs = [task_spec(t) for t in corners[0].tasks]
    return SuperNet(corners, specs, seed=0)


def _small(kind):
    opts = dict(FAMILIES[kind])
    if "rank" in opts:
        opts["rank"] = opts["rank"] // 2
    return {"kind": kind, kind: opts}


SUBNETS = {f"{k}-d2-w16": (2, 16, 2, 1.0, _small(k)) for k in FAMILIES}
SUBNETS.update({
    "hybrid-linear-full": (2, 24, 4, 1.5, {"layers": [{"kind": "linear"}, {"kind": "full"}]}),
    "hybrid-3": (3, 32, 4, 2.0, {"layers": [{"kind": "longformer", "longformer": {"window": 8}},
                                             {"kind": "reformer", "reformer": {"bucket_size": 8}},
                                             {"kind": "linformer", "linformer": {"rank": 8}}]}),
    "synth-dense": (3, 32, 2, 2.0, {"kind": "synthesizer", "synthesizer": {"mode": "dense"}}),
    "synth-random": (1, 16, 4, 2.0, {"kind": "synthesizer", "synthesizer": {"mode": "random"}}),
    "linformer-shared-kv": (1, 16, 2, 2.0, {"kind": "linformer", "linformer": {"rank": 8, "share_kv": True}}),
    "largest": (3, 32, 4, 2.0, {"kind": "full"}),
})


@pytest.mark.parametrize("name", sorted(SUBNETS))
def test_extracted_model_computes_what_the_supernet_computes(supernet, name):
    sub = cfg(*SUBNETS[name])
    supernet.eval()
    model = supernet.extract(sub).eval()
    assert type(model) is autoeff.model.AutoEffModel
    for spec in supernet.specs:
        x, mask = example_inputs(spec, 3, seed=1)
        mask[1, ..., -5:] = False  # padding too
        with torch.no_grad():
            want = supernet(sub, x, mask, spec.name)
            got = model(x, mask, spec.name)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # and a differently built copy of the same standalone model accepts the weights
    fresh = autoeff.build_model(sub)
    fresh.load_state_dict(model.state_dict())


def test_different_subnets_share_their_common_slices(supernet):
    """Full and Linformer subnets of the same width read the same Q/K/V/output projections."""
    a = supernet.subnet_tensors(cfg(2, 16, 2, 1.0, {"kind": "full"}))
    b = supernet.subnet_tensors(cfg(2, 16, 2, 1.0, _small("linformer")))
    r = supernet.subnet_tensors(cfg(2, 16, 2, 1.0, _small("reformer")))
    name = "encoder.blocks.1.attn.qkv.weight"
    torch.testing.assert_close(a[name], b[name])
    torch.testing.assert_close(r[name], torch.cat([a[name][:16], a[name][32:]]))  # shared QK = the query rows
    torch.testing.assert_close(a["encoder.blocks.0.ffn.net.0.weight"], b["encoder.blocks.0.ffn.net.0.weight"])


@pytest.mark.parametrize("name", ["linformer-d2-w16", "hybrid-3", "synth-dense", "reformer-d2-w16"])
def test_gradients_never_reach_outside_a_subnets_slices(supernet, name):
    sub = cfg(*SUBNETS[name])
    supernet.train()
    supernet.zero_grad(set_to_none=True)
    spec = supernet.specs[0]
    x, mask = example_inputs(spec, 2, seed=2)
    supernet(sub, x, mask, spec.name).square().sum().backward()
    owned = supernet.owner_slices(sub)
    touched = 0
    for key, p in supernet.params.items():
        if p.grad is None:
            assert not owned[key].any() or key.startswith("heads__") or key.startswith("adapters__"), key
            continue
        outside = p.grad[~owned[key]]
        assert torch.count_nonzero(outside) == 0, f"{key}: gradient outside the subnet's slice"
        touched += int(torch.count_nonzero(p.grad[owned[key]]) > 0)
    assert touched > 10  # the subnet really trained its slices
    supernet.zero_grad(set_to_none=True)


def test_a_subnet_outside_the_space_is_refused(supernet):
    with pytest.raises(ValueError, match="larger than the supernet"):
        supernet.extract(cfg(4, 32, 2, 2.0, {"kind": "full"}))
    with pytest.raises(ValueError, match="larger than the supernet"):  # a rank above the space's largest
        supernet.extract(cfg(1, 16, 2, 2.0, {"kind": "linformer", "linformer": {"rank": 32}}))


@pytest.mark.parametrize("lr,steps,expected", [(1.0e-3, 7, {"train": {"max_steps": 7, "lr": 1.0e-3}}),
                                               (0.0, 7, {"train": {"max_steps": 7}}), (0.0, 0, None)])
def test_finalists_train_with_the_oneshot_steps_and_learning_rate(repo, monkeypatch, lr, steps, expected):
    """`oneshot.finalist_steps` and `oneshot.finalist_lr` reach the finalist's training (0 = the
    space's train settings); a rank-check candidate always trains with the space's own."""
    from autoeff.search import objective
    from autoeff.search.oneshot import OneShot
    from autoeff.search.record import TrialRecord
    from autoeff.search.space import load_space

    space = load_space(str(repo / "search_spaces" / "smoke_oneshot.yaml"),
                       [f"oneshot.finalist_lr={lr}", f"oneshot.finalist_steps={steps}", "oneshot.finalist_init=scratch"])
    seen = []
    monkeypatch.setattr(objective, "run_trial", lambda *a, **kw: seen.append(kw["overrides"]) or TrialRecord(0, "complete"))
    strategy = OneShot(space)
    proxy = TrialRecord(3, "proxy", params={}, metrics={"proxy_accuracy": 0.5})
    strategy.run_finalist(proxy, "finalist", 9, artifacts_dir="", log=lambda s: None)
    strategy.run_finalist(proxy, "rank_check", 10, artifacts_dir="", log=lambda s: None)
    assert seen == [expected, None]
