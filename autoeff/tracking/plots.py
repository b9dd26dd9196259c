"""Plots of a search: every trial, the front highlighted, one panel per cost objective.

- ``front_figure``: a static matplotlib figure (PNG in MLflow, `autoeff pareto --plot`);
- ``interactive_figures``: plotly figures (accuracy against each cost, and a parallel-coordinates
  view of all objectives) for the self-contained HTML in MLflow and in `autoeff report`;
- ``html_page``: one self-contained HTML page (plotly.js embedded once, no network needed).

No mlflow here; plotly is imported only by the interactive functions.
"""
from __future__ import annotations

import html
import math
from typing import Any, Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from ..metrics import names as metric_names, unit_label  # noqa: E402
from ..search.record import TrialRecord  # noqa: E402
from ..search.space import Space  # noqa: E402
from .tables import arch_summary, run_name  # noqa: E402

MARKERS = "osD^v<>pPX*h"
#: cost axes drawn on a log scale when their values span at least this ratio
LOG_RATIO = 10.0


def _quality_and_costs(space: Space):
    quality = "accuracy" if "accuracy" in space.objective_names else space.objective_names[0]
    costs = [o.name for o in space.objectives if o.name != quality] or [quality]
    return quality, costs


def _kind(r: TrialRecord) -> str:
    return str(((r.config or {}).get("attention") or {}).get("kind") or r.params.get("attention.kind") or "?")


def _tick(v: float, _pos=None) -> str:
    """Short tick labels: 0.12, 3, 250, 1.5k, 2M."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def _cost_axis(ax, values: Sequence[float]) -> None:
    """Log scale only when the values span a decade; few, short, non-overlapping tick labels."""
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if vals and max(vals) / min(vals) >= LOG_RATIO:
        ax.set_xscale("log")
        decades = math.log10(max(vals) / min(vals))
        subs = (1.0,) if decades >= 2 else (1.0, 2.0, 5.0)  # 1-2-5 ticks only where they fit
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, min_n_ticks=3))
    ax.xaxis.set_major_formatter(FuncFormatter(_tick))


def front_figure(space: Space, records: Sequence[TrialRecord], front: Sequence[TrialRecord]):
    """Accuracy against each cost objective (latency, memory, ...), colored by attention family."""
    quality, costs = _quality_and_costs(space)
    fig, axes = plt.subplots(1, len(costs), figsize=(5.6 * len(costs), 4.4), squeeze=False)
    kinds = sorted({_kind(r) for r in records if r.config})
    cmap = plt.get_cmap("tab10")
    front_ids = {r.number for r in front}
    for ax, cost in zip(axes[0], costs):
        shown = [r for r in records if r.status == "complete" and r.config and cost in r.metrics]
        for i, kind in enumerate(kinds):
            pts = [r for r in shown if _kind(r) == kind]
            feas = [r for r in pts if r.feasible]
            infe = [r for r in pts if not r.feasible]
            if feas:
                ax.scatter([r.metrics[cost] for r in feas], [r.metrics[quality] for r in feas], s=28, alpha=0.55,
                           color=cmap(i % 10), marker=MARKERS[i % len(MARKERS)], label=kind)
            if infe:
                ax.scatter([r.metrics[cost] for r in infe], [r.metrics[quality] for r in infe], s=28,
                           color=cmap(i % 10), marker="x", alpha=0.6)
        fr = sorted((r for r in front if cost in r.metrics), key=lambda r: r.metrics[cost])
        if fr:
            ax.scatter([r.metrics[cost] for r in fr], [r.metrics[quality] for r in fr], s=110,
                       facecolors="none", edgecolors="black", linewidths=1.4, label="Pareto front")
            for r in fr:
                ax.annotate(str(r.number), (r.metrics[cost], r.metrics[quality]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
        ax.set_xlabel(unit_label(cost))
        ax.set_ylabel(unit_label(quality))
        ax.margins(x=0.08, y=0.1)  # no point or label on the frame
        _cost_axis(ax, [r.metrics[cost] for r in shown])
        ax.grid(alpha=0.3)
        ax.set_title(f"{quality} vs {cost}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, fontsize=8, loc="best")
    n_front = len(front_ids)
    fig.suptitle(f"{space.name}: {len(records)} trials, {n_front} on the front (x = breaks a constraint)", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# interactive (plotly)
# --------------------------------------------------------------------------------------

def _hover(r: TrialRecord, names: Sequence[str]) -> str:
    lines = [f"<b>{html.escape(run_name(r))}</b>", html.escape(arch_summary(r)), f"status: {r.status}"]
    for n in names:
        v = r.metrics.get(n)
        if isinstance(v, (int, float)):
            lines.append(f"{n}: {v:.4g}")
    if r.pareto:
        lines.append("on the Pareto front")
    if r.reason:
        lines.append(html.escape(r.reason[:120]))
    return "<br>".join(lines)


def interactive_figures(space: Space, records: Sequence[TrialRecord], front: Sequence[TrialRecord]) -> List[Any]:
    """Plotly figures: accuracy against each cost (every trial, the front circled; with three
    objectives a 2-D projection of the front is not a staircase, so its points are not joined),
    and the trade-off between all objectives as parallel coordinates (front in color)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    quality, costs = _quality_and_costs(space)
    names = [*space.objective_names, *[m for m in metric_names(view="table") if m not in space.objective_names]]
    front_ids = {r.number for r in front}
    shown = [r for r in records if r.status == "complete" and quality in r.metrics]
    kinds = sorted({_kind(r) for r in shown})
    palette = qualitative.Plotly
    scatter = make_subplots(rows=1, cols=len(costs), subplot_titles=[f"{quality} vs {c}" for c in costs],
                            horizontal_spacing=0.08)
    for j, cost in enumerate(costs, start=1):
        pts = [r for r in shown if cost in r.metrics]
        for i, kind in enumerate(kinds):
            for feasible in (True, False):
                grp = [r for r in pts if _kind(r) == kind and r.feasible == feasible]
                if not grp:
                    continue
                scatter.add_trace(go.Scatter(
                    x=[r.metrics[cost] for r in grp], y=[r.metrics[quality] for r in grp], mode="markers",
                    name=kind if feasible else f"{kind} (breaks a constraint)", legendgroup=f"{kind}{feasible}",
                    showlegend=j == 1,
                    marker=dict(color=palette[i % len(palette)], size=9, symbol="circle" if feasible else "x",
                                opacity=0.75),
                    hovertext=[_hover(r, names) for r in grp], hoverinfo="text"), row=1, col=j)
        fr = sorted((r for r in front if cost in r.metrics), key=lambda r: r.metrics[cost])
        if fr:
            scatter.add_trace(go.Scatter(
                x=[r.metrics[cost] for r in fr], y=[r.metrics[quality] for r in fr], mode="markers+text",
                name="Pareto front", legendgroup="front", showlegend=j == 1,
                marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color="black", width=2)),
                text=[str(r.number) for r in fr], textposition="top right",
                hovertext=[_hover(r, names) for r in fr], hoverinfo="text"), row=1, col=j)
        vals = [r.metrics[cost] for r in pts if r.metrics[cost] > 0]
        log = bool(vals) and max(vals) / min(vals) >= LOG_RATIO
        scatter.update_xaxes(title_text=unit_label(cost), type="log" if log else "linear", row=1, col=j)
        scatter.update_yaxes(title_text=unit_label(quality), row=1, col=j)
    scatter.update_layout(title=f"{space.name}: {len(records)} trials, {len(front_ids)} on the Pareto front "
                                f"(hover a point for its run; x = breaks a constraint)",
                          height=480, template="plotly_white", legend=dict(orientation="h", y=-0.2))

    dims = []
    par = [r for r in shown if all(isinstance(r.metrics.get(n), (int, float)) for n in space.objective_names)]
    dims.append(dict(label="trial", values=[r.number for r in par]))
    for n in space.objective_names:
        dims.append(dict(label=n, values=[r.metrics[n] for r in par]))
    kind_ids = {k: i for i, k in enumerate(kinds)}
    if len(kinds) > 1:
        dims.append(dict(label="attention", values=[kind_ids[_kind(r)] for r in par],
                         tickvals=list(range(len(kinds))), ticktext=kinds))
    parallel = go.Figure(go.Parcoords(
        line=dict(color=[1 if r.number in front_ids else 0 for r in par],
                  colorscale=[[0, "#c8c8c8"], [1, "#d62728"]], cmin=0, cmax=1),
        dimensions=dims))
    parallel.update_layout(title="All objectives at once: every completed trial, the Pareto front in red "
                                 "(drag along an axis to filter)", height=420, template="plotly_white")
    return [scatter, parallel]


