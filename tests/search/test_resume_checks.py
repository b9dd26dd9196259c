"""What a resumed study checks before it goes on: the space it was created with (another one is
refused, naming what changed), and the reference model of relative budgets (measured with the
candidates' protocol; a changed reference: section is refused, another kind of machine measures
it again and says so)."""
import subprocess

import pytest

import autoeff.search.objective as objective
from autoeff.api import run_search
from autoeff.errors import ConfigError
from autoeff.search.record import TrialRecord
from autoeff.search.space import load_space

REL = ["constraints=[latency_ms <= 100 * reference]",
       "reference={attention: {kind: full}, model: {depth: 1, width: 32, heads: 2}}"]


def overrides(tmp_path, *extra):
    return ["search.n_trials=1", "search.sampler=random", f"search.storage=sqlite:///{tmp_path}/study.db",
            f"search.artifacts={tmp_path}/art", "train.max_steps=3", *extra]


@pytest.fixture
def smoke(repo):
    return str(repo / "search_spaces" / "smoke.yaml")


def test_reference_and_candidates_share_one_protocol(smoke, tmp_path, monkeypatch):
    """The same function and number of readings for the reference and a candidate: the lowest
    of the readings is kept for both (a spike neither loosens a bound nor discards a candidate)."""
    import autoeff

    readings = iter([7.0, 5.0, 9.0, 6.0, 1.0, 1.0])
    seen = []
    real = objective.architecture_metrics

    def scripted(cfg, model, specs, objectives):
        m = real(cfg, model, specs, objectives)
        m["latency_ms"] = next(readings)
        seen.append(m["latency_ms"])
        return m

    monkeypatch.setattr(objective, "architecture_metrics", scripted)
    space = load_space(smoke, overrides(tmp_path, *REL), check=False)
    ref = objective.measure_reference(space)
    n_ref = len(seen)
    assert n_ref == objective.MEASURE_READINGS and ref["readings"] == n_ref
    assert ref["metrics"]["latency_ms"] == min(seen)
    space.resolve_reference(ref["metrics"])

    params = {"model.depth": 1, "model.width": 32, "model.heads": 2, "attention.kind": "full"}
    cfg = space.materialize(params)
    model = autoeff.build_model(cfg)
    rec = TrialRecord(number=0, status="running", params=params)
    specs = [objective.task_spec(t) for t in cfg.tasks]
    before = len(seen)
    assert objective.measure_architecture(space, cfg, model, specs, rec)  # feasible at once: still every reading
    assert len(seen) - before == n_ref
    assert rec.metrics["latency_ms"] == min(seen[before:]) and rec.metrics["measure_readings"] == n_ref


def test_changed_reference_section_is_refused_on_resume(smoke, tmp_path):
    run_search(smoke, overrides(tmp_path, *REL), quiet=True, track=False)
    changed = [REL[0], "reference={attention: {kind: full}, model: {depth: 1, width: 64, heads: 2}}"]
    with pytest.raises(ConfigError) as e:
        run_search(smoke, overrides(tmp_path, *changed), quiet=True, track=False)
    msg = str(e.value)
    assert "study 'smoke'" in msg and "another reference model" in msg and "search.study_name=smoke-2" in msg


def test_another_kind_of_machine_measures_the_reference_again(smoke, tmp_path, monkeypatch, capsys):
    import optuna

    calls = []
    real = objective.measure_reference

    def counted(space):
        calls.append(1)
        return real(space)

    monkeypatch.setattr(objective, "measure_reference", counted)
    run_search(smoke, overrides(tmp_path, *REL), quiet=True, track=False)
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{tmp_path}/study.db")
    ref = study.user_attrs["autoeff.reference"]
    here = ref["host_tag"]
    assert here == objective.host_tag(ref["machine"]) and ref["fingerprint"]
    # the same study resumed on this machine keeps the stored figures
    run_search(smoke, overrides(tmp_path, *REL), quiet=True, track=False)
    assert len(calls) == 1
    # stored by another kind of machine: measured again here, and said
    study.set_user_attr("autoeff.reference", {**ref, "host_tag": "Other CPU x64",
                                              "metrics": {**ref["metrics"], "latency_ms": 1e6}})
    capsys.readouterr()
    again = run_search(smoke, overrides(tmp_path, *REL), track=False)
    err = capsys.readouterr().err
    assert len(calls) == 2
    assert "measured on another kind of machine (Other CPU x64)" in err and "measuring it again here" in err
    stored = study.user_attrs["autoeff.reference"]
    assert stored["host_tag"] == here and stored["metrics"]["latency_ms"] < 1e6
    assert again.space.constraints[0].bound == pytest.approx(100 * stored["metrics"]["latency_ms"])


def test_changed_space_is_refused_on_resume_with_one_line(smoke, tmp_path, autoeff_cmd):
    run_search(smoke, overrides(tmp_path), quiet=True, track=False)
    run_search(smoke, overrides(tmp_path, "search.n_trials=2"), quiet=True, track=False)  # n_trials: not the space
    r = subprocess.run(autoeff_cmd + ["search", "--space", smoke, *overrides(tmp_path, "train.max_steps=4",
                                                                              "space.model.width=[32, 128]")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "study 'smoke'" in lines[0] and "another space" in lines[0]
    assert "changed: space.model.width, train.max_steps" in lines[0] and "search.study_name=smoke-2" in lines[0]
