"""Run names, table JSON, the static and interactive plots, on hand-made records (no search)."""
import json
import re

import matplotlib
import pytest

from autoeff.search.record import TrialRecord
from autoeff.search.runner import front_of, hypervolume_history, summarize
from autoeff.search.space import load_space
from autoeff.tracking.plots import front_figure, html_page, interactive_figures
from autoeff.tracking.tables import front_rows, run_name, to_table_json, to_text


@pytest.fixture
def space(repo):
    return load_space(repo / "search_spaces" / "smoke.yaml", check=False)


def make(n, acc, ms, mb, kind="full", status="complete", **extra):
    params = {"attention.kind": kind, "model.depth": 1, **extra.pop("params", {})}
    cfg = {"attention": {"kind": kind}, "model": {"depth": 1, "width": 32, "heads": 2}, **extra}
    r = TrialRecord(number=n, status=status, params=params, config=cfg,
                    metrics={"accuracy": acc, "latency_ms": ms, "peak_memory_mb": mb, "size_mb": mb / 2})
    if status == "complete":
        r.values, r.violations = [acc, ms, mb], [ms - 1000.0]
    return r


def test_run_names_say_what_the_model_is():
    r = TrialRecord(number=17, status="complete", params={"attention.kind": "linformer", "attention.linformer.rank": 64,
                                                         "model.depth": 4, "compress.bits": 8},
                    config={"attention": {"kind": "linformer", "linformer": {"rank": 64}},
                            "model": {"depth": 4, "width": 128}, "compress": {"bits": 8}})
    assert run_name(r) == "t017-linformer-k64-d4-w128-int8"
    r.config["compress"]["bits"] = 32
    r.params.pop("compress.bits")
    assert run_name(r) == "t017-linformer-k64-d4-w128"
    r.config["compress"]["bits"] = 16
    assert run_name(r).endswith("-bf16")  # compress.half's default
    r.config["compress"]["half"] = "fp16"
    assert run_name(r).endswith("-fp16")
    # a trial that failed before it had a config is still named from its sampled params
    failed = TrialRecord(number=3, status="failed", params={"attention.kind": "longformer",
                                                           "attention.longformer.window": 32, "model.width": 64})
    assert run_name(failed) == "t003-longformer-win32-w64"


def test_table_json_is_what_the_mlflow_table_view_reads(space):
    recs = [make(0, 0.5, 2.0, 0.3), make(1, 0.4, 1.0, 0.2, kind="linformer")]
    recs[1].metrics["latency_spread"] = float("nan")
    rows = front_rows(space, recs)
    t = to_table_json(rows)
    assert t["columns"][:5] == ["trial", "run", "accuracy", "latency_ms", "peak_memory_mb"]
    assert len(t["data"]) == 2 and all(len(row) == len(t["columns"]) for row in t["data"])
    json.dumps(t, allow_nan=False)  # NaN became null
    assert t["data"][1][t["columns"].index("latency_spread")] is None
    md = to_text(space, recs, markdown=True, links={0: "#/experiments/1/runs/abc"})
    assert "[t000-full-d1-w32](#/experiments/1/runs/abc)" in md and "| t001-linformer-d1-w32 |" in md


def _overlaps(boxes):
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


@pytest.mark.parametrize("memory", [[0.11, 0.16, 0.29, 0.15, 0.2], [0.05, 3.0, 80.0, 700.0, 12.0]])
def test_static_plot_tick_labels_do_not_overlap(space, memory):
    recs = [make(i, 0.2 + 0.05 * i, 1.0 + i, mb, kind=("full", "linformer")[i % 2]) for i, mb in enumerate(memory)]
    fig = front_figure(space, recs, front_of(space, recs))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        lo, hi = ax.get_xlim()
        labels = [t for t in labels if lo <= t.get_position()[0] <= hi]
        assert len(labels) >= 2, ax.get_xlabel()
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert not _overlaps(boxes), [t.get_text() for t in labels]
    matplotlib.pyplot.close(fig)


