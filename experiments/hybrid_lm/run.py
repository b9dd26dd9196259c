"""The hybrid language-model study's evidence (issue 18): fixed layer placements beside the
search's best, at equal training budget on the same data.

Every model is the decoder of ``search_spaces/lm.yaml`` (4 layers, width 64, 4 heads), trained by
the library's own path (``autoeff.train``) with the space's ``train`` section but ``--steps`` steps (240; a search trial gets 160), on its two tasks
(byte-level LM on the Python standard library, MQAR with 8 pairs, both 1,024 tokens), for exactly
that many steps (the search's wall-clock cap is dropped so that no model is cut by a
loaded machine). Then, for each model:

- ``bpb`` (validation and test) and next-byte accuracy on the LM task;
- MQAR recall (accuracy on the query positions, test split) at several pair counts: the trained
  count and others generated with the same vocabulary and length;
- ``prefill_ms``, ``decode_ms``, ``cache_mb`` and the decoding footprint at 2K, 8K and 16K tokens
  of context (``autoeff.measure_model`` with ``deploy.context_len`` set; the search's protocol).

Baselines: the unigram bpb (the training split's byte frequencies scored on the validation
split) and chance recall (1 / the number of value ids).

    python experiments/hybrid_lm/run.py --out experiments/hybrid_lm \\
        --study-storage sqlite:////tmp/lmrun/autoeff.db        # the lm.yaml search to take the best from
    python experiments/hybrid_lm/run.py --quick --out /tmp/hybrid-quick   # plumbing only, a minute

Each model is trained once (``<out>/runs/``, ``<out>/rows/<name>.json``: quality, deterministic
whatever the load); its timed figures are cached apart (``<out>/measured/``) and ``--phase measure``
redoes them alone, on a quiet machine, without retraining.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import yaml

import autoeff
from autoeff import create_model, evaluate, load_config, load_space, load_task, measure_model

REPO = Path(__file__).resolve().parents[2]
CODES = {"F": "full", "S": "sliding_window", "G": "gated_deltanet", "L": "linear"}
#: the fixed placements, layer 0 (next to the embeddings) first
PLACEMENTS = {
    "all full": "F F F F",
    "all sliding_window": "S S S S",
    "all gated_deltanet": "G G G G",
    "1 full in 4, bottom": "F G G G",
    "1 full in 4, middle": "G F G G",
    "1 full in 4, top": "G G G F",
}
#: knobs of the fixed placements: full attention with every key/value head (the reference's), a
#: 256-token window (the space's larger one)
KNOBS = {"full": {"kv_heads": 4}, "sliding_window": {"window": 256, "kv_heads": 4}}


def layers_of(placement: str):
    out = []
    for code in placement.split():
        kind = CODES[code]
        out.append({"kind": kind, **({kind: dict(KNOBS[kind])} if kind in KNOBS else {})})
    return out


def base_config(space, quick: bool, steps: int, threads: int = 0):
    base = copy.deepcopy(space.base)
    base.pop("reference", None)
    base["train"] = {**base.get("train", {}), "max_steps": steps, "max_time_s": 0}  # equal steps for every model
    if threads:  # training threads only (a shared machine: fewer threads, no oversubscription); quality is the same
        base["train"]["threads"] = threads
    if quick:
        for t in base["tasks"]:
            t.update(seq_len=128, n_train=64, n_val=8, n_test=8)
            if t["kind"] == "mqar":
                t.update(n_pairs=4, n_val=16, n_test=16)
        base["train"].update(max_steps=6, warmup_steps=1, batch_size=4)
        base["deploy"].update(repeats=4, warmup=1, prompt_len=64)
    return base


def unigram_bpb(lm_task) -> float:
    """Bits per byte of the training split's byte frequencies (add-one smoothed) on the
    validation split's scored targets."""
    tr, va = lm_task.splits["train"], lm_task.splits["val"]
    vocab = lm_task.spec.vocab_size
    ytr = np.asarray(tr.y).ravel()
    counts = np.bincount(ytr[ytr >= 0], minlength=vocab).astype(np.float64) + 1.0
    logp = np.log2(counts / counts.sum())
    yva = np.asarray(va.y).ravel()
    yva = yva[yva >= 0]
    return float(-logp[yva].mean() / lm_task.spec.bytes_per_token)


