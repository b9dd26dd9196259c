"""What every ``experiments/*/figures.py`` does with the figures it re-derives: write them to a
CSV next to the README, or (``--check``) compare them with the committed CSV and exit 1 when they
differ. Imported by those scripts (they put this folder on ``sys.path``)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, Iterable, Sequence


def write_or_check(path: Path, fields: Sequence[str], rows: Iterable[Dict], *, check: bool, source: str) -> int:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    if check:
        ok = path.read_text() == buf.getvalue()
        print(f"{path.name}: {'every figure re-derived' if ok else 'differs from ' + source}")
        return 0 if ok else 1
    path.write_text(buf.getvalue())
    print(buf.getvalue())
    return 0