def html_page(title: str, sections: Sequence[Any], *, intro: str = "") -> str:
    """One self-contained HTML page: ``sections`` are plotly figures or HTML strings, in order.
    plotly.js is embedded once (no CDN), so the page opens offline and in MLflow's artifact view."""
    parts: List[str] = []
    embedded = False
    for sec in sections:
        if isinstance(sec, str):
            parts.append(sec)
        else:
            parts.append(sec.to_html(full_html=False, include_plotlyjs=not embedded,
                                     config={"displaylogo": False, "responsive": True}))
            embedded = True
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title>"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<style>{CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{intro}\n"
            + "\n".join(parts) + "\n</body></html>\n")


CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 1.5rem auto; max-width: 1280px;
       padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: left; white-space: nowrap; }
th { background: #f4f4f4; } tr.front td { background: #fff6e0; }
code, pre { background: #f4f4f4; padding: 0.1rem 0.3rem; border-radius: 3px; }
pre { padding: 0.6rem; overflow-x: auto; }
.muted { color: #666; font-size: 0.85rem; }
"""


def html_table(rows: Sequence[Dict[str, Any]], columns: Optional[Sequence[str]] = None,
               highlight: Optional[Sequence[bool]] = None, table_id: str = "") -> str:
    """Rows (dicts) as an HTML table; numbers shortened; ``highlight`` marks rows (the front)."""
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v != v:
                return ""
            return f"{int(v):,}" if v.is_integer() and abs(v) >= 1000 else f"{v:.4g}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        cls = ' class="front"' if highlight and highlight[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>")
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
