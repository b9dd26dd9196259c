"""A failing trial is recorded with its reason and the search goes on; a candidate whose
architecture already breaks a constraint is not trained."""
import pytest

import autoeff.search.objective as objective
from autoeff import run_search


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
        # never trained: no accuracy recorded (it showed as 0.0 and sorted above trained trials);
        # the sampler is still told the registry's stand-in, accuracy 0.0
        assert "accuracy" not in r.metrics and not r.trained and r.values[0] == 0.0
    assert res.front == []


def test_relative_constraint_is_measured_once_per_study_and_kept_on_resume(tmp_path, repo, monkeypatch):
    import optuna

    calls = []
    real = objective.measure_reference

    def counted(space):
        calls.append(1)
        return real(space)

    monkeypatch.setattr(objective, "measure_reference", counted)
    rel = ["constraints=[latency_ms <= 1.5 * reference]",
           "reference={attention: {kind: full}, model: {depth: 2, width: 64, heads: 4}}"]
    space = str(repo / "search_spaces" / "smoke.yaml")
    res = run_search(space, overrides(tmp_path, 2, *rel), quiet=True)
    assert len(calls) == 1
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{tmp_path}/study.db")
    ref = study.user_attrs["autoeff.reference"]
    bound = 1.5 * ref["metrics"]["latency_ms"]
    assert ref["config"]["model"]["width"] == 64 and ref["metrics"]["latency_ms"] > 0
    assert res.space.constraints[0].bound == pytest.approx(bound)
    for r in res.records:
        assert r.violations[0] == pytest.approx(r.metrics["latency_ms"] - bound)

    from autoeff.tracking import read_search

    store = read_search(f"sqlite:///{tmp_path}/mlflow.db", "smoke")
    (parent,) = store["parents"]
    assert parent.data.metrics["reference.latency_ms"] == pytest.approx(ref["metrics"]["latency_ms"])
    assert f"(= {bound:.4g})" in parent.data.params["constraints"]

    again = run_search(space, overrides(tmp_path, 3, *rel), quiet=True, track=False)  # resumed
    assert len(calls) == 1, "a resumed search keeps the bound the study started with"
    assert again.space.constraints[0].bound == pytest.approx(bound) and len(again.records) == 3
