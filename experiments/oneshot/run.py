"""Standalone against one-shot search on the default long-sequence space, at equal CPU time.

    python experiments/oneshot/run.py all        # every phase in order (several hours on 2 cores)
    python experiments/oneshot/run.py oneshot    # or one phase at a time: default, oneshot,
                                                 # standalone, rankcheck, ablation, report

Phases (each writes into experiments/oneshot/work/<phase>/, and skips what is already done):

* ``default``: the default study as `make search` runs it (`autoeff search --space
  search_spaces/longseq.yaml`: standalone, multi-objective early stopping, 17 minutes), timed.
* ``oneshot``: the same study one-shot (`search_spaces/longseq_oneshot.yaml`), timed.
* ``standalone``: the default space without early stopping (TPE), every candidate trained for
  the space's full budget, for ``--standalone-minutes`` (default 60) of wall time.
* ``rankcheck``: a copy of the one-shot study resumed with ``oneshot.rank_check=N`` (default
  12): N proxy candidates spanning the families and the proxy accuracies are trained from
  scratch; the Kendall tau between their proxy and real accuracies is logged on the parent run
  (``proxy_kendall_tau``).
* ``ablation``: supernets trained with another recipe at about the same compute (no in-place
  distillation; one uniformly sampled subnet per step instead of the sandwich, for as many
  steps as the sandwich has subnet passes), and the same N candidates' proxy accuracies under
  each: how the recipe changes the ranking.
* ``report``: hypervolume of the real-accuracy front against wall time for both strategies
  (one reference point for both: accuracy at the majority-class mean, latency at the space's
  constraint, memory 1.1x the largest feasible footprint seen), which families and hybrids each
  front holds, the Kendall taus; writes results.json, hv_vs_time.png and the results section of
  README.md.

Wall time on the otherwise idle 2-core machine is the CPU time here: every phase uses both
cores, one process at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = HERE / "work"
SPACE = REPO / "search_spaces" / "longseq.yaml"
ONESHOT = REPO / "search_spaces" / "longseq_oneshot.yaml"
#: phase -> (space file, study name)
STUDIES = {"default": (SPACE, "longseq"), "oneshot": (ONESHOT, "longseq_oneshot"), "standalone": (SPACE, "longseq")}
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _autoeff(args: List[str], cwd: Path, log: Path) -> float:
    cwd.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ autoeff {' '.join(args)}\n")
        f.flush()
        r = subprocess.run([sys.executable, "-m", "autoeff.cli", *args], cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                           env={**os.environ, "CI": "1"})
    if r.returncode != 0:
        raise SystemExit(f"autoeff {' '.join(args)} failed ({r.returncode}); see {log}")
    return time.time() - t0


def _timing() -> Dict[str, Any]:
    p = WORK / "timing.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _save_timing(t: Dict[str, Any]) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "timing.json").write_text(json.dumps(t, indent=1))


def _timed_search(name: str, extra: List[str]) -> None:
    t = _timing()
    if name in t:
        print(f"{name}: done already")
        return
    start = time.time()
    secs = _autoeff(["search", "--space", str(STUDIES[name][0]), *extra], WORK / name, WORK / f"{name}.log")
    t[name] = {"start": start, "end": start + secs, "seconds": secs}
    _save_timing(t)
    print(f"{name}: {secs / 60:.1f} min")


def phase_default(args) -> None:
    _timed_search("default", [])


def phase_oneshot(args) -> None:
    _timed_search("oneshot", [])


def phase_standalone(args) -> None:
    _timed_search("standalone", ["search.early_stopping=null", "search.n_trials=10000",
                                 f"search.timeout_s={args.standalone_minutes * 60}", "search.startup_trials=8"])


def phase_rankcheck(args) -> None:
    dst = WORK / "rankcheck"
    t = _timing()
    if "rankcheck" in t:
        print("rankcheck: done already")
        return
    if not dst.exists():
        shutil.copytree(WORK / "oneshot", dst)
    secs = _autoeff(["search", "--space", str(ONESHOT), f"oneshot.rank_check={args.rank_check}"], dst,
                    WORK / "rankcheck.log")
    t["rankcheck"] = {"seconds": secs}
    _save_timing(t)


def _rank_records():
    """The rank-check trials of the resumed one-shot study: (params, proxy accuracy, real accuracy, label)."""
    import optuna

    from autoeff.tracking.tables import arch_summary
    from autoeff import TrialRecord

    study = optuna.load_study(study_name="longseq_oneshot", storage=f"sqlite:///{WORK / 'rankcheck' / 'autoeff.db'}")
    out = []
    for ft in study.trials:
        rec = ft.user_attrs.get("autoeff.record") or {}
        m = rec.get("metrics", {})
        if rec.get("status") == "complete" and "rank_check_of" in m:
            r = TrialRecord.from_json(rec)
            out.append({"trial": r.number, "params": r.params, "proxy": m["proxy_accuracy"], "real": m["accuracy"],
                        "arch": arch_summary(r), **{k: v for k, v in m.items() if k.startswith("accuracy.")}})
    return out


def _ablations(space) -> Dict[str, List[str]]:
    """Other supernet recipes at about the same compute (subnet passes) as the default one."""
    o = space.oneshot
    return {
        "no_distill": ["oneshot.distill=false"],
        "uniform": ["oneshot.sandwich=[random]", "oneshot.distill=false", f"oneshot.steps={o.steps * len(o.sandwich)}"],
    }


def phase_ablation(args) -> None:
    from autoeff.search.oneshot import OneShot
    from autoeff import load_space
    from autoeff.search.strategy import kendall_tau

    t = _timing()
    ranked = _rank_records()
    results = t.get("ablation", {})
    for name, ov in _ablations(load_space(ONESHOT)).items():
        if name in results:
            continue
        folder = WORK / f"ablation-{name}"
        space = load_space(ONESHOT, [*ov, f"search.artifacts={folder}"])
        strat = OneShot(space)
        stats = strat.prepare(print, str(folder))
        proxies = [strat.proxy_accuracy(space.materialize(r["params"]))["proxy_accuracy"] for r in ranked]
        results[name] = {"overrides": ov, "stats": stats, "proxy": proxies,
                         "tau": kendall_tau(proxies, [r["real"] for r in ranked])}
        t["ablation"] = results
        _save_timing(t)
        print(f"ablation {name}: tau {results[name]['tau']}")


def _hv_curve(db: Path, study: str, start: float, end: float, ref, directions):
    """(minutes, hypervolume) after each real (complete, feasible) trial that finished by ``end``."""
    import optuna

    from autoeff import hypervolume

    st = optuna.load_study(study_name=study, storage=f"sqlite:///{db}")
    done = []
    for ft in st.trials:
        rec = ft.user_attrs.get("autoeff.record") or {}
        if rec.get("status") != "complete" or ft.datetime_complete is None or "rank_check_of" in rec.get("metrics", {}):
            continue
        if any(v > 0 for v in rec.get("violations", [])):
            continue
        tc = ft.datetime_complete.timestamp()
        if tc <= end + 1:
            done.append((tc, rec))
    done.sort(key=lambda x: x[0])
    curve, pts = [], []
    for tc, rec in done:
        pts.append(rec["values"])
        curve.append(((tc - start) / 60, hypervolume(pts, directions, ref)))
    return curve, [r for _, r in done]


def phase_report(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autoeff import TrialRecord, hypervolume, load_space, pareto_mask
    from autoeff.tracking.tables import arch_summary

    t = _timing()
    space = load_space(SPACE, check=False)
    dirs = space.directions
    runs = {}
    for name in STUDIES:
        if name in t:
            runs[name] = (WORK / name / "autoeff.db", t[name]["start"], t[name]["end"])
    # one reference point for all: accuracy at the majority-class mean, latency at the constraint
    # (relative: the largest bound any of the studies measured)
    import optuna

    recs_all = []
    majority = None
    bounds = []
    for name, (db, _, _) in runs.items():
        st = optuna.load_study(study_name=STUDIES[name][1], storage=f"sqlite:///{db}")
        ref_model = st.user_attrs.get("autoeff.reference")
        for c in space.constraints:
            if c.metric == "latency_ms":
                bounds.append(c.bound if c.factor is None else c.factor * ref_model["metrics"]["latency_ms"])
        for ft in st.trials:
            rec = ft.user_attrs.get("autoeff.record") or {}
            if rec.get("status") == "complete" and not any(v > 0 for v in rec.get("violations", [])):
                recs_all.append(rec)
                maj = [v for k, v in rec["metrics"].items() if k.startswith("majority.")]
                if maj:
                    majority = sum(maj) / len(maj)
    lat_bound = max(bounds) if bounds else None
    ref = []
    for i, o in enumerate(space.objectives):
        col = [r["values"][i] for r in recs_all] or [1.0]
        if o.name == "accuracy":
            ref.append(majority or 0.0)
        elif o.name == "latency_ms" and lat_bound:
            ref.append(lat_bound)
        else:
            ref.append(max(col) * 1.1 if o.direction == "minimize" else min(col) * 0.9)
    curves, fronts = {}, {}
    for name, (db, start, end) in runs.items():
        curve, done = _hv_curve(db, STUDIES[name][1], start, end, ref, dirs)
        curves[name] = curve
        if done:
            mask = pareto_mask([r["values"] for r in done], dirs)
            fronts[name] = [{"trial": r["number"], "arch": arch_summary(TrialRecord.from_json(r)),
                             **{o.name: r["metrics"].get(o.name) for o in space.objectives},
                             "proxy_accuracy": r["metrics"].get("proxy_accuracy"),
                             **{k: v for k, v in r["metrics"].items() if k.startswith("accuracy.")}}
                            for r, m in zip(done, mask) if m]
    ranked = _rank_records() if (WORK / "rankcheck" / "autoeff.db").exists() else []
    from autoeff.search.strategy import kendall_tau

    tau = kendall_tau([r["proxy"] for r in ranked], [r["real"] for r in ranked]) if ranked else None
    result = {"reference_point": ref, "latency_bounds": bounds, "objectives": space.objective_names, "timing": t,
              "curves": curves,
              "fronts": fronts, "rank_check": ranked, "kendall_tau": tau, "ablation": t.get("ablation", {})}
    (HERE / "results.json").write_text(json.dumps(result, indent=1, default=str))

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, curve in curves.items():
        if curve:
            xs = [0.0] + [c[0] for c in curve]
            ys = [0.0] + [c[1] for c in curve]
            end = (runs[name][2] - runs[name][1]) / 60
            ax.step(xs + [end], ys + [ys[-1]], where="post", label=f"{name} ({end:.0f} min)", lw=2)
    ax.set_xlabel("wall time on 2 CPU cores (minutes)")
    ax.set_ylabel("hypervolume of the real-accuracy front")
    ax.set_title("longseq: the default (early stopping), one-shot, standalone search")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "hv_vs_time.png", dpi=120)
    plt.close(fig)
    if ranked:
        fig, ax = plt.subplots(figsize=(5, 4.2))
        ax.scatter([r["proxy"] for r in ranked], [r["real"] for r in ranked])
        for r in ranked:
            ax.annotate(r["arch"].split(" ")[0][:28], (r["proxy"], r["real"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xlabel("proxy accuracy (inherited supernet weights)")
        ax.set_ylabel("accuracy trained from scratch")
        ax.set_title(f"rank check: Kendall tau {tau:.2f} over {len(ranked)} subnets" if tau is not None else "rank check")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(HERE / "rank_check.png", dpi=120)
        plt.close(fig)
    _write_readme(result, runs)
    print(json.dumps({"kendall_tau": tau, "final_hv": {k: (v[-1][1] if v else 0.0) for k, v in curves.items()}}))


def _hv_at(curve, minutes: float) -> float:
    v = 0.0
    for m, hv in curve:
        if m <= minutes:
            v = hv
    return v


def _write_readme(result, runs) -> None:
    lines = []
    t = result["timing"]
    lines.append(f"Reference point (accuracy, latency_ms, peak_memory_mb): "
                 f"{', '.join(f'{v:.4g}' for v in result['reference_point'])}.")
    lines.append("")
    lines.append("| strategy | wall time | real trials | HV at 20 min | HV at 40 min | HV at 60 min | final HV |")
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, curve in result["curves"].items():
        mins = (runs[name][2] - runs[name][1]) / 60
        lines.append(f"| {name} | {mins:.1f} min | {len(curve)} | {_hv_at(curve, 20):.4g} | {_hv_at(curve, 40):.4g} | "
                     f"{_hv_at(curve, 60):.4g} | {(curve[-1][1] if curve else 0):.4g} |")
    lines += ["", "![hypervolume against wall time](hv_vs_time.png)", ""]
    for name, front in result["fronts"].items():
        lines.append(f"**{name} front** ({len(front)} points):")
        lines.append("")
        cols = [c for c in front[0] if c not in ("trial",)] if front else []
        lines.append("| trial | " + " | ".join(cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for row in front:
            lines.append(f"| {row['trial']} | " + " | ".join(
                f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols) + " |")
        lines.append("")
    if result["rank_check"]:
        lines.append(f"**Rank check** ({len(result['rank_check'])} subnets, trained from scratch for the space's "
                     f"budget): Kendall tau between proxy and real accuracy = **{result['kendall_tau']:.3f}**.")
        lines.append("")
        lines.append("| trial | architecture | proxy accuracy | real accuracy |")
        lines.append("|---|---|---|---|")
        for r in sorted(result["rank_check"], key=lambda r: -r["proxy"]):
            lines.append(f"| {r['trial']} | {r['arch']} | {r['proxy']:.3f} | {r['real']:.3f} |")
        lines += ["", "![rank check](rank_check.png)", ""]
    if result["ablation"]:
        lines.append("**Supernet recipe** (same wall time, same rank-check subnets):")
        lines.append("")
        lines.append("| recipe | supernet steps | Kendall tau |")
        lines.append("|---|---:|---:|")
        lines.append(f"| sandwich + in-place distillation (default) | - | "
                     f"{result['kendall_tau'] if result['kendall_tau'] is None else round(result['kendall_tau'], 3)} |")
        for name, a in result["ablation"].items():
            tau = a["tau"]
            lines.append(f"| {name} ({', '.join(a['overrides'])}) | {int(a['stats'].get('supernet_steps', 0))} | "
                         f"{'n/a' if tau is None else f'{tau:.3f}'} |")
        lines.append("")
    readme = HERE / "README.md"
    text = readme.read_text() if readme.exists() else ""
    block = BEGIN + "\n" + "\n".join(lines) + "\n" + END
    if BEGIN in text and END in text:
        text = text.split(BEGIN)[0] + block + text.split(END, 1)[1]
    else:
        text += "\n" + block + "\n"
    readme.write_text(text)


PHASES = {"default": phase_default, "oneshot": phase_oneshot, "standalone": phase_standalone, "rankcheck": phase_rankcheck,
          "ablation": phase_ablation, "report": phase_report}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=[*PHASES, "all"])
    p.add_argument("--standalone-minutes", type=float, default=60)
    p.add_argument("--rank-check", type=int, default=12)
    args = p.parse_args()
    for name in (PHASES if args.phase == "all" else [args.phase]):
        PHASES[name](args)


if __name__ == "__main__":
    main()
