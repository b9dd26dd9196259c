"""Which early-stopping signal ranks candidates at a rung? Issue 19's "measure first".

Samples candidates of a study uniformly (default: the default study, search_spaces/longseq.yaml),
keeps the feasible ones (its constraints, with the reference model measured as the search does),
and trains each exactly as a trial of that study is trained (its train section: steps, batch, the
wall-clock cap) with no early stopping, evaluating on the validation split at checkpoints (the
study's rungs and later ones). Then, per checkpoint, the rank correlation (Spearman's rho and
Kendall's tau) between the final accuracy (the figure a front is on) and each signal the rule could
rank on there: the validation accuracy so far, and the validation loss (lower is better).

    python experiments/rung_signals/run.py --budget-s 1500        # rows/<n>.json per candidate
    python experiments/rung_signals/run.py --report-only          # the table and plot from rows/

Rows are kept (rerunning adds candidates until the budget is spent). Every candidate is trained
alone: run nothing else on the machine (the time cap makes steps depend on load).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def sample_feasible(space, seed, log):
    from autoeff.compress import build_deployed
    from autoeff.config import task_spec
    from autoeff.model import build_model
    from autoeff.search.objective import deployment_figures
    from autoeff.search.names import placement_label
    from autoeff.search.oneshot import RandomSuggest
    from autoeff.search.record import TrialRecord

    rng = random.Random(seed)
    for attempt in range(200):
        params = space.sample(RandomSuggest(rng))
        cfg = space.materialize(params)
        specs = [task_spec(t) for t in cfg.tasks]
        model = build_deployed(cfg, specs) if cfg.compress.active else build_model(cfg, specs)
        fig = deployment_figures(cfg, model, specs, space.objectives)
        rec = TrialRecord(number=seed, status="running", params=dict(params), config=cfg.to_dict(), metrics=dict(fig))
        broken = [c.label for c in rec.broken(space.constraints)]
        if not broken:
            return params, cfg, fig, attempt, placement_label(rec)
        log(f"  sample {seed}.{attempt}: infeasible ({'; '.join(broken)})")
    raise RuntimeError("no feasible candidate in 200 samples")


def run_candidate(space, seed, checkpoints, log):
    from autoeff.config import task_spec
    from autoeff.model import build_model
    from autoeff.tasks import load_task
    from autoeff.training import train_and_evaluate

    params, cfg, fig, skipped, placement = sample_feasible(space, seed, log)
    specs = [task_spec(t) for t in cfg.tasks]
    data = [load_task(t, cfg.data_dir) for t in cfg.tasks]
    model = build_model(cfg, specs)
    steps = [s for s in checkpoints if s < cfg.train.max_steps]
    t0 = time.time()
    m = train_and_evaluate(model, data, cfg, rungs=steps, on_rung=lambda *a: True)
    row = {"seed": seed, "params": params, "placement": placement,
           "infeasible_samples_skipped": skipped, "latency_ms": fig["latency_ms"],
           "peak_memory_mb": fig["peak_memory_mb"], "accuracy": m["accuracy"],
           "majority": {k[len("majority."):]: v for k, v in m.items() if k.startswith("majority.")},
           "train_steps": m["train_steps"], "stopped_by_time_cap": m["stopped_by_time_cap"],
           "wall_s": round(time.time() - t0, 1),
           "checkpoints": [{"step": m[f"rung_steps.{i}"], "accuracy": m[f"rung_accuracy.{i}"],
                            "loss": m[f"rung_loss.{i}"]} for i in range(1, len(steps) + 1) if f"rung_steps.{i}" in m]}
    return row


def correlations(rows, n_checkpoints):
    from scipy.stats import kendalltau, spearmanr

    final = [r["accuracy"] for r in rows]
    out = []
    for k in range(n_checkpoints):
        have = [r for r in rows if len(r["checkpoints"]) > k]
        if len(have) < 4:
            continue
        fin = [r["accuracy"] for r in have]
        acc = [r["checkpoints"][k]["accuracy"] for r in have]
        neg_loss = [-r["checkpoints"][k]["loss"] for r in have]
        steps = sorted(r["checkpoints"][k]["step"] for r in have)
        out.append({"checkpoint": k + 1, "median_step": steps[len(steps) // 2], "n": len(have),
                    "spearman_accuracy": spearmanr(acc, fin).statistic, "kendall_accuracy": kendalltau(acc, fin).statistic,
                    "spearman_loss": spearmanr(neg_loss, fin).statistic, "kendall_loss": kendalltau(neg_loss, fin).statistic,
                    "distinct_accuracies": len({round(a, 4) for a in acc})})
    del final
    return out


def report(rows, corr, out: Path, space_file: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [f"Candidates: {len(rows)} feasible, sampled uniformly from `{space_file}`, each trained as a trial "
             "of that study (its steps and time cap), no early stopping.", "",
             "| checkpoint | median step | n | Spearman (accuracy) | Kendall (accuracy) | Spearman (-loss) | "
             "Kendall (-loss) | distinct accuracies |", "|---|---|---|---|---|---|---|---|"]
    for c in corr:
        lines.append(f"| {c['checkpoint']} | {c['median_step']:.0f} | {c['n']} | {c['spearman_accuracy']:.3f} | "
                     f"{c['kendall_accuracy']:.3f} | {c['spearman_loss']:.3f} | {c['kendall_loss']:.3f} | "
                     f"{c['distinct_accuracies']} |")
    lines += ["", "| seed | placement | params | final accuracy | steps | capped | " +
              " | ".join(f"acc@{i + 1} / loss@{i + 1}" for i in range(max(len(r['checkpoints']) for r in rows))) + " |",
              "|---|---|---|---|---|---|" + "---|" * max(len(r["checkpoints"]) for r in rows)]
    for r in sorted(rows, key=lambda r: -r["accuracy"]):
        p = r["params"]
        short = f"d{p.get('model.depth', '')} w{p.get('model.width', '')} h{p.get('model.heads', '')} bits {p.get('compress.bits', 32)}"
        lines.append(f"| {r['seed']} | {r['placement']} | {short} | {r['accuracy']:.3f} | {r['train_steps']:.0f} | "
                     f"{'yes' if r['stopped_by_time_cap'] else 'no'} | " +
                     " | ".join(f"{c['accuracy']:.3f} / {c['loss']:.3f}" for c in r["checkpoints"]) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"space": space_file, "correlations": corr, "rows": rows}, indent=1))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, sig, lab in ((axes[0], "accuracy", "validation accuracy at the checkpoint"),
                         (axes[1], "loss", "validation loss at the checkpoint")):
        for k, c in enumerate(corr):
            xs = [r["checkpoints"][k][sig] for r in rows if len(r["checkpoints"]) > k]
            ys = [r["accuracy"] for r in rows if len(r["checkpoints"]) > k]
            rho = c["spearman_accuracy" if sig == "accuracy" else "spearman_loss"]
            ax.scatter(xs, ys, s=22, label=f"checkpoint {k + 1} (step ~{c['median_step']:.0f}): rho {rho:.2f}")
        ax.set_xlabel(lab)
        ax.set_ylabel("final validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Does a rung's figure rank candidates as their final accuracy does?")
    fig.tight_layout()
    fig.savefig(out / "rung_signals.png", dpi=110)
    print("\n".join(lines[:4 + len(corr)]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default=str(REPO / "search_spaces" / "longseq.yaml"))
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[44, 133, 266],
                    help="steps to evaluate at (the default study's rungs are 44 and 133 of 400)")
    ap.add_argument("--budget-s", type=float, default=1500, help="stop starting candidates after this long")
    ap.add_argument("--max-candidates", type=int, default=40)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    (out / "rows").mkdir(parents=True, exist_ok=True)

    def log(s):
        print(s, file=sys.stderr, flush=True)

    rows = [json.loads(p.read_text()) for p in sorted((out / "rows").glob("*.json"))]
    if not args.report_only:
        from autoeff import load_space
        from autoeff.search.objective import measure_reference

        space = load_space(args.space)
        if space.reference:
            ref = measure_reference(space)
            space.resolve_reference(ref["metrics"])
            log(f"reference measured: {ref['metrics'].get('latency_ms', float('nan')):.2f} ms")
        t0 = time.time()
        done = {r["seed"] for r in rows}
        seed = 0
        while time.time() - t0 < args.budget_s and len(rows) < args.max_candidates:
            if seed in done:
                seed += 1
                continue
            row = run_candidate(space, seed, args.checkpoints, log)
            (out / "rows" / f"{seed:03d}.json").write_text(json.dumps(row, indent=1))
            rows.append(row)
            log(f"candidate {seed} ({row['placement']}): final {row['accuracy']:.3f} after {row['train_steps']:.0f} steps; "
                + ", ".join(f"step {c['step']:.0f}: acc {c['accuracy']:.3f} loss {c['loss']:.3f}" for c in row["checkpoints"])
                + f"  [{len(rows)} done, {time.time() - t0:.0f} s]")
            seed += 1
    if len(rows) >= 4:
        report(rows, correlations(rows, len(args.checkpoints)), out, str(Path(args.space).relative_to(REPO))
               if Path(args.space).is_absolute() and REPO in Path(args.space).parents else args.space)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
