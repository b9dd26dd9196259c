"""Multi-objective early stopping under the Optuna backend: stopped trials are recorded pruned
(Optuna state PRUNED, no values), keep their rung figures under their own names, never enter
the front, and their MLflow runs say why they stopped."""
import pytest

from autoeff import run_search

pytestmark = pytest.mark.slow


def overrides(tmp_path, *extra):
    return ["search.n_trials=6", "search.sampler=random", "train.max_steps=12",
            f"search.storage=sqlite:///{tmp_path}/study.db", f"search.mlflow_uri=sqlite:///{tmp_path}/mlflow.db",
            f"search.artifacts={tmp_path}/art", *extra]


def test_early_stopping_prunes_records_and_explains(tmp_path, repo):
    # eta = 100: only the point ranked first at a rung goes on, i.e. a trial continues only if no
    # trial before it reached that rung with a higher accuracy (ties go to the earlier trial); this
    # depends on accuracies alone, not on timing noise
    # (learned_first off: the plain multi-objective rule; the learned-first order has its own tests)
    es = "search.early_stopping={rungs: [0.34, 0.67], eta: 100, learned_first: false}"
    res = run_search(str(repo / "search_spaces" / "smoke.yaml"), overrides(tmp_path, es), quiet=True)
    pruned = [r for r in res.records if r.status == "pruned"]
    complete = [r for r in res.records if r.status == "complete"]
    assert len(res.records) == 6 and pruned and complete and len(pruned) + len(complete) == 6
    assert res.summary["n_pruned"] == len(pruned)
    for r in pruned:
        k = int(r.metrics["stopped_at_rung"])
        assert r.reason.startswith(f"stopped at rung {k} (step {[4, 8][k - 1]} of 12") and "non-dominated" in r.reason
        # what it was ranked on: every objective with the value the rung compared
        on = r.reason.split("ranked on ", 1)[1].split(": ranked", 1)[0]
        names = res.space.objective_names
        assert names[0] == "accuracy" and on == ", ".join(
            [f"accuracy {r.metrics[f'rung_accuracy.{k}']:.4g}", *(f"{n} {r.metrics[n]:.4g}" for n in names[1:])])
        assert "accuracy" not in r.metrics and "test_accuracy" not in r.metrics and r.values is None
        assert f"rung_accuracy.{k}" in r.metrics and r.metrics["train_steps"] == [4, 8][k - 1]
        assert not r.checkpoint and not r.pareto
    for r in complete:
        assert r.metrics["rung_steps.1"] == 4 and r.metrics["rung_steps.2"] == 8 and r.metrics["train_steps"] == 12
        assert "accuracy" in r.metrics
    assert {r.number for r in res.front} <= {r.number for r in complete}
    first = min(res.records, key=lambda r: r.number)
    assert first.status == "complete"  # the first trial at every rung goes on

    import optuna

    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{tmp_path}/study.db")
    states = {t.number: t for t in study.trials}
    for r in pruned:
        t = states[r.number]
        assert t.state == optuna.trial.TrialState.PRUNED and t.values is None
        assert t.user_attrs[f"autoeff.rung.{int(r.metrics['stopped_at_rung'])}"][0] == r.metrics[
            f"rung_accuracy.{int(r.metrics['stopped_at_rung'])}"]
    assert all(states[r.number].state == optuna.trial.TrialState.COMPLETE for r in complete)
    for r in complete:  # a trial that went on recorded, at each rung, the point the judge compared
        for k in (1, 2):
            point = states[r.number].user_attrs[f"autoeff.rung.{k}"]
            assert point[0] == pytest.approx(r.metrics[f"rung_accuracy.{k}"], abs=1e-12)
            assert 0.0 <= point[0] <= 1.0
            earlier = [t.user_attrs[f"autoeff.rung.{k}"][0] for n, t in states.items()
                       if n < r.number and f"autoeff.rung.{k}" in t.user_attrs]
            assert all(point[0] >= e for e in earlier)  # eta = 100: only the best so far goes on

    from autoeff.tracking import read_search

    store = read_search(f"sqlite:///{tmp_path}/mlflow.db", "smoke")
    runs = {int(t.data.tags["autoeff.trial"]): t for t in store["trials"]}
    assert set(runs) == {r.number for r in res.records}
    for r in pruned:
        run = runs[r.number]
        assert run.data.tags["status"] == "pruned" and run.info.status == "FINISHED"
        assert run.data.tags["reason"] == r.reason and "accuracy" not in run.data.metrics
        assert run.data.metrics["stopped_at_rung"] == r.metrics["stopped_at_rung"]
        assert run.data.tags.get("pareto") != "true"
        assert run.data.tags["measured_on.host"] and run.data.tags["measured_on.cpu"]
    assert store["parents"][0].data.metrics["n_pruned"] == len(pruned)


def test_a_reproposed_stopped_candidate_is_answered_as_stopped(tmp_path, repo):
    """A sampler may propose a candidate that was stopped early again: it is answered from its
    twin (PRUNED, no values, not counted), never a crash on the twin's missing values."""
    from optuna.trial import TrialState

    from autoeff.search.space import load_space
    from autoeff.search.store import RECORD, StudyStore

    ov = overrides(tmp_path, "search.early_stopping={rungs: [0.34, 0.67], eta: 100, learned_first: false}")
    run_search(str(repo / "search_spaces" / "smoke.yaml"), ov, quiet=True, track=False)
    store = StudyStore(load_space(repo / "search_spaces" / "smoke.yaml", ov))
    twin = next(t for t in store.study.trials if t.state == TrialState.PRUNED)
    params = twin.user_attrs[RECORD]["params"]
    assert store.twin(params).number == twin.number
    done = store.done()
    trial = store.study.ask()
    store.tell_duplicate(trial, twin, params)
    answered = store.study.trials[trial.number]
    assert answered.state == TrialState.PRUNED and answered.values is None
    assert answered.user_attrs[RECORD]["status"] == "duplicate" and store.done() == done
    assert trial.number not in {r.number for r in store.records()}  # a re-proposal is no trial of its own
