"""Distillation (loss, teacher trained once and cached) and compression inside a search trial."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import autoeff
from autoeff.compress.distill import distill_loss, kd_loss, teacher_config
from autoeff.config import parse_run_config, task_spec
from autoeff.measure import model_size
from autoeff.tasks import load_task

TASK = {"kind": "listops", "seq_len": 48, "min_len": 8, "max_depth": 3, "n_train": 128, "n_val": 64, "n_test": 32}


def test_kd_loss():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    assert kd_loss(s, s, 2.0).abs() < 1e-6 and kd_loss(s, t, 2.0) > 0
    torch.testing.assert_close(distill_loss(s, y, t, 0.0, 2.0), F.cross_entropy(s, y))
    mix = distill_loss(s, y, t, 0.25, 2.0)
    torch.testing.assert_close(mix, 0.75 * F.cross_entropy(s, y) + 0.25 * kd_loss(s, t, 2.0))


def _cfg(tmp_path, **compress):
    return parse_run_config({"model": {"width": 32, "heads": 2, "depth": 1, "dropout": 0.0},
                             "tasks": [TASK], "train": {"max_steps": 6, "batch_size": 32, "warmup_steps": 1},
                             "compress": {"distill": True, "teacher": {"width": 32, "heads": 2, "depth": 1, "max_steps": 8},
                                          **compress},
                             "data_dir": str(tmp_path)})


def test_teacher_is_trained_once_cached_and_reused(tmp_path, monkeypatch):
    from autoeff.training import teacher as teacher_mod
    from autoeff.training.run import train_and_evaluate

    cfg = _cfg(tmp_path)
    data = [load_task(t, cfg.data_dir) for t in cfg.tasks]
    calls = []
    real_fit = teacher_mod.fit
    monkeypatch.setattr(teacher_mod, "fit", lambda *a, **k: calls.append(a[2].max_steps) or real_fit(*a, **k))
    st = teacher_mod.load_or_train_teacher(cfg, data)
    assert calls == [8]
    folder = teacher_mod.teacher_dir(cfg)
    assert (folder / "teacher.pt").exists() and (folder / "metrics.json").exists()
    assert st.logits["listops"].shape == (128, data[0].spec.num_classes)
    # the recorded accuracy is the cached teacher's: recomputed from its checkpoint (one example
    # may flip on a near tie at another thread count), and the cached logits are its logits
    from autoeff.model import build_model
    from autoeff.training import evaluate

    blob = torch.load(folder / "teacher.pt", weights_only=True)
    teacher = build_model(parse_run_config(blob["config"]), [d.spec for d in data])
    teacher.load_state_dict(blob["state_dict"])
    n_val = len(data[0].splits["val"])
    assert st.metrics["teacher_accuracy"] == pytest.approx(evaluate(teacher, data, "val")["listops"], abs=1.01 / n_val)
    torch.testing.assert_close(teacher_mod._train_logits(teacher, data)["listops"], st.logits["listops"],
                               atol=1e-4, rtol=1e-4)
    # a new process (empty in-memory cache), or another student with the same teacher: loaded, not trained
    teacher_mod._LOADED.clear()
    other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, width=16), train=dataclasses.replace(cfg.train, threads=1))
    assert teacher_mod.teacher_dir(other) == folder
    st2 = teacher_mod.load_or_train_teacher(other, data)
    assert calls == [8] and torch.equal(st2.logits["listops"], st.logits["listops"])
    # a different teacher is another cache entry
    bigger = dataclasses.replace(cfg, compress=dataclasses.replace(
        cfg.compress, teacher=dataclasses.replace(cfg.compress.teacher, width=64)))
    assert teacher_mod.teacher_dir(bigger) != folder
    assert teacher_config(cfg).attention.kind == "full" and not teacher_config(cfg).compress.distill
    # the student's run reports the teacher and trains with its soft targets
    seen = []
    from autoeff.training import module as module_mod

    real_loss = module_mod.distill_loss
    monkeypatch.setattr(module_mod, "distill_loss", lambda *a: seen.append(a[2].shape) or real_loss(*a))
    model = autoeff.build_model(cfg)
    m = train_and_evaluate(model, data, cfg)
    assert calls == [8] and len(seen) == 6 and m["teacher_accuracy"] == st.metrics["teacher_accuracy"]


@pytest.mark.slow
def test_compressed_distilled_trials_in_a_search(tmp_path, repo):
    """A search over bits and distillation: every trial trains fp32, compresses, is measured on the
    compressed model; the teacher is trained once and its accuracy goes on the parent run."""
    from autoeff import run_search
    from autoeff.tracking import read_search

    space = tmp_path / "s.yaml"
    space.write_text(f"""
name: comp
tasks: [{TASK}]
model: {{width: 64, heads: 2, depth: 1, dropout: 0.0}}
train: {{max_steps: 8, batch_size: 32, warmup_steps: 1}}
deploy: {{batch_size: 1, warmup: 1, repeats: 3, threads: 1}}
data_dir: {tmp_path}/cache
compress: {{distill: true, teacher: {{width: 32, heads: 2, depth: 1, max_steps: 10}}}}
space:
  compress.bits: [4, 8]
constraints: ["size_mb <= 1000"]
search: {{sampler: random, n_trials: 2, seed: 1, storage: sqlite:///{tmp_path}/a.db,
          mlflow_uri: sqlite:///{tmp_path}/m.db, artifacts: {tmp_path}/art}}
""")
    res = run_search(str(space), quiet=True)
    assert sorted(r.params["compress.bits"] for r in res.records) == [4, 8]
    teachers = list((tmp_path / "cache" / "teachers").iterdir())
    assert len(teachers) == 1
    for r in res.records:
        assert r.status == "complete", r.reason
        m = r.metrics
        assert {"accuracy", "accuracy_fp32", "teacher_accuracy", "latency_ms", "peak_memory_mb", "size_mb"} <= set(m)
        bits = r.params["compress.bits"]
        cfg = parse_run_config(r.config)
        fp32 = model_size(__import__("autoeff.model", fromlist=["build_model"]).build_model(cfg))
        assert m["size_mb"] * 2**20 <= (0.3 if bits == 8 else 0.2) * fp32["size_bytes"] + 4 * m["float_params"]
        assert m["params"] == fp32["params"]
        # the checkpoint is the deployed model: it loads into build_model of the trial's config
        model = autoeff.build_model(cfg)
        model.load_state_dict(torch.load(r.checkpoint, weights_only=True)["state_dict"])
        assert model_size(model)["size_bytes"] == pytest.approx(m["size_mb"] * 2**20)
    store = read_search(f"sqlite:///{tmp_path}/m.db", "comp")
    parent = store["parents"][0]
    assert "teacher_accuracy" in parent.data.metrics
    for t in store["trials"]:
        assert t.data.params["compress.bits"] in ("4", "8") and "accuracy_fp32" in t.data.metrics
