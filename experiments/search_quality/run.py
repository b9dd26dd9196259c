"""Search quality on the default study: autoeff's early stopping (before and after issue 19's
rule) against full-budget peers and Syne Tune's MOASHA, same space, same budget, same seeds.

    python experiments/search_quality/run.py --seeds 0 --jobs 2     # the study (see README.md)
    python experiments/search_quality/run.py --analyze --seeds 0    # tables and plot from the stores
    python experiments/search_quality/run.py --smoke                # a tiny end-to-end check

Arms (each one search of ``search_spaces/longseq.yaml``, one thread, its own study database):

- ``full_tpe_60``: Optuna TPE, every trial trained for the full budget, 60 minutes: the
  reference search of the targets; its first 17 minutes are the ``full_tpe`` arm;
- ``full_random`` / ``full_nsga2``: random search and NSGA-II at full budget, 17 minutes;
- ``es_before``: early stopping as it was before issue 19 (accuracy at the rungs, non-dominated
  sorting over accuracy and costs, the sampler told only PRUNED);
- ``es_after``: the study as shipped (validation loss at the rungs, learned first, the sampler
  learning from rung points);
- ``moasha``: Syne Tune's ``MOASHA`` scheduler (non-dominated priority, grace period 44 steps,
  reduction factor 3, random proposals drawn as its ``suggest`` draws them) deciding at the same rungs on the same
  points through its scheduler interface (``on_trial_add`` / ``on_trial_result`` /
  ``on_trial_complete``), over autoeff's trial function.

Budgets follow ``search.timeout_s``: a search starts no trial after its budget, and a trial counts
if it started within it (the 60-minute run cut at 17 minutes keeps the trials it started by then).
Two arms run side by side with ``--jobs 2`` (one core and one torch thread each; every
measurement waits for the other arm's training step through the machine's measurement gate).
Hypervolume: accuracy's reference at the tasks' majority class, latency and memory at 1.1 x the
worst feasible value any arm saw. Writes results.md, results.csv, trials.csv, curves.csv and
hv_vs_time.png next to this file (``--out``).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SPACE = REPO / "search_spaces" / "longseq.yaml"
BUDGET = 1020  # the default study's search.timeout_s: 17 minutes
FULL = ["search.early_stopping=null"]
BEFORE = ["search.early_stopping={rungs: [0.111, 0.333], eta: 3, signal: accuracy, learned_first: false, "
          "inform_sampler: false}"]
#: issue 19's rule: the rungs rank on the loss, learned first, TPE learning from the rung points
AFTER = ["search.early_stopping={rungs: [0.111, 0.333], eta: 3, signal: loss}"]
#: arm -> (overrides, search budget in seconds); moasha runs through its own loop (its rungs: AFTER's)
ARMS = {
    "full_tpe_60": (FULL, 3600),
    "es_after": (AFTER, BUDGET),
    "es_before": (BEFORE, BUDGET),
    "moasha": (AFTER, BUDGET),
    "full_random": (FULL + ["search.sampler=random"], BUDGET),
    "full_nsga2": (FULL + ["search.sampler=nsga2"], BUDGET),
}
#: arms in the tables: the 17-minute cut of the 60-minute run is the full-budget TPE arm
TABLE_ARMS = ["full_tpe", "full_random", "full_nsga2", "es_before", "es_after", "moasha", "full_tpe_60"]


def common(out: Path, arm: str, seed: int, budget: int, smoke: bool):
    ov = [f"search.seed={seed}", f"search.timeout_s={budget}", "train.threads=1",
          f"search.storage=sqlite:///{out / f'{arm}-s{seed}.db'}", f"search.study_name={arm}-s{seed}",
          f"search.artifacts={out / 'artifacts'}", "search.remeasure_front=false"]
    if smoke:
        ov += ["train.max_steps=18", "search.n_trials=4", "train.max_time_s=20"]
    return ov


def run_arm(out: Path, arm: str, seed: int, smoke: bool) -> float:
    over, budget = ARMS[arm]
    if smoke:
        budget = 60
    log = out / f"{arm}-s{seed}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    if arm == "moasha":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--moasha-arm", "--out", str(out), "--seeds", str(seed)]
        cmd += ["--smoke"] if smoke else []
    else:
        exe = Path(sys.executable).parent / "autoeff"
        cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "autoeff.cli"]),
               "search", "--space", str(SPACE), "--no-mlflow", *over, *common(out, arm, seed, budget, smoke)]
    print(f"[{time.strftime('%H:%M:%S')}] {arm} seed {seed}: start", flush=True)
    with open(log, "a") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=out)
    dt = time.perf_counter() - t0
    print(f"[{time.strftime('%H:%M:%S')}] {arm} seed {seed}: done in {dt / 60:.1f} min", flush=True)
    return dt


# ---- the MOASHA arm ------------------------------------------------------------------------------
def moasha_arm(out: Path, seed: int, smoke: bool) -> None:
    """Syne Tune's MOASHA over autoeff's trial function; records to ``moasha-s<seed>.jsonl``."""
    import numpy as np
    import syne_tune.config_space as cs
    from syne_tune.backend.trial_status import Trial
    from syne_tune.optimizer.scheduler import SchedulerDecision
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    from autoeff.search.multifidelity import rung_steps
    from autoeff.search.objective import measure_reference, run_trial
    from autoeff.search.space import load_space

    budget = 60 if smoke else BUDGET
    space = load_space(str(SPACE), [*ARMS["moasha"][0], *common(out, "moasha", seed, budget, smoke)])
    space.resolve_reference(measure_reference(space)["metrics"])
    names, directions = space.objective_names, space.directions
    es = space.search.early_stopping
    max_steps = space.reference_config().train.max_steps
    steps = rung_steps(max_steps, es)
    config_space = {}
    for d in space.dims:
        if d.type == "categorical":
            config_space[d.name] = cs.choice(list(d.choices))
        elif d.type == "int":
            config_space[d.name] = (cs.lograndint if d.log else cs.randint)(int(d.low), int(d.high))
        else:
            config_space[d.name] = (cs.loguniform if d.log else cs.uniform)(float(d.low), float(d.high))
    metrics = [f"m{j}" for j in range(len(names))]
    sched = MOASHA(config_space, metrics=metrics, do_minimize=True, time_attr="step",
                   max_t=max_steps, grace_period=steps[0], reduction_factor=es.eta,
                   random_seed=seed)
    # MOASHA.suggest draws from numpy's global generator, which every trial's training reseeds
    # (Lightning's seed_everything): it would propose one candidate forever. The same draw
    # (each domain's sample), from a generator of its own
    rng = np.random.RandomState(seed)

    class FromConfig:  # our conditional space, read from MOASHA's flat proposal
        def __init__(self, config):
            self.config = config

        def categorical(self, name, choices):
            return self.config[name]

        def int(self, name, low, high, *, log, step):
            return int(self.config[name])

        def float(self, name, low, high, *, log, step):
            return float(self.config[name])

    def minimized(point):
        return {m: (-v if d == "maximize" else v) for m, v, d in zip(metrics, point, directions)}

    path = out / f"moasha-s{seed}.jsonl"
    t_start = time.time()
    number = 0
    while time.time() - t_start < budget and number < (4 if smoke else 10 ** 6):
        config = {k: v.sample(random_state=rng) for k, v in config_space.items()}
        params = space.sample(FromConfig(config))
        trial = Trial(trial_id=number, config=config, creation_time=datetime.now(timezone.utc))
        sched.on_trial_add(trial)

        def judge(rung, step, point, learned=None, trial=trial):
            action = sched.on_trial_result(trial, {"step": step, **minimized(point)})
            return None if action == SchedulerDecision.CONTINUE else \
                "stopped by Syne Tune MOASHA (non-dominated priority at this rung)"

        t0 = time.time()
        rec = run_trial(space, params, number, artifacts_dir=str(out / "artifacts" / "moasha"), rung_judge=judge)
        if rec.status == "complete" and rec.values is not None:
            sched.on_trial_complete(trial, {"step": max_steps, **minimized(rec.values)})
        elif rec.status != "pruned":
            sched.on_trial_remove(trial)
        row = {"record": json.loads(json.dumps(rec.to_json(), default=float)), "start_s": t0 - t_start,
               "end_s": time.time() - t_start}
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[{time.strftime('%H:%M:%S')}] trial {number}: {rec.status} {rec.reason[:160]}", flush=True)
        number += 1


# ---- analysis ------------------------------------------------------------------------------------
def load_arm(out: Path, arm: str, seed: int):
    """[(start_s, end_s, record dict)] of one arm's trials, by completion, times from its first start."""
    if arm == "moasha":
        path = out / f"moasha-s{seed}.jsonl"
        if not path.exists():
            return None
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return sorted(((r["start_s"], r["end_s"], r["record"]) for r in rows), key=lambda r: r[1])
    src = "full_tpe_60" if arm == "full_tpe" else arm
    db = out / f"{src}-s{seed}.db"
    if not db.exists():
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=f"{src}-s{seed}", storage=f"sqlite:///{db}")
    trials = [t for t in study.trials if t.datetime_start is not None]
    if not trials:
        return []
    t0 = min(t.datetime_start for t in trials)
    rows = []
    for t in trials:
        rec = t.user_attrs.get("autoeff.record")
        if not rec or rec["status"] == "duplicate" or not t.state.is_finished():
            continue
        start = (t.datetime_start - t0).total_seconds()
        if arm == "full_tpe" and start > BUDGET:  # the 17-minute cut of the 60-minute search
            continue
        rec = {**rec, "proposed_by": t.user_attrs.get("autoeff.proposed_by", "")}
        rows.append((start, (t.datetime_complete - t0).total_seconds(), rec))
    return sorted(rows, key=lambda r: r[1])


