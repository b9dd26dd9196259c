"""Review a finished search as a person would: the MLflow UI in headless Chromium (runs, the
parent run's description, the front's table and plots among its artifacts), and the HTML report
opened from disk with the network cut off. Screenshots are saved (README shows them)."""
import re
import subprocess
import time

import pytest

from autoeff.search.backends import load_records
from autoeff.search.space import load_space
from autoeff.tracking.tables import run_name

pytestmark = pytest.mark.slow


def _close_assistant(page):
    """MLflow's side panel (an assistant) takes a third of the window; close it if it is there."""
    btn = page.locator("button[aria-label*='lose']").last
    try:
        if btn.is_visible(timeout=2000):
            btn.click(timeout=5000)
    except Exception:
        pass


@pytest.fixture(scope="module")
def store(smoke_store, monkeypatch_module):
    monkeypatch_module.chdir(smoke_store["dir"])  # the space's stores are relative to where it ran
    space = load_space(smoke_store["space"], check=False)
    recs = load_records(space)
    from autoeff.tracking import read_search

    found = read_search(smoke_store["mlflow_uri"], smoke_store["experiment"])
    return {**smoke_store, "space_obj": space, "records": recs, "front": [r for r in recs if r.pareto],
            "parent": found["parents"][0], "experiment_id": found["experiment"].experiment_id}


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    try:
        yield mp
    finally:
        mp.undo()


def test_mlflow_ui_shows_runs_front_table_and_plots(store, mlflow_server, page, screenshots):
    from autoeff.tracking import ui_link

    t0 = time.perf_counter()
    link = ui_link(store["mlflow_uri"], store["experiment"], address=mlflow_server)
    assert link and f"/#/experiments/{store['experiment_id']}/runs?" in link
    assert link in store["stdout"].replace("http://127.0.0.1:5000", mlflow_server)  # what `autoeff search` printed

    # 0. MLflow 3.17 opens experiments in its GenAI view unless "Model training" was chosen in
    #    the sidebar's switch (remembered by the browser): a person does it once, as README says
    page.goto(mlflow_server + "/")
    page.get_by_text("Model training", exact=True).first.click()

    # 1. the experiment, through the link the search printed: every trial at a glance
    page.goto(link)
    names = [run_name(r) for r in store["records"]]
    for n in names:
        page.get_by_text(n, exact=True).first.wait_for()
    _close_assistant(page)
    page.get_by_text("autoeff: trials by accuracy").first.wait_for()  # the saved view is active
    for col in ("accuracy", "latency_ms", "peak_memory_mb"):
        page.get_by_role("columnheader").filter(has_text=col).first.wait_for()
    page.screenshot(path=str(screenshots / "mlflow-runs.png"))

    # 2. the parent run: its description says what the search was and holds the front
    parent_name = store["parent"].info.run_name
    page.get_by_text(parent_name, exact=True).first.click()
    page.get_by_text("Model training", exact=True).first.wait_for()
    page.get_by_text("Description", exact=True).first.wait_for()
    toggle = page.get_by_role("button", name="Expand description")  # a long description is collapsed
    try:
        toggle.wait_for(timeout=10_000)
        toggle.click()
    except Exception:
        pass  # short enough to show whole
    page.get_by_text(f"Pareto front: {len(store['front'])} of {len(store['records'])} trials").first.wait_for()
    page.get_by_text("What was searched").first.wait_for()  # expanded: the whole description shows
    for r in store["front"]:
        page.get_by_text(run_name(r), exact=True).first.wait_for()
    assert page.get_by_text("Evaluation runs", exact=True).count() == 0  # still the model-training view
    page.screenshot(path=str(screenshots / "mlflow-parent-run.png"))

    # 3. its artifacts: the front as a table
    page.get_by_role("tab", name="Artifacts").click()
    page.get_by_text("front_table.json", exact=True).first.click()
    page.get_by_text("View as table").first.wait_for()
    for r in store["front"]:
        page.get_by_role("cell", name=run_name(r), exact=True).first.wait_for()
    page.screenshot(path=str(screenshots / "mlflow-front-table.png"))

    # 4. the static plot
    page.get_by_text("pareto_front.png", exact=True).first.click()
    img = page.locator("img[src^='blob:'], img[src*='get-artifact'], img[src*='pareto_front.png']").first
    img.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 500", arg=img.element_handle())
    page.screenshot(path=str(screenshots / "mlflow-front-png.png"))

    # 5. the interactive plot, rendered by plotly inside MLflow's HTML artifact view
    page.get_by_text("pareto_front.html", exact=True).first.click()
    frame = page.frame_locator("iframe").first
    frame.locator(".js-plotly-plot .main-svg").first.wait_for()
    points = frame.locator(".js-plotly-plot g.scatterlayer path.point")
    complete = [r for r in store["records"] if r.status == "complete"]
    deadline = time.time() + 30
    while points.count() < 2 * len(complete) and time.time() < deadline:  # every trial on both panels
        time.sleep(0.5)
    assert points.count() >= 2 * len(complete)
    assert frame.locator(".js-plotly-plot .parcoords").count() >= 1  # the 3-objective view
    page.screenshot(path=str(screenshots / "mlflow-front-html.png"))
    print(f"MLflow UI walk-through: {time.perf_counter() - t0:.1f}s")


def test_report_opens_offline_with_front_plots_and_tables(store, browser, screenshots, tmp_path):
    out = tmp_path / "report.html"
    r = subprocess.run(store["cmd"] + ["report", "--space", store["space"], "-o", str(out)], cwd=store["dir"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    requested = []
    try:
        page = ctx.new_page()
        page.set_default_timeout(60_000)
        page.on("request", lambda req: requested.append(req.url))
        page.goto(out.as_uri())
        page.locator(".js-plotly-plot .main-svg").first.wait_for()
        front_rows = page.locator("#front-table tbody tr")
        assert front_rows.count() == len(store["front"])
        for rec in store["front"]:
            assert page.locator("#front-table").get_by_text(run_name(rec), exact=True).count() == 1
        assert page.locator("#trials-table tbody tr").count() == len(store["records"])
        assert page.locator(".js-plotly-plot").count() >= 3  # trade-offs, parallel coordinates, hypervolume
        assert page.get_by_text(re.compile(r"autoeff export --space .* --trial \d+")).count() >= 1
        page.screenshot(path=str(screenshots / "report.png"), full_page=False)
    finally:
        ctx.close()
    assert all(u.startswith(("file:", "data:", "blob:", "about:")) for u in requested), requested
