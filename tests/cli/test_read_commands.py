"""`autoeff pareto` and `autoeff report` on a hand-made study (no search, no torch): formats,
never-trained trials, and a study without trials."""
import contextlib
import io

import optuna
import pytest
import yaml

from autoeff.cli import main
from autoeff.search.store import RECORD
from autoeff.search.record import TrialRecord


def _space(tmp_path):
    doc = {"name": "hand", "tasks": [{"kind": "listops", "seq_len": 32}],
           "space": {"attention.kind": ["full", "linformer"]},
           "objectives": {"accuracy": "max", "latency_ms": "min"}, "constraints": ["latency_ms <= 5"],
           "search": {"storage": f"sqlite:///{tmp_path}/study.db", "study_name": "hand"}}
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _study(tmp_path, records):
    study = optuna.create_study(study_name="hand", storage=f"sqlite:///{tmp_path}/study.db",
                                directions=["maximize", "minimize"])
    for r in records:
        study.add_trial(optuna.trial.create_trial(
            params={"attention.kind": r.params["attention.kind"]},
            distributions={"attention.kind": optuna.distributions.CategoricalDistribution(["full", "linformer"])},
            values=r.values, user_attrs={RECORD: r.to_json()}))


def _rec(n, status, metrics, kind="full", reason=""):
    r = TrialRecord(number=n, status=status, params={"attention.kind": kind}, metrics=metrics, reason=reason,
                    config={"attention": {"kind": kind}, "model": {"depth": 1, "width": 32, "heads": 2}})
    r.values, r.violations = [metrics.get("accuracy", 0.0), metrics["latency_ms"]], [metrics["latency_ms"] - 5]
    return r


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def study(tmp_path):
    space = _space(tmp_path)
    _study(tmp_path, [_rec(0, "complete", {"accuracy": 0.6, "latency_ms": 2.0, "trained": 1.0}),
                      _rec(1, "complete", {"accuracy": 0.7, "latency_ms": 4.0, "trained": 1.0}, kind="linformer"),
                      _rec(2, "infeasible", {"latency_ms": 9.0, "trained": 0.0},
                           reason="latency_ms = 9 breaks 'latency_ms <= 5' (architecture alone: training skipped)")])
    return space


def test_pareto_all_honours_format(study):
    rc, md, _ = run("pareto", "--space", str(study), "--all", "--format", "markdown")
    assert rc == 0
    lines = md.strip().splitlines()
    assert lines[0].startswith("| trial | run | status | pareto |") and lines[1].startswith("|---|")
    assert len(lines) == 2 + 3
    assert "| 2 | t002-full-d1-w32 | infeasible |  |" in md and "not trained" in md
    rc, text, _ = run("pareto", "--space", str(study), "--all")
    assert rc == 0 and "accuracy=not trained" in text and not text.lstrip().startswith("|")
    rc, front, _ = run("pareto", "--space", str(study), "--format", "markdown")
    assert rc == 0 and front.count("\n") == 2 + 2  # the front: trials 0 and 1


def test_report_without_trials_exits_2_like_export(tmp_path):
    space = _space(tmp_path)
    _study(tmp_path, [])
    out = tmp_path / "r.html"
    rc, _, err = run("report", "--space", str(space), "-o", str(out))
    assert rc == 2 and not out.exists()
    assert err.startswith("autoeff: error:") and "search.study_name" in err and "autoeff search" in err
    rc_export, _, _ = run("export", "--space", str(space), "--trial", "0")
    assert rc_export == 2


def test_report_shows_a_never_trained_trial_as_not_trained(study, tmp_path):
    out = tmp_path / "r.html"
    rc, _, _ = run("report", "--space", str(study), "-o", str(out))
    page = out.read_text()
    assert rc == 0 and "<td>not trained</td>" in page
