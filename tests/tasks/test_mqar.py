"""MQAR (Zoology, Arora et al. 2023): labels re-derived here by scanning each sequence, the
layout, determinism and the option errors. Determinism and caching of every generated task are
also covered by test_generator_contract.py."""
import numpy as np
import pytest
import torch

from autoeff.config import parse_tasks
from autoeff.errors import ConfigError
from autoeff.tasks import get_task, load_task, task_spec
from autoeff.tasks.mqar import key_range

OPTS = {"seq_len": 96, "n_pairs": 12, "vocab": 200, "n_train": 40, "n_val": 10, "n_test": 10}


def cfg(**kw):
    return parse_tasks([{"kind": "mqar", **{**OPTS, **kw}}])[0]


def build(**kw):
    c = cfg(**kw)
    return get_task("mqar").build(c.options_typed())


def expected_targets(x: torch.Tensor, n_pairs: int) -> torch.Tensor:
    """Independent of the generator: read the pairs at the start; every later occurrence of a key
    followed by its own value may be a query, whose target is that value (-100 elsewhere). The
    random filler can by chance hold such a couple too, so the generator's queries are a subset."""
    y = torch.full_like(x, -100)
    for i, row in enumerate(x.tolist()):
        pairs = {row[2 * j]: row[2 * j + 1] for j in range(n_pairs)}
        for t in range(2 * n_pairs, len(row) - 1):
            if row[t] in pairs and row[t + 1] == pairs[row[t]]:
                y[i, t] = row[t + 1]
    return y


def test_targets_are_the_values_of_the_queried_keys():
    data = build()
    k_lo, k_hi = key_range(OPTS["vocab"])
    p = OPTS["n_pairs"]
    for sp in data.values():
        assert sp.x.shape == sp.y.shape == (len(sp), OPTS["seq_len"]) and sp.mask.all()
        scored = sp.y != -100
        assert torch.equal(sp.y[scored], expected_targets(sp.x, p)[scored])
        keys, values = sp.x[:, 0:2 * p:2], sp.x[:, 1:2 * p:2]
        assert ((keys >= k_lo) & (keys < k_hi)).all() and ((values >= k_hi) & (values < OPTS["vocab"])).all()
        for row_k, row_v in zip(keys, values):  # distinct keys, distinct values
            assert len(set(row_k.tolist())) == p and len(set(row_v.tolist())) == p
        assert (scored.sum(1) == p).all()  # every key is queried exactly once
        for i in range(len(sp)):
            queried = sp.x[i][scored[i]]
            assert sorted(queried.tolist()) == sorted(keys[i].tolist())
        assert not scored[:, : 2 * p].any()  # the pairs themselves are never scored
        assert int(sp.x.min()) >= 1 and int(sp.x.max()) < OPTS["vocab"]  # 0 is padding only


def test_some_answers_lie_far_back():
    sp = build(n_train=200)["train"]
    p = OPTS["n_pairs"]
    dist = []
    for row, ys in zip(sp.x.tolist(), sp.y.tolist()):
        where = {row[2 * j]: 2 * j for j in range(p)}
        dist += [t - where[row[t]] for t, v in enumerate(ys) if v != -100]
    dist = np.array(dist)
    assert dist.min() >= 2 and dist.max() > OPTS["seq_len"] // 2  # near queries and far ones
    # Zoology's power law (exponent 0.01 - 1) puts most queries in the first half of the query
    # slots (about 74% here); uniform slots would put half there
    slots = (OPTS["seq_len"] + 1 - 2 * p) // 2
    first_half = (np.nonzero((sp.y != -100).numpy())[1] - 2 * p) // 2 < slots // 2
    assert first_half.mean() > 0.65


def test_spec_and_seed():
    c = cfg()
    spec = task_spec(c)
    assert (spec.target, spec.bytes_per_token, spec.vocab_size, spec.seq_len) == ("token", 0.0, 200, 96)
    a, b, other = build(seed=3), build(seed=3), build(seed=4)
    assert torch.equal(a["val"].x, b["val"].x) and torch.equal(a["val"].y, b["val"].y)
    assert not torch.equal(a["val"].x, other["val"].x)
    assert not torch.equal(a["train"].x[:10], a["val"].x)  # splits are drawn independently


def test_cached_splits_are_reused(tmp_path):
    c = cfg()
    first = load_task(c, data_dir=str(tmp_path))
    second = load_task(c, data_dir=str(tmp_path))
    assert len(list((tmp_path / "tasks").glob("mqar-*.pt"))) == 1
    assert torch.equal(first.splits["test"].y, second.splits["test"].y)


@pytest.mark.parametrize("opts, key, fragment", [
    ({"n_pairs": 100, "vocab": 100}, "n_pairs", "must be <= 49"),
    ({"n_pairs": 30, "seq_len": 100}, "seq_len", "4 * n_pairs - 1 = 119"),
    ({"n_pairs": 0}, "n_pairs", "must be > 0"),
    ({"n_val": 0}, "n_val", "must be > 0"),
])
def test_errors_name_the_key(opts, key, fragment):
    with pytest.raises(ConfigError) as ei:
        cfg(**opts)
    assert f"tasks[0].{key}" in str(ei.value) and fragment in str(ei.value)
