"""`autoeff report` (one self-contained page, light) and `autoeff export --register` (MLflow's
model registry, loadable with mlflow.pytorch.load_model), on the shared smoke search."""
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def run(cmd, cwd, timeout=600):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}\nSTDOUT:\n{r.stdout}\nSTDERR:\n{r.stderr[-4000:]}"
    return r


def test_report_is_one_self_contained_page_and_stays_light(smoke_store):
    d = smoke_store["dir"]
    r = run(smoke_store["cmd"] + ["report", "--space", smoke_store["space"]], d)
    page = (d / "smoke-report.html").read_text()
    assert "smoke-report.html" in r.stdout
    assert 'id="front-table"' in page and 'id="trials-table"' in page and "autoeff export --space" in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # plotly.js inline, nothing fetched
    probe = ("import sys, contextlib, io\nfrom autoeff.cli import main\n"
             f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['report', '--space', {smoke_store['space']!r}, '-o', 'r.html']) == 0\n"
             "print(sorted(m for m in ('torch', 'pytorch_lightning', 'lightning', 'mlflow') if m in sys.modules))\n")
    assert run([sys.executable, "-c", probe], d).stdout.strip() == "[]"


def test_export_register_logs_a_loadable_model(smoke_store, monkeypatch):
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    import autoeff
    from autoeff.config import task_spec
    from autoeff.model import example_inputs

    from autoeff.search.backends import load_records
    from autoeff.search.space import load_space

    d = smoke_store["dir"]
    monkeypatch.chdir(d)
    trial = next(r.number for r in load_records(load_space(smoke_store["space"], check=False)) if r.pareto)
    r = run(smoke_store["cmd"] + ["export", "--space", smoke_store["space"], "--trial", str(trial), "-o", "chosen.yaml",
                                  "--register", "smoke-model"], d)
    assert "registered smoke-model version 1 (alias 'chosen')" in r.stdout

    mlflow.set_tracking_uri(smoke_store["mlflow_uri"])
    client = MlflowClient(tracking_uri=smoke_store["mlflow_uri"])
    mv = client.get_model_version_by_alias("smoke-model", "chosen")
    assert str(mv.version) == "1" and mv.tags["autoeff.trial"] == str(trial)
    assert mv.tags["autoeff.serialization"] == "pt2"  # every family traces (attention/_traceable.py)
    run_ = client.get_run(mv.run_id)
    assert run_.data.tags["autoeff.trial"] == str(trial)  # logged into the trial's own run
    model = mlflow.pytorch.load_model("models:/smoke-model@chosen")
    info = mlflow.models.get_model_info("models:/smoke-model@chosen")
    assert info.signature is not None and info.saved_input_example_info is not None

    cfg = autoeff.load_config(d / "chosen.yaml")
    ref = autoeff.build_model(cfg).eval()
    ref.load_state_dict(torch.load(run_.data.tags["checkpoint"], weights_only=True)["state_dict"])
    x, mask = example_inputs(task_spec(cfg.tasks[0]), batch=3, seed=1)
    mask[1, -7:] = False  # the serving contract: (x, mask), as the ONNX graph
    with torch.no_grad():
        got = model(x, mask)
        want = ref(x, mask)
    assert got.shape == (3, task_spec(cfg.tasks[0]).num_classes)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
