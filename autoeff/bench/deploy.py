"""`autoeff bench deploy`: one small encoder per attention family, measured three ways side by
side in one run: eager PyTorch (fp32), ONNX Runtime fp32 and ONNX Runtime int8.

For each family (every registered family an encoder can hold), one model of the same trunk
(``--width``, ``--depth``, ``--heads``, random weights with a fixed seed, eval mode) on a
ListOps-shaped input of ``--seq-len`` tokens at ``--batch``, is measured with the one protocol
of ``deploy.runtime`` (DESIGN.md, measurement protocol): ``latency_ms`` is the median of
``--repeats`` passes after ``--warmup``; ``peak_memory_mb`` the deployed footprint, the weights at
their stored size plus the activation peak of one pass (memray: every thread's aligned
allocations; under onnxruntime the first run of a fresh session, arena as ``--no-arena`` says).

* ``eager``: :func:`autoeff.measure.model.measure_model` with ``runtime: torch``;
* ``ort_fp32``: the exported graph (``torch.export`` -> ONNX opset 18) in an onnxruntime session
  (:mod:`autoeff.measure.onnxrt`: intra-op threads = ``--threads`` or torch's count, sequential
  execution, ORT_ENABLE_ALL, CPU memory arena on unless ``--no-arena``);
* ``ort_int8``: the same graph after onnxruntime's dynamic quantization (per-channel int8 MatMul
  weights, activations quantized at run time).

The three cells of a family are measured one after the other (close in time, under the same
load). Ratios: ``ort_fp32 / eager`` and ``ort_int8 / eager`` of latency, ``ort_int8 / ort_fp32``.
The price of speed is reported beside it: ``max |y_ort - y_eager|`` of the fp32 graph's logits
and ``max |p_int8 - p|`` of the int8 graph's class probabilities, on ``--examples`` random inputs.
The CPU's int8 instructions (``avx512_vnni`` / ``avx_vnni`` / ``avx2``, read by
:func:`autoeff.measure.host.cpu_flags`) are stated in the outputs: without VNNI, int8 is not
expected to beat fp32.

A family that cannot be exported gets a row saying why (status ``refused``); any other failure
is status ``error`` and makes the exit status 1. Outputs in ``--out`` (default
experiments/deploy_bench): ``results.csv``, ``results.json`` (settings, machine, rows),
``README.md`` (command, machine, date, table) and ``deploy_bench.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import os
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from . import write_rows_csv
from ..measure.host import machine_info

RUNTIMES = ("eager", "ort_fp32", "ort_int8")
FIELDS = ("family", "runtime", "status", "latency_ms", "latency_spread", "ratio_to_eager", "peak_memory_mb",
          "activation_peak_mb", "activation_no_arena_mb", "weights_mb", "max_abs_diff", "max_prob_diff", "same_class", "threads", "wall_s",
          "reason")
QUICK = {"seq_len": 128, "width": 32, "depth": 1, "heads": 2, "warmup": 1, "repeats": 3, "examples": 2}


class BenchError(ValueError):
    """Bad command-line input (exit status 2)."""


def encoder_families() -> List[str]:
    """Every registered family an encoder can hold (not ``causal_only``)."""
    from ..attention import get_attention, list_attentions

    return [n for n in list_attentions() if not getattr(get_attention(n), "causal_only", False)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autoeff bench deploy",
                                description="One model per attention family: eager PyTorch vs ONNX Runtime fp32 vs "
                                            "ONNX Runtime int8, latency and memory side by side in one run.")
    p.add_argument("--families", default="", help="comma-separated (default: every family an encoder can hold)")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads, both runtimes (0 = torch's default)")
    p.add_argument("--no-arena", action="store_true", help="onnxruntime: enable_cpu_mem_arena off")
    p.add_argument("--examples", type=int, default=4, help="random inputs the outputs are compared on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes for a smoke test (" + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + ")")
    p.add_argument("--out", default="experiments/deploy_bench", help="output folder")
    p.add_argument("--no-plot", action="store_true")
    return p


def model_config(family: str, args):
    """The RunConfig of one family's encoder (a ListOps-shaped task of ``args.seq_len`` tokens)."""
    from ..config import parse_run_config

    return parse_run_config({
        "tasks": [{"kind": "listops", "seq_len": args.seq_len}],
        "model": {"depth": args.depth, "width": args.width, "heads": args.heads, "dropout": 0.0},
        "attention": {"kind": family},
        "deploy": {"batch_size": args.batch, "warmup": args.warmup, "repeats": args.repeats,
                   "threads": args.threads},
    }, file="autoeff bench deploy")