def proposals(out: Path, arm: str, seed: int):
    """(trials the rung model proposed, re-proposals answered from a twin) of a study-based arm."""
    db = out / f"{'full_tpe_60' if arm == 'full_tpe' else arm}-s{seed}.db"
    if arm in ("moasha", "full_tpe") or not db.exists():  # full_tpe: counted once, on full_tpe_60
        return 0, 0
    import optuna

    study = optuna.load_study(study_name=db.stem, storage=f"sqlite:///{db}")
    recs = [(t, t.user_attrs.get("autoeff.record") or {}) for t in study.trials]
    return (sum(1 for t, r in recs if t.user_attrs.get("autoeff.proposed_by") and r.get("status") != "duplicate"),
            sum(1 for t, r in recs if r.get("status") == "duplicate"))


def feasible(rec) -> bool:
    return rec["status"] == "complete" and all(v <= 0 for v in rec.get("violations", []))


def shape(params) -> str:
    kinds = [params[k] for k in sorted(params) if k.startswith("attention.layers.") and k.endswith(".kind")]
    short = {"longformer": "W", "linformer": "K", "linear": "L", "reformer": "R", "full": "F"}
    return f"d{params.get('model.depth')} w{params.get('model.width')} {' '.join(short.get(k, k) for k in kinds)} " \
           f"b{params.get('compress.bits', 32)}"


