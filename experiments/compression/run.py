"""Compression study (issue 9): quantization bits and pruning on architectures of the default
study, and distillation at equal training budget. Every figure comes from the library's own
pipeline: ``train_and_evaluate`` (train fp32 -> prune -> fine-tune -> quantize -> evaluate) and the
trial's measurement (``architecture_metrics``: latency and deployed memory at every task's
input shape, worst case; size as stored).

    python experiments/compression/run.py --config experiments/compression/config.yaml \\
        --out experiments/compression           # see README.md for the time it takes
    python experiments/compression/run.py --smoke --out /tmp/compression-smoke   # a minute: plumbing only
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import yaml

from autoeff import create_model as build_model, evaluate, load_config as parse_run_config, load_task
from autoeff import measure_model as architecture_metrics, task_spec
# the compression pipeline itself, which this experiment studies step by step (internal API)
from autoeff.training.run import compress_trained, train_and_evaluate
from autoeff.training.teacher import load_or_train_teacher

VARIANT_KEYS = ("bits", "prune", "sparsity")


def smoke(conf):
    """Tiny sizes: proves the script end to end, the numbers mean nothing."""
    for t in conf["tasks"]:
        t.update(n_train=128, n_val=64, n_test=64)
    conf["train"].update(max_steps=20, warmup_steps=2)
    conf["deploy"].update(warmup=1, repeats=3)
    conf["architectures"] = conf["architectures"][::2]
    conf["prune"] = conf["prune"][1:]
    conf["distill"]["teacher"]["max_steps"] = 40
    conf["distill"]["seeds"] = [0]
    return conf


def run_config(conf, arch, compress=None, seed=0, data_dir=""):
    return parse_run_config({"model": arch["model"], "attention": arch["attention"], "tasks": conf["tasks"],
                             "train": {**conf["train"], "seed": seed}, "deploy": conf["deploy"],
                             "compress": compress or {}, "data_dir": data_dir})


def row(arch, variant, cfg, model, data, metrics, specs):
    weights = {t.name: t.weight for t in cfg.tasks}
    test = evaluate(model, data, "test")
    m = architecture_metrics(cfg, model, specs, [])
    out = {"arch": arch["name"], "variant": variant, **{k: getattr(cfg.compress, k) for k in VARIANT_KEYS},
           "accuracy": metrics["accuracy"], "accuracy_fp32": metrics.get("accuracy_fp32", metrics["accuracy"]),
           "test_accuracy": sum(test[k] * weights[k] for k in test) / sum(weights.values()),
           "latency_ms": m["latency_ms"], "peak_memory_mb": m["peak_memory_mb"],
           "activation_peak_mb": m["activation_peak_mb"], "size_mb": m["size_mb"], "params": m["params"],
           "train_steps": metrics.get("train_steps", 0.0)}
    out.update({k: v for k, v in metrics.items() if k.startswith("accuracy.")})
    return out


def quantization_and_pruning(conf, data, log):
    rows = []
    specs = [task_spec(t) for t in run_config(conf, conf["architectures"][0]).tasks]
    for arch in conf["architectures"]:
        cfg = run_config(conf, arch)
        model = build_model(cfg, specs)
        t0 = time.perf_counter()
        base = train_and_evaluate(model, data, cfg)
        log(f"{arch['name']}: fp32 trained in {time.perf_counter() - t0:.0f}s, accuracy {base['accuracy']:.3f}")
        for bits in conf["bits"]:
            c = run_config(conf, arch, {"bits": bits})
            q = copy.deepcopy(model)
            met = {**base, **compress_trained(q, data, c, 0)}
            met.update({k: v for k, v in _val(q, data, c).items()})
            rows.append(row(arch, f"{bits} bits", c, q, data, met, specs))
            log(f"  {rows[-1]['variant']:28s} acc {rows[-1]['accuracy']:.3f}  size {rows[-1]['size_mb']:.3f} MB  "
                f"latency {rows[-1]['latency_ms']:.2f} ms")
        for p in conf["prune"]:
            c = run_config(conf, arch, p)
            pm = build_model(c, specs)
            met = train_and_evaluate(pm, data, c)
            for bits in conf["pruned_bits"]:
                cb = run_config(conf, arch, {**p, "bits": bits})
                q = copy.deepcopy(pm) if bits != 32 else pm
                extra = compress_trained(q, data, dataclasses.replace(cb, compress=dataclasses.replace(
                    cb.compress, prune="none", sparsity=0.0)), 0) if bits != 32 else {}
                m2 = {**met, **extra, **_val(q, data, cb), "accuracy_fp32": base["accuracy"]}
                rows.append(row(arch, f"{p['prune']} {p['sparsity']:g}, {bits} bits", cb, q, data, m2, specs))
                log(f"  {rows[-1]['variant']:28s} acc {rows[-1]['accuracy']:.3f}  size {rows[-1]['size_mb']:.3f} MB  "
                    f"latency {rows[-1]['latency_ms']:.2f} ms")
    return rows


def _val(model, data, cfg):
    from autoeff.config import aggregate

    weights = {t.name: t.weight for t in cfg.tasks}
    val = evaluate(model, data, "val")
    return {"accuracy": aggregate(val, cfg.train.aggregate, weights), **{f"accuracy.{k}": v for k, v in val.items()}}


def distillation(conf, data, log, data_dir):
    d = conf["distill"]
    out = []
    for seed in d["seeds"]:
        for distill in (False, True):
            comp = {"distill": distill, "distill_alpha": d["alpha"], "distill_temperature": d["temperature"],
                    "teacher": d["teacher"]} if distill else {}
            cfg = run_config(conf, d["student"], comp, seed=seed, data_dir=data_dir)
            model = build_model(cfg)
            met = train_and_evaluate(model, data, cfg)
            out.append({"seed": seed, "distill": distill, **{k: v for k, v in met.items()
                                                             if k.startswith(("accuracy", "test_accuracy", "teacher_"))},
                        "train_steps": met["train_steps"], "train_time_s": met["train_time_s"]})
            log(f"student seed {seed} distill={distill}: accuracy {met['accuracy']:.3f}")
    return out


def markdown(rows, dist, conf):
    lines = ["| architecture | variant | accuracy | vs fp32 | test acc | latency ms | memory MB | size MB | size vs fp32 | params |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    ref = {r["arch"]: r for r in rows if r["variant"] == "32 bits"}
    for r in rows:
        b = ref[r["arch"]]
        lines.append(f"| {r['arch']} | {r['variant']} | {r['accuracy']:.4f} | {100 * (r['accuracy'] - b['accuracy']):+.1f} pt | "
                     f"{r['test_accuracy']:.4f} | {r['latency_ms']:.3f} | {r['peak_memory_mb']:.3f} | {r['size_mb']:.4f} | "
                     f"{r['size_mb'] / b['size_mb']:.3f}x | {int(r['params']):,} |")
    tasks = [t.get("name") or t["kind"] for t in conf["tasks"]]
    lines += ["", "| seed | student | accuracy | " + " | ".join(tasks) + " |", "|---|---|---|" + "---|" * len(tasks)]
    for r in dist:
        lines.append(f"| {r['seed']} | {'distilled' if r['distill'] else 'plain'} | {r['accuracy']:.4f} | "
                     + " | ".join(f"{r.get(f'accuracy.{t}', r['accuracy']):.4f}" for t in tasks) + " |")
    for distill in (False, True):
        sel = [r for r in dist if r["distill"] == distill]
        if sel:
            mean = {k: sum(r.get(k, r["accuracy"]) for r in sel) / len(sel) for k in ["accuracy", *[f"accuracy.{t}" for t in tasks]]}
            lines.append(f"| mean | {'distilled' if distill else 'plain'} | {mean['accuracy']:.4f} | "
                         + " | ".join(f"{mean[f'accuracy.{t}']:.4f}" for t in tasks) + " |")
    seeds = sorted({r["seed"] for r in dist})
    pairs = {s: {r["distill"]: r for r in dist if r["seed"] == s} for s in seeds}
    deltas = [f"seed {s}: {100 * (p[True]['accuracy'] - p[False]['accuracy']):+.2f} pt"
              for s, p in pairs.items() if True in p and False in p]
    if deltas:
        lines.append("\nDistilled minus plain, mean accuracy: " + "; ".join(deltas) + ".")
    # the teacher is trained per seed (the seed is part of its cache key): one line per teacher
    teachers = [r for r in dist if "teacher_accuracy" in r]
    for t in teachers:
        lines.append(f"{'' if deltas or t is not teachers[0] else chr(10)}Teacher (seed {t['seed']}): accuracy "
                     f"{t['teacher_accuracy']:.4f}, {int(t['teacher_params']):,} parameters.")
    return "\n".join(lines) + "\n"


def plot(rows, dist, conf, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    colors = {}
    for r in rows:
        c = colors.setdefault(r["arch"], f"C{len(colors)}")
        label = r["variant"].replace(" bits", "b").replace("structured ", "s").replace("magnitude ", "m")
        marker = "o" if r["prune"] == "none" else ("s" if r["prune"] == "structured" else "^")
        for ax, key in ((axes[0], "size_mb"), (axes[1], "latency_ms")):
            ax.scatter(r[key], r["accuracy"], color=c, marker=marker, label=r["arch"] if label == "32b" else None)
            ax.annotate(label, (r[key], r["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("size as stored (MB, log)")
    axes[1].set_xlabel("latency (ms, batch 1, worst task)")
    for ax in axes[:2]:
        ax.set_ylabel("mean validation accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("bits (o), structured (s) and magnitude (^) pruning")
    tasks = [t.get("name") or t["kind"] for t in conf["tasks"]]
    keys = ["accuracy", *[f"accuracy.{t}" for t in tasks]]
    for j, distill in enumerate((False, True)):
        sel = [r for r in dist if r["distill"] == distill]
        if sel:
            means = [sum(r.get(k, r["accuracy"]) for r in sel) / len(sel) for k in keys]
            axes[2].bar([i + 0.4 * j for i in range(len(keys))], means, width=0.4,
                        label="distilled" if distill else "plain")
    axes[2].set_xticks([i + 0.2 for i in range(len(keys))], ["mean", *tasks])
    axes[2].set_ylabel("student validation accuracy (mean over seeds)")
    axes[2].set_title(f"student {conf['distill']['student']['name']}, equal steps")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).with_name("config.yaml")))
    ap.add_argument("--out", default=str(Path(__file__).parent))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script runs")
    ap.add_argument("--data-dir", default="", help="task and teacher cache (default: $AUTOEFF_CACHE or ~/.cache/autoeff)")
    a = ap.parse_args(argv)
    conf = yaml.safe_load(Path(a.config).read_text())
    if a.smoke:
        conf = smoke(conf)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    probe = run_config(conf, conf["architectures"][0], data_dir=a.data_dir)
    data = [load_task(t, a.data_dir) for t in probe.tasks]
    rows = quantization_and_pruning(conf, data, log)
    dist = distillation(conf, data, log, a.data_dir)
    (out / "results.json").write_text(json.dumps({"rows": rows, "distill": dist, "config": conf,
                                                  "wall_s": time.perf_counter() - t0}, indent=1))
    (out / "results.md").write_text(markdown(rows, dist, conf))
    plot(rows, dist, conf, out / "compression.png")
    log(f"done: {out / 'results.md'}, {out / 'compression.png'}")
    print(markdown(rows, dist, conf))


if __name__ == "__main__":
    main()
