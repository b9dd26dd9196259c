"""Joint multi-task training: every head and adapter is updated; mixing rules behave."""
import torch

import autoeff
from autoeff.config import parse_run_config
from autoeff.tasks import load_task
from autoeff.training import MixedTaskBatches, evaluate, fit, train_and_evaluate


def two_task_cfg(mix="round_robin", steps=8, aggregate="mean"):
    small = {"min_len": 6, "max_depth": 3, "n_train": 64, "n_val": 16, "n_test": 16}
    return parse_run_config({
        "model": {"depth": 1, "width": 32, "heads": 2, "dropout": 0.0},
        "tasks": [{"kind": "listops", "name": "short", "seq_len": 32, **small},
                  {"kind": "listops", "name": "long", "seq_len": 64, "seed": 3, "weight": 3.0, **small}],
        "train": {"max_steps": steps, "batch_size": 8, "mix": mix, "warmup_steps": 1, "aggregate": aggregate},
    })


def test_every_head_and_adapter_updated(tmp_path):
    cfg = two_task_cfg()
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    model = autoeff.create_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = fit(model, data, cfg.train)
    assert res.steps == 8 and res.steps_per_task == {"short": 4, "long": 4}
    after = model.state_dict()
    for name in ("short", "long"):
        for prefix in (f"heads.{name}.", f"adapters.{name}."):
            changed = [k for k in after if k.startswith(prefix) and not torch.equal(after[k], before[k])]
            assert changed, prefix
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("encoder."))
    acc = evaluate(model, data, "val")
    assert set(acc) == {"short", "long"} and all(0.0 <= a <= 1.0 for a in acc.values())


def test_proportional_mixing_follows_weights_times_size(tmp_path):
    cfg = two_task_cfg("proportional")
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    stream = iter(MixedTaskBatches(data, batch_size=4, mix="proportional", weights=[1.0, 3.0], seed=0))
    counts = {"short": 0, "long": 0}
    for _ in range(800):
        counts[next(stream)["task"]] += 1
    assert 0.70 < counts["long"] / 800 < 0.80  # expected 0.75


def test_task_weights_reach_training_through_the_trial_function(tmp_path):
    """``train_and_evaluate`` (what trials and `autoeff train` run) mixes by weight x size and
    aggregates accuracy by the config's rule and weights."""
    cfg = two_task_cfg("proportional", steps=120, aggregate="weighted")  # weights 1 (short) and 3 (long)
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    m = train_and_evaluate(autoeff.create_model(cfg), data, cfg)
    assert m["train_steps.short"] + m["train_steps.long"] == 120
    assert 0.62 < m["train_steps.long"] / 120 < 0.88  # expected 0.75 (equal train sizes)
    want = (m["accuracy.short"] + 3 * m["accuracy.long"]) / 4
    assert abs(m["accuracy"] - want) < 1e-9
    assert m["majority.short"] > 0 and m["majority.long"] > 0