def _outputs(fn, inputs) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([torch.as_tensor(fn(x, m)) for x, m in inputs])


def bench_family(family: str, args) -> List[Dict[str, Any]]:
    """The three rows of one family."""
    from ..config import task_spec
    from ..measure.model import measure_model
    from ..measure.onnxrt import OrtUnsupported, default_threads, feeds, graphs, measure_session, OrtSettings
    from ..measure.memory import peak_memory
    from ..measure.onnxrt import initializer_bytes
    from ..model import build_model, example_inputs

    rows: List[Dict[str, Any]] = []

    def row(runtime: str, status: str, **kw) -> Dict[str, Any]:
        r = {f: "" for f in FIELDS}
        r.update(family=family, runtime=runtime, status=status, **kw)
        rows.append(r)
        return r

    t0 = time.perf_counter()
    try:
        cfg = model_config(family, args)
        specs = [task_spec(t) for t in cfg.tasks]
        torch.manual_seed(args.seed)
        model = build_model(cfg, specs).eval()
        spec = specs[0]
        per = measure_model(model, specs, cfg.deploy)
        e = per[spec.name]
        eager_ms = e["latency_ms"]
        row("eager", "ok", latency_ms=eager_ms, latency_spread=e["latency_spread"], ratio_to_eager=1.0,
            peak_memory_mb=e["peak_memory_mb"], activation_peak_mb=e["activation_peak_mb"],
            weights_mb=per["_model"]["size_mb"], threads=int(e["threads"]), wall_s=time.perf_counter() - t0)
    except Exception as ex:  # noqa: BLE001 - a failing cell is reported, the bench goes on
        row("eager", "error", reason=f"{type(ex).__name__}: {ex}"[:300])
        for rt in RUNTIMES[1:]:
            row(rt, "error", reason="eager model failed")
        return rows
    x, mask = example_inputs(spec, args.batch, seed=args.seed)
    inputs = [example_inputs(spec, args.batch, seed=args.seed + 1 + i) for i in range(max(1, args.examples))]
    ref = _outputs(lambda a, b: model(a, b, spec.name), inputs)
    settings = OrtSettings(threads=default_threads(args.threads), mem_arena=not args.no_arena)
    for runtime, bits in (("ort_fp32", 32), ("ort_int8", 8)):
        t0 = time.perf_counter()
        try:
            _, g = graphs(model, spec.name, x, mask, bits)
            m = measure_session(g, x, mask, settings, warmup=args.warmup, repeats=args.repeats)
            from ..measure.onnxrt import session

            plain = m["activation_peak_mb"]
            if settings.mem_arena:  # what the pass's tensors take, without the arena's rounding
                bare = session(g, dataclasses.replace(settings, mem_arena=False))
                plain = peak_memory(lambda: bare.run(None, feeds(bare, x, mask))).peak_mb
                del bare
            sess = session(g, settings)
            got = _outputs(lambda a, b: sess.run(None, feeds(sess, a, b))[0], inputs)
            diff = float((got - ref).abs().max())
            pdiff = float((got.softmax(-1) - ref.softmax(-1)).abs().max())
            same = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
            row(runtime, "ok", latency_ms=m["latency_ms"], latency_spread=m["latency_spread"],
                ratio_to_eager=m["latency_ms"] / eager_ms, peak_memory_mb=m["peak_memory_mb"],
                activation_peak_mb=m["activation_peak_mb"], activation_no_arena_mb=plain,
                weights_mb=initializer_bytes(g) / 2**20,
                max_abs_diff=diff, max_prob_diff=pdiff, same_class=same, threads=int(m["ort_threads"]),
                wall_s=time.perf_counter() - t0)
        except OrtUnsupported as ex:
            row(runtime, "refused", reason=str(ex), wall_s=time.perf_counter() - t0)
        except Exception as ex:  # noqa: BLE001
            row(runtime, "error", reason=f"{type(ex).__name__}: {ex}"[:300], wall_s=time.perf_counter() - t0)
    return rows


