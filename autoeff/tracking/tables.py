"""The front and the trials as tables (CSV, Markdown, plain text), shared by tracking and CLI."""
from __future__ import annotations

import csv
import io
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..search.names import compress_label, family_label, run_name  # noqa: F401  (re-exported)
from ..search.record import TrialRecord
from ..search.space import Space

#: what each metric of a trial run means (shown on the parent run and in the README)
METRIC_DESCRIPTIONS = {
    "accuracy": "validation accuracy; with several tasks, the per-task values combined by the accuracy "
                "objective's aggregate (train.aggregate)",
    "accuracy.<task>": "validation accuracy of one task",
    "test_accuracy": "the same on the test splits (recorded, never used to choose)",
    "majority.<task>": "validation accuracy of always answering the most frequent class",
    "latency_ms": "median inference latency of the deployed model (eval mode) at deploy.batch_size and each "
                  "task's sequence length, after warm-up; the worst task by default",
    "latency_p10_ms / latency_p90_ms / latency_spread": "10th/90th percentile of the timed passes; "
                                                        "spread = (p90 - p10) / median",
    "peak_memory_mb": "deployed memory footprint: parameters and buffers at their stored size plus the peak "
                      "of the inference pass (activation_peak_mb); what serving the model takes",
    "activation_peak_mb": "peak memory of one inference pass above the idle model, every thread's tensor "
                          "allocations (not the Python heap)",
    "params": "parameters (shared ones once)",
    "size_mb": "parameters and buffers at their stored size (MiB)",
    "threads": "torch intra-op threads the latency was measured with",
    "train_steps / train_time_s / train_loss": "optimizer steps taken, training wall time, last training loss",
    "search_<metric>": "a front point's figure measured during the search, before the re-measurement alone",
    # compression (the compress section): the figures above are those of the compressed model
    "accuracy_fp32": "validation accuracy of the trained fp32 model before compression (pruning, quantization)",
    "quantized_params / float_params": "weight elements stored at compress.bits / still stored in fp32",
    "pruned_neurons / pruned_heads / pruned_weights": "FFN neurons and attention heads removed (structured), "
                                                      "weights zeroed (magnitude)",
    "finetune_steps / finetune_time_s": "steps and time of the fine-tune after pruning / with QAT (part of train_steps)",
    "teacher_accuracy": "validation accuracy of the distillation teacher (trained once, cached)",
    "rung_accuracy.<i> / rung_steps.<i>": "early stopping: validation accuracy after rung i's steps (a low-fidelity "
                                          "figure, never the trial's accuracy)",
    "stopped_at_rung": "early stopping: the rung where a pruned trial stopped (its tag reason says why)",
    "measure_time_s / measure_wait_s / measure_contended": "time spent measuring the deployed model; how long it "
                                                           "waited for other trials' steps to finish (the "
                                                           "measurement gate), and whether any had to "
                                                           "(measure_gate_timeout: it gave up waiting)",
    "threads_train": "torch threads a Ray trial trained with (the CPUs it holds, search.ray.cpus_per_trial)",
    "eval_time_s / cpu_time_s / trial_wall_s": "time spent evaluating; CPU time of the trial's process (all "
                                               "threads); the trial's wall time as its backend saw it",
}


def glossary_markdown() -> str:
    """METRIC_DESCRIPTIONS as a Markdown table."""
    rows = ["| metric | meaning |", "|---|---|"]
    rows += [f"| `{k}` | {v} |" for k, v in METRIC_DESCRIPTIONS.items()]
    return "\n".join(rows) + "\n"


#: metrics shown beside the objectives in tables when trials carry them
EXTRA_COLUMNS = ("proxy_accuracy", "test_accuracy", "latency_spread", "size_mb", "params", "train_time_s")


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


def front_rows(space: Space, records: Sequence[TrialRecord]) -> List[Dict[str, Any]]:
    rows = []
    for r in records:
        row: Dict[str, Any] = {"trial": r.number, "run": run_name(r)}
        for o in space.objectives:  # the objectives first: what a table view shows without scrolling
            row[o.name] = r.metrics.get(o.name)
        row.update({"status": r.status, "pareto": r.pareto, "feasible": r.feasible, "architecture": arch_summary(r)})
        for k in EXTRA_COLUMNS:
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
    per_task = sorted({k for r in front for k in r.metrics if k.startswith("accuracy.")})
    per_task = per_task if len(per_task) > 1 else []  # one task: the same as accuracy
    extra = [c for c in ("proxy_accuracy",) if any(c in r.metrics for r in front) and c not in space.objective_names]
    return [*space.objective_names, *extra, *per_task, "test_accuracy", "params"]


def to_text(space: Space, front: Sequence[TrialRecord], markdown: bool = False,
            links: Optional[Mapping[int, str]] = None) -> str:
    """The front as an aligned table (or Markdown), best first by the first objective.
    ``links`` (trial number -> URL) turns the Markdown run names into links."""
    cols = ["trial", "run", "architecture", *_columns(space, front)]
    rows = []
    for r in front:
        name = run_name(r)
        if markdown and links and r.number in links:
            name = f"[{name}]({links[r.number]})"
        rows.append([_fmt(r.number), name, arch_summary(r), *[_fmt(r.metrics.get(c)) for c in cols[3:]]])
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
