"""Every figure experiments/oneshot/README.md quotes that a committed file holds, re-derived into
``figures.csv``: ``results.json`` (2026-12-02: the default study against one-shot),
``results-2026-12-01.json`` (one-shot against standalone, and the rank check whose Kendall tau is
the search's own supernet's) and ``proxy.json`` (five proxies on the supernet proxy.py trains).

    python experiments/oneshot/figures.py           # rewrite figures.csv
    python experiments/oneshot/figures.py --check   # exit 1 if figures.csv disagrees

Counts that only the study databases under work/ hold (candidates per status, proxies at the
majority class, latencies of candidates not on a front) are not re-derivable: the README says so.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from figures_csv import write_or_check  # noqa: E402


def hv_at(curve, minutes):
    v = 0.0
    for m, hv in curve:
        if m <= minutes:
            v = hv
    return v


def figures():
    out = []
    add = lambda run, name, value: out.append({"run": run, "figure": name, "value": value})  # noqa: E731
    for run, path in (("2026-12-02", "results.json"), ("2026-12-01", "results-2026-12-01.json")):
        r = json.loads((HERE / path).read_text())
        add(run, "reference point (accuracy, latency_ms, peak_memory_mb)", ", ".join(f"{v:.4g}" for v in r["reference_point"]))
        for b in r.get("latency_bounds", []):
            add(run, "latency budget ms (0.5 x the reference model)", f"{b:.2f}")
        for name, curve in r["curves"].items():
            t = r["timing"][name]
            add(run, f"{name}: wall time min", f"{(t['end'] - t['start']) / 60:.1f}")
            add(run, f"{name}: real trials", len(curve))
            for m in (20, 40, 60):
                add(run, f"{name}: HV at {m} min", f"{hv_at(curve, m):.4g}")
            add(run, f"{name}: final HV", f"{curve[-1][1]:.4g}")
            front = r["fronts"].get(name, [])
            best = max(front, key=lambda p: p["accuracy"])
            add(run, f"{name}: front points", len(front))
            add(run, f"{name}: best front accuracy", f"{best['accuracy']:.4g} ({best['arch']}; listops "
                f"{best['accuracy.listops']:.4g}, text {best['accuracy.text']:.4g})")
        if run == "2026-12-02":
            end_os = (r["timing"]["oneshot"]["end"] - r["timing"]["oneshot"]["start"]) / 60
            add(run, "default: HV when one-shot ended", f"{hv_at(r['curves']['default'], end_os):.4g}")
            add(run, "default: minutes of its last three HV gains",
                ", ".join(f"{m:.1f}" for m, _ in r["curves"]["default"][3:6]))
        if r.get("rank_check"):
            rc = r["rank_check"]
            add(run, "rank check: subnets", len(rc))
            add(run, "rank check: Kendall tau (the search's own supernet; proxy_kendall_tau)", f"{r['kendall_tau']:.3f}")
            mode = max({x["proxy"] for x in rc}, key=lambda v: sum(x["proxy"] == v for x in rc))
            add(run, "rank check: proxies at the most common value", f"{sum(x['proxy'] == mode for x in rc)} at {mode:.3f}")
            add(run, "rank check: real accuracy of those", ", ".join(sorted({f"{x['real']:.3f}" for x in rc if x['proxy'] == mode})))
    p = json.loads((HERE / "proxy.json").read_text())
    add("proxy.py", "supernet overrides", " ".join(p["overrides"]))
    add("proxy.py", "supernet steps", int(p["supernet"]["supernet_steps"]))
    add("proxy.py", "supernet wall s", f"{p['supernet_wall_s']:.0f}")
    for q in p["proxies"]:
        add("proxy.py", f"{q['proxy']}: Kendall tau", f"{q['kendall_tau']:.3f}")
        add("proxy.py", f"{q['proxy']}: Spearman rho", f"{q['spearman_rho']:.3f}")
        add("proxy.py", f"{q['proxy']}: distinct values", f"{q['distinct_values']} of {len(p['subnets'])}")
        add("proxy.py", f"{q['proxy']}: s per candidate", f"{q['seconds_per_candidate']:.2f}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    return write_or_check(HERE / "figures.csv", ["run", "figure", "value"], figures(), check=a.check,
                          source="the result files")


if __name__ == "__main__":
    sys.exit(main())