def run(args) -> Dict[str, Any]:
    """All families' rows plus settings and machine."""
    from ..measure.onnxrt import int8_instructions, int8_verdict

    families = args.family_list
    load_before = _load()
    rows: List[Dict[str, Any]] = []
    for fam in families:
        print(f"[deploy bench] {fam} ...", file=sys.stderr, flush=True)
        rows.extend(bench_family(fam, args))
    import onnxruntime

    settings = {k: getattr(args, k) for k in ("seq_len", "width", "depth", "heads", "batch", "warmup", "repeats",
                                              "threads", "examples", "seed", "quick")}
    settings["ort_mem_arena"] = not args.no_arena
    settings["ort_execution_mode"] = "ORT_SEQUENTIAL"
    settings["ort_graph_optimization"] = "ORT_ENABLE_ALL"
    settings["families"] = families
    return {"command": "autoeff bench deploy " + " ".join(shlex.quote(a) for a in getattr(args, "argv", [])),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_info("cpu"),
            "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
            "int8_instructions": int8_instructions(), "int8_verdict": int8_verdict(),
            "load_average": {"before": load_before, "after": _load()},
            "settings": settings, "rows": rows}


def _load() -> List[float]:
    """The 1, 5 and 15-minute load averages (other work on the machine while it measured)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _fmt(v: Any, nd: int = 3) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.{nd}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{nd}f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def table(doc: Dict[str, Any]) -> str:
    """The results as a Markdown table (one row per family and runtime)."""
    lines = ["| family | runtime | latency ms | x eager | peak MiB | activations MiB | (no arena) | weights MiB | price "
             "| status |", "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in doc["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['family']} | {r['runtime']} | | | | | | | | {r['status']}: {r['reason']} |")
            continue
        price = ""
        if r["runtime"] == "ort_fp32":
            price = f"max abs diff {r['max_abs_diff']:.2g}"
        elif r["runtime"] == "ort_int8":
            price = f"max prob diff {r['max_prob_diff']:.2g}, same class {r['same_class']:.0%}"
        lines.append(f"| {r['family']} | {r['runtime']} | {_fmt(r['latency_ms'])} | {r['ratio_to_eager']:.2f} | "
                     f"{_fmt(r['peak_memory_mb'])} | {_fmt(r['activation_peak_mb'])} | "
                     f"{_fmt(r['activation_no_arena_mb'])} | {_fmt(r['weights_mb'])} | "
                     f"{price} | ok |")
    return "\n".join(lines)


def findings(doc: Dict[str, Any]) -> List[str]:
    """The run's headline comparisons, computed from its rows (so they never go stale)."""
    by = {(r["family"], r["runtime"]): r for r in doc["rows"] if r["status"] == "ok"}
    fams = list(dict.fromkeys(r["family"] for r in doc["rows"]))
    both = [f for f in fams if (f, "eager") in by and (f, "ort_fp32") in by]
    out: List[str] = []
    if both:
        ratios = ", ".join(f"{f} {by[(f, 'ort_fp32')]['ratio_to_eager']:.2f}x" for f in both)
        out.append(f"onnxruntime fp32 latency / eager: {ratios} (below 1: onnxruntime is faster).")
    q = [f for f in fams if (f, "ort_fp32") in by and (f, "ort_int8") in by]
    if q:
        ratios = ", ".join(f"{f} {by[(f, 'ort_int8')]['latency_ms'] / by[(f, 'ort_fp32')]['latency_ms']:.2f}x" for f in q)
        worst = max(by[(f, "ort_int8")]["max_prob_diff"] for f in q)
        out.append(f"onnxruntime int8 latency / onnxruntime fp32: {ratios}; price: class probabilities within "
                   f"{worst:.2g} of eager. {doc['int8_verdict']}.")
        mem = ", ".join(f"{f} {by[(f, 'ort_int8')]['weights_mb'] / by[(f, 'ort_fp32')]['weights_mb']:.2f}x" for f in q)
        out.append(f"int8 graph weights / fp32 graph weights: {mem} (only MatMul/Gemm weights are quantized; "
                   "embeddings, norms and biases stay fp32).")
    if both:
        act = ", ".join(f"{f} {by[(f, 'ort_fp32')]['activation_no_arena_mb'] or by[(f, 'ort_fp32')]['activation_peak_mb']:.3g}"
                        f" / {by[(f, 'eager')]['activation_peak_mb']:.3g}" for f in both)
        out.append(f"activation peak MiB, onnxruntime fp32 without arena / eager: {act}.")
    refused = {}
    for r in doc["rows"]:
        if r["status"] == "refused":
            refused.setdefault(r["family"], r["reason"])
    for f, why in refused.items():
        out.append(f"{f}: {why}.")
    return out


