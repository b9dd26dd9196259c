"""The figures that experiments/attention_bench/README.md quotes in its prose (below the generated
results section), re-derived from the committed ``results.json`` (the recorded run) into
``figures.csv``. The generated section itself is results.md, written by the bench from the same
file.

    python experiments/attention_bench/figures.py           # rewrite figures.csv
    python experiments/attention_bench/figures.py --check   # exit 1 if figures.csv disagrees
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from figures_csv import write_or_check  # noqa: E402
FAMILIES = ("linformer", "longformer", "reformer", "linear")


def _row(rows, variant, n):
    return next((r for r in rows if r["variant"] == variant and r["N"] == n), None)


def _range(vals, fmt="{:.2f}"):
    vals = [v for v in vals if v is not None]
    return f"{fmt.format(min(vals))}-{fmt.format(max(vals))}" if vals else "n/a"


def figures(d):
    rows, out = d["rows"], []
    add = lambda name, value: out.append({"figure": name, "value": value})  # noqa: E731
    add("run date", d["meta"]["date"])
    tg = d["targets"]
    add("targets met", sum(t["met"] is True for t in tg))
    add("targets missed", sum(t["met"] is False for t in tg))
    add("targets not measurable (n/a)", sum(t["met"] is None for t in tg))
    for t in tg:
        v = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        add(f"{t['variant']}: {t['what']} {t['target']}", f"{v} ({'n/a' if t['met'] is None else 'met' if t['met'] else 'missed'})")
    others = [v for v in d["meta"]["variants"] if v != "full"]
    for n in (1024, 4096, 8192):
        sp = {v: (_row(rows, v, n) or {}).get("fwd_speedup") for v in others}
        add(f"forward speed-up at N={n}, all variants", _range(sp.values(), "{:.1f}"))
        add(f"forward speed-up at N={n}, the four target families", _range([sp[f] for f in FAMILIES], "{:.1f}"))
        for v in others:
            add(f"{v}: forward speed-up at N={n}", "n/a" if sp[v] is None else f"{sp[v]:.1f}")
    for n in (4096,):
        fm = {v: (_row(rows, v, n) or {}).get("fwd_mem_ratio") for v in others}
        fb = {v: (_row(rows, v, n) or {}).get("fb_mem_ratio") for v in others}
        add(f"forward memory ratio to full at N={n}, all variants", _range(fm.values()))
        add(f"fwd+bwd memory ratio to full at N={n}, all variants", _range(fb.values()))
        for v in others:
            add(f"{v}: forward memory ratio at N={n}", f"{fm[v]:.2f}")
            add(f"{v}: fwd+bwd memory ratio at N={n}", f"{fb[v]:.2f}")
            add(f"{v}: fwd+bwd speed-up at N={n}", f"{(_row(rows, v, n) or {}).get('fb_speedup'):.1f}")
    add("full: forward peak MB at N=4096", f"{_row(rows, 'full', 4096)['fwd_mem_mb']:.1f}")
    add("linformer: forward peak MB at N=4096", f"{_row(rows, 'linformer', 4096)['fwd_mem_mb']:.1f}")
    syn = [(_row(rows, "synthesizer", n) or {}).get("fwd_speedup") for n in d["meta"]["lengths"]]
    add("synthesizer: forward speed-up over the measured N", _range(syn, "{:.1f}"))
    add("linear: forward memory slope 4K-16K", f"{d['slopes']['linear']['fwd_mem_slope']['slope']:.2f}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    return write_or_check(HERE / "figures.csv", ["figure", "value"],
                          figures(json.loads((HERE / "results.json").read_text())), check=a.check, source="results.json")


if __name__ == "__main__":
    sys.exit(main())
