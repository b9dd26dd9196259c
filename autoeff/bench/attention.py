"""`autoeff bench attention`: every attention family against full attention, in one run.

For each sequence length N (outer loop, so that all families at one N are measured close in
time and under the same machine load) and each variant (a family plus its knobs), one whole
attention layer (input and output projections included) is built with a fixed seed and
measured on a (batch, N, width) input with a padding mask, as the encoder calls its layers
(True at real tokens; the second half of the batch is padded over its last eighth):

* forward latency in eval mode: warm-up, then the median of timed passes
  (:func:`autoeff.measure.measure_latency`);
* forward+backward time in train mode (the input requires grad, as inside an encoder);
* peak memory of each pass above the idle baseline, every thread's allocations
  (:func:`autoeff.measure.peak_memory`, ``grad=True`` for forward+backward), and the layer's
  parameters (its footprint is the two together);
* the price of the speed: the relative error of the forward output against full attention's
  on the same input with the same projection weights (the variant's Q/K/V/output projections
  are copied from the full-attention layer; Reformer's shared QK takes the query rows),
  ``|y - y_full| / |y_full|`` over the real positions (Frobenius norms);
* ratios to full attention at the same N (speed-up = full's time / the variant's time;
  memory ratio = the variant's peak / full's), and the log-log slope of memory (and time)
  against N.

Skip rule: before a pass, its time per call and its memory are predicted from the same
variant's two previous lengths (log-log extrapolation, with a slope of at least 2 for families
that are not subquadratic and at least 1 for the others). A pass predicted to take longer than
``--max-call-s`` per call, or to need more than ``--max-mem-gb`` (parameters included), is
reported as skipped with the reason instead of being run (e.g. full attention's
forward+backward at 16K on a CPU, or the random Synthesizer's N x N parameters at large N).
Errors (out of memory, a family rejecting its options at a size) are reported, not raised.

Timing protocol: the memory pass runs first and doubles as the first warm-up; its wall time
sets the number of timed repeats so that one measurement takes about ``--budget-s`` (at
least ``MIN_TIMED`` = 3 calls, at most ``--repeats``); long calls get no extra warm-up. The skip
rule budgets a pass as its memory pass plus 3 timed calls; a cell that still ends with fewer
than 3 timed calls (an error mid-way) is marked in the tables.

Outputs in ``--out``: ``results.csv``, ``results.json`` (settings, rows, slopes, targets),
``results.md`` (the tables, ready to paste into a README) and ``attention_bench.png``
(latency and memory against N, log-log). Progress lines go to stderr, the tables to stdout.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..attention import get_attention, list_attentions
from ..measure import measure_latency, model_size, peak_memory
from ..measure.latency import _quantile


@dataclass
class Variant:
    """One benchmarked configuration: a label, a registered family and its knobs."""

    label: str
    family: str
    options: Dict[str, Any] = field(default_factory=dict)
    quick: Dict[str, Any] = field(default_factory=dict)  # overrides for --quick (tiny sizes)
    default: bool = True  # part of the default run


VARIANTS: List[Variant] = [
    Variant("full", "full"),
    Variant("linformer", "linformer", {"rank": 256}, {"rank": 32}),
    Variant("longformer", "longformer", {"window": 256}, {"window": 32}),
    Variant("sliding_window", "sliding_window", {"window": 256}, {"window": 16}),
    Variant("reformer", "reformer", {"n_hashes": 1, "bucket_size": 64}, {"bucket_size": 16}),
    Variant("linear", "linear", {"feature_map": "elu"}),
    Variant("performer", "linear", {"feature_map": "favor", "features": 256}, {"features": 32}),
    Variant("synthesizer", "synthesizer", {"mode": "factorized", "rank": 32}, {"rank": 8}),
    Variant("gated_deltanet", "gated_deltanet", {"chunk_size": 64}, {"chunk_size": 16}),  # causal only
    Variant("synthesizer-dense", "synthesizer", {"mode": "dense"}, default=False),
    Variant("synthesizer-random", "synthesizer", {"mode": "random"}, default=False),
    Variant("synthesizer-mix", "synthesizer", {"mode": "factorized", "rank": 32, "mix": True}, {"rank": 8},
            default=False),
]

#: the bench's targets (what an efficient family must beat full attention by to earn its place; see
#: experiments/attention_bench/README.md), at batch 4, width 256, 4 heads, fp32 (speed-ups: full / variant)
TARGET_FWD_4K = {"linformer": 3.0, "longformer": 3.0, "reformer": 2.5, "linear": 3.0}
TARGET_FB_4K = 2.0
TARGET_FWD_16K = 8.0
TARGET_MEM_SLOPE = 1.1
ISSUE_SETTINGS = {"batch": 4, "width": 256, "heads": 4, "dtype": "fp32"}

MIN_TIMED = 3  # timed calls per cell at least (after the warm-up), wherever the skip rule allows
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PASSES = ("fwd", "fb")


# ------------------------------------------------------------------------------------------
# arguments
# ------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="autoeff bench attention",
        description="Benchmark every attention family against full attention in one run.",
    )
    p.add_argument("--lengths", default="1024,2048,4096,8192,16384", help="comma-separated sequence lengths")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--variants", default="default",
                   help="comma-separated labels, 'default' or 'all' (full attention is always included); "
                        "see --list")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="LABEL.KEY=VALUE",
                   help="change a variant's knob, e.g. --set linformer.rank=128 (repeatable)")
    p.add_argument("--no-backward", action="store_true", help="forward passes only")
    p.add_argument("--warmup", type=int, default=1, help="extra warm-up passes for calls shorter than budget/4")
    p.add_argument("--repeats", type=int, default=5, help="most timed passes per measurement")
    p.add_argument("--budget-s", type=float, default=10.0, help="about this long per latency measurement")
    p.add_argument("--max-call-s", type=float, default=20.0,
                   help="skip a pass predicted to take longer than this per call")
    p.add_argument("--max-mem-gb", type=float, default=0.0,
                   help="skip a pass predicted to need more (0 = half the RAM, or 80%% of the GPU)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--slope-from", type=int, default=4096,
                   help="memory/time slopes are fitted from this length (or the next measured) to the longest")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="output folder (default experiments/attention_bench, "
                                                "or experiments/attention_bench/quick with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the whole pipeline")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--list", action="store_true", help="list the variants and exit")
    return p


class BenchError(ValueError):
    """Bad command-line input."""


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _select_variants(args) -> List[Variant]:
    known = {v.label: v for v in VARIANTS}
    # every registered family is benchmarked: one not covered above runs with its defaults
    covered = {v.family for v in VARIANTS}
    auto = [Variant(name, name) for name in list_attentions() if name not in covered]
    for v in auto:
        known[v.label] = v
    if args.variants in ("default", ""):
        chosen = [v for v in VARIANTS if v.default] + auto
    elif args.variants == "all":
        chosen = list(VARIANTS) + auto
    else:
        chosen = []
        for label in [s.strip() for s in args.variants.split(",") if s.strip()]:
            if label not in known:
                raise BenchError(f"--variants: unknown variant {label!r}; allowed: {', '.join(known)}")
            chosen.append(known[label])
    if not any(v.label == "full" for v in chosen):
        chosen.insert(0, known["full"])
    chosen.sort(key=lambda v: v.label != "full")  # the baseline first at every N
    chosen = [dataclasses.replace(v, options=dict(v.options), quick=dict(v.quick)) for v in chosen]
    by_label = {v.label: v for v in chosen}
    for s in args.sets:
        if "=" not in s or "." not in s.split("=", 1)[0]:
            raise BenchError(f"--set {s!r}: expected LABEL.KEY=VALUE, e.g. linformer.rank=128")
        lhs, value = s.split("=", 1)
        label, key = lhs.split(".", 1)
        if label not in by_label:
            raise BenchError(f"--set {s!r}: variant {label!r} is not in this run; in the run: {', '.join(by_label)}")
        by_label[label].options[key] = _parse_value(value)
        by_label[label].quick.pop(key, None)
    return chosen


# ------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------


def _mem_limit_bytes(args, device: str) -> float:
    if args.max_mem_gb > 0:
        return args.max_mem_gb * 2**30
    if device.startswith("cuda"):
        return 0.8 * torch.cuda.get_device_properties(torch.device(device)).total_memory
    try:
        return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def _predict(points: List[Tuple[int, float]], n: int, default_slope: float) -> Optional[float]:
    """Log-log extrapolation of (N, value) points to n.

    The slope is the measured one between the last two points, but never below
    ``default_slope`` (1 for subquadratic families, 2 for the others): a noisy measurement
    must not make a quadratic pass look cheap.
    """
    pts = [(a, v) for a, v in points if v > 0]
    if not pts:
        return None
    slope = default_slope
    if len(pts) >= 2:
        (n1, v1), (n2, v2) = pts[-2], pts[-1]
        if n2 != n1:
            slope = math.log(v2 / v1) / math.log(n2 / n1)
    slope = min(max(slope, default_slope), 3.0)
    n_last, v_last = pts[-1]
    return v_last * (n / n_last) ** slope


def _options_for(variant: Variant, quick: bool):
    fam = get_attention(variant.family)
    values = dict(variant.options)
    if quick:
        values.update(variant.quick)
    fields = {f.name for f in dataclasses.fields(fam.options)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise BenchError(f"{variant.label}: {variant.family} has no option(s) {unknown}; it has {sorted(fields)}")
    return fam, fam.options(**values)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _empty_row(variant: Variant, n: int) -> Dict[str, Any]:
    row: Dict[str, Any] = {"variant": variant.label, "family": variant.family, "N": n}
    for p in PASSES:
        row.update({f"{p}_{k}": None for k in ("ms", "min_ms", "p10_ms", "p90_ms", "spread", "repeats", "mem_mb")})
        row[f"{p}_status"] = "not run"
    return row


def _error_text(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


class _Entry:
    """One variant at one length: its row, model and the passes still to time."""

    def __init__(self, variant: Variant, row: Dict[str, Any]):
        self.variant, self.row = variant, row
        self.model = None
        self.fns: Dict[str, Any] = {}  # pass -> callable
        self.first_s: Dict[str, float] = {}  # pass -> wall time of the memory pass
        self.samples: Dict[str, List[float]] = {}


def _plan(variant: Variant, n: int, *, args, history, param_history, mem_limit) -> Tuple[_Entry, Any, Any, Dict]:
    """Options, problems at this size and the skip rule, before anything is built."""
    entry = _Entry(variant, _empty_row(variant, n))
    row = entry.row
    try:
        fam, opts = _options_for(variant, args.quick)
    except (BenchError, TypeError, ValueError) as e:
        for p in PASSES:
            row[f"{p}_status"] = f"error: {e}"
        return entry, None, None, {}
    row["options"] = dataclasses.asdict(opts)
    problems = fam.problems(opts, seq_len=n, width=args.width, heads=args.heads)
    if problems:
        key, value, what, _ = problems[0]
        for p in PASSES:
            row[f"{p}_status"] = f"skipped: {key}={value!r}: {what}"
        return entry, None, None, {}
    default_slope = 1.0 if fam.subquadratic else 2.0
    pred_params = _predict(param_history.get(variant.label, []), n, default_slope) or 0.0
    plans = {}
    for p in PASSES:
        if p == "fb" and args.no_backward:
            row[f"{p}_status"] = "skipped: --no-backward"
            continue
        pts = history.get((variant.label, p), [])
        t_pred = _predict([(a, t) for a, t, _ in pts], n, default_slope)
        m_pred = _predict([(a, m) for a, _, m in pts], n, default_slope)
        if t_pred is not None and t_pred > args.max_call_s:
            row[f"{p}_status"] = (f"skipped: predicted {t_pred:.0f} s per call > --max-call-s {args.max_call_s:g} "
                                  f"(a cell takes {MIN_TIMED + 1} calls)")
        elif m_pred is not None and m_pred + pred_params > mem_limit:
            row[f"{p}_status"] = (f"skipped: predicted {(m_pred + pred_params) / 2**30:.1f} GiB > "
                                  f"limit {mem_limit / 2**30:.1f} GiB")
        else:
            plans[p] = True
    return entry, fam, opts, plans


def bench_mask(batch: int, n: int) -> torch.Tensor:
    """(batch, n) keep-mask as the encoder passes one: True at real tokens; the second half of
    the batch is padded over its last eighth (never the first token)."""
    mask = torch.ones(batch, n, dtype=torch.bool)
    mask[batch // 2:, max(1, n - n // 8):] = False
    return mask


@torch.no_grad()
def copy_projections(full: torch.nn.Module, other: torch.nn.Module) -> None:
    """Give ``other`` full attention's Q/K/V and output projections where it has them, so that
    its error against full attention measures the attention mechanism, not other weights.
    Reformer's shared QK projection takes the query rows; Synthesizer's value (and, with mix,
    query/key) projections take theirs."""
    d = full.out.weight.shape[0]
    wq, wk, wv = full.qkv.weight.split(d)
    bq, bk, bv = full.qkv.bias.split(d)
    params = dict(other.named_parameters())
    sources = {
        "out.weight": full.out.weight, "out.bias": full.out.bias,
        "qkv.weight": {3 * d: full.qkv.weight, 2 * d: torch.cat([wq, wv])},
        "qkv.bias": {3 * d: full.qkv.bias, 2 * d: torch.cat([bq, bv])},
        "v.weight": wv, "v.bias": bv, "qk.weight": torch.cat([wq, wk]), "qk.bias": torch.cat([bq, bk]),
    }
    for name, src in sources.items():
        p = params.get(name)
        if p is None:
            continue
        if isinstance(src, dict):
            src = src.get(p.shape[0])
        if src is not None and src.shape == p.shape:
            p.copy_(src)


@torch.no_grad()
def _error_vs_full(full: torch.nn.Module, model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> float:
    """Relative error of ``model``'s forward output against ``full``'s at the real positions."""
    full.eval()
    model.eval()
    ref = full(x, mask)[mask].float()
    out = model(x, mask)[mask].float()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def _bench_length(n: int, variants: List[Variant], *, args, device: str, dtype: torch.dtype,
                  history, param_history, mem_limit, progress) -> List[Dict[str, Any]]:
    """Measure every variant at one length.

    Memory passes first (one per variant and pass; each also warms its pass up), then the
    timed calls interleaved round-robin over the variants, so that a change of machine load
    during the measurement hits every variant alike and the ratios stay meaningful.
    """
    g = torch.Generator(device="cpu").manual_seed(args.seed + n)
    x = torch.randn(args.batch, n, args.width, generator=g).to(device=device, dtype=dtype)
    xg = x.detach().clone().requires_grad_(True)
    gy = torch.randn(x.shape, generator=g).to(device=device, dtype=dtype)
    mask = bench_mask(args.batch, n).to(device)
    entries: List[_Entry] = []
    full_model = None
    for v in variants:
        entry, fam, opts, plans = _plan(v, n, args=args, history=history, param_history=param_history,
                                        mem_limit=mem_limit)
        entries.append(entry)
        if not plans:
            continue
        row = entry.row
        try:
            torch.manual_seed(args.seed)
            model = fam(args.width, args.heads, opts, max_len=n).to(device=device, dtype=dtype)
            if v.label == "full":
                full_model = model
            elif full_model is not None:
                copy_projections(full_model, model)
            entry.model = model
            param_bytes = model_size(model)["size_bytes"]  # parameters and buffers, as stored
            param_history.setdefault(v.label, []).append((n, float(param_bytes)))
            row["param_mb"] = param_bytes / 2**20

            def fwd(model=model):
                return model(x, mask)

            def fb(model=model):
                with torch.inference_mode(False), torch.enable_grad():
                    model.zero_grad(set_to_none=True)
                    xg.grad = None
                    model(xg, mask).backward(gy)

            for p, fn in (("fwd", fwd), ("fb", fb)):
                if p not in plans:
                    continue
                model.train(p == "fb")
                _sync(device)
                t0 = time.perf_counter()
                mem = peak_memory(fn, device=device, grad=p == "fb")
                _sync(device)
                entry.first_s[p] = time.perf_counter() - t0
                row[f"{p}_mem_mb"] = mem.peak_bytes / 2**20
                row[f"{p}_status"] = "ok"
                entry.fns[p] = fn
                entry.samples[p] = []
            model.zero_grad(set_to_none=True)
            if "fwd" in plans and full_model is not None:
                row["error_vs_full"] = _error_vs_full(full_model, model, x, mask)
        except (RuntimeError, MemoryError) as e:  # out of memory and friends: report, keep going
            for p in PASSES:
                if row[f"{p}_status"] in ("not run", "ok"):
                    row[f"{p}_status"] = f"error: {_error_text(e)}"
            entry.fns.clear()
            entry.model = None
            if device.startswith("cuda"):
                torch.cuda.empty_cache()

    # timed calls, round-robin; a pass gets about --budget-s of samples (1 .. --repeats)
    want = {(i, p): max(MIN_TIMED, min(args.repeats, int(args.budget_s / max(e.first_s[p], 1e-6))))
            for i, e in enumerate(entries) for p in e.fns}
    for rnd in range(max(want.values(), default=0)):
        for i, e in enumerate(entries):
            for p, fn in list(e.fns.items()):
                if rnd >= want[(i, p)]:
                    continue
                e.model.train(p == "fb")
                warm = args.warmup if rnd == 0 and e.first_s[p] < args.budget_s / 4 else 0
                try:
                    lat = measure_latency(fn, warmup=warm, repeats=1, device=device, threads=args.threads)
                    e.samples[p].append(lat.median_ms)
                except (RuntimeError, MemoryError) as err:
                    e.row[f"{p}_status"] = f"error: {_error_text(err)}"
                    del e.fns[p]
    for e in entries:
        for p, samples in e.samples.items():
            if not samples or e.row[f"{p}_status"] != "ok":
                continue
            med = statistics.median(samples)
            p10, p90 = _quantile(samples, 0.1), _quantile(samples, 0.9)
            e.row.update({f"{p}_ms": med, f"{p}_min_ms": min(samples), f"{p}_p10_ms": p10, f"{p}_p90_ms": p90,
                          f"{p}_spread": (p90 - p10) / med if med > 0 else 0.0, f"{p}_repeats": len(samples)})
            history.setdefault((e.variant.label, p), []).append((n, med / 1e3, e.row[f"{p}_mem_mb"] * 2**20))
        if e.model is not None:
            e.model.zero_grad(set_to_none=True)
        e.model, e.fns = None, {}
        progress(e.row)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return [e.row for e in entries]


# ------------------------------------------------------------------------------------------
# ratios, slopes, targets
# ------------------------------------------------------------------------------------------


def _add_ratios(rows: List[Dict[str, Any]]) -> None:
    full = {r["N"]: r for r in rows if r["variant"] == "full"}
    for r in rows:
        f = full.get(r["N"], {})
        for p in PASSES:
            mine, base = r.get(f"{p}_ms"), f.get(f"{p}_ms")
            r[f"{p}_speedup"] = base / mine if mine and base else None
            mine, base = r.get(f"{p}_min_ms"), f.get(f"{p}_min_ms")  # robust to extra load: best call
            r[f"{p}_speedup_min"] = base / mine if mine and base else None
            mine, base = r.get(f"{p}_mem_mb"), f.get(f"{p}_mem_mb")
            r[f"{p}_mem_ratio"] = mine / base if mine is not None and base else None


def _slope(rows: List[Dict[str, Any]], key: str, start: int) -> Optional[Dict[str, Any]]:
    pts = sorted((r["N"], r[key]) for r in rows if r.get(key))
    if len(pts) < 2:
        return None
    first = next((i for i, (n, _) in enumerate(pts) if n >= start), None)
    if first is None or first == len(pts) - 1:
        first = max(0, len(pts) - 2)
    (n1, v1), (n2, v2) = pts[first], pts[-1]
    if n1 == n2 or v1 <= 0 or v2 <= 0:
        return None
    return {"slope": math.log(v2 / v1) / math.log(n2 / n1), "from": n1, "to": n2}


def _slopes(rows, labels, start) -> Dict[str, Dict[str, Any]]:
    out = {}
    for label in labels:
        mine = [r for r in rows if r["variant"] == label]
        out[label] = {f"{p}_{what}": _slope(mine, f"{p}_{key}", start)
                      for p in PASSES for what, key in (("mem_slope", "mem_mb"), ("time_slope", "ms"))}
    return out


def _targets(rows, slopes, settings) -> List[Dict[str, Any]]:
    by = {(r["variant"], r["N"]): r for r in rows}
    out = []

    def add(variant, what, value, target, ok, best=None):
        out.append({"variant": variant, "what": what, "target": target, "value": value,
                    "met": None if value is None else bool(ok), "value_best_call": best})

    for v, t4 in TARGET_FWD_4K.items():
        if not any(r["variant"] == v for r in rows):
            continue
        r4, r16, f4 = by.get((v, 4096), {}), by.get((v, 16384), {}), by.get(("full", 4096), {})
        s = r4.get("fwd_speedup")
        add(v, "forward speed-up at N=4096", s, f">= {t4:g}x", s is not None and s >= t4, r4.get("fwd_speedup_min"))
        s = r4.get("fb_speedup")
        add(v, "fwd+bwd speed-up at N=4096", s, f">= {TARGET_FB_4K:g}x", s is not None and s >= TARGET_FB_4K,
            r4.get("fb_speedup_min"))
        s = r16.get("fwd_speedup")
        add(v, "forward speed-up at N=16384", s, f">= {TARGET_FWD_16K:g}x", s is not None and s >= TARGET_FWD_16K,
            r16.get("fwd_speedup_min"))
        sl = (slopes.get(v) or {}).get("fwd_mem_slope")
        ok_range = sl is not None and sl["from"] == 4096 and sl["to"] == 16384
        val = sl["slope"] if ok_range else None
        add(v, "forward memory slope 4K-16K", val, f"<= {TARGET_MEM_SLOPE:g}",
            val is not None and val <= TARGET_MEM_SLOPE)
        m, fm = r4.get("fwd_mem_mb"), f4.get("fwd_mem_mb")
        val = m / fm if m is not None and fm else None
        add(v, "forward memory at 4K vs full", val, "<= 1x", val is not None and val <= 1.0)
    return out


# ------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------

CSV_FIELDS = ["variant", "family", "N", "fwd_ms", "fwd_speedup", "error_vs_full", "fwd_mem_mb", "fwd_mem_ratio", "fb_ms",
              "fb_speedup", "fb_mem_mb", "fb_mem_ratio", "fwd_min_ms", "fwd_speedup_min", "fwd_p10_ms", "fwd_p90_ms",
              "fwd_repeats", "fb_min_ms", "fb_speedup_min", "fb_p10_ms", "fb_p90_ms", "fb_repeats", "param_mb",
              "fwd_status", "fb_status", "options"]


def _cell(r, value_key, ratio_key, spec, ratio_spec, suffix):
    if r is None:
        return "-"
    v = r.get(value_key)
    if v is None:
        st = r.get(value_key.split("_")[0] + "_status", "")
        return "skip" if st.startswith("skipped") else ("err" if st.startswith("error") else "-")
    reps = r.get(value_key.split("_")[0] + "_repeats")
    few = f" [{reps} call{'s' if reps != 1 else ''}]" if value_key.endswith("_ms") and reps is not None and reps < MIN_TIMED else ""
    ratio = r.get(ratio_key) if ratio_key else None
    if ratio is None or r["variant"] == "full":
        return f"{v:{spec}}{few}"
    return f"{v:{spec}} ({ratio:{ratio_spec if ratio >= 0.995 else '.2f'}}{suffix}){few}"


def markdown(result: Dict[str, Any]) -> str:
    rows, meta = result["rows"], result["meta"]
    labels = meta["variants"]
    lengths = meta["lengths"]
    by = {(r["variant"], r["N"]): r for r in rows}
    s = meta["settings"]
    lines = [
        f"Settings: batch {s['batch']}, width {s['width']}, {s['heads']} heads, {s['dtype']}, padding mask "
        f"(half the batch padded over its last eighth), at least {MIN_TIMED} timed calls per cell after a warm-up "
        f"(fewer are marked [n calls]), device "
        f"{meta['device_name']}, {meta['threads']} threads, torch {meta['torch']}; "
        f"load average {meta['loadavg_start']} at start, {meta['loadavg_end']} at end.",
        "",
    ]

    def table(title, value_key, ratio_key, spec, ratio_spec, suffix):
        lines.extend([f"### {title}", "", "| variant | " + " | ".join(f"N={n}" for n in lengths) + " |",
                      "| --- |" + " ---: |" * len(lengths)])
        for label in labels:
            cells = [_cell(by.get((label, n)), value_key, ratio_key, spec, ratio_spec, suffix) for n in lengths]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")

    table("Forward latency, ms (speed-up vs full)", "fwd_ms", "fwd_speedup", ".1f", ".1f", "x")
    table("Relative error of the forward output vs full attention (same input, same projections)",
          "error_vs_full", None, ".3f", "", "")
    if not meta["settings"].get("no_backward"):
        table("Forward+backward time, ms (speed-up vs full)", "fb_ms", "fb_speedup", ".1f", ".1f", "x")
    table("Peak memory of the forward pass above the idle layer, MB (ratio to full)", "fwd_mem_mb", "fwd_mem_ratio",
          ".1f", ".2f", "x")
    table("Layer parameters and buffers, MB (the forward footprint is this plus the peak above)", "param_mb", None,
          ".2f", "", "")
    if not meta["settings"].get("no_backward"):
        table("Peak memory of forward+backward, MB (ratio to full)", "fb_mem_mb", "fb_mem_ratio", ".1f", ".2f", "x")

    lines.extend(["### Log-log slopes against N", "",
                  "| variant | memory, fwd | memory, fwd+bwd | time, fwd | time, fwd+bwd |",
                  "| --- | ---: | ---: | ---: | ---: |"])
    for label in labels:
        sl = result["slopes"].get(label, {})

        def f(key):
            v = sl.get(key)
            return "-" if not v else f"{v['slope']:.2f} ({v['from']}-{v['to']})"

        lines.append(f"| {label} | {f('fwd_mem_slope')} | {f('fb_mem_slope')} | {f('fwd_time_slope')} | "
                     f"{f('fb_time_slope')} |")
    lines.append("")
    if any(t["value"] is not None for t in result["targets"]):
        note = "" if meta["issue_settings"] else " (this run's settings differ from the targets': indicative only)"
        lines.extend([f"### Targets{note}", "",
                      "Speed-ups are ratios of medians; in brackets the ratio of the best calls, which extra "
                      "machine load disturbs less.", "",
                      "| variant | target | measured | met |", "| --- | --- | ---: | :---: |"])
        for t in result["targets"]:
            v, best = t["value"], t.get("value_best_call")
            if v is None:
                val = "-"
            elif "slope" in t["what"] or "memory" in t["what"]:
                val = f"{v:.2f}"
            else:
                val = f"{v:.1f}x" + (f" ({best:.1f}x)" if best is not None else "")
            met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
            lines.append(f"| {t['variant']} | {t['what']} {t['target']} | {val} | {met} |")
        lines.append("")
    skipped = [(r["variant"], r["N"], p, r[f"{p}_status"]) for r in rows for p in PASSES
               if r[f"{p}_status"] not in ("ok", "skipped: --no-backward")]
    if skipped or meta["missing"]:
        lines.extend(["### Not measured", ""])
        for label in meta["missing"]:
            lines.append(f"- {label}: family not registered")
        for v, n, p, st in skipped:
            lines.append(f"- {v} N={n} {'forward' if p == 'fwd' else 'fwd+bwd'}: {st}")
        lines.append("")
    return "\n".join(lines)


def _plot(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, labels = result["rows"], result["meta"]["variants"]
    panels = [("fwd_ms", "forward latency (ms)"), ("fb_ms", "forward+backward time (ms)"),
              ("fwd_mem_mb", "peak memory, forward (MB)"), ("fb_mem_mb", "peak memory, fwd+bwd (MB)")]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.5))
    for ax, (key, title) in zip(axes.flat, panels):
        for label in labels:
            pts = sorted((r["N"], r[key]) for r in rows if r["variant"] == label and r.get(key))
            if pts:
                style = dict(lw=2.5, color="black") if label == "full" else dict(lw=1.5)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, label=label, **style)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    s = result["meta"]["settings"]
    fig.suptitle(f"one attention layer: batch {s['batch']}, width {s['width']}, {s['heads']} heads, "
                 f"{s['dtype']}, {result['meta']['device_name']}, {result['meta']['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    from ..measure.host import cpu_model

    return f"{cpu_model()} ({os.cpu_count()} CPUs)"


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except (OSError, AttributeError):  # pragma: no cover
        return "n/a"


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------


def main(argv: Sequence[str] = ()) -> int:
    """Run the benchmark (``autoeff bench attention ARGS``); returns the exit status."""
    args = _parser().parse_args(list(argv))
    if args.quick:
        defaults = _parser().parse_args([])
        for key, value in (("lengths", "64,128"), ("batch", 2), ("width", 32), ("heads", 4), ("repeats", 2),
                           ("budget_s", 0.5), ("warmup", 0), ("slope_from", 64)):
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, value)
    try:
        variants = _select_variants(args)
        lengths = sorted({int(s) for s in str(args.lengths).split(",") if s.strip()})
        if not lengths or min(lengths) < 1:
            raise BenchError(f"--lengths {args.lengths!r}: expected positive integers, e.g. 1024,4096")
        if args.width % args.heads:
            raise BenchError(f"--heads {args.heads} must divide --width {args.width}")
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise BenchError(f"--device {args.device}: CUDA is not available here")
        if args.device != "cpu" and not args.device.startswith("cuda"):
            raise BenchError(f"--device {args.device!r}: allowed: cpu, cuda, cuda:N")
    except BenchError as e:
        print(f"autoeff bench attention: {e}", file=sys.stderr)
        return 2

    if args.list:
        for v in variants if args.variants != "default" else _select_variants(
                argparse.Namespace(variants="all", sets=[])):
            state = "" if v.default else " (not in the default run)"
            print(f"{v.label:20s} {v.family:12s} {v.options}{state}")
        return 0

    out = Path(args.out or ("experiments/attention_bench/quick" if args.quick else "experiments/attention_bench"))
    out.mkdir(parents=True, exist_ok=True)
    registered = set(list_attentions())
    missing = [v.label for v in variants if v.family not in registered]
    variants = [v for v in variants if v.family in registered]
    for label in missing:
        _progress(f"note: {label}: family not registered, not measured")

    old_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device, dtype = args.device, DTYPES[args.dtype]
    mem_limit = _mem_limit_bytes(args, device)
    settings = {"batch": args.batch, "width": args.width, "heads": args.heads, "dtype": args.dtype,
                "device": device, "lengths": lengths, "warmup": args.warmup, "repeats": args.repeats,
                "budget_s": args.budget_s, "max_call_s": args.max_call_s, "max_mem_gb": mem_limit / 2**30,
                "seed": args.seed, "no_backward": args.no_backward, "quick": args.quick}
    meta = {
        "command": "autoeff bench attention " + " ".join(shlex.quote(a) for a in argv),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(),
        "device_name": _device_name(device), "threads": torch.get_num_threads(),
        "loadavg_start": _loadavg(), "settings": settings, "lengths": lengths,
        "variants": [v.label for v in variants], "missing": missing,
        "issue_settings": all(settings[k] == v for k, v in ISSUE_SETTINGS.items()) and device == "cpu",
    }
    rows: List[Dict[str, Any]] = []
    history: Dict[Tuple[str, str], List[Tuple[int, float, float]]] = {}
    param_history: Dict[str, List[Tuple[int, float]]] = {}
    total, t_start = len(lengths) * len(variants), time.perf_counter()
    full_ms: Dict[Tuple[int, str], float] = {}
    try:
        peak_memory(lambda: torch.ones(1), device=device)  # the profiler's one-time start-up, untimed
        counter = {"done": 0}

        def progress(row):
            counter["done"] += 1
            n, parts = row["N"], []
            for p in PASSES:
                ms = row[f"{p}_ms"]
                if row["variant"] == "full" and ms:
                    full_ms[(n, p)] = ms
                if ms is None:
                    st = row[f"{p}_status"]
                    if st != "skipped: --no-backward":
                        parts.append(f"{p} {st}")
                    continue
                base = full_ms.get((n, p))
                ratio = f" ({base / ms:.1f}x)" if base and row["variant"] != "full" else ""
                parts.append(f"{p} {ms:9.1f} ms{ratio} {row[f'{p}_mem_mb']:8.1f} MB")
            _progress(f"[{counter['done']}/{total}] {row['variant']:<18} N={n:<6} " + " | ".join(parts)
                      + f"   ({time.perf_counter() - t_start:.0f} s)")

        for n in lengths:
            _progress(f"N={n}: memory passes, then timed passes interleaved over {len(variants)} variants ...")
            rows.extend(_bench_length(n, variants, args=args, device=device, dtype=dtype, history=history,
                                      param_history=param_history, mem_limit=mem_limit, progress=progress))
    finally:
        torch.set_num_threads(old_threads)

    _add_ratios(rows)
    labels = [v.label for v in variants]
    slopes = _slopes(rows, labels, args.slope_from)
    meta["loadavg_end"] = _loadavg()
    meta["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    result = {"meta": meta, "rows": rows, "slopes": slopes}
    result["targets"] = _targets(rows, slopes, settings)

    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(r[k], sort_keys=True) if k == "options" and k in r else r.get(k))
                        for k in CSV_FIELDS})
    with open(out / "results.json", "w") as f:
        json.dump(result, f, indent=1, sort_keys=False, default=str)
    md = markdown(result)
    header = (f"<!-- generated by: {meta['command']} ({meta['date']}, {meta['elapsed_s']} s) -->\n\n")
    (out / "results.md").write_text(header + md + "\n")
    if not args.no_plot:
        _plot(result, out / "attention_bench.png")
    print(md)
    _progress(f"wrote {out}/results.csv, results.json, results.md"
              + ("" if args.no_plot else ", attention_bench.png") + f" in {meta['elapsed_s']} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
