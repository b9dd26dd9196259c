"""Every figure experiments/early_stopping/README.md quotes, re-derived from the committed
curves (``curves.csv``: the 2026-12-02 three-seed run; ``curves-2026-12-01.csv``: the first,
seed-0-only run, as committed in 35c2a5b), written to ``results.csv``.

    python experiments/early_stopping/figures.py           # rewrite results.csv
    python experiments/early_stopping/figures.py --check   # exit 1 if results.csv disagrees

The curves hold, after every trial in the order trials finished, the cumulative CPU time and the
hypervolume of the front so far (against the accuracy-0 reference point of those runs) and the
trial's status; they do not hold the trials' points, so the hypervolumes cannot be recomputed
against another reference point from them (``run.py`` now also writes ``trials.csv`` for that).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import first_reach, hv_at  # noqa: E402  (the experiment's own definitions)
RUNS = {"2026-12-02": HERE / "curves.csv", "2026-12-01": HERE / "curves-2026-12-01.csv"}
FIELDS = ["run", "seed", "full_trials", "full_cpu_s", "full_final_hv", "es_trials", "es_pruned", "es_complete",
          "es_cpu_s", "es_hv_at_half_full_cpu", "es_hv_at_full_cpu", "es_final_hv", "es_reaches_full_final_hv_at_cpu_s",
          "ratio", "es_hv_at_half_vs_full_final"]


def read(path: Path):
    curves = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            curves.setdefault((r["mode"], int(r["seed"])), []).append(
                (float(r["cpu_s"]), float(r["hypervolume"]), r["status"]))
    return curves


def figures():
    rows = []
    for run, path in RUNS.items():
        curves = read(path)
        for seed in sorted({s for _, s in curves}):
            cf, ce = curves[("full", seed)], curves[("es", seed)]
            t_full, hv_full = cf[-1][0], cf[-1][1]
            reach = first_reach(ce, hv_full)
            half = hv_at(ce, t_full / 2)
            rows.append({"run": run, "seed": seed, "full_trials": len(cf), "full_cpu_s": f"{t_full:.0f}",
                         "full_final_hv": f"{hv_full:.4g}", "es_trials": len(ce),
                         "es_pruned": sum(st == "pruned" for *_, st in ce),
                         "es_complete": sum(st == "complete" for *_, st in ce), "es_cpu_s": f"{ce[-1][0]:.0f}",
                         "es_hv_at_half_full_cpu": f"{half:.4g}", "es_hv_at_full_cpu": f"{hv_at(ce, t_full):.4g}",
                         "es_final_hv": f"{ce[-1][1]:.4g}",
                         "es_reaches_full_final_hv_at_cpu_s": "" if reach is None else f"{reach:.0f}",
                         "ratio": "" if reach is None else f"{reach / t_full:.2f}",
                         "es_hv_at_half_vs_full_final": f"{half / hv_full - 1:+.1%}"})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="compare with the committed results.csv instead of writing it")
    a = p.parse_args(argv)
    rows = [{k: str(v) for k, v in r.items()} for r in figures()]
    out = HERE / "results.csv"
    if a.check:
        with open(out, newline="") as f:
            committed = list(csv.DictReader(f))
        if committed != rows:
            print(f"{out} differs from what the curves give", file=sys.stderr)
            return 1
        print(f"{out}: every figure re-derived")
        return 0
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
