"""`autoeff report`: one self-contained HTML page per search, for people who don't run an MLflow
server: the front (table and plots), every trial, the hypervolume's progress and how to export.

Reads the study only (like `autoeff pareto`): no torch, Lightning or MLflow. plotly.js is
embedded in the page, so it opens offline.
"""
from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..search.record import TrialRecord
from ..search.runner import hypervolume_history, summarize
from ..search.space import Space
from .plots import html_page, html_table, interactive_figures
from .tables import EXTRA_COLUMNS, arch_summary, front_rows, placement_legend, run_name


def _table_columns(space: Space, rows: Sequence[Dict[str, Any]], *, status: bool) -> List[str]:
    have = {k for r in rows for k in r}
    per_task = sorted(k for k in have if "." in k and not k.startswith(("param:", "test_", "rung_"))
                      and k not in space.objective_names)
    per_task = per_task if len({k.partition(".")[2] for k in per_task}) > 1 else []
    cols = ["trial", "run", "architecture", *(["placement"] if "placement" in have else []),
            *space.objective_names, *per_task]
    cols += [c for c in EXTRA_COLUMNS if c in have and c not in cols]
    if status:
        cols = cols[:2] + ["status", "pareto"] + cols[2:] + (["reason"] if "reason" in have else [])
    return cols


def _hv_figure(space: Space, records: Sequence[TrialRecord]):
    import plotly.graph_objects as go

    hist = hypervolume_history(space, records)
    fig = go.Figure(go.Scatter(x=[n for n, _ in hist], y=[h for _, h in hist], mode="lines+markers",
                               line=dict(shape="hv"), name="hypervolume"))
    fig.update_layout(title="Hypervolume of the front found so far, by trial (higher is better)",
                      xaxis_title="trial", yaxis_title="hypervolume", height=320, template="plotly_white")
    return fig


def report_html(space: Space, records: Sequence[TrialRecord], front: Sequence[TrialRecord],
                *, mlflow_link: Optional[str] = None) -> str:
    """The whole report page as one string."""
    summary = summarize(space, records, front)
    esc = html.escape
    counts = ", ".join(f"{int(summary.get(k, 0))} {k[2:]}" for k in ("n_proxy", "n_complete", "n_infeasible",
                                                                      "n_pruned", "n_failed") if k in summary)
    tasks = ", ".join(f"{t.get('kind')} (seq_len {t.get('seq_len', '?')})" for t in space.base.get("tasks") or [])
    intro = (
        "<p><b>Space</b> <code>" + esc(str(space.file)) + "</code>, study <code>" + esc(space.search.study_name)
        + "</code> in <code>" + esc(space.search.storage) + "</code>. Tasks: " + esc(tasks or "default") + ".</p>"
        "<p><b>Searched</b>: " + ", ".join(f"<code>{esc(d.name)}</code>" for d in space.dims)
        + ". <b>Objectives</b>: " + esc(", ".join(f"{o.name} ({o.direction})" for o in space.objectives))
        + ". <b>Constraints</b>: " + esc(", ".join(c.label for c in space.constraints) or "none") + ".</p>"
        f"<p><b>{len(records)} trials</b> ({esc(counts)}); <b>{len(front)} on the Pareto front</b>"
        + (f"; hypervolume {summary['hypervolume']:.4g}" if "hypervolume" in summary else "")
        + (f"; best accuracy {summary['best_accuracy']:.4g}" if "best_accuracy" in summary else "") + ".</p>"
        f"<p class=\"muted\">Written {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} by <code>autoeff report</code>. "
        "The front's latency and memory are the figures re-measured alone after the search "
        "(<code>remeasured</code> column)."
        + (" One-shot search: the front holds the finalists, trained for real; the proxy trials "
           "(scored by inherited supernet weights, <code>proxy_accuracy</code>) are listed under "
           "<i>Every trial</i>." if space.search.strategy == "oneshot" else "") + "</p>")
    front_rows_ = front_rows(space, front)
    all_rows = front_rows(space, records)
    sections: List[Any] = ["<h2 id=\"front\">Pareto front</h2>",
                           html_table(front_rows_, _table_columns(space, front_rows_, status=False), table_id="front-table")
                           if front else "<p>No feasible trial completed: there is no front yet.</p>"]
    if space.per_layer and records:
        sections.append("<p class=\"muted\"><b>placement</b>: each layer's attention family, one letter per layer, "
                        "the bottom layer (next to the embeddings) first: " + esc(placement_legend(records)) + ".</p>")
    sections += ["<h2 id=\"plots\">Trade-offs</h2>", *interactive_figures(space, records, front)]
    if front:
        sections.append(_hv_figure(space, records))
    best = front[0] if front else None
    space_arg = esc(str(space.file))
    sections.append("<h2 id=\"export\">Export a point</h2>")
    if best is not None:
        sections.append(
            "<p>Pick a trial from the front and write its training config, then train it with the full budget:</p>"
            f"<pre>autoeff export --space {space_arg} --trial {best.number} -o model.yaml\n"
            "autoeff train --config model.yaml</pre>"
            "<p>or let a rule choose, e.g.</p>"
            f"<pre>autoeff export --space {space_arg} --rule \"highest accuracy with latency_ms &lt;= 20\" -o model.yaml</pre>"
            "<p>Add <code>--register NAME</code> to log the trial's trained model to MLflow's model registry "
            "(load it with <code>mlflow.pytorch.load_model(\"models:/NAME@chosen\")</code>).</p>"
            "<ul>" + "".join(f"<li>trial {r.number}: <code>{esc(run_name(r))}</code>, {esc(arch_summary(r))}</li>"
                             for r in front) + "</ul>")
    else:
        sections.append("<p>No trial can be exported yet.</p>")
    sections += ["<h2 id=\"trials\">Every trial</h2>",
                 html_table(all_rows, _table_columns(space, all_rows, status=True), highlight=[r.pareto for r in records],
                            table_id="trials-table")]
    more = (f"<p>Every run, metric and artifact: <code>mlflow ui --backend-store-uri {esc(space.search.mlflow_uri)}</code>"
            + (f", then <a href=\"{esc(mlflow_link)}\">{esc(mlflow_link)}</a>" if mlflow_link else "") + ". "
            f"Optuna's view: <code>optuna-dashboard {esc(space.search.storage)}</code> (search-time figures; "
            "see the study's note).</p>")
    sections += ["<h2>More</h2>", more]
    return html_page(f"autoeff report: {space.search.study_name}", sections, intro=intro)


def write_report(space: Space, records: Sequence[TrialRecord], front: Sequence[TrialRecord], out: Path,
                 *, mlflow_link: Optional[str] = None) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report_html(space, records, front, mlflow_link=mlflow_link), encoding="utf-8")
    return out
