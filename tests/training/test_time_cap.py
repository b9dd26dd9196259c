"""A wall-clock cap (train.max_time_s) that cuts training is always reported: a log line and
``stopped_by_time_cap`` in the metrics (an exported config once stopped at 595 of 1,200 steps
without a word)."""
import logging

from autoeff.config import parse_run_config
from autoeff.tasks import load_task
from autoeff.training import fit, train_and_evaluate

BUDGET = 1_000_000  # steps no CPU runs within the cap below: the cap certainly cuts the training


def cfg_for(steps, cap):
    return parse_run_config({
        "model": {"depth": 1, "width": 32, "heads": 2},
        "attention": {"kind": "full"},
        "tasks": [{"kind": "listops", "seq_len": 32, "min_len": 6, "max_depth": 3, "n_train": 64, "n_val": 16,
                   "n_test": 16}],
        "train": {"max_steps": steps, "batch_size": 8, "warmup_steps": 2, "max_time_s": cap},
    })


def test_a_cap_that_cuts_training_is_logged_and_recorded(tmp_path, caplog):
    import autoeff

    cfg = cfg_for(BUDGET, 0.5)
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    with caplog.at_level(logging.WARNING, logger="autoeff.training.fit"):
        metrics = train_and_evaluate(autoeff.build_model(cfg), data, cfg)
    assert metrics["train_steps"] < BUDGET
    assert metrics["stopped_by_time_cap"] == 1.0
    lines = [r.getMessage() for r in caplog.records if "train.max_time_s" in r.getMessage()]
    assert len(lines) == 1 and f"of {BUDGET} steps" in lines[0] and "wall-clock cap" in lines[0]


def test_a_budget_run_in_full_says_so(tmp_path, caplog):
    import autoeff

    cfg = cfg_for(3, 600.0)
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    with caplog.at_level(logging.WARNING, logger="autoeff.training.fit"):
        res = fit(autoeff.build_model(cfg), data, cfg.train)
        metrics = train_and_evaluate(autoeff.build_model(cfg), data, cfg)
    assert res.steps == 3 and not res.hit_time_limit
    assert metrics["stopped_by_time_cap"] == 0.0 and metrics["train_steps"] == 3
    assert not [r for r in caplog.records if "wall-clock cap" in r.getMessage()]