def summarize(table):
    """Per arm, over the seeds it ran: the gaps to the 60-minute search and how many seeds met each target."""
    by = {(t["arm"], t["seed"]): t for t in table}
    out = []
    for a in TABLE_ARMS:
        rows = [t for t in sorted(table, key=lambda t: t["seed"]) if t["arm"] == a and ("full_tpe_60", t["seed"]) in by]
        if a == "full_tpe_60" or not rows:
            continue
        gaps = [t["best_gap_pt_vs_60min"] for t in rows]
        shares = [t["hv_vs_60min"] for t in rows]
        deep = [t["front_deep_or_hybrid"] > 0 for t in rows if by[("full_tpe_60", t["seed"])]["front_deep_or_hybrid"]]
        n = len(rows)
        out.append({"arm": a, "seeds": ",".join(str(t["seed"]) for t in rows),
                    "gap_pt_mean": sum(gaps) / n, "gap_pt_worst": min(gaps),
                    "hv_share_mean": sum(shares) / n, "hv_share_worst": min(shares),
                    "acc_target_met": f"{sum(g >= -1.0 for g in gaps)} of {n}",
                    "hv_target_met": f"{sum(x >= 0.95 for x in shares)} of {n}",
                    "deep_target_met": f"{sum(deep)} of {len(deep)}"})
    return out


