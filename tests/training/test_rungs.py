"""Rungs in training: a trial that passes every rung is exactly a full-budget trial; a stop ends
training at the rung and never reports the rung's accuracy as the model's accuracy; the step
guard wraps every step."""
import contextlib

import pytest
import torch

import autoeff
from autoeff.config import parse_run_config
from autoeff.tasks import load_task
from autoeff.training import fit, train_and_evaluate


def cfg_for(kind, steps=9, dropout=0.1, **att):
    return parse_run_config({
        "model": {"depth": 1, "width": 32, "heads": 2, "dropout": dropout},
        "attention": {"kind": kind, **({kind: att} if att else {})},
        "tasks": [{"kind": "listops", "seq_len": 32, "min_len": 6, "max_depth": 3, "n_train": 64, "n_val": 16,
                   "n_test": 16}],
        "train": {"max_steps": steps, "batch_size": 8, "warmup_steps": 2},
    })


@pytest.mark.parametrize("kind, att", [("full", {}), ("linformer", {"rank": 8})])
def test_passing_every_rung_equals_full_budget(tmp_path, kind, att):
    cfg = cfg_for(kind, **att)  # dropout on: the rung evaluations must not disturb the random stream
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    plain = autoeff.create_model(cfg)
    fit(plain, data, cfg.train)
    laddered = autoeff.create_model(cfg)
    seen = []
    res = fit(laddered, data, cfg.train, rungs=[1, 3], on_rung=lambda i, s, acc, loss: seen.append((i, s, acc)) or True)
    assert [(i, s) for i, s, _ in seen] == [(1, 1), (2, 3)] and res.steps == 9 and res.stopped_at_rung == 0
    assert all(0.0 <= a <= 1.0 for _, _, acc in seen for a in acc.values())
    a, b = plain.state_dict(), laddered.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_stop_ends_training_at_the_rung_without_an_accuracy(tmp_path):
    cfg = cfg_for("full", steps=8)
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    seen = []

    def on_rung(i, step, accuracy, per_task, loss):
        seen.append((i, step, accuracy))
        return i < 2  # stop at the second rung

    m = train_and_evaluate(autoeff.create_model(cfg), data, cfg, rungs=[2, 4, 6], on_rung=on_rung)
    assert [s[:2] for s in seen] == [(1, 2), (2, 4)]
    assert m["train_steps"] == 4.0 and m["stopped_at_rung"] == 2.0
    assert m["rung_accuracy.1"] == seen[0][2] and m["rung_accuracy.2"] == seen[1][2] and m["rung_steps.2"] == 4.0
    assert "accuracy" not in m and "test_accuracy" not in m and "rung_accuracy.3" not in m
    full = train_and_evaluate(autoeff.create_model(cfg), data, cfg, rungs=[2, 4, 6], on_rung=lambda *a: True)
    assert full["train_steps"] == 8.0 and "stopped_at_rung" not in full and "accuracy" in full
    assert {k for k in full if k.startswith("rung_steps.")} == {"rung_steps.1", "rung_steps.2", "rung_steps.3"}


def test_step_guard_wraps_every_step_and_the_evaluations(tmp_path):
    cfg = cfg_for("full", steps=3)
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    entered = []

    @contextlib.contextmanager
    def guard():
        entered.append(1)
        yield

    train_and_evaluate(autoeff.create_model(cfg), data, cfg, step_guard=guard)
    assert len(entered) == 3 + 1  # set-up and step 1, steps 2 and 3, then the final evaluation


def test_a_rung_records_the_validation_loss_of_the_model_at_that_step(tmp_path):
    """rung_loss.<i>: the mean cross-entropy on the validation split at the rung, computed by hand
    here from the model as it stood there (the stop leaves it so)."""
    import torch.nn.functional as F

    from autoeff.training.data import eval_batches

    cfg = cfg_for("full", dropout=0.0)
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    model = autoeff.create_model(cfg)
    metrics = train_and_evaluate(model, data, cfg, rungs=[3], on_rung=lambda i, s, acc, per, loss: False)
    assert metrics["stopped_at_rung"] == 1 and "accuracy" not in metrics
    model.eval()
    nats = n = 0
    with torch.no_grad():
        for b in eval_batches(data[0], "val", 64, cfg.train.val_batches):
            nats += float(F.cross_entropy(model(b["x"], b["mask"], data[0].spec.name), b["y"], reduction="sum"))
            n += len(b["y"])
    assert metrics["rung_loss.1"] == pytest.approx(nats / n, rel=1e-5)
    assert metrics["rung_loss.1"] > 0.5  # three steps in: far from fitted (ListOps has 10 classes)
