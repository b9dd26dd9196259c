"""Per-trial overhead of each backend: everything but training, evaluation and measurement, as a
share of a trial's time, for trials of about a minute.

    python experiments/backends/overhead.py              # both backends (see README.md)
    python experiments/backends/overhead.py --smoke      # a tiny end-to-end check

Each backend runs the same space (``overhead.yaml``: trials train for ``train.max_time_s``) one
trial at a time: the Optuna backend in its process, the Ray backend on a local Ray instance with
one trial at a time holding every CPU (so both train with the same thread count), MLflow on.
A trial's *cycle* is the time from its start (the study's ``datetime_start``, set when the
backend claims it) to the next trial's start: it includes claiming, sampling, scheduling (Ray:
placing the trial on an actor), building, training, evaluating, measuring, saving, telling
Optuna and logging to MLflow. Its *work* is ``train_time_s + eval_time_s + measure_time_s``;
*overhead* = cycle - work. The last trial has no next start and is left out; the first trial
(which pays the torch/Lightning import, and with Ray the actor's start) is reported on its own,
as are start-up (process start to first trial) and wind-down (last trial to exit).
"""
from __future__ import annotations

import argparse
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


def run(backend: str, space: str, out: Path, n: int, extra):
    db = out / f"{backend}.db"
    cpus = os.cpu_count() or 1
    args = autoeff_cmd() + ["search", "--space", space, "--backend", backend, f"search.n_trials={n}",
                            f"search.storage=sqlite:///{db}", f"search.mlflow_uri=sqlite:///{out / (backend + '-mlflow.db')}",
                            f"search.artifacts={out / (backend + '-artifacts')}", f"search.study_name={backend}",
                            f"search.ray.cpus_per_trial={cpus}", "search.ray.max_concurrent=1", *extra]
    print(f"[{time.strftime('%H:%M:%S')}] {backend}: {n} trials", flush=True)
    t0 = time.time()
    with open(out / f"{backend}.log", "w") as log:
        subprocess.run(args, check=True, stdout=log, stderr=log, cwd=out)
    return t0, time.time()


def summarize(backend: str, out: Path, t0: float, t1: float):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=backend, storage=f"sqlite:///{out / (backend + '.db')}")
    trials = sorted([t for t in study.trials if t.state.is_finished()], key=lambda t: t.datetime_start)
    rows = []
    for a, b in zip(trials, trials[1:]):
        m = a.user_attrs["autoeff.record"]["metrics"]
        cycle = (b.datetime_start - a.datetime_start).total_seconds()
        train, ev, meas = m.get("train_time_s", 0.0), m.get("eval_time_s", 0.0), m.get("measure_time_s", 0.0)
        rows.append({"trial": a.number, "cycle_s": cycle, "train_s": train, "eval_s": ev, "measure_s": meas,
                     "overhead_s": cycle - train - ev - meas, "overhead_incl_eval_s": cycle - train - meas})
    startup = trials[0].datetime_start.timestamp() - t0 if trials else 0.0
    wind_down = t1 - trials[-1].datetime_complete.timestamp() if trials else 0.0
    return rows, startup, wind_down


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default=str(HERE / "overhead.yaml"))
    p.add_argument("--trials", type=int, default=7)
    p.add_argument("--backends", nargs="+", default=["optuna", "ray"])
    p.add_argument("--out", default=str(HERE / "overhead-runs"))
    p.add_argument("--smoke", action="store_true", help="3-second trials, 3 of them: checks the pipeline")
    a = p.parse_args(argv)
    extra = ["train.max_time_s=3"] if a.smoke else []
    if a.smoke:
        a.trials = 4
        a.out = str(HERE / "overhead-smoke") if a.out == str(HERE / "overhead-runs") else a.out
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AUTOEFF_CACHE", str(out / "cache"))
    lines = ["| backend | trials (after the first) | mean cycle s | mean train + eval + measure s | mean overhead s | "
             "overhead share | worst trial share | share if evaluation counted as overhead | first trial's overhead s | "
             "start-up s | wind-down s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    detail = {}
    for backend in a.backends:
        for f in out.glob(f"{backend}*.db"):
            f.unlink()  # a fresh study each time: timings of a resumed study would mix runs
        t0, t1 = run(backend, a.space, out, a.trials, extra)
        rows, startup, wind_down = summarize(backend, out, t0, t1)
        detail[backend] = {"rows": rows, "startup_s": startup, "wind_down_s": wind_down}
        if len(rows) < 2:
            continue
        first, steady = rows[0], rows[1:]  # the first trial pays the torch/Lightning import (Ray: the actor's start)
        cyc = sum(r["cycle_s"] for r in steady) / len(steady)
        ov = sum(r["overhead_s"] for r in steady) / len(steady)
        ov_eval = sum(r["overhead_incl_eval_s"] for r in steady) / len(steady)
        worst = max(r["overhead_s"] / r["cycle_s"] for r in steady)
        lines.append(f"| {backend} | {len(steady)} | {cyc:.1f} | {cyc - ov:.1f} | {ov:.2f} | {100 * ov / cyc:.1f}% | "
                     f"{100 * worst:.1f}% | {100 * ov_eval / cyc:.1f}% | {first['overhead_s']:.1f} | {startup:.1f} | "
                     f"{wind_down:.1f} |")
    (out / "overhead.json").write_text(json.dumps(detail, indent=1))
    (out / "overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
