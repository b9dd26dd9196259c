import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
