import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# `make test` runs two pytest-xdist workers: one core each (here and in the commands they run),
# so that two torch thread pools do not fight over the cores. The tests pass at any thread count.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

#: tests that share something one machine has once run one after another on one xdist worker:
#: Ray clusters (a head per machine, its processes found and ended by the tests); the session's
#: finished smoke search (`smoke_store`: every worker would run its own) and the browser tests over it
SERIAL_GROUPS = {
    "ray": ("tests/search/test_ray_backend.py", "tests/search/test_ray_driver.py",
            "tests/test_plugins.py::test_ray_workers_find_the_plugin"),
    "smoke_store": ("tests/ui/",),
}
#: files whose tests share a module-scoped fixture (a bench run, a trained supernet): one worker each
WHOLE_FILES = ("tests/bench/test_deploy_bench.py", "tests/bench/test_bench_attention.py",
               "tests/supernet/test_supernet.py", "tests/tracking/test_mlflow_layout.py")


def _xdist_group(item) -> str:
    for group, prefixes in SERIAL_GROUPS.items():
        if item.nodeid.startswith(prefixes):
            return group
    if "smoke_store" in getattr(item, "fixturenames", ()):
        return "smoke_store"
    path = item.nodeid.split("::")[0]
    return path if path in WHOLE_FILES else ""


def pytest_collection_modifyitems(config, items):
    """Groups for `pytest -n 2 --dist loadgroup` (make test); without xdist the marks do nothing."""
    for item in items:
        group = _xdist_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Generated tasks go to a per-session cache, never the user's ~/.cache."""
    d = tmp_path_factory.mktemp("autoeff-cache")
    old = os.environ.get("AUTOEFF_CACHE")
    os.environ["AUTOEFF_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("AUTOEFF_CACHE", None)
    else:
        os.environ["AUTOEFF_CACHE"] = old


@pytest.fixture
def repo():
    return REPO


@pytest.fixture
def autoeff_cmd():
    """The installed console script next to this interpreter."""
    exe = Path(sys.executable).parent / "autoeff"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "autoeff.cli"]


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory):
    """One finished smoke search (the real CLI, about 15-40 s), shared by the tests that only read
    its stores: MLflow layout, report, model registry, browser. Returns its folder and names."""
    import subprocess

    d = tmp_path_factory.mktemp("smoke-search")
    space = str(REPO / "search_spaces" / "smoke.yaml")
    exe = Path(sys.executable).parent / "autoeff"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "autoeff.cli"]
    r = subprocess.run(cmd + ["search", "--space", space], cwd=d, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"smoke search failed:\n{r.stdout}\n{r.stderr[-4000:]}"
    return {"dir": d, "space": space, "stdout": r.stdout, "stderr": r.stderr, "cmd": cmd,
            "mlflow_uri": f"sqlite:///{d / 'mlflow.db'}", "storage": f"sqlite:///{d / 'autoeff.db'}",
            "experiment": "smoke"}


def _trial_states(db):
    """The state of every trial in an Optuna sqlite store ([] while it does not exist or is locked)."""
    import sqlite3

    if not Path(db).exists():
        return []
    try:
        con = sqlite3.connect(db, timeout=1)
        rows = con.execute("select state from trials").fetchall()
        con.close()
        return [r[0] for r in rows]
    except sqlite3.Error:
        return []


@pytest.fixture
def trial_states():
    """``trial_states(db)``: the states of a study's trials, read while a search writes them."""
    return _trial_states
