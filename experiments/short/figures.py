"""The figures experiments/short/README.md quotes that its one committed output, ``search.log``
(the search's progress on stderr), holds, parsed into ``results.csv``: per trial the
architecture, accuracy, latency and memory as measured *during* the search, and its duration;
plus task generation and the elapsed time when the last trial ended.

    python experiments/short/figures.py           # rewrite results.csv
    python experiments/short/figures.py --check   # exit 1 if results.csv disagrees

The front's re-measured figures, per-task and test accuracies, parameters and train_time_s came
from `autoeff pareto` over the study database, which is not committed.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from figures_csv import write_or_check  # noqa: E402
TRIAL = re.compile(r"\[autoeff\s+(\d+)s\] trial (\d+) \(\d+/(\d+)\): (.*)$")
RESULT = re.compile(r"\[autoeff\s+(\d+)s\]\s+-> accuracy ([\d.]+)\s+latency ([\d.]+) ms\s+memory ([\d.]+) MB\s+\((\d+)s\)")
GEN = re.compile(r"\[autoeff\s+(\d+)s\]\s+task (\S+) generated in (\d+) s")
DONE = re.compile(r"\[autoeff\s+(\d+)s\]\s+\[(\d+)/(\d+) done.*elapsed ([\d:]+); front: trials? ([\d, ]+)\]")


def parse(text: str):
    rows, cur = [], None
    for line in text.splitlines():
        if m := TRIAL.search(line):
            cur = {"kind": "trial", "trial": m[2], "params": m[4]}
        elif (m := RESULT.search(line)) and cur:
            cur.update(accuracy=m[2], search_latency_ms=m[3], search_memory_mb=m[4], duration_s=m[5])
            rows.append(cur)
            cur = None
        elif m := GEN.search(line):
            rows.append({"kind": "task generated", "trial": "", "params": m[2], "duration_s": m[3], "at_s": m[1]})
        elif (m := DONE.search(line)) and m[2] == m[3]:
            rows.append({"kind": "all trials done", "params": f"elapsed {m[4]}; front trials {m[5]}", "at_s": m[1]})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    fields = ["kind", "trial", "params", "accuracy", "search_latency_ms", "search_memory_mb", "duration_s", "at_s"]
    rows = ({k: r.get(k, "") for k in fields} for r in parse((HERE / "search.log").read_text()))
    return write_or_check(HERE / "results.csv", fields, rows, check=a.check, source="search.log")


if __name__ == "__main__":
    sys.exit(main())