def chance_recall(mqar_task_cfg) -> float:
    o = mqar_task_cfg.options
    vocab = o["vocab"] if isinstance(o, dict) else o.vocab
    return 1.0 / (vocab - (1 + (vocab - 1) // 2))


def mqar_variant(cfg, pairs: int):
    """The config's MQAR task with ``pairs`` key-value pairs (same name, vocabulary, length)."""
    tasks = []
    for t in cfg.tasks:
        d = {"kind": t.kind, "name": t.name, **dict(t.options)}
        if t.kind == "mqar":
            d["n_pairs"] = pairs
            d["seed"] = d.get("seed", 0) + 1000 + pairs  # fresh sequences, not the training ones
        tasks.append(d)
    c = load_config({"tasks": tasks, "model": {"arch": "decoder", "depth": 1}})
    return next(t for t in c.tasks if t.kind == "mqar")


def _stem(name: str) -> str:
    return name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")


def train_one(name, placement, config, args, out, pair_counts):
    """Train (exactly ``train.max_steps`` steps) and score quality: deterministic, load-independent."""
    path = out / "rows" / f"{_stem(name)}.json"
    if path.exists() and not args.quick:
        return json.loads(path.read_text())
    cfg = load_config(config)
    t0 = time.time()
    run_dir = out / "runs" / _stem(name)
    if (run_dir / "metrics.json").exists() and (run_dir / "model.pt").exists() and not args.quick:
        metrics = json.loads((run_dir / "metrics.json").read_text())  # trained before: delete runs/<name> to retrain
    else:
        metrics = autoeff.train(cfg, run_dir, log=lambda s: print(f"    {s}", flush=True) if args.verbose else None)
    model = create_model(cfg, deployed=True, checkpoint=run_dir / "model.pt").eval()
    lm = next(t.name for t in cfg.tasks if t.kind == "lm_text")
    mq = next(t for t in cfg.tasks if t.kind == "mqar")
    row = {"name": name, "placement": placement, "train_steps": metrics.get("train_steps"),
           "train_s": round(time.time() - t0, 1), "bpb": metrics.get(f"bpb.{lm}", metrics.get("bpb")),
           "test_bpb": metrics.get(f"test_bpb.{lm}", metrics.get("test_bpb")),
           "next_byte_accuracy": metrics.get(f"accuracy.{lm}"), "recall_val": metrics.get(f"accuracy.{mq.name}"),
           "trained_pairs": mq.options["n_pairs"]}
    for p in pair_counts:
        d = load_task(mqar_variant(cfg, p), cfg.data_dir)
        row[f"recall@{p}"] = evaluate(model, [d], "test")[mq.name]
    row["config"] = config
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1))
    return row


