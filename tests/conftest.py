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