def test_interactive_page_is_self_contained(space):
    recs = [make(0, 0.5, 2.0, 0.3), make(1, 0.4, 1.0, 0.2, kind="linformer"), make(2, 0.3, 3.0, 0.4),
            make(3, 0.0, 0.0, 0.0, status="failed")]
    front = front_of(space, recs)
    for r in recs:
        r.pareto = r in front
    figs = interactive_figures(space, recs, front)
    assert [type(f.data[0]).__name__ for f in figs] == ["Scatter", "Parcoords"]
    page = html_page("t", figs)
    assert page.count("<script") >= 2
    # nothing fetched: plotly.js is inline (its source merely mentions a map-data URL, unused here)
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert len(page) > 1_000_000
    names = {t.name for t in figs[0].data}
    assert {"full", "linformer", "Pareto front"} <= names


def test_hypervolume_history_grows_to_the_search_value(space):
    recs = [make(0, 0.2, 3.0, 0.3), make(1, 0.1, 4.0, 0.4), make(2, 0.5, 2.0, 0.2), make(3, 0.6, 5.0, 0.2)]
    hist = hypervolume_history(space, recs)
    assert [n for n, _ in hist] == [0, 1, 2, 3]
    values = [h for _, h in hist]
    assert values == sorted(values) and values[1] == values[0] and values[2] > values[1]
    assert values[-1] == pytest.approx(summarize(space, recs, front_of(space, recs))["hypervolume"])


def infeasible(n, *, old=False):
    """A trial whose architecture broke a constraint: never trained. ``old``: as studies
    written before the metric registry stored it (accuracy 0.0)."""
    r = TrialRecord(number=n, status="infeasible", params={"attention.kind": "full", "model.depth": 1},
                    config={"attention": {"kind": "full"}, "model": {"depth": 1, "width": 32, "heads": 2}},
                    metrics={"latency_ms": 9.0, "peak_memory_mb": 1.0, "size_mb": 0.5, "trained": 0.0},
                    reason="latency_ms = 9 breaks 'latency_ms <= 1' (architecture alone: training skipped)")
    if old:
        r.metrics["accuracy"] = 0.0
    return r


@pytest.mark.parametrize("old", [False, True])
def test_a_trial_that_was_never_trained_shows_as_not_trained_and_logs_no_accuracy(space, old):
    from autoeff.tracking.mlflow_tracker import MLflowTracker, _logged
    from autoeff.tracking.report import report_html
    from autoeff.tracking.tables import NOT_TRAINED

    rec = infeasible(2, old=old)
    rec.score(space.objectives, [])
    assert rec.values[0] == 0.0 and ("accuracy" in rec.metrics) == old  # the sampler's stand-in only
    recs = [make(0, 0.5, 2.0, 0.3), make(1, 0.4, 1.0, 0.2, kind="linformer"), rec]
    row = front_rows(space, recs)[2]
    assert row["accuracy"] == NOT_TRAINED and row["latency_ms"] == 9.0
    assert "| 2 | t002-full-d1-w32 | infeasible |  | full d1 w32 h2 | not trained | 9 |" in \
        to_text(space, recs, markdown=True, status=True)
    logged = _logged(rec)
    assert "accuracy" not in logged and logged["latency_ms"] == 9.0 and logged["trained"] == 0.0
    assert "not trained" in MLflowTracker._trial_note(rec)
    front = front_of(space, recs)
    page = report_html(space, recs, front)
    assert "<td>not trained</td>" in page


def test_sizes_are_labelled_mib(space):
    recs = [make(0, 0.5, 2.0, 0.3), make(1, 0.4, 1.0, 0.2, kind="linformer")]
    fig = front_figure(space, recs, front_of(space, recs))
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert "peak_memory_mb (MiB)" in labels and "latency_ms (ms)" in labels
    from autoeff.search.runner import compact_front

    assert "MiB" in compact_front(space, recs)[0].split()
