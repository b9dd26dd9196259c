"""The front and the trials as tables (CSV, Markdown, plain text), shared by tracking and CLI."""
from __future__ import annotations

import csv
import io
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .. import metrics as metric_registry
from ..search.names import FAMILY_CODES, compress_label, family_label, placement_label, run_name  # noqa: F401  (re-exported)
from ..search.record import TrialRecord
from ..search.space import Space

#: what a table shows for a training figure of a trial that was never trained (infeasible)
NOT_TRAINED = "not trained"


def glossary_markdown(only=None) -> str:
    """What each metric of a trial run means: the metric registry as a Markdown table (``only``:
    the metrics a search's runs hold)."""
    return metric_registry.glossary_markdown(only)


#: metrics shown beside the objectives in tables when trials carry them
EXTRA_COLUMNS = metric_registry.names(view="table")


def shown_value(rec: TrialRecord, name: str) -> Any:
    """A metric as tables show it: :data:`NOT_TRAINED` for a training figure of a trial that was
    never trained (even where an old study stored accuracy 0.0 for it), else the value (or None)."""
    d = metric_registry.get(name)
    if not rec.trained and d is not None and d.phase == "training":
        return NOT_TRAINED
    return rec.metrics.get(name)


def arch_summary(rec: TrialRecord) -> str:
    """A short architecture label: 'linformer(rank=64) d2 w128 h4'; hybrids list their layers,
    'hybrid[linear|full] d2 w64 h4'."""
    cfg = rec.config or {}
    att = cfg.get("attention", {})
    m = cfg.get("model", {})
    size = f"d{m.get('depth', '?')} w{m.get('width', '?')} h{m.get('heads', '?')}"
    comp = compress_label(rec)
    size += f" {comp}" if comp else ""
    if att.get("layers"):
        parts = [_family(a, {k.split(".", 3)[-1]: v for k, v in rec.params.items()
                             if k.startswith(f"attention.layers.{i}.{a.get('kind')}.")})
                 for i, a in enumerate(att["layers"])]
        return f"hybrid[{'|'.join(parts)}] {size}"
    kind = att.get("kind", "?")
    searched = {k[len("attention."):]: v for k, v in rec.params.items() if k.startswith(f"attention.{kind}.")}
    return f"{_family(att, searched)} {size}"


def _family(section: Dict[str, Any], searched: Dict[str, Any]) -> str:
    """'linformer(rank=64)': a family with the knobs the search chose (named '<family>.<knob>')."""
    knobs = {k.split(".")[-1]: v for k, v in searched.items()}
    return section.get("kind", "?") + ("(" + ",".join(f"{k}={v}" for k, v in knobs.items()) + ")" if knobs else "")


def shows_placement(space: Space) -> bool:
    """Tables get a placement column (``F S S G``) when the space places families per layer."""
    return bool(space.per_layer)


def placement_legend(records: Sequence[TrialRecord]) -> str:
    """'F full, S sliding_window, G gated_deltanet': the letters the placement column uses."""
    kinds = []
    for r in records:
        for kind, _ in _layers_of(r):
            if kind not in kinds:
                kinds.append(kind)
    return ", ".join(f"{FAMILY_CODES.get(k, k[:1].lower())} {k}" for k in kinds)


def _layers_of(rec: TrialRecord):
    from ..search.names import _layers

    return _layers(rec)


def _per_task_keys(space: Space, metrics: Mapping[str, Any]) -> List[str]:
    """The per-task figures a table shows: ``accuracy.<task>``, and ``<objective>.<task>`` for
    every per-task objective (``bpb.lm_text``), in the metrics' order."""
    bases = {"accuracy", *(o.name.split(".")[0] for o in space.objectives)}
    out = []
    for k in metrics:
        base, _, task = k.partition(".")
        d = metric_registry.get(base)
        if task and base in bases and d is not None and d.per_task and not base.startswith(("test_", "rung_")):
            out.append(k)
    return out


def front_rows(space: Space, records: Sequence[TrialRecord]) -> List[Dict[str, Any]]:
    rows = []
    for r in records:
        row: Dict[str, Any] = {"trial": r.number, "run": run_name(r)}
        for o in space.objectives:  # the objectives first: what a table view shows without scrolling
            row[o.name] = shown_value(r, o.name)
        row.update({"status": r.status, "pareto": r.pareto, "feasible": r.feasible, "architecture": arch_summary(r)})
        if shows_placement(space):
            row["placement"] = placement_label(r)
        for k in EXTRA_COLUMNS:
            if k in r.metrics:
                row[k] = shown_value(r, k)
        for k in _per_task_keys(space, r.metrics):
            row[k] = shown_value(r, k)
        row["remeasured"] = r.remeasured
        row.update({f"param:{k}": v for k, v in r.params.items()})
        if r.reason:
            row["reason"] = r.reason
        rows.append(row)
    return rows


def to_csv(rows: Sequence[Dict[str, Any]]) -> str:
    keys: List[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def to_table_json(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Rows as ``{"columns": [...], "data": [[...], ...]}``: the JSON that ``mlflow.log_table``
    writes and that the MLflow UI shows in its table view (floats to 4 significant digits; the
    CSV keeps them whole)."""
    keys: List[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    def clean(v: Any) -> Any:
        if isinstance(v, float):
            return None if v != v else float(f"{v:.4g}")  # NaN is no JSON; 4 digits read at a glance
        return v

    return {"columns": keys, "data": [[clean(r.get(k)) for k in keys] for r in rows]}


def _columns(space: Space, front: Sequence[TrialRecord]) -> List[str]:
    per_task = sorted({k for r in front for k in _per_task_keys(space, r.metrics)} - set(space.objective_names))
    if len({k.partition(".")[2] for k in per_task}) < 2:
        per_task = []  # one task: the same as the aggregate
    extra = [c for c in ("proxy_accuracy",) if any(c in r.metrics for r in front) and c not in space.objective_names]
    return [*space.objective_names, *extra, *per_task, "test_accuracy", "params"]


def to_text(space: Space, front: Sequence[TrialRecord], markdown: bool = False,
            links: Optional[Mapping[int, str]] = None, status: bool = False) -> str:
    """The front as an aligned table (or Markdown), best first by the first objective.
    ``links`` (trial number -> URL) turns the Markdown run names into links. ``status``: any
    trials (`autoeff pareto --all`): adds their status, front flag and reason."""
    placement = shows_placement(space)
    lead = ["trial", "run", *(["status", "pareto"] if status else []), "architecture", *(["placement"] if placement else [])]
    cols = [*lead, *_columns(space, front)]
    with_reason = status and any(r.reason for r in front)
    cols += ["reason"] if with_reason else []
    rows = []
    for r in front:
        name = run_name(r)
        if markdown and links and r.number in links:
            name = f"[{name}]({links[r.number]})"
        flags = [r.status, "*" if r.pareto else ""] if status else []
        rows.append([_fmt(r.number), name, *flags, arch_summary(r), *([placement_label(r)] if placement else []),
                     *[_fmt(shown_value(r, c)) for c in cols[len(lead):len(cols) - with_reason]],
                     *([r.reason.replace("|", "/")] if with_reason else [])])
    drop = "run" if not markdown else ("architecture" if links else None)  # the terminal: no run names;
    if drop:  # linked run names (MLflow) already say what the architecture is
        i = cols.index(drop)
        cols = cols[:i] + cols[i + 1:]
        rows = [row[:i] + row[i + 1:] for row in rows]
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out) + "\n"
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *[line(r) for r in rows]]) + "\n"