def readme(doc: Dict[str, Any]) -> str:
    m, s = doc["machine"], doc["settings"]
    have = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in doc["int8_instructions"].items())
    return "\n".join([
        "# Deployment runtimes: eager PyTorch vs ONNX Runtime fp32 vs ONNX Runtime int8", "",
        "One small encoder per attention family, measured three ways in one run (`autoeff bench deploy`, "
        "autoeff/bench/deploy.py); the same figures as `deploy.runtime: torch` / `onnxruntime` record for a trial.", "",
        f"- command: `{doc['command']}`",
        f"- date: {doc['date']}",
        f"- machine: {m['cpu']} x{m['cpus']} ({m['host']}); torch {doc['versions']['torch']}, "
        f"onnxruntime {doc['versions']['onnxruntime']}",
        f"- int8 instructions: {have}. {doc['int8_verdict']}.",
        f"- model: width {s['width']}, depth {s['depth']}, heads {s['heads']}, batch {s['batch']} x "
        f"{s['seq_len']} tokens, random weights (seed {s['seed']}); {s['warmup']} warm-up + {s['repeats']} timed "
        f"passes, median; threads {s['threads'] or 'torch default'}",
        f"- onnxruntime session: intra-op threads as above, inter-op 1, {s['ort_execution_mode']}, "
        f"{s['ort_graph_optimization']}, CPU memory arena {'on' if s['ort_mem_arena'] else 'off'}",
        f"- load average (1, 5, 15 min) before / after: {doc['load_average']['before']} / "
        f"{doc['load_average']['after']}", "",
        "`x eager`: latency / the eager model's. `peak MiB` = weights at their stored size + the activation peak "
        "of one pass (memray, every thread's aligned allocations; onnxruntime: the first run of a fresh session, "
        "so with the arena on it counts what the arena reserves; `(no arena)`: the same pass in a session without the "
        "arena, the tensors themselves). Price: fp32 graph, max |logit difference| to "
        "eager; int8 graph, max |class-probability difference| and the share of inputs with the same class, "
        f"over {s['examples']} random inputs.", "",
        table(doc), "", "## What this run shows (computed from the rows above)", "",
        *[f"- {line}" for line in findings(doc)], "",
        "How to read it: onnxruntime runs the graph that `torch.onnx.export` writes at opset 18, where "
        "`scaled_dot_product_attention` becomes MatMul + Softmax + MatMul over the whole (B, H, N, N) score "
        "tensor; eager PyTorch's CPU SDPA is a fused kernel that never holds it. That is where full attention's "
        "large activation peak (and its lost speed) under onnxruntime come from; the linear-time families do not "
        "build that tensor in either runtime. int8 halves the graph's weights at most (embeddings, norms, biases "
        "and weights that are not 2-D MatMul operands stay fp32), and its speed depends on the int8 instructions "
        "above. The machine is shared: the load average says how busy it was; latency ratios within one row's "
        "family were measured back to back.", "",
        "![latency and memory per family and runtime](deploy_bench.png)", "",
    ])


