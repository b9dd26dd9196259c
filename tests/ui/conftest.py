"""A real browser (headless Chromium through Playwright) and a real `mlflow server`.

Chromium comes from the system (`apt-get install chromium`; Playwright's own download is not
used). Without it (or without Playwright) the browser tests are skipped with the reason, except
in CI (``CI`` set), where a missing browser is a failure. Every process started here is ended in
a ``finally``; the server binds to 127.0.0.1 only.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _in_ci() -> bool:
    v = os.environ.get("CI", "")
    return bool(v) and v.lower() not in ("0", "false", "no")


def _missing(reason: str):
    if _in_ci():
        pytest.fail(f"{reason} (CI must run the browser tests: .ci/run installs chromium)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path():
    path = os.environ.get("AUTOEFF_CHROMIUM") or next(filter(None, map(shutil.which, CANDIDATES)), None)
    if not path:
        _missing("no Chromium found: `apt-get install chromium` (or set AUTOEFF_CHROMIUM) to run the browser tests")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed: `pip install -e '.[dev]'` to run the browser tests")
    pw = sync_playwright().start()
    b = None
    try:
        b = pw.chromium.launch(executable_path=chromium_path, headless=True,
                               args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield b
    finally:
        if b is not None:
            b.close()
        pw.stop()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 950})
    p = ctx.new_page()
    p.set_default_timeout(90_000)  # a 2-core machine shared with a search or a test suite is slow
    try:
        yield p
    finally:
        ctx.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory):
    """Where screenshots go: $AUTOEFF_SCREENSHOTS (e.g. docs/screenshots, to refresh the README's
    pictures) or a temporary folder."""
    d = Path(os.environ.get("AUTOEFF_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(smoke_store):
    """`mlflow server` on 127.0.0.1 and a free port, against the smoke search's store."""
    port = _free_port()
    exe = Path(sys.executable).parent / "mlflow"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
    log = open(smoke_store["dir"] / "mlflow-server.log", "w")
    proc = subprocess.Popen(cmd + ["server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                                   "--backend-store-uri", smoke_store["mlflow_uri"]],
                            cwd=smoke_store["dir"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}):\n"
                            + (smoke_store["dir"] / "mlflow-server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail("mlflow server did not answer within 180 s")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)  # its workers take their time; nothing of ours to save
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
