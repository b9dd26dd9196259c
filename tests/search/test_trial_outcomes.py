"""A failing trial is recorded with its reason and the search goes on; a candidate whose
architecture already breaks a constraint is not trained."""
import pytest

import autoeff.search.objective as objective
from autoeff.api import run_search


def overrides(tmp_path, n=3, *extra):
    return [f"search.n_trials={n}", "search.sampler=random", f"search.storage=sqlite:///{tmp_path}/study.db",
            f"search.mlflow_uri=sqlite:///{tmp_path}/mlflow.db", f"search.artifacts={tmp_path}/art",
            "train.max_steps=3", *extra]


def test_failing_trial_is_recorded_and_the_search_goes_on(tmp_path, repo, monkeypatch):
    real_train = objective.train_and_evaluate
    calls = []

    def flaky_train(model, data, cfg, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom: simulated out-of-memory")
        return real_train(model, data, cfg, **kw)

    monkeypatch.setattr(objective, "train_and_evaluate", flaky_train)
    res = run_search(str(repo / "search_spaces" / "smoke.yaml"), overrides(tmp_path), quiet=True)
    statuses = [r.status for r in res.records]
    assert statuses.count("failed") == 1 and statuses.count("complete") == 2
    failed = next(r for r in res.records if r.status == "failed")
    assert "boom: simulated out-of-memory" in failed.reason and "RuntimeError" in failed.reason
    assert all(r.status == "complete" for r in res.front)

    from autoeff.tracking import read_search

    store = read_search(f"sqlite:///{tmp_path}/mlflow.db", "smoke")
    run = next(t for t in store["trials"] if t.data.tags["autoeff.trial"] == str(failed.number))
    assert run.info.status == "FAILED" and "boom" in run.data.tags["fail_reason"]


def test_architecture_breaking_a_constraint_is_not_trained(tmp_path, repo, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("training must be skipped")

    monkeypatch.setattr(objective, "train_and_evaluate", no_training)
    res = run_search(str(repo / "search_spaces" / "smoke.yaml"),
                     overrides(tmp_path, 2, "constraints=[latency_ms <= 0.000001]"), quiet=True, track=False)
    assert [r.status for r in res.records] == ["infeasible", "infeasible"]
    for r in res.records:
        assert "latency_ms" in r.reason and "training skipped" in r.reason
        assert r.metrics["trained"] == 0.0 and r.violations[0] > 0 and not r.feasible
    assert res.front == []
