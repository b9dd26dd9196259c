"""Full-budget trials vs multi-objective early stopping: hypervolume of the front reached as a
function of CPU time, on the same space, over several seeds.

    python experiments/early_stopping/run.py                  # the study (see README.md)
    python experiments/early_stopping/run.py --smoke          # a tiny end-to-end check

Each (mode, seed) is one `autoeff search` (Optuna backend, one trial at a time, no MLflow, no
re-measurement, so every figure is the one the search saw when it happened) in its own study
database under ``--out``; a search that already finished is not run again (re-running resumes).
The analysis orders each search's trials by completion, charges each its CPU time (the
trial process's CPU time over all threads, ``cpu_time_s``), and after each trial computes the
hypervolume of the front so far, against one reference point for all runs (accuracy at the
tasks' mean majority-class validation accuracy, as experiments/oneshot does, so a model at
chance earns no volume; 1.1 x the worst latency and memory any run saw on a feasible trial).
Writes ``results.md``, ``results.csv`` (the table), ``curves.csv``, ``trials.csv`` (every
trial's objective values and CPU time: enough to recompute any hypervolume without the study
databases) and ``hv_vs_cpu.png`` to ``--out``; commit those next to the README.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def autoeff_cmd():
    exe = Path(sys.executable).parent / "autoeff"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "autoeff.cli"]


def run_one(space, out: Path, mode: str, seed: int, n: int, rungs: str, eta: float, extra) -> float:
    db = out / f"{mode}-s{seed}.db"
    args = autoeff_cmd() + ["search", "--space", str(space), "--no-mlflow", "--quiet", f"search.seed={seed}",
                            f"search.n_trials={n}", f"search.storage=sqlite:///{db}", f"search.study_name={mode}-s{seed}",
                            f"search.artifacts={out / 'artifacts'}", "search.remeasure_front=false", *extra]
    if mode == "es":
        args.append(f"search.early_stopping={{rungs: {rungs}, eta: {eta}}}")
    t0 = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {mode} seed {seed}: {n} trials", flush=True)
    with open(out / f"{mode}-s{seed}.log", "a") as log:
        subprocess.run(args, check=True, stdout=log, stderr=log, cwd=out)
    return time.perf_counter() - t0


def load(out: Path, mode: str, seed: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=f"{mode}-s{seed}", storage=f"sqlite:///{out / f'{mode}-s{seed}.db'}")
    rows = []
    for t in study.trials:
        rec = t.user_attrs.get("autoeff.record")
        if not rec or rec["status"] == "duplicate" or not t.state.is_finished():
            continue
        rows.append((t.datetime_complete, rec))
    rows.sort(key=lambda r: r[0])
    return [r for _, r in rows]


def majority_reference(recs) -> float:
    """The tasks' mean majority-class validation accuracy (``majority.<task>`` of a complete
    trial; the accuracy objective is the mean over the tasks): the accuracy of the reference
    point, so that a model at chance adds no hypervolume."""
    for r in recs:
        maj = [v for k, v in r.get("metrics", {}).items() if k.startswith("majority.")]
        if r.get("status") == "complete" and maj:
            return sum(maj) / len(maj)
    raise SystemExit("no complete trial records majority.<task>: cannot place the reference point")


def curve(recs, names, directions, ref):
    """[(cumulative CPU s, hypervolume of the front so far, status)] after each trial."""
    from autoeff import hypervolume

    pts, out, cpu = [], [], 0.0
    for r in recs:
        cpu += float(r["metrics"].get("cpu_time_s", 0.0))
        if r["status"] == "complete" and all(v <= 0 for v in r.get("violations", [])):
            pts.append([r["metrics"][k] for k in names])
        out.append((cpu, hypervolume(pts, directions, ref) if pts else 0.0, r["status"]))
    return out


def hv_at(c, t):
    """Hypervolume reached by CPU time ``t`` (a step function)."""
    hv = 0.0
    for cpu, h, _ in c:
        if cpu <= t + 1e-9:
            hv = h
    return hv


def first_reach(c, target):
    for cpu, h, _ in c:
        if h >= target - 1e-12:
            return cpu
    return None


def analyze(out: Path, seeds, space_file):
    from autoeff import load_space

    space = load_space(space_file, check=False)
    names, directions = space.objective_names, space.directions
    runs = {(m, s): load(out, m, s) for m in ("full", "es") for s in seeds}
    feas = [[r["metrics"][k] for k in names] for recs in runs.values() for r in recs
            if r["status"] == "complete" and all(v <= 0 for v in r.get("violations", []))]
    majority = majority_reference([r for recs in runs.values() for r in recs])
    ref = []
    for j, (n, d) in enumerate(zip(names, directions)):
        col = [p[j] for p in feas] or [0.0]
        if n == "accuracy":
            ref.append(majority)
        else:
            ref.append(min(col) * 0.9 if d == "maximize" else max(col) * 1.1)
    curves = {k: curve(v, names, directions, ref) for k, v in runs.items()}

    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mode", "seed", "trial_order", "number", "status", "feasible", "cpu_time_s", *names])
        for (m, s), recs in runs.items():
            for i, r in enumerate(recs):
                feasible = all(v <= 0 for v in r.get("violations", []))
                w.writerow([m, s, i, r.get("number"), r["status"], int(feasible),
                            f"{float(r['metrics'].get('cpu_time_s', 0.0)):.2f}",
                            *[f"{r['metrics'][k]:.6g}" if k in r["metrics"] else "" for k in names]])

    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["mode", "seed", "trial_order", "cpu_s", "hypervolume", "status"])
        for (m, s), c in curves.items():
            for i, (cpu, h, st) in enumerate(c):
                w.writerow([m, s, i, f"{cpu:.2f}", f"{h:.6g}", st])

    lines = [f"Reference point: {dict(zip(names, [round(x, 4) for x in ref]))}", "",
             "| seed | full: trials | full: CPU s | full: final HV | ES: trials (pruned) | ES: CPU s | "
             "ES: HV at full's CPU / 2 | ES: HV at full's CPU | ES reaches full's final HV at CPU s | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    ratios, table = [], []
    for s in seeds:
        cf, ce = curves[("full", s)], curves[("es", s)]
        t_full, hv_full = (cf[-1][0], cf[-1][1]) if cf else (0.0, 0.0)
        reach = first_reach(ce, hv_full) if hv_full > 0 else None
        ratio = reach / t_full if reach is not None and t_full else None
        ratios.append(ratio)
        n_pruned = sum(st == "pruned" for _, _, st in ce)
        table.append({"seed": s, "full_trials": len(cf), "full_cpu_s": round(t_full, 2), "full_final_hv": hv_full,
                      "es_trials": len(ce), "es_pruned": n_pruned, "es_cpu_s": round(ce[-1][0] if ce else 0.0, 2),
                      "es_hv_at_half_full_cpu": hv_at(ce, t_full / 2), "es_hv_at_full_cpu": hv_at(ce, t_full),
                      "es_reaches_full_final_hv_at_cpu_s": "" if reach is None else round(reach, 2),
                      "ratio": "" if ratio is None else ratio})
        lines.append(f"| {s} | {len(cf)} | {t_full:.0f} | {hv_full:.4g} | {len(ce)} ({n_pruned}) | "
                     f"{ce[-1][0] if ce else 0:.0f} | {hv_at(ce, t_full / 2):.4g} | {hv_at(ce, t_full):.4g} | "
                     f"{'not reached' if reach is None else f'{reach:.0f}'} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}'} |")
    ok = [r for r in ratios if r is not None]
    lines += ["", f"Early stopping reached the full-budget search's final hypervolume in "
                  f"{len(ok)} of {len(seeds)} seeds; CPU-time ratio (lower is better, target <= 0.5): "
                  + (", ".join(f"{r:.2f}" for r in ok) if ok else "none")
                  + (f"; median {sorted(ok)[len(ok) // 2]:.2f}" if ok else "")]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]) if table else ["seed"])
        w.writeheader()
        w.writerows(table)
    (out / "reference_point.json").write_text(json.dumps(dict(zip(names, ref)), indent=1) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (m, s), c in curves.items():
        if not c:
            continue
        xs = [0.0] + [p[0] for p in c]
        ys = [0.0] + [p[1] for p in c]
        ax.step(xs, ys, where="post", color="tab:blue" if m == "full" else "tab:orange", alpha=0.8,
                linestyle=("-", "--", ":")[s % 3], label=f"{'full budget' if m == 'full' else 'early stopping'} (seed {s})")
    ax.set_xlabel("CPU time (s, cumulative over trials)")
    ax.set_ylabel("hypervolume of the front so far")
    ax.set_title("Full-budget trials vs multi-objective early stopping")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "hv_vs_cpu.png", dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default=str(HERE / "space.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--full-trials", type=int, default=20)
    p.add_argument("--es-trials", type=int, default=60, help="early-stopping trials (pruned ones are cheap)")
    p.add_argument("--rungs", default="[0.111, 0.333]")
    p.add_argument("--eta", type=float, default=3.0)
    p.add_argument("--out", default=str(HERE / "runs"))
    p.add_argument("--smoke", action="store_true", help="the smoke space, 1 seed, a few trials: checks the pipeline")
    p.add_argument("--analyze-only", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every search (e.g. train.threads=1 to run seeds side by side)")
    a = p.parse_args(argv)
    extra = list(a.set)
    if a.smoke:
        a.space, a.seeds, a.full_trials, a.es_trials = str(REPO / "search_spaces" / "smoke.yaml"), [0], 4, 8
        a.out = str(HERE / "smoke-runs") if a.out == str(HERE / "runs") else a.out
        extra += ["train.max_steps=18", "search.sampler=random"]
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AUTOEFF_CACHE", str(out / "cache"))
    if not a.analyze_only:
        walls = {}
        for s in a.seeds:
            for mode, n in (("full", a.full_trials), ("es", a.es_trials)):
                walls[f"{mode}-s{s}"] = run_one(a.space, out, mode, s, n, a.rungs, a.eta, extra)
        (out / f"wall_times-s{'-'.join(map(str, a.seeds))}.json").write_text(json.dumps(walls, indent=1))
    analyze(out, a.seeds, a.space)
    return 0


if __name__ == "__main__":
    sys.exit(main())
