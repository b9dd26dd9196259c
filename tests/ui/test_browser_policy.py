"""Without a browser the browser tests skip with the reason on a user's machine, and fail in CI."""
import pytest

from . import conftest as ui


def test_missing_browser_skips_for_users_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        ui._missing("no Chromium found")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser tests"):
        ui._missing("no Chromium found")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        ui._missing("no Chromium found")
