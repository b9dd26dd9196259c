"""One-shot search end to end with the real CLI: supernet, proxy trials, real finalists, a kill
during the proxy phase and a resume that reuses the cached supernet, export and train."""
import json
import signal
import sqlite3
import subprocess
import time

import pytest
import yaml

pytestmark = pytest.mark.slow


def _proxies(db):
    try:
        con = sqlite3.connect(db, timeout=1)
        n = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
        con.close()
        return n
    except sqlite3.Error:
        return 0


def test_oneshot_search_kill_resume_export_train(tmp_path, repo, autoeff_cmd):
    space = str(repo / "search_spaces" / "smoke_oneshot.yaml")
    args = autoeff_cmd + ["search", "--space", space]
    log1 = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=log1, stderr=subprocess.STDOUT)
    t0 = time.time()
    killed = False
    while time.time() - t0 < 300 and proc.poll() is None:
        cached = list((tmp_path / "mlartifacts" / "smoke_oneshot").glob("supernet-*.pt"))
        if cached and _proxies(tmp_path / "autoeff.db") >= 2:
            proc.send_signal(signal.SIGKILL)  # in the proxy phase, after the supernet was cached
            proc.wait()
            killed = True
            break
        time.sleep(0.1)
    log1.close()
    first = (tmp_path / "first.log").read_text()
    assert killed, first
    assert "supernet: trained" in first

    r = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "supernet: loaded from" in r.stderr and "training 30 steps" not in r.stderr  # not trained again

    import optuna

    study = optuna.load_study(study_name="smoke_oneshot", storage=f"sqlite:///{tmp_path / 'autoeff.db'}")
    recs = [t.user_attrs.get("autoeff.record", {}) for t in study.trials]
    proxies = [r for r in recs if r.get("status") == "proxy"]
    finalists = [t for t in study.trials if "autoeff.finalist_of" in t.user_attrs]
    assert len(proxies) + sum(r.get("status") in ("infeasible", "failed") for r in recs
                              if "finalist_of" not in r.get("metrics", {})) >= 12
    assert len(finalists) == 3 and all(t.state.name == "COMPLETE" for t in finalists)
    for p in proxies:  # a proxy is never reported as the real thing
        assert "proxy_accuracy" in p["metrics"] and "accuracy" not in p["metrics"]
    for t in finalists:
        m = t.user_attrs["autoeff.record"]["metrics"]
        assert {"accuracy", "proxy_accuracy", "latency_ms", "peak_memory_mb"} <= set(m)
        twin = next(p for p in proxies if p["number"] == t.user_attrs["autoeff.finalist_of"])
        assert t.params == twin["params"] and m["proxy_accuracy"] == twin["metrics"]["proxy_accuracy"]

    from autoeff.tracking import read_search

    store = read_search(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke_oneshot")
    parent = store["parents"][0]
    assert parent.data.params["search.strategy"] == "oneshot"
    assert "finalists" in parent.data.params["front_accuracy"]
    assert parent.data.metrics["supernet_cached"] == 1.0 and parent.data.metrics["n_finalists"] == 3
    front = parent.data.tags["front_trials"].split(",")
    fin_numbers = {str(t.number) for t in finalists}
    assert front and set(front) <= fin_numbers  # the front is on real accuracy: finalists only
    runs = {t.data.tags["autoeff.trial"]: t for t in store["trials"]}
    assert all(runs[n].data.tags["status"] == "proxy" for n in runs if n not in fin_numbers
               and runs[n].data.tags["status"] not in ("infeasible", "failed", "interrupted"))

    r = subprocess.run(autoeff_cmd + ["pareto", "--space", space, "--format", "json"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and {str(x["trial"]) for x in json.loads(r.stdout)} == set(front)
    r = subprocess.run(autoeff_cmd + ["export", "--space", space, "--trial", front[0], "-o", "m.yaml"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load((tmp_path / "m.yaml").read_text())
    assert doc["train"]["max_steps"] == 50 and doc["autoeff"]["exported_from"]["trial"] == int(front[0])
    r = subprocess.run(autoeff_cmd + ["train", "--config", "m.yaml", "train.max_steps=5"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    import autoeff
    import torch

    model = autoeff.build_model(autoeff.load_config(tmp_path / "m.yaml"))
    model.load_state_dict(torch.load(tmp_path / "runs" / "m" / "model.pt", weights_only=True)["state_dict"])
