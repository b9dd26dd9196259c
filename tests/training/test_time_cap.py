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
        metrics = train_and_evaluate(autoeff.create_model(cfg), data, cfg)
    assert metrics["train_steps"] < BUDGET
    assert metrics["stopped_by_time_cap"] == 1.0
    lines = [r.getMessage() for r in caplog.records if "train.max_time_s" in r.getMessage()]
    assert len(lines) == 1 and f"of {BUDGET} steps" in lines[0] and "wall-clock cap" in lines[0]


def test_a_budget_run_in_full_says_so(tmp_path, caplog):
    import autoeff

    cfg = cfg_for(3, 600.0)
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    with caplog.at_level(logging.WARNING, logger="autoeff.training.fit"):
        res = fit(autoeff.create_model(cfg), data, cfg.train)
        metrics = train_and_evaluate(autoeff.create_model(cfg), data, cfg)
    assert res.steps == 3 and not res.hit_time_limit
    assert metrics["stopped_by_time_cap"] == 0.0 and metrics["train_steps"] == 3
    assert not [r for r in caplog.records if "wall-clock cap" in r.getMessage()]


# Rungs far beyond what any CPU reaches within the cap: the cap certainly ends training first.
RUNGS = [BUDGET // 9, BUDGET // 3]


def test_a_cap_before_a_rung_is_judged_at_every_missed_rung(tmp_path):
    """The cap cut training before both rungs: the trial is still judged at rung 1 then rung 2,
    with the validation at the step it stopped at; it cannot skip the early-stopping rule."""
    import autoeff

    cfg = cfg_for(BUDGET, 0.5)
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    seen = []
    res = fit(autoeff.create_model(cfg), data, cfg.train, rungs=RUNGS,
              on_rung=lambda i, s, acc, loss: seen.append((i, s, acc)) or True)
    assert res.hit_time_limit and res.stopped_at_rung == 0 and 0 < res.steps < RUNGS[0]
    assert [(i, s) for i, s, _ in seen] == [(1, res.steps), (2, res.steps)]
    assert seen[0][2] == seen[1][2] and all(0.0 <= a <= 1.0 for a in seen[0][2].values())
    assert res.rungs == [(res.steps, seen[0][2]), (res.steps, seen[0][2])]


def test_a_cap_before_a_rung_that_stops_it_is_a_stop_without_an_accuracy(tmp_path):
    """A rung that stops the capped trial stops it (no accuracy: pruned, never on a front), and
    the record says the cap ended its training; the later rung is not asked."""
    import autoeff

    cfg = cfg_for(BUDGET, 0.5)
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    seen = []

    def on_rung(i, step, accuracy, per_task, loss):
        seen.append((i, step))
        return False

    m = train_and_evaluate(autoeff.create_model(cfg), data, cfg, rungs=RUNGS, on_rung=on_rung)
    assert seen == [(1, int(m["train_steps"]))] and m["train_steps"] < RUNGS[0]
    assert m["stopped_at_rung"] == 1.0 and m["stopped_by_time_cap"] == 1.0
    assert m["rung_steps.1"] == m["train_steps"] and "rung_accuracy.1" in m and "rung_accuracy.2" not in m
    assert "accuracy" not in m and "test_accuracy" not in m


def test_a_cap_without_early_stopping_judges_nothing(tmp_path):
    """Rungs without a judge (no early stopping) are not evaluated when the cap cuts training,
    also with a step guard (the hooks exist, the judge does not)."""
    import contextlib

    import autoeff

    cfg = cfg_for(BUDGET, 0.5)
    data = [load_task(t, str(tmp_path)) for t in cfg.tasks]
    res = fit(autoeff.create_model(cfg), data, cfg.train, rungs=RUNGS, step_guard=contextlib.nullcontext)
    assert res.hit_time_limit and res.rungs == [] and res.stopped_at_rung == 0 and res.eval_seconds == 0.0


def test_a_trial_the_cap_cut_before_a_rung_that_stops_it_is_pruned(tmp_path, repo):
    """End to end through the trial: the cap cuts training before rung 1, the rung judge stops
    it there, and the record is pruned (no values, no checkpoint: never on a front)."""
    from autoeff.search.objective import run_trial
    from autoeff.search.space import load_space

    space = load_space(repo / "search_spaces" / "smoke.yaml",
                       [f"train.max_steps={BUDGET}", "train.max_time_s=0.5", f"data_dir={tmp_path}",
                        "search.early_stopping={rungs: [0.111, 0.333], eta: 3}"])
    asked = []

    def judge(rung, step, point, learned):
        assert isinstance(learned, bool)  # judged against the task's majority class and class prior
        asked.append((rung, step))
        return "worse than the rung's best third"

    params = {"model.depth": 1, "model.width": 32, "model.heads": 2, "attention.kind": "linformer",
              "attention.linformer.rank": 8}
    rec = run_trial(space, params, 0, artifacts_dir=str(tmp_path / "art"), rung_judge=judge)
    assert rec.status == "pruned", rec.reason
    steps = int(rec.metrics["train_steps"])
    assert asked == [(1, steps)] and 0 < steps < BUDGET // 9
    assert rec.reason.startswith(f"stopped at rung 1 (step {steps} of {BUDGET}")
    assert rec.metrics["stopped_by_time_cap"] == 1.0 and rec.values is None and not rec.checkpoint
