"""Which design-card dimensions belong in the default study (search_spaces/longseq.yaml)?

Measures, on this machine and with the search's own protocol (objective.deployment_figures, the
reference model of the space measured the same way), the deployment figures of candidates that
differ in one dimension: Synthesizer's modes against the latency budget, Reformer's hash rounds,
and compress.bits 32/8/4 (peak memory, size). Untrained models: the figures do not depend on the
weights. Writes probe.csv and prints a table.

    python experiments/longseq_dims/probe.py [--space search_spaces/longseq.yaml]
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

from autoeff import load_space
from autoeff.measure.host import cpu_model
from autoeff.compress import build_deployed
from autoeff.model import build_model
from autoeff.search.objective import deployment_figures
from autoeff.config import task_spec

HERE = Path(__file__).resolve().parent

CANDIDATES = [
    # (label, params) over the space's base config; depth 1 unless said
    ("synthesizer factorized r32 w32 h2", {"attention.kind": "synthesizer", "attention.synthesizer.mode": "factorized", "attention.synthesizer.rank": 32, "model.width": 32, "model.heads": 2}),
    ("synthesizer factorized r16 w32 h2", {"attention.kind": "synthesizer", "attention.synthesizer.mode": "factorized", "attention.synthesizer.rank": 16, "model.width": 32, "model.heads": 2}),
    ("synthesizer factorized r32 w64 h4", {"attention.kind": "synthesizer", "attention.synthesizer.mode": "factorized", "attention.synthesizer.rank": 32, "model.width": 64, "model.heads": 4}),
    ("synthesizer dense w32 h2", {"attention.kind": "synthesizer", "attention.synthesizer.mode": "dense", "model.width": 32, "model.heads": 2}),
    ("synthesizer random w32 h2", {"attention.kind": "synthesizer", "attention.synthesizer.mode": "random", "model.width": 32, "model.heads": 2}),
    ("full w32 h2", {"attention.kind": "full", "model.width": 32, "model.heads": 2}),
    ("reformer b64 n_hashes 1 w64 h4", {"attention.kind": "reformer", "attention.reformer.bucket_size": 64, "attention.reformer.n_hashes": 1, "model.width": 64, "model.heads": 4}),
    ("reformer b64 n_hashes 2 w64 h4", {"attention.kind": "reformer", "attention.reformer.bucket_size": 64, "attention.reformer.n_hashes": 2, "model.width": 64, "model.heads": 4}),
    ("reformer b32 n_hashes 2 w32 h2", {"attention.kind": "reformer", "attention.reformer.bucket_size": 32, "attention.reformer.n_hashes": 2, "model.width": 32, "model.heads": 2}),
    ("reformer b64 n_hashes 2 d2 w64 h4", {"attention.kind": "reformer", "attention.reformer.bucket_size": 64, "attention.reformer.n_hashes": 2, "model.width": 64, "model.heads": 4, "model.depth": 2}),
    ("longformer w64 d2 w64 h4 bits 32", {"attention.kind": "longformer", "attention.longformer.window": 64, "model.width": 64, "model.heads": 4, "model.depth": 2, "compress.bits": 32}),
    ("longformer w64 d2 w64 h4 bits 8", {"attention.kind": "longformer", "attention.longformer.window": 64, "model.width": 64, "model.heads": 4, "model.depth": 2, "compress.bits": 8}),
    ("longformer w64 d2 w64 h4 bits 4", {"attention.kind": "longformer", "attention.longformer.window": 64, "model.width": 64, "model.heads": 4, "model.depth": 2, "compress.bits": 4}),
]


def figures(cfg, objectives):
    specs = [task_spec(t) for t in cfg.tasks]
    model = build_deployed(cfg, specs) if cfg.compress.active else build_model(cfg, specs)
    return deployment_figures(cfg, model, specs, objectives)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="search_spaces/longseq.yaml")
    args = ap.parse_args(argv)
    space = load_space(args.space, check=False)
    torch.manual_seed(0)
    ref = figures(space.reference_config(), space.objectives)
    bound = None
    for c in space.constraints:
        if c.metric == "latency_ms":
            bound = c
    rows = [{"candidate": "reference (" + ", ".join(f"{k}={v}" for k, v in sorted(space.reference_config().to_dict()["model"].items()) if k in ("depth", "width", "heads")) + ", full)",
             "latency_ms": ref["latency_ms"], "ratio_to_reference": 1.0, "peak_memory_mb": ref["peak_memory_mb"], "size_mb": ref["size_mb"]}]
    for label, params in CANDIDATES:
        t0 = time.perf_counter()
        cfg = space.materialize(params)
        m = figures(cfg, space.objectives)
        rows.append({"candidate": label, "latency_ms": m["latency_ms"], "ratio_to_reference": m["latency_ms"] / ref["latency_ms"],
                     "peak_memory_mb": m["peak_memory_mb"], "size_mb": m["size_mb"]})
        print(f"{label:40s} {m['latency_ms']:8.1f} ms  x{rows[-1]['ratio_to_reference']:.2f}  {m['peak_memory_mb']:7.2f} MiB  "
              f"{m['size_mb']:.3f} MiB  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    with open(HERE / "probe.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
    print(f"machine: {cpu_model()}, torch threads {space.reference_config().deploy.threads}; "
          f"constraint: {bound.label if bound else 'none'}")
    for r in rows:
        print(f"| {r['candidate']} | {r['latency_ms']:.1f} | {r['ratio_to_reference']:.2f} | {r['peak_memory_mb']:.2f} | {r['size_mb']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
