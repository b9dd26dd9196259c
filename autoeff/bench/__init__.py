"""Benchmarks that compare implementations side by side in one run and report ratios.

``autoeff bench attention``: every registered attention family against full attention
(see :mod:`autoeff.bench.attention`). Unit tests never check timings; benchmarks do.
"""

import csv as _csv
from pathlib import Path as _Path
from typing import Any as _Any, Dict as _Dict, Iterable as _Iterable, Sequence as _Sequence


def write_rows_csv(path: _Path, fields: _Sequence[str], rows: _Iterable[_Dict[str, _Any]]) -> None:
    """A bench's ``results.csv``: one row per result, the given columns (missing ones empty)."""
    with open(path, "w", newline="") as f:
        w = _csv.DictWriter(f, fieldnames=list(fields))
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})
