"""The Ray backend on a real Ray cluster on loopback (`ray start --head` + the autoeff driver
joining it by address): the smoke space with early stopping gives the same study, records and
MLflow structure as the Optuna backend; a driver killed mid-trial leaves no Ray process behind
and the re-run resumes with nothing lost or duplicated."""
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from autoeff.search.schedulers._reaper import end_processes_using, processes_using

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_TOKEN = secrets.token_hex(32)


def _env():
    """This checkout on the path (the workers import it too); token authentication with a token
    of this test session's own, whatever ~/.ray holds."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=_TOKEN)
    return env


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster on 127.0.0.1 (2 CPUs, no dashboard, small object store); its
    workers see this checkout and the test's task cache. Ended by its own process ids."""
    ray_bin = Path(sys.executable).parent / "ray"
    temp = tempfile.mkdtemp(prefix="aer", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--object-store-memory=100000000",
         f"--temp-dir={temp}", "--disable-usage-stats"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            if head.poll() is not None:
                pytest.fail(f"ray start exited with {head.returncode}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0 and list(Path(temp).glob("session_*/sockets/raylet")):
                    break
            time.sleep(1)
        else:
            pytest.fail("the Ray head did not come up")
        yield address
    finally:
        if head.poll() is None:
            head.send_signal(signal.SIGTERM)
            try:
                head.wait(30)
            except subprocess.TimeoutExpired:
                head.kill()
        end_processes_using(temp)  # what the head left behind (e.g. its agents), by their open files
        shutil.rmtree(temp, ignore_errors=True)


def _run(cmd, cwd, timeout=420):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())
    assert r.returncode == 0, f"{cmd}\nSTDOUT:\n{r.stdout[-3000:]}\nSTDERR:\n{r.stderr[-5000:]}"
    return r


def test_smoke_space_on_a_loopback_cluster(tmp_path, autoeff_cmd, ray_cluster):
    space = str(REPO / "search_spaces" / "smoke.yaml")
    r = _run(autoeff_cmd + ["search", "--space", space, "--ray-address", ray_cluster, "search.n_trials=4",
                            "search.early_stopping={rungs: [0.34, 0.67], eta: 100}",
                            "constraints=[latency_ms <= 1000 * reference]",  # a loose relative budget
                            "reference={attention: {kind: full}, model: {depth: 1, width: 32, heads: 2}}"], tmp_path)
    assert "joining the Ray cluster" in r.stderr and "Pareto front" in r.stdout

    import optuna

    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{tmp_path / 'autoeff.db'}")
    ref = study.user_attrs["autoeff.reference"]  # measured like the candidates: on a worker, not by the driver
    assert ref["measured_by"].startswith("ray worker on node") and ref["readings"] >= 1 and ref["host_tag"]
    assert "by a ray worker on node" in r.stderr
    for n in range(4):  # two trials run at once: every result line names its trial
        assert f"-> trial {n}: " in r.stderr
    recs = {t.number: t.user_attrs["autoeff.record"] for t in study.trials}
    assert all(t.state.is_finished() for t in study.trials)
    # a re-proposed candidate is answered from its twin and does not count towards n_trials: four
    # trials ran for real whether or not the sampler proposed a candidate twice
    real = [t for t in study.trials if recs[t.number]["status"] != "duplicate"]
    assert len(real) == 4 and {recs[t.number]["status"] for t in real} <= {"complete", "pruned"}
    for t in study.trials:
        if recs[t.number]["status"] == "duplicate":
            twin = next(r for r in real if r.params == t.params and r.number < t.number)
            assert t.state == twin.state and t.values == twin.values
    assert study.metric_names == ["accuracy", "latency_ms", "peak_memory_mb"]
    for t in real:
        rec = recs[t.number]
        assert t.state.name == {"complete": "COMPLETE", "pruned": "PRUNED"}[rec["status"]]
        assert rec["metrics"]["threads_train"] == 1.0  # pinned to the trial's one CPU (Ray sets OMP_NUM_THREADS=1)
        assert rec["machine"]["host"] == socket.gethostname()
        if rec["status"] == "complete":
            assert Path(rec["checkpoint"]).is_absolute() and Path(rec["checkpoint"]).exists()
            assert t.values == [rec["metrics"][k] for k in ("accuracy", "latency_ms", "peak_memory_mb")]
        else:
            assert t.values is None and "accuracy" not in rec["metrics"] and rec["reason"].startswith("stopped at rung")

    from autoeff.tracking import read_search

    store = read_search(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    assert len(store["parents"]) == 1
    parent = store["parents"][0]
    assert parent.info.status == "FINISHED" and parent.data.tags["autoeff.backend"] == "ray"
    runs = {int(t.data.tags["autoeff.trial"]): t for t in store["trials"]}
    assert {n for n in runs if recs[n]["status"] != "duplicate"} == {t.number for t in real}
    for n, run in runs.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["status"] == recs[n]["status"]
        assert run.data.tags.get("reason", "").startswith("stopped at rung") == (recs[n]["status"] == "pruned")
    front = parent.data.tags["front_trials"].split(",")
    assert all(recs[int(n)]["status"] == "complete" for n in front)
    r = _run(autoeff_cmd + ["pareto", "--space", space, "--format", "csv"], tmp_path)
    assert sorted(line.split(",")[0] for line in r.stdout.strip().splitlines()[1:]) == sorted(front)


def test_killed_driver_leaves_no_ray_processes_and_resumes(tmp_path, autoeff_cmd, ray_cluster, trial_states):
    space = str(REPO / "search_spaces" / "smoke.yaml")
    # every trial trains for 4 s whatever the machine's speed, so the kill lands inside one
    common = ["search.n_trials=4", "train.max_steps=100000", "train.max_time_s=4", "search.sampler=random",
              "search.remeasure_front=false"]
    # first run: a local Ray instance of its own (its processes are the driver's to clean up)
    ray_tmp = tempfile.mkdtemp(prefix="aek", dir="/tmp")
    proc = subprocess.Popen(autoeff_cmd + ["search", "--space", space, "--backend", "ray",
                                           f"search.ray.temp_dir={ray_tmp}", *common],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    db = tmp_path / "autoeff.db"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            st = trial_states(db)
            if st.count("COMPLETE") >= 1 and "RUNNING" in st:
                time.sleep(1.0)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.3)
        assert proc.returncode == -signal.SIGKILL, "the search finished or stalled before it could be killed"
        deadline = time.time() + 60  # the reaper ends what Ray's fate-sharing does not
        while time.time() < deadline and processes_using(ray_tmp):
            time.sleep(1)
        assert processes_using(ray_tmp) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        end_processes_using(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    interrupted_before = [i for i, s in enumerate(trial_states(db)) if s == "RUNNING"]
    assert interrupted_before

    # the re-run resumes the same study, this time on the cluster
    _run(autoeff_cmd + ["search", "--space", space, "--ray-address", ray_cluster, *common], tmp_path)

    import optuna

    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{db}")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    interrupted = [t for t in study.trials if t.system_attrs.get("autoeff.interrupted")]
    assert len(complete) == 4 and sorted(t.number for t in interrupted) == interrupted_before
    assert all(t.state.name == "FAIL" for t in interrupted)
    for t in interrupted:
        retry = [c for c in complete if c.user_attrs.get("autoeff.retry_of") == t.number]
        assert len(retry) == 1 and retry[0].params == t.params

    from autoeff.tracking import read_search

    store = read_search(f"sqlite:///{tmp_path / 'mlflow.db'}", "smoke")
    assert len(store["parents"]) == 1 and store["parents"][0].info.status == "FINISHED"
    by_num = {}
    for t in store["trials"]:
        by_num.setdefault(int(t.data.tags["autoeff.trial"]), []).append(t)
    assert all(len(v) == 1 for v in by_num.values())
    assert sorted(n for n, v in by_num.items() if v[0].info.status == "FINISHED") == sorted(t.number for t in complete)
    for t in interrupted:
        run = by_num[t.number][0]
        assert run.info.status == "KILLED" and run.data.tags["status"] == "interrupted"
