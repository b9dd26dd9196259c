"""How well do cheaper or richer proxies rank one-shot candidates? One supernet, several ways of
scoring a subnet with its inherited weights, each against the same subnets' accuracy trained
from scratch.

    python experiments/oneshot/proxy.py            # about 10-15 minutes on 2 CPU cores

The supernet is the one ``search_spaces/longseq_oneshot.yaml`` trains (cached under
``work/proxy/``: a second run only scores). The ground truth is the rank check of the evidence
run of 2026-12-01 (``results-2026-12-01.json``: 12 subnets spread over the families and the proxy accuracies, trained
from scratch for the space's budget). Proxies, each a function of a subnet's inherited weights:

* ``accuracy, 128 per task``: validation accuracy on ``oneshot.eval_batches`` x
  ``oneshot.eval_batch_size`` examples per task (what the search logs as ``proxy_accuracy``);
* ``accuracy, whole split``: on the whole validation split (256 per task);
* ``-loss, whole split``: minus the mean validation cross-entropy (no ties where a subnet
  predicts one class);
* ``adapt K, accuracy`` / ``adapt K, -loss``: the same after K optimizer steps of the subnet
  alone from its inherited weights (at ``oneshot.finalist_lr``), a few-shot proxy.

Writes ``proxy.md`` and ``proxy.json`` here: Kendall's tau-b and Spearman's rho of each proxy
against the real accuracies, and the seconds it costs per candidate.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SPACE = REPO / "search_spaces" / "longseq_oneshot.yaml"


def mean_loss(model, data, batch_size=64):
    """Mean validation cross-entropy over the tasks (each task's mean over its whole split)."""
    import torch
    import torch.nn.functional as F

    from autoeff.training.data import eval_batches

    out = []
    with torch.inference_mode():
        for t in data:
            tot, n = 0.0, 0
            for b in eval_batches(t, "val", batch_size):
                logits = model(b["x"], b["mask"], t.spec.name)
                tot += float(F.cross_entropy(logits, b["y"], reduction="sum"))
                n += int(b["y"].numel())
            out.append(tot / max(1, n))
    return sum(out) / len(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--adapt-steps", type=int, default=20)
    p.add_argument("--work", default=str(HERE / "work" / "proxy"))
    p.add_argument("--truth", default="results-2026-12-01.json",
                   help="the evidence run whose rank check (subnets trained from scratch) is the ground truth")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override of the space (e.g. oneshot.max_time_s=0: all of oneshot.steps on a slow machine)")
    a = p.parse_args(argv)

    from scipy.stats import kendalltau, spearmanr

    from autoeff.config import TrainConfig
    from autoeff.search.oneshot import OneShot
    from autoeff import evaluate, load_space
    from autoeff.training.fit import fit

    truth = json.loads((HERE / a.truth).read_text())["rank_check"]
    space = load_space(SPACE, [*a.set, f"search.artifacts={a.work}"])
    strat = OneShot(space)
    t0 = time.perf_counter()
    stats = strat.prepare(lambda s: print(s, flush=True), a.work)
    supernet_s = time.perf_counter() - t0
    o = space.oneshot
    names = ["accuracy, 128 per task", "accuracy, whole split", "-loss, whole split",
             f"adapt {a.adapt_steps}, accuracy", f"adapt {a.adapt_steps}, -loss"]
    scores = {n: [] for n in names}
    cost = {n: 0.0 for n in names}
    for r in truth:
        cfg = space.materialize(r["params"])
        model = strat.supernet.extract(cfg).eval()
        t = time.perf_counter()
        scores[names[0]].append(strat.proxy_accuracy(cfg, model)["proxy_accuracy"])
        cost[names[0]] += time.perf_counter() - t
        t = time.perf_counter()
        acc = evaluate(model, strat.data, "val", batch_size=o.eval_batch_size)
        scores[names[1]].append(sum(acc.values()) / len(acc))
        cost[names[1]] += time.perf_counter() - t
        t = time.perf_counter()
        scores[names[2]].append(-mean_loss(model, strat.data))
        cost[names[2]] += time.perf_counter() - t
        t = time.perf_counter()
        tuned = copy.deepcopy(model).train()
        fit(tuned, strat.data, TrainConfig(max_steps=a.adapt_steps, batch_size=cfg.train.batch_size,
                                           lr=o.finalist_lr or cfg.train.lr, warmup_steps=0, mix=cfg.train.mix,
                                           seed=0, threads=cfg.train.threads))
        adapt_s = time.perf_counter() - t
        t = time.perf_counter()
        acc = evaluate(tuned, strat.data, "val", batch_size=o.eval_batch_size)
        scores[names[3]].append(sum(acc.values()) / len(acc))
        cost[names[3]] += adapt_s + time.perf_counter() - t
        t = time.perf_counter()
        scores[names[4]].append(-mean_loss(tuned, strat.data))
        cost[names[4]] += adapt_s + time.perf_counter() - t
        print(f"  {r['arch']}: real {r['real']:.3f}; " + ", ".join(f"{n} {scores[n][-1]:.3f}" for n in names),
              flush=True)
    real = [r["real"] for r in truth]
    rows = []
    for n in names:
        tau = kendalltau(scores[n], real).statistic
        rho = spearmanr(scores[n], real).statistic
        rows.append({"proxy": n, "kendall_tau": float(tau), "spearman_rho": float(rho),
                     "seconds_per_candidate": cost[n] / len(truth),
                     "distinct_values": len({round(v, 6) for v in scores[n]})})
    result = {"space": str(SPACE.relative_to(REPO)), "overrides": a.set, "supernet": stats, "supernet_wall_s": supernet_s,
              "subnets": [{**r, "scores": {n: scores[n][i] for n in names}} for i, r in enumerate(truth)],
              "proxies": rows}
    (HERE / "proxy.json").write_text(json.dumps(result, indent=1, default=str))
    lines = [f"Supernet: {int(stats.get('supernet_steps', 0))} steps "
             f"({'loaded from the cache' if stats.get('supernet_cached') else f'trained in {supernet_s:.0f} s'}); "
             f"{len(truth)} subnets of the rank check, real accuracy trained from scratch.", "",
             "| proxy | Kendall tau | Spearman rho | distinct values | s per candidate |",
             "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['proxy']} | {row['kendall_tau']:.3f} | {row['spearman_rho']:.3f} | "
                     f"{row['distinct_values']} of {len(truth)} | {row['seconds_per_candidate']:.2f} |")
    (HERE / "proxy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
