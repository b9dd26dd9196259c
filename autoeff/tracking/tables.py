"""The front and the trials as tables (CSV, Markdown, plain text), shared by tracking and CLI."""
from __future__ import annotations

import csv
import io
from typing import Any, Dict, List, Sequence

from ..search.objective import TrialRecord
from ..search.space import Space

def arch_summary(rec: TrialRecord) -> str:
    """A short architecture label: 'linformer(rank=64) d2 w128 h4'."""
    cfg = rec.config or {}
    att = cfg.get("attention", {})
    kind = att.get("kind", "?")
    searched = {k.split(".")[-1]: v for k, v in rec.params.items() if k.startswith(f"attention.{kind}.")}
    knob_s = "(" + ",".join(f"{k}={v}" for k, v in searched.items()) + ")" if searched else ""
    m = cfg.get("model", {})
    return f"{kind}{knob_s} d{m.get('depth', '?')} w{m.get('width', '?')} h{m.get('heads', '?')}"


def front_rows(space: Space, records: Sequence[TrialRecord]) -> List[Dict[str, Any]]:
    rows = []
    for r in records:
        row: Dict[str, Any] = {"trial": r.number, "status": r.status, "pareto": r.pareto,
                               "feasible": r.feasible, "architecture": arch_summary(r)}
        for o in space.objectives:
            row[o.name] = r.metrics.get(o.name)
        for k in ("test_accuracy", "latency_spread", "params", "size_mb", "train_time_s"):
            if k in r.metrics:
                row[k] = r.metrics[k]
        for k, v in r.metrics.items():
            if k.startswith("accuracy."):
                row[k] = v
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


def to_text(space: Space, front: Sequence[TrialRecord], markdown: bool = False) -> str:
    """The front as an aligned table (or Markdown), best first by the first objective."""
    per_task = sorted({k for r in front for k in r.metrics if k.startswith("accuracy.")})
    per_task = per_task if len(per_task) > 1 else []  # one task: the same as accuracy
    cols = ["trial", "architecture", *space.objective_names, *per_task, "test_accuracy", "params"]
    rows = [[_fmt(r.number), arch_summary(r), *[_fmt(r.metrics.get(c)) for c in cols[2:]]] for r in front]
    if markdown:
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out) + "\n"
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *[line(r) for r in rows]]) + "\n"
