"""ListOps: labels checked by an independent evaluator of the token sequence."""
import statistics

import pytest
import torch

from autoeff.config import parse_tasks
from autoeff.errors import ConfigError
from autoeff.tasks import load_task
from autoeff.tasks.listops import VOCAB


def independent_eval(tokens):
    """Stack machine over the token strings; written separately from the generator."""
    stack = []
    for t in tokens:
        if t.startswith("["):
            stack.append([t])
        elif t == "]":
            frame = stack.pop()
            op, args = frame[0], frame[1:]
            if op == "[MIN":
                v = min(args)
            elif op == "[MAX":
                v = max(args)
            elif op == "[SM":
                v = sum(args) % 10
            elif op == "[MED":
                v = int(statistics.median(args))
            else:
                raise AssertionError(op)
            if stack:
                stack[-1].append(v)
            else:
                return v
        else:
            d = int(t)
            if not stack:
                return d
            stack[-1].append(d)
    raise AssertionError("unbalanced expression")


def make(tmp_path, **kw):
    opts = {"kind": "listops", "seq_len": 96, "min_len": 10, "max_depth": 5, "n_train": 150, "n_val": 40, "n_test": 40}
    opts.update(kw)
    return load_task(parse_tasks([opts])[0], data_dir=str(tmp_path))


def test_labels_match_an_independent_evaluator(tmp_path):
    data = make(tmp_path)
    for split in ("train", "val", "test"):
        sp = data.splits[split]
        for x, m, y in zip(sp.x, sp.mask, sp.y):
            toks = [VOCAB[i] for i in x[m].tolist()]
            assert toks[0].startswith("[") and toks[-1] == "]"  # an operator at the root
            assert independent_eval(toks) == int(y)


def test_shapes_lengths_and_brackets_kept(tmp_path):
    data = make(tmp_path)
    sp = data.splits["train"]
    assert sp.x.shape == (150, 96) and sp.x.dtype == torch.long and sp.mask.dtype == torch.bool
    lengths = sp.mask.sum(1)
    assert int(lengths.min()) > 10 and int(lengths.max()) < 96
    assert (sp.x == VOCAB.index("]")).any()  # closing brackets are real tokens
    assert set(sp.y.tolist()) <= set(range(10)) and len(set(sp.y.tolist())) >= 5
    assert data.spec.num_classes == 10 and data.spec.vocab_size == len(VOCAB)


def test_deterministic_by_seed_disjoint_splits_and_cached(tmp_path):
    a = make(tmp_path / "a")
    b = make(tmp_path / "b")
    c = make(tmp_path / "c", seed=1)
    assert torch.equal(a.splits["train"].x, b.splits["train"].x)
    assert not torch.equal(a.splits["train"].x, c.splits["train"].x)
    rows = {tuple(r.tolist()) for s in ("train", "val", "test") for r in a.splits[s].x}
    assert len(rows) == 230  # no example repeats, within or across splits
    cached = list((tmp_path / "a" / "tasks").glob("listops-*.pt"))
    assert len(cached) == 1
    again = make(tmp_path / "a")
    assert torch.equal(again.splits["val"].y, a.splits["val"].y)


def test_bad_options_rejected():
    with pytest.raises(ConfigError, match="min_len"):
        parse_tasks([{"kind": "listops", "seq_len": 32, "min_len": 40}])
    with pytest.raises(ConfigError, match="max_args"):
        parse_tasks([{"kind": "listops", "max_args": 1}])
