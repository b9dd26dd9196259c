"""Every figure experiments/compression/README.md quotes, re-derived from the committed
``results.json`` (written by run.py on 2026-12-01) into ``results.csv``; also checks that
``results.md`` is what run.py's table code makes of results.json.

    python experiments/compression/figures.py           # rewrite results.csv (and results.md)
    python experiments/compression/figures.py --check   # exit 1 if either disagrees

Needs no torch: run.py's ``markdown`` is read from its source.
"""
from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIELDS = ["table", "arch", "variant", "seed", "accuracy", "vs_fp32_pt", "test_accuracy", "latency_ms",
          "latency_vs_fp32", "peak_memory_mb", "size_mb", "size_vs_fp32", "params", "listops", "text", "image",
          "distilled_minus_plain_pt", "teacher_accuracy", "teacher_params"]


def _markdown():
    """run.py's ``markdown`` function, without importing run.py (which imports torch)."""
    tree = ast.parse((HERE / "run.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "markdown")
    ns: dict = {}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "run.py", "exec"), ns)
    return ns["markdown"]


def g(v, nd=4):
    return f"{v:.{nd}f}"


def figures(d):
    rows = []
    ref = {r["arch"]: r for r in d["rows"] if r["variant"] == "32 bits"}
    for r in d["rows"]:
        b = ref[r["arch"]]
        rows.append({"table": "compression", "arch": r["arch"], "variant": r["variant"], "accuracy": g(r["accuracy"]),
                     "vs_fp32_pt": f"{100 * (r['accuracy'] - b['accuracy']):+.2f}",
                     "test_accuracy": g(r["test_accuracy"]), "latency_ms": g(r["latency_ms"], 3),
                     "latency_vs_fp32": g(r["latency_ms"] / b["latency_ms"], 3), "peak_memory_mb": g(r["peak_memory_mb"], 3),
                     "size_mb": g(r["size_mb"]), "size_vs_fp32": g(r["size_mb"] / b["size_mb"], 3),
                     "params": int(r["params"])})
    dist = d["distill"]
    for r in dist:
        plain = next(p for p in dist if p["seed"] == r["seed"] and not p["distill"])
        rows.append({"table": "distillation", "arch": "full-d1-w32", "variant": "distilled" if r["distill"] else "plain",
                     "seed": r["seed"], "accuracy": g(r["accuracy"]), "test_accuracy": g(r["test_accuracy"]),
                     **{t: g(r[f"accuracy.{t}"]) for t in ("listops", "text", "image")},
                     "distilled_minus_plain_pt": f"{100 * (r['accuracy'] - plain['accuracy']):+.2f}" if r["distill"] else "",
                     "teacher_accuracy": g(r["teacher_accuracy"]) if "teacher_accuracy" in r else "",
                     "teacher_params": int(r["teacher_params"]) if "teacher_params" in r else ""})
    for distill in (False, True):
        sel = [r for r in dist if r["distill"] == distill]
        mean = lambda k: sum(r[k] for r in sel) / len(sel)  # noqa: E731
        rows.append({"table": "distillation", "arch": "full-d1-w32", "variant": "distilled" if distill else "plain",
                     "seed": "mean", "accuracy": g(mean("accuracy")),
                     **{t: g(mean(f"accuracy.{t}")) for t in ("listops", "text", "image")}})
    means = {k: sum(r["accuracy"] for r in dist if r["distill"] == k) / sum(r["distill"] == k for r in dist)
             for k in (False, True)}
    rows[-1]["distilled_minus_plain_pt"] = f"{100 * (means[True] - means[False]):+.2f}"
    rows.append({"table": "run", "variant": "wall time (s)", "accuracy": f"{d['wall_s']:.0f}"})
    return [{k: str(r.get(k, "")) for k in FIELDS} for r in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    d = json.loads((HERE / "results.json").read_text())
    rows = figures(d)
    md = _markdown()(d["rows"], d["distill"], d["config"])
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    if a.check:
        ok = (HERE / "results.csv").read_text() == buf.getvalue() and (HERE / "results.md").read_text() == md
        print("results.csv and results.md: every figure re-derived" if ok else "results.csv or results.md differs",
              file=sys.stdout if ok else sys.stderr)
        return 0 if ok else 1
    (HERE / "results.csv").write_text(buf.getvalue())
    (HERE / "results.md").write_text(md)
    print(buf.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
