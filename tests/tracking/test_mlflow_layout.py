"""What a finished smoke search leaves in MLflow and Optuna for people to review."""
import json
import re
from pathlib import Path

import pytest

from autoeff.search.backends import load_records
from autoeff.search.runner import front_of
from autoeff.search.space import load_space
from autoeff.tracking.tables import run_name

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def found(smoke_store):
    from autoeff.tracking import read_search

    return read_search(smoke_store["mlflow_uri"], smoke_store["experiment"])


@pytest.fixture
def records(smoke_store, monkeypatch):
    monkeypatch.chdir(smoke_store["dir"])
    space = load_space(smoke_store["space"], check=False)
    return space, load_records(space)


def test_experiment_opens_on_runs_with_a_saved_view(found, smoke_store):
    tags = found["experiment"].tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert "autoeff" in tags["mlflow.note.content"]
    view = json.loads(tags["mlflow.sharedViewState.autoeff"])
    state = json.loads(view["state"])
    assert view["name"] == "autoeff: trials by accuracy" and isinstance(view["createdAt"], int)
    assert state["orderByKey"] == "metrics.`accuracy`" and state["orderByAsc"] is False
    assert {"metrics.`latency_ms`", "metrics.`peak_memory_mb`", "tags.`pareto`", "tags.`status`"} <= set(
        state["selectedColumns"])
    link = re.search(r"http://127\.0\.0\.1:5000/#/experiments/\d+/runs\?\S+", smoke_store["stdout"]).group(0)
    assert "workflowType=machine_learning" in link and "viewStateShareKey=autoeff" in link


def test_parent_run_holds_description_tables_plots_and_machine(found, records):
    space, recs = records
    client, parent = found["client"], found["parents"][0]
    front = front_of(space, recs)  # best accuracy first, as in the tables
    assert parent.info.run_name == f"search:smoke ({len(recs)} trials, {len(front)} on the front)"
    desc = parent.data.tags["mlflow.note.content"]
    assert f"Pareto front: {len(front)} of {len(recs)} trials" in desc
    for r in front:  # the front as a Markdown table, each run linked
        assert re.search(rf"\| {r.number} \| \[{re.escape(run_name(r))}\]\(#/experiments/\d+/runs/\w+\) \|", desc)
    tags = parent.data.tags
    for k in ("versions.torch", "versions.optuna", "versions.ray", "versions.mlflow", "machine.cpu",
              "machine.cpu_threads", "machine.gpu"):
        assert tags.get(k), k
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.png", "pareto_front.html", "front_table.json", "trials_table.json", "pareto_front.csv",
            "trials.csv", "resolved_space.yaml", "smoke.yaml"} <= arts
    logged = json.loads(tags["mlflow.loggedArtifacts"])
    assert {"path": "front_table.json", "type": "table"} in logged
    d = Path(client.download_artifacts(parent.info.run_id, "front_table.json"))
    table = json.loads(d.read_text())
    assert [row[table["columns"].index("run")] for row in table["data"]] == [run_name(r) for r in front]
    page = Path(client.download_artifacts(parent.info.run_id, "pareto_front.html")).read_text()
    assert "Plotly.newPlot" in page and not re.search(r"<script[^>]+src=", page)
    # hypervolume of the front so far, one point per trial, never decreasing
    hist = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert sorted(m.step for m in hist) == sorted(r.number for r in recs)
    values = [m.value for m in sorted(hist, key=lambda m: m.step)]
    assert values == sorted(values)
    from autoeff.search.front import hypervolume_history

    # what the report and load_study compute from the stored records (the reference point at the
    # majority class: the smoke models may all sit at chance, so the volume may be 0)
    assert values == pytest.approx([h for _, h in hypervolume_history(space, recs)])
    assert parent.data.metrics["hypervolume"] == pytest.approx(values[-1])


def test_trial_runs_are_named_for_their_model(found, records):
    space, recs = records
    by_num = {int(t.data.tags["autoeff.trial"]): t for t in found["trials"]}
    for r in recs:
        run = by_num[r.number]
        assert run.info.run_name == run_name(r)
        assert re.fullmatch(r"t\d{3}-(full|linformer)(-k\d+)?-d\d-w\d+", run.info.run_name)
        assert run.data.params["architecture"] and run.data.params["attention.kind"] in run.info.run_name
        assert run.data.tags["status"] == r.status and run.data.tags["autoeff.role"] == "trial"
        for m in ("accuracy", "latency_ms", "latency_spread", "peak_memory_mb", "size_mb", "params"):
            assert m in run.data.metrics, m
        assert run.info.run_name in run.data.tags["mlflow.note.content"]


def test_optuna_dashboard_note_says_which_front_to_trust(smoke_store, records):
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    import optuna

    space, recs = records
    study = optuna.load_study(study_name="smoke", storage=smoke_store["storage"])
    note = optuna_dashboard.get_note(study)
    front = ", ".join(str(r.number) for r in front_of(space, recs))
    assert "Trust autoeff's front" in note
    assert f"autoeff's front (re-measured): trials {front}" in note