def measure_one(row, args, out, contexts):
    """Decoding figures at every context (timed: run on a quiet machine; ``--phase measure``
    redoes them without retraining)."""
    path = out / "measured" / f"{_stem(row['name'])}.json"
    if path.exists() and args.phase != "measure" and not args.quick:
        return json.loads(path.read_text())
    config = row["config"]
    cfg = load_config(config)
    model = create_model(cfg, deployed=True, checkpoint=out / "runs" / _stem(row["name"]) / "model.pt").eval()
    got = {}
    for ctx in contexts:
        m = measure_model(load_config(config, [f"deploy.context_len={ctx}"]), model)
        got.update({f"decode_ms@{ctx}": m["decode_ms"], f"prefill_ms@{ctx}": m["prefill_ms"],
                    f"cache_mb@{ctx}": m["cache_mb"], f"peak_memory_mb@{ctx}": m["peak_memory_mb"],
                    "params": m["params"]})
        print(f"    {row['name']}: context {ctx}: decode {m['decode_ms']:.3f} ms, cache {m['cache_mb']:.3f} MiB", flush=True)
    got["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(got, indent=1))
    return got


def search_best(args, space_path):
    """The search's chosen point: the feasible front trial with the lowest bpb."""
    over = [f"search.storage={args.study_storage}"] if args.study_storage else []
    study = autoeff.load_study(space_path, over)
    front = [r for r in study.front if r.feasible]
    if not front:
        return None, None
    best = min(front, key=lambda r: r.metrics["bpb"])
    return best, best.config


def plot(rows, out: Path, contexts, pair_counts, baselines):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctx = contexts[-1]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = [(f"decode_ms@{ctx}", "bpb", f"decode ms/token at {ctx // 1024}K context", "bits per byte (lower is better)"),
              (f"cache_mb@{ctx}", "bpb", f"cache MiB at {ctx // 1024}K context (log)", "bits per byte (lower is better)"),
              (f"cache_mb@{ctx}", f"recall@{pair_counts[-1]}", f"cache MiB at {ctx // 1024}K context (log)",
               f"MQAR recall, {pair_counts[-1]} pairs (higher is better)")]
    for ax, (x, y, xl, yl) in zip(axes, panels):
        for r in rows:
            mark = "*" if r["name"].startswith("search") else "o"
            ax.scatter(r[x], r[y], s=90 if mark == "*" else 40, marker=mark)
            ax.annotate(r["placement"], (r[x], r[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if "cache" in x:
            ax.set_xscale("log")
        if y == "bpb":
            ax.axhline(baselines["unigram_bpb"], ls=":", c="gray")
            ax.text(ax.get_xlim()[0], baselines["unigram_bpb"], " unigram", va="bottom", fontsize=8, color="gray")
        else:
            ax.axhline(baselines["chance_recall"], ls=":", c="gray")
            ax.text(ax.get_xlim()[0], baselines["chance_recall"], " chance", va="bottom", fontsize=8, color="gray")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    fig.suptitle("Layer placements (layer 0 first; F full, S sliding_window, G gated_deltanet, L linear), "
                 "equal training budget")
    fig.tight_layout()
    fig.savefig(out / "hybrid_lm.png", dpi=110)


def table(rows, contexts, pair_counts):
    cols = ["name", "placement", "bpb", "test_bpb", *[f"recall@{p}" for p in pair_counts],
            *[f"decode_ms@{c}" for c in contexts], *[f"cache_mb@{c}" for c in contexts]]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out) + "\n"


def findings(rows, contexts, pair_counts, baselines) -> str:
    """What the rows show, computed from them (so the prose cannot drift from the table)."""
    by = {r["name"]: r for r in rows}
    full, gdn = by.get("all full"), by.get("all gated_deltanet")
    ctx = contexts[-1]
    out = [f"- Baselines: unigram {baselines['unigram_bpb']:.3f} bits/byte; chance recall "
           f"{baselines['chance_recall']:.4f}. Best bpb: " + ", ".join(
               f"{r['placement']} {r['bpb']:.3f}" for r in sorted(rows, key=lambda r: r["bpb"])[:3]) + "."]
    if full:
        for r in rows:
            if r is full or f"decode_ms@{ctx}" not in r:
                continue
            out.append(f"- {r['name']} ({r['placement']}): bpb {r['bpb'] - full['bpb']:+.3f} vs all full; at "
                       f"{ctx // 1024}K context decode {r[f'decode_ms@{ctx}'] / full[f'decode_ms@{ctx}']:.2f}x and "
                       f"cache {r[f'cache_mb@{ctx}'] / full[f'cache_mb@{ctx}']:.3f}x of all full's; recall "
                       + ", ".join(f"{r[f'recall@{p}']:.3f}" for p in pair_counts)
                       + f" at {', '.join(map(str, pair_counts))} pairs (all full: "
                       + ", ".join(f"{full[f'recall@{p}']:.3f}" for p in pair_counts) + ").")
    if gdn and full:
        hyb = [r for r in rows if r["name"].startswith("1 full in 4")]
        for p in pair_counts:
            k = f"recall@{p}"
            better = [r["placement"] for r in hyb if r[k] > gdn[k]]
            listed = ", ".join("%.3f (%s)" % (r[k], r["placement"]) for r in hyb)
            out.append(f"- Recall at {p} pairs: all gated_deltanet {gdn[k]:.3f}, all full {full[k]:.3f}; the 1-in-4 "
                       f"hybrids {listed}: "
                       f"{len(better)} of {len(hyb)} above all gated_deltanet.")
    best = [r for r in rows if r["name"].startswith("search best")]
    for r in best:
        n_full = r["placement"].split().count("F")
        out.append(f"- The search's best ({r['placement']}): {n_full} full-attention layer(s) of "
                   f"{len(r['placement'].split())} (Qwen3-Next 1 in 4, Gemma 3 1 in 6, MiniMax-01 1 in 8).")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default=str(REPO / "search_spaces" / "lm.yaml"))
    ap.add_argument("--out", default=str(REPO / "experiments" / "hybrid_lm"))
    ap.add_argument("--study-storage", default="", help="the lm.yaml search's Optuna storage (its best is compared)")
    ap.add_argument("--steps", type=int, default=240,
                    help="training steps of every model (1.5x a search trial's 160: the models are compared, not searched)")
    ap.add_argument("--threads", type=int, default=0, help="training threads (0 = torch's default)")
    ap.add_argument("--pairs", type=int, nargs="+", default=[4, 8, 12])
    ap.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192, 16384])
    ap.add_argument("--only", nargs="*", default=None, help="names of the placements to run")
    ap.add_argument("--phase", choices=("all", "train", "measure"), default="all",
                    help="train: train and score quality only (any load); measure: redo the timed figures only")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: plumbing only, the numbers mean nothing")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    space = load_space(args.space)
    base = base_config(space, args.quick, args.steps, args.threads)
    pairs = [2, 4] if args.quick else args.pairs
    contexts = [256, 512] if args.quick else args.contexts
    models = [(n, p, {**copy.deepcopy(base), "attention": {"layers": layers_of(p)}}) for n, p in PLACEMENTS.items()]
    if args.only:
        models = [m for m in models if m[0] in args.only]
    best = None
    if args.study_storage:
        best, best_cfg = search_best(args, args.space)
        if best is not None:
            from autoeff.search.names import placement_label

            cfg = {**copy.deepcopy(base), "attention": copy.deepcopy(best_cfg["attention"])}
            models.append((f"search best (trial {best.number})", placement_label(best), cfg))
    cfg0 = load_config(models[0][2])
    lm_data = load_task(next(t for t in cfg0.tasks if t.kind == "lm_text"), cfg0.data_dir)
    baselines = {"unigram_bpb": unigram_bpb(lm_data),
                 "chance_recall": chance_recall(next(t for t in cfg0.tasks if t.kind == "mqar"))}
    print(f"baselines: unigram {baselines['unigram_bpb']:.3f} bits/byte, chance recall {baselines['chance_recall']:.4f}",
          flush=True)
    rows = []
    for i, (name, placement, config) in enumerate(models):
        print(f"[{i + 1}/{len(models)}] {name} ({placement})", flush=True)
        r = train_one(name, placement, config, args, out, pairs)
        print(f"    bpb {r['bpb']:.3f}, recall " + ", ".join(f"{p} pairs {r[f'recall@{p}']:.3f}" for p in pairs),
              flush=True)
        if args.phase != "train":
            r = {**r, **measure_one(r, args, out, contexts)}
        rows.append({k: v for k, v in r.items() if k != "config"})
    if args.phase == "train":
        return 0
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.processor() or platform.machine(),
            "torch_threads": __import__("torch").get_num_threads(), "python": platform.python_version(),
            "space": str(args.space), "train": base["train"], "deploy": base["deploy"], "tasks": base["tasks"],
            "search_best": None if best is None else {"trial": best.number, "params": best.params,
                                                       "metrics": {k: best.metrics.get(k) for k in
                                                                   ("bpb", "accuracy.mqar", "decode_ms", "cache_mb")}},
            "baselines": baselines, "quick": args.quick}
    (out / "results.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1, default=str))
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    import csv

    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (out / "results.md").write_text(table(rows, contexts, pairs) + "\n" + findings(rows, contexts, pairs, baselines))
    plot(rows, out, contexts, pairs, baselines)
    print(table(rows, contexts, pairs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