def analyze(out: Path, seeds) -> None:
    from autoeff import hypervolume, pareto_mask
    from autoeff.search.space import load_space

    space = load_space(str(SPACE), check=False)
    names, directions = space.objective_names, space.directions
    runs = {(a, s): load_arm(out, a, s) for a in TABLE_ARMS for s in seeds}
    runs = {k: v for k, v in runs.items() if v is not None}
    allrecs = [r for v in runs.values() for _, _, r in v]
    maj = next(([v for k, v in r["metrics"].items() if k.startswith("majority.")] for r in allrecs
                if r["status"] == "complete" and any(k.startswith("majority.") for k in r["metrics"])), None)
    if not maj:
        raise SystemExit("no complete trial records majority.<task>: cannot place the reference point")
    feas = [[r["metrics"][k] for k in names] for r in allrecs if feasible(r)]
    ref = [sum(maj) / len(maj) if n == "accuracy" else max(p[j] for p in feas) * 1.1
           for j, (n, d) in enumerate(zip(names, directions))]

    def front(recs):
        pts = [[r["metrics"][k] for k in names] for r in recs]
        if not pts:
            return []
        return [r for r, keep in zip(recs, pareto_mask(pts, directions)) if keep]

    curves, table = {}, []
    for (a, s), rows in runs.items():
        pts, c = [], []
        for start, end, r in rows:
            if feasible(r):
                pts.append([r["metrics"][k] for k in names])
            c.append((end, hypervolume(pts, directions, ref) if pts else 0.0, r["status"]))
        curves[(a, s)] = c
        done = [r for _, _, r in rows if feasible(r)]
        fr = front(done)
        best = max((r["metrics"]["accuracy"] for r in done), default=float("nan"))
        table.append({"arm": a, "seed": s, "trials": len(rows),
                      "complete": sum(r["status"] == "complete" for _, _, r in rows),
                      "pruned": sum(r["status"] == "pruned" for _, _, r in rows),
                      "infeasible": sum(r["status"] == "infeasible" for _, _, r in rows),
                      "failed": sum(r["status"] == "failed" for _, _, r in rows),
                      "best_accuracy": best, "hypervolume": c[-1][1] if c else 0.0,
                      "front": "; ".join(f"{shape(r['params'])} {r['metrics']['accuracy']:.3f}" for r in
                                         sorted(fr, key=lambda r: -r["metrics"]["accuracy"])),
                      "front_deep_or_hybrid": sum(int(r["params"].get("model.depth", 1)) > 1 for r in fr),
                      "rung_model_proposals": proposals(out, a, s)[0], "twins": proposals(out, a, s)[1]})
    by = {(t["arm"], t["seed"]): t for t in table}
    for t in table:  # against the 60-minute full-budget search of the same seed
        ref60 = by.get(("full_tpe_60", t["seed"]))
        t["hv_vs_60min"] = t["hypervolume"] / ref60["hypervolume"] if ref60 and ref60["hypervolume"] else float("nan")
        t["best_gap_pt_vs_60min"] = 100 * (t["best_accuracy"] - ref60["best_accuracy"]) if ref60 else float("nan")

    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(sorted(table, key=lambda t: (t["seed"], TABLE_ARMS.index(t["arm"]))))
    with open(out / "trials.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seed", "number", "status", "start_s", "end_s", "shape", "cpu_time_s", *names,
                    "stopped_at_rung", "proposed_by"])
        for (a, s), rows in runs.items():
            for start, end, r in rows:
                m = r["metrics"]
                w.writerow([a, s, r["number"], r["status"], f"{start:.1f}", f"{end:.1f}", shape(r["params"]),
                            f"{m.get('cpu_time_s', 0):.1f}", *[f"{m[k]:.6g}" if k in m else "" for k in names],
                            int(m.get("stopped_at_rung", 0)), r.get("proposed_by", "")])
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arm", "seed", "end_s", "hypervolume", "status"])
        for (a, s), c in curves.items():
            for end, h, st in c:
                w.writerow([a, s, f"{end:.1f}", f"{h:.6g}", st])
    (out / "reference_point.json").write_text(json.dumps(dict(zip(names, ref)), indent=1) + "\n")

    lines = [f"Reference point: {dict(zip(names, [round(x, 4) for x in ref]))}", "",
             "| arm | seed | trials | complete | stopped | infeasible | best accuracy | vs 60 min (pt) | "
             "hypervolume | of 60 min's | depth-2 on front | front |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for t in sorted(table, key=lambda t: (t["seed"], TABLE_ARMS.index(t["arm"]))):
        lines.append(f"| {t['arm']} | {t['seed']} | {t['trials']} | {t['complete']} | {t['pruned']} | "
                     f"{t['infeasible']} | {t['best_accuracy']:.3f} | {t['best_gap_pt_vs_60min']:+.1f} | "
                     f"{t['hypervolume']:.4g} | {100 * t['hv_vs_60min']:.0f}% | {t['front_deep_or_hybrid']} | "
                     f"{t['front']} |")
        if t["rung_model_proposals"] or t["twins"]:
            notes.append(f"- {t['arm']} seed {t['seed']}: {t['rung_model_proposals']} trials proposed by the rung model, "
                         f"{t['twins']} re-proposals of tried candidates answered from their twins (not counted)")
    lines += ["", "Front: depth, width, family per layer (W Longformer, K Linformer, L linear, R Reformer, F full), "
              "weight bits, accuracy.", "", *notes]
    summary = summarize(table)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    lines += ["", "Per arm over the seeds it ran (targets: best accuracy within 1 point of the 60-minute search's, "
              "hypervolume >= 95% of its, depth-2 models on the front when its front has them):", "",
              "| arm | seeds | best accuracy vs 60 min (pt), mean | worst | hypervolume of 60 min's, mean | worst | "
              "accuracy target met | hypervolume target met | depth-2 target met |", "|---|---|---|---|---|---|---|---|---|"]
    for m in summary:
        lines.append(f"| {m['arm']} | {m['seeds']} | {m['gap_pt_mean']:+.1f} | {m['gap_pt_worst']:+.1f} | "
                     f"{100 * m['hv_share_mean']:.0f}% | {100 * m['hv_share_worst']:.0f}% | {m['acc_target_met']} | "
                     f"{m['hv_target_met']} | {m['deep_target_met']} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"full_tpe": "tab:blue", "full_random": "tab:gray", "full_nsga2": "tab:green", "es_before": "tab:red",
              "es_after": "tab:orange", "moasha": "tab:purple", "full_tpe_60": "tab:cyan"}
    shown = sorted({s for _, s in curves})
    fig, axes = plt.subplots(1, len(shown), figsize=(6.5 * len(shown), 4.6), squeeze=False, sharey=True)
    for ax, seed in zip(axes[0], shown):
        for a in TABLE_ARMS:
            c = curves.get((a, seed))
            if a == "full_tpe" or not c:  # the 60-minute curve shows it
                continue
            xs = [0.0] + [p[0] / 60 for p in c]
            ys = [0.0] + [p[1] for p in c]
            ax.step(xs, ys, where="post", color=colors[a], label=a, linewidth=1.6)
        ax.axvline(BUDGET / 60, color="k", linewidth=0.8, linestyle=":")
        ax.set_xlabel("search time (min; one thread, two searches side by side)")
        ax.set_title(f"seed {seed}")
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("hypervolume of the feasible front so far")
    fig.suptitle("Search quality, longseq.yaml (dotted: the 17-minute budget)")
    fig.tight_layout()
    fig.savefig(out / "hv_vs_time.png", dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms to run")
    p.add_argument("--jobs", type=int, default=2, help="arms run side by side")
    p.add_argument("--plan", default="", help="arm:seed,... in this order (default: every arm of every seed)")
    p.add_argument("--out", default=str(HERE))
    p.add_argument("--analyze", action="store_true", help="only tables and plot from the stores")
    p.add_argument("--smoke", action="store_true", help="tiny budgets, into a temporary folder")
    p.add_argument("--moasha-arm", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    seeds = [int(s) for s in a.seeds.split(",")]
    out = Path(a.out)
    if a.smoke and a.out == str(HERE):
        out = Path("/tmp/autoeff-search-quality-smoke")
    out.mkdir(parents=True, exist_ok=True)
    if a.moasha_arm:
        moasha_arm(out, seeds[0], a.smoke)
        return 0
    if not a.analyze:
        jobs = [(j.split(":")[0], int(j.split(":")[1])) for j in a.plan.split(",")] if a.plan else \
            [(arm, s) for s in seeds for arm in a.arms.split(",")]
        with cf.ThreadPoolExecutor(max_workers=a.jobs) as pool:
            for fut in [pool.submit(run_arm, out, arm, s, a.smoke) for arm, s in jobs]:
                fut.result()
    analyze(out, seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
