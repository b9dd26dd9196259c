"""What the measurement gate buys: latencies timed during a 2-worker search, with the gate on
and off, against the same model timed alone.

    python experiments/backends/isolation.py             (see README.md)
    python experiments/backends/isolation.py --smoke

Two `autoeff search` processes share one study, the second started once the first has finished
a trial, so that they run out of step and each one's measurements fall while the other trains
(on every core); the space fixes the architecture (only the learning rate is searched), so every
trial times the same model. Run once with the gate (the default) and once with ``AUTOEFF_MEASURE_GATE=0``;
the model is timed alone before and after. Writes ``isolation.md`` (the table) and
``isolation.json`` (every reading) to ``--out``; commit both next to README.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SPACE = textwrap.dedent("""\
    name: isolation
    tasks:
      - {kind: listops, seq_len: 256, min_len: 64, max_depth: 4, n_train: 512, n_val: 64, n_test: 64}
    model: {depth: 2, width: 64, heads: 4, dropout: 0.0}
    attention: {kind: full}
    train: {max_steps: STEPS, batch_size: 32, warmup_steps: 2, threads: 0}
    deploy: {batch_size: 1, warmup: 5, repeats: 31, threads: 1}
    space:
      train.lr: {type: float, low: 1.0e-3, high: 4.0e-3, log: true}
    objectives: {accuracy: max, latency_ms: min, peak_memory_mb: min}
    search: {sampler: random, n_trials: TRIALS, seed: 0, remeasure_front: false}
""")


def autoeff_cmd():
    exe = Path(sys.executable).parent / "autoeff"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "autoeff.cli"]


def alone(space_file) -> float:
    from autoeff import create_model as build_model, load_space, measure_model as architecture_metrics, task_spec

    space = load_space(space_file)
    cfg = space.materialize({"train.lr": 2e-3})
    specs = [task_spec(t) for t in cfg.tasks]
    return architecture_metrics(cfg, build_model(cfg, specs), specs, space.objectives)["latency_ms"]


def _complete(db: Path, tag: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not db.exists():
        return []
    try:
        study = optuna.load_study(study_name=tag, storage=f"sqlite:///{db}")
    except KeyError:
        return []
    return [t for t in study.trials if t.state.name == "COMPLETE"]


def two_workers(space_file: Path, out: Path, gate: bool):
    """Two workers on one study, the second started when the first has finished its first trial,
    so that they are out of step: each one's measurement (at the start of its trial) falls while
    the other trains. (Started together, the workers stay in step and measure at the same time,
    while neither trains: then the run shows nothing.) Returns the metrics of the trials measured
    while both workers ran."""
    tag = "gate-on" if gate else "gate-off"
    db = out / (tag + ".db")
    env = dict(os.environ, AUTOEFF_MEASURE_GATE="1" if gate else "0")
    cmd = autoeff_cmd() + ["search", "--space", str(space_file), "--no-mlflow", "--quiet",
                           f"search.storage=sqlite:///{db}", f"search.study_name={tag}",
                           f"search.artifacts={out / 'artifacts'}"]
    first = subprocess.Popen(cmd, cwd=out, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not _complete(db, tag) and first.poll() is None:
        time.sleep(0.5)
    both_from = datetime.datetime.now()
    second = subprocess.Popen(cmd, cwd=out, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for p in (first, second):
        p.wait()
    done = _complete(db, tag)
    return [t.user_attrs["autoeff.record"]["metrics"] for t in done if t.datetime_start >= both_from]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--out", default=str(HERE / "isolation-runs"))
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args(argv)
    if a.smoke:
        a.trials, a.steps = 4, 10
        a.out = str(HERE / "isolation-smoke") if a.out == str(HERE / "isolation-runs") else a.out
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for f in out.glob("gate-*.db"):
        f.unlink()
    os.environ.setdefault("AUTOEFF_CACHE", str(out / "cache"))
    space_file = out / "isolation.yaml"
    space_file.write_text(SPACE.replace("STEPS", str(a.steps)).replace("TRIALS", str(a.trials)))
    ref = [alone(space_file) for _ in range(5)]
    runs = {g: two_workers(space_file, out, g) for g in (True, False)}
    ref += [alone(space_file) for _ in range(5)]
    base = statistics.median(ref)
    lines = [f"Model timed alone (10 measurements, median of 31 passes each): median {base:.3f} ms "
             f"(range {min(ref):.3f}-{max(ref):.3f})", "",
             "Trials measured while both workers ran (the second worker starts after the first worker's first trial):", "",
             "| gate | trials | median latency ms | ratio to alone | trials' ratios | measurements that waited for a step |",
             "|---|---|---|---|---|---|"]
    for g, recs in runs.items():
        lat = [m["latency_ms"] for m in recs]
        med = statistics.median(lat)
        lines.append(f"| {'on' if g else 'off'} | {len(recs)} | {med:.3f} | {med / base:.2f} | "
                     f"{min(lat) / base:.2f}-{max(lat) / base:.2f} | "
                     f"{int(sum(m.get('measure_contended', 0) for m in recs))} |")
    (out / "isolation.md").write_text("\n".join(lines) + "\n")
    # every reading, so that the table can be re-derived from committed data (commit both files)
    (out / "isolation.json").write_text(json.dumps({
        "alone_ms": ref, "steps": a.steps, "trials": a.trials,
        "workers": {("on" if g else "off"): [{"latency_ms": m["latency_ms"],
                                             "measure_contended": m.get("measure_contended", 0.0)} for m in recs]
                    for g, recs in runs.items()}}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
