"""Contract of every built-in generated task (tiny sizes): what the registry and the model rely on.

Deterministic by seed, cached by content hash (a second load never rebuilds; other options
get another cache entry), ``spec()`` builds nothing and agrees with the built tensors, and the
model accepts the inputs. Task-specific label rules live in each task's own test file.
Token-target tasks (docs/decoders.md §2: ``lm_text``, ``mqar``) are held to y (n, L) next-token
ids with -100 at unscored positions, and are fed to a decoder.
"""
import pytest
import torch

import autoeff
from autoeff.config import parse_run_config, parse_tasks
from autoeff.tasks import get_task, load_task, task_spec

SMALL = {
    "listops": {"seq_len": 64, "min_len": 8, "max_depth": 4, "n_train": 24, "n_val": 8, "n_test": 8},
    "text": {"seq_len": 256, "n_train": 24, "n_val": 8, "n_test": 8},
    "image": {"n_train": 20, "n_val": 10, "n_test": 10},
    "image-patches": {"kind": "image", "input": "patches", "n_train": 20, "n_val": 10, "n_test": 10},
    "pathfinder": {"n_train": 20, "n_val": 10, "n_test": 10},
    "speech": {"seq_len": 160, "n_train": 16, "n_val": 8, "n_test": 8},
    "retrieval": {"seq_len": 256, "min_len": 200, "n_train": 20, "n_val": 10, "n_test": 10},
    "mqar": {"seq_len": 64, "n_pairs": 8, "vocab": 64, "n_train": 20, "n_val": 10, "n_test": 10},
    # the interpreter's standard library, capped to a few windows so the test stays fast
    "lm_text": {"path": "stdlib", "seq_len": 64, "n_train": 20, "n_val": 10, "n_test": 10},
}


def task_cfg(name, **kw):
    opts = dict(SMALL[name])
    kind = opts.pop("kind", name)
    return parse_tasks([{"kind": kind, **opts, **kw}])[0]


def build(name, **kw):
    c = task_cfg(name, **kw)
    return get_task(c.kind).build(c.options_typed())


@pytest.fixture(params=sorted(SMALL))
def name(request):
    return request.param


def test_deterministic_by_seed(name):
    a, b, c = build(name, seed=1), build(name, seed=1), build(name, seed=2)
    for s in ("train", "val", "test"):
        assert torch.equal(a[s].x, b[s].x) and torch.equal(a[s].y, b[s].y) and torch.equal(a[s].mask, b[s].mask)
    assert not torch.equal(a["train"].x, c["train"].x)


def test_cached_by_content_hash(name, tmp_path, monkeypatch):
    c = task_cfg(name)
    heard = []
    first = load_task(c, data_dir=str(tmp_path), say=heard.append)
    assert len(list((tmp_path / "tasks").glob(f"{c.kind}-*.pt"))) == 1
    assert len(heard) == 2 and "generating task" in heard[0] and "generated in" in heard[1]  # slow work is announced
    monkeypatch.setattr(get_task(c.kind), "build", classmethod(lambda cls, o: 1 / 0))
    second = load_task(c, data_dir=str(tmp_path), say=heard.append)  # from the cache: build is never called
    assert len(heard) == 2  # a cache hit is silent
    assert all(torch.equal(first.splits[s].x, second.splits[s].x) for s in first.splits)
    with pytest.raises(ZeroDivisionError):  # other options, another cache entry
        load_task(task_cfg(name, seed=7), data_dir=str(tmp_path))


def test_spec_builds_nothing_and_matches_the_data(name, tmp_path, monkeypatch):
    c = task_cfg(name)
    with monkeypatch.context() as m:
        m.setattr(get_task(c.kind), "build", classmethod(lambda cls, o: 1 / 0))
        spec = task_spec(c)
    data = load_task(c, data_dir=str(tmp_path))
    lead = 2 if spec.pair else 1
    for s, sp in data.splits.items():
        n = int(getattr(c.options_typed(), f"n_{s}"))
        assert len(sp) == n and sp.y.dtype == torch.long
        if spec.target == "token":  # next-token ids, -100 where nothing is scored
            assert sp.y.shape == (n, spec.seq_len)
            scored = sp.y != -100
            assert scored.any(1).all() and int(sp.y[scored].min()) >= 0
            assert int(sp.y[scored].max()) < spec.vocab_size
            assert not (scored & ~sp.mask).any()  # padding is never scored
        else:
            assert spec.target == "class"
            assert int(sp.y.min()) >= 0 and int(sp.y.max()) < spec.num_classes
        assert sp.mask.dtype == torch.bool and sp.mask.shape == (n, *([2] if spec.pair else []), spec.seq_len)
        assert sp.mask.reshape(-1, spec.seq_len).any(1).all()  # every sequence has a real position
        if spec.input_kind == "tokens":
            assert sp.x.dtype == torch.long and sp.x.shape == sp.mask.shape
            assert int(sp.x.min()) >= 0 and int(sp.x.max()) < spec.vocab_size
        else:
            assert sp.x.dtype == torch.float32 and sp.x.shape == (*sp.mask.shape, spec.feature_dim)
    assert lead in (1, 2)


def test_model_accepts_the_inputs(name, tmp_path):
    c = task_cfg(name)
    spec = task_spec(c)
    model_cfg = {"depth": 1, "width": 16, "heads": 2}
    if spec.target == "token":  # token targets are for decoders (docs/decoders.md §3)
        pytest.importorskip("autoeff.model.decoder", reason="the decoder model is not on this branch yet")
        model_cfg["arch"] = "decoder"
    cfg = parse_run_config({"model": model_cfg, "tasks": [c.to_dict()]})
    model = autoeff.create_model(cfg).eval()
    sp = load_task(c, data_dir=str(tmp_path)).splits["val"]
    out = model(sp.x[:3], sp.mask[:3])
    want = (3, spec.seq_len, spec.vocab_size) if spec.target == "token" else (3, spec.num_classes)
    assert out.shape == want and torch.isfinite(out).all()