def write(doc: Dict[str, Any], out: Path, with_plot: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_rows_csv(out / "results.csv", FIELDS, doc["rows"])
    (out / "results.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out / "README.md").write_text(readme(doc))
    if with_plot:
        plot(doc, out / "deploy_bench.png")


def plot(doc: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(dict.fromkeys(r["family"] for r in doc["rows"]))
    cell = {(r["family"], r["runtime"]): r for r in doc["rows"] if r["status"] == "ok"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    w = 0.27
    for ax, key, title in ((axes[0], "latency_ms", "latency (ms, median)"),
                           (axes[1], "peak_memory_mb", "deployed peak memory (MiB)")):
        for i, rt in enumerate(RUNTIMES):
            xs = [j + (i - 1) * w for j in range(len(fams))]
            ys = [cell[(f, rt)][key] if (f, rt) in cell else 0.0 for f in fams]
            ax.bar(xs, ys, w, label=rt)
            for xx, f in zip(xs, fams):
                if (f, rt) not in cell:
                    ax.text(xx, 0, "x", ha="center", va="bottom", fontsize=8, color="red")
        ax.set_xticks(range(len(fams)))
        ax.set_xticklabels(fams, rotation=30, ha="right")
        ax.set_title(title)
    axes[0].legend()
    s = doc["settings"]
    fig.suptitle(f"eager vs onnxruntime fp32 vs int8: {s['batch']} x {s['seq_len']} tokens, width {s['width']}, "
                 f"depth {s['depth']} ({doc['machine']['cpu']}; x = refused)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] = ()) -> int:
    """Run the benchmark (``autoeff bench deploy ARGS``); returns the exit status."""
    args = _parser().parse_args(list(argv))
    args.argv = list(argv)
    if args.quick:
        defaults = _parser().parse_args([])
        for k, v in QUICK.items():
            if getattr(args, k) == getattr(defaults, k):
                setattr(args, k, v)
    try:
        from ..measure.onnxrt import available

        allowed = encoder_families()
        fams = [s.strip() for s in args.families.split(",") if s.strip()] or allowed
        unknown = [f for f in fams if f not in allowed]
        if unknown:
            raise BenchError(f"--families {args.families!r}: unknown {unknown}; allowed: {', '.join(allowed)}")
        if args.heads < 1 or args.width % args.heads:
            raise BenchError(f"--heads {args.heads} must divide --width {args.width}")
        if min(args.seq_len, args.width, args.depth, args.batch, args.repeats, args.examples) < 1 or args.warmup < 0:
            raise BenchError("--seq-len, --width, --depth, --batch, --repeats and --examples must be >= 1, "
                             "--warmup >= 0")
        if args.threads < 0:
            raise BenchError("--threads must be >= 0")
        if not available():
            raise BenchError("onnxruntime is not installed (pip install onnxruntime)")
        args.family_list = fams
    except BenchError as e:
        print(f"autoeff bench deploy: {e}", file=sys.stderr)
        return 2
    doc = run(args)
    out = Path(args.out)
    write(doc, out, with_plot=not args.no_plot)
    print(f"{doc['int8_verdict']}\n")
    print(table(doc))
    print(f"wrote {out}/results.csv, results.json, README.md" + ("" if args.no_plot else ", deploy_bench.png"),
          file=sys.stderr)
    errors = [r for r in doc["rows"] if r["status"] == "error"]
    if errors:
        print(f"autoeff bench deploy: {len(errors)} of {len(doc['rows'])} cells failed (see README.md)",
              file=sys.stderr)
        return 1
    return 0
