"""`autoeff bench decode`: decoder prefill, per-token decode and cache size against the context
length, for each causal family, side by side with Hugging Face ``transformers`` in one run.

For each context length (outer loop, so that every model at one context is measured close in
time and under the same machine load) and each entry, :func:`autoeff.measure.decode.measure_decoder`
measures (docs/decoders.md §4, DESIGN.md "Decoders"): ``prefill_ms`` (one pass over ``context``
tokens from an empty cache), ``decode_ms`` (median single-token step with the cache filled to
``context``), ``tokens_per_s``, ``cache_mb`` (bytes of the cache's tensors, checked against the
analytic size) and ``peak_memory_mb``.

Entries (the decoder stack is the same for all: ``--width``, ``--depth``, ``--heads``,
``--kv-heads``, random weights with a fixed seed, fp32, eval mode):

* ours: ``full``, ``sliding_window`` (``--window``), ``gated_deltanet``, ``linear`` and
  ``hybrid`` (3 gated_deltanet : 1 full, the full layer last in every group of four), built as
  autoeff decoders (``model.arch: decoder``);
* Hugging Face: ``hf_full`` (``LlamaForCausalLM``) and ``hf_sliding_window``
  (``MistralForCausalLM`` with ``sliding_window = --window``), built from a config object of the
  same width, depth, heads, kv_heads and vocabulary, tied embeddings, an MLP of the same weight
  count (SwiGLU with 2/3 of our GELU MLP's hidden units), nothing downloaded, each with its own
  ``DynamicCache``. HF's sliding-window cache keeps ``window - 1`` tokens, ours ``window``.
  (The blocks still differ in small ways: RMSNorm vs LayerNorm, no biases in Llama.)

Ratios ours / HF (decode, prefill, cache) and the issue's targets are computed from the same
run: our full attention decodes no slower than transformers' (within 10%) at every context;
sliding_window and gated_deltanet hold decode_ms and cache_mb flat (largest / smallest over the
contexts <= 1.2) and decode at least 3x faster than full at the longest context.

Outputs in ``--out`` (default experiments/decode_bench): ``results.csv``, ``results.json``
(settings, machine, rows, ratios, targets), ``results.md`` and ``decode_bench.png``. Progress
lines go to stderr, the tables to stdout. A cell that fails is reported with its error, not
raised; the exit status is 1 when any cell failed, 2 for bad arguments or a missing
``transformers``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import inspect
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from . import write_rows_csv
from ..measure.decode import measure_decoder
from ..measure.host import machine_info

#: our families: label -> a function of depth giving each layer's family
OURS: Dict[str, Callable[[int], List[str]]] = {
    "full": lambda depth: ["full"] * depth,
    "sliding_window": lambda depth: ["sliding_window"] * depth,
    "gated_deltanet": lambda depth: ["gated_deltanet"] * depth,
    "linear": lambda depth: ["linear"] * depth,
    "hybrid": lambda depth: ["full" if i % 4 == 3 else "gated_deltanet" for i in range(depth)],
}
#: Hugging Face twins: label -> (our label it is compared with, architecture)
HF = {"hf_full": ("full", "llama"), "hf_sliding_window": ("sliding_window", "mistral")}
DEFAULT_FAMILIES = "full,sliding_window,gated_deltanet,linear,hybrid"
DEFAULT_CONTEXTS = "1024,2048,4096,8192,16384"
FLAT_TOL = 1.2  # flat in context: largest / smallest over the contexts
HF_TOL = 1.1  # our full decodes within 10% of transformers'
SPEEDUP_MIN = 3.0  # at the longest context, against our full attention
FIELDS = ("label", "impl", "context", "prefill_ms", "decode_ms", "tokens_per_s", "cache_mb", "cache_mb_analytic",
          "peak_memory_mb", "prefill_spread", "decode_spread", "decode_repeats", "threads", "wall_s", "status")


class BenchError(ValueError):
    """Bad command-line input (exit status 2)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autoeff bench decode",
                                description="Decoder prefill/decode/cache against context length, ours and "
                                            "Hugging Face transformers side by side, in one run.")
    p.add_argument("--families", default=DEFAULT_FAMILIES,
                   help=f"comma-separated, from {', '.join(OURS)} (default: all)")
    p.add_argument("--contexts", default=DEFAULT_CONTEXTS, help="comma-separated context lengths")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=0, help="key/value heads (0 = --heads)")
    p.add_argument("--window", type=int, default=512, help="sliding_window's window (and Mistral's)")
    p.add_argument("--ffn-mult", type=float, default=2.0, help="MLP hidden size = ffn_mult x width (both sides)")
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2, help="untimed decode steps (the first is the memory pass)")
    p.add_argument("--repeats", type=int, default=16, help="timed decode steps (the protocol's minimum is 16)")
    p.add_argument("--prefill-repeats", type=int, default=1, help="timed prefill passes")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-hf", action="store_true", help="skip the Hugging Face models")
    p.add_argument("--out", default="experiments/decode_bench", help="output folder")
    p.add_argument("--no-plot", action="store_true")
    return p


def _ints(text: str, flag: str) -> List[int]:
    try:
        vals = sorted({int(s) for s in str(text).split(",") if s.strip()})
    except ValueError:
        raise BenchError(f"{flag} {text!r}: expected comma-separated positive integers, e.g. 1024,4096")
    if not vals or min(vals) < 1:
        raise BenchError(f"{flag} {text!r}: expected comma-separated positive integers, e.g. 1024,4096")
    return vals


# ------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------


def _family_options(kind: str, args) -> Dict[str, Any]:
    """The options block of one layer: kv_heads where the family takes it, the window."""
    from ..attention import get_attention

    fam = get_attention(kind)
    names = {f.name for f in dataclasses.fields(fam.options)}
    opts: Dict[str, Any] = {}
    if "kv_heads" in names and args.kv_heads:
        opts["kv_heads"] = args.kv_heads
    if kind == "sliding_window" and "window" in names:
        opts["window"] = args.window
    return opts


def decoder_config(kinds: Sequence[str], args, max_context: int):
    """The RunConfig of one of our decoders (``model.arch: decoder``, one family per layer)."""
    from ..config import AttentionConfig, DeployConfig, ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        model=ModelConfig(arch="decoder", depth=len(kinds), width=args.width, heads=args.heads,
                          ffn_mult=args.ffn_mult, dropout=0.0),
        attention=AttentionConfig(layers=[AttentionConfig(kind=k, options={k: _family_options(k, args)})
                                          for k in kinds]),
        train=TrainConfig(seed=args.seed),
        deploy=DeployConfig(batch_size=args.batch, prompt_len=max_context, context_len=max_context),
    )


def build_ours(kinds: Sequence[str], args, max_context: int) -> nn.Module:
    """One of our decoders (docs/decoders.md §3, ``DecoderLM``) with random weights, over one
    byte-level LM task of ``--vocab`` ids."""
    from ..config import TaskSpec
    from ..model.decoder import DecoderLM

    cfg = decoder_config(kinds, args, max_context)
    spec = TaskSpec(input_kind="tokens", seq_len=max_context, num_classes=0, vocab_size=args.vocab,
                    name="lm", target="token", bytes_per_token=1.0)
    torch.manual_seed(args.seed)
    return DecoderLM(cfg, [spec])


class HFCache:
    """A ``transformers`` DynamicCache in the LayerCache API: ``length`` and ``tensors()``."""

    def __init__(self, dynamic):
        self.dynamic = dynamic
        self.length = 0

    def tensors(self) -> List[torch.Tensor]:
        out = []
        for layer in getattr(self.dynamic, "layers", []):
            for name in ("keys", "values"):
                t = getattr(layer, name, None)
                if isinstance(t, torch.Tensor):
                    out.append(t)
        return out


class HFDecoder(nn.Module):
    """A ``transformers`` causal LM in the decoder API of docs/decoders.md §3 (``init_cache``,
    ``forward_cached``, ``cache_bytes``), with its own ``DynamicCache``."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        cfg = lm.config
        self.vocab_size = cfg.vocab_size
        params = inspect.signature(lm.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # transformers >= 5.2 says cache

    def init_cache(self, batch: int) -> HFCache:
        from transformers import DynamicCache

        return HFCache(DynamicCache(config=self.lm.config))

    def forward_cached(self, x: torch.Tensor, cache: HFCache) -> torch.Tensor:
        out = self.lm(input_ids=x, use_cache=True, **{self._cache_kw: cache.dynamic})  # x: (B, T)
        cache.length += x.shape[1]
        return out.logits  # (B, T, V)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=x, use_cache=False).logits  # (B, N, V)

    def cache_bytes(self, batch: int, context: int, bytes_per_value: int) -> int:
        cfg = self.lm.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        window = getattr(cfg, "sliding_window", None)
        kept = min(context, window - 1) if window else context  # HF keeps the last window - 1 tokens
        return 2 * batch * cfg.num_key_value_heads * head_dim * kept * bytes_per_value * cfg.num_hidden_layers


def hf_available() -> bool:
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def build_hf(arch: str, args, max_positions: int) -> HFDecoder:
    """LlamaForCausalLM / MistralForCausalLM from a config of our sizes, random weights."""
    import transformers

    # our blocks' MLP is Linear-GELU-Linear with ffn_mult x width hidden units; Llama's is SwiGLU
    # (three matrices): 2/3 of the hidden units give it the same weights and FLOPs per token
    inter = max(1, int(round(2 * args.ffn_mult * args.width / 3)))
    common = dict(vocab_size=args.vocab, hidden_size=args.width, intermediate_size=inter,
                  num_hidden_layers=args.depth, num_attention_heads=args.heads,
                  num_key_value_heads=args.kv_heads or args.heads, max_position_embeddings=max_positions,
                  tie_word_embeddings=True, attn_implementation="sdpa")
    if arch == "llama":
        cfg = transformers.LlamaConfig(**common)
        cls = transformers.LlamaForCausalLM
    else:
        cfg = transformers.MistralConfig(sliding_window=args.window, **common)
        cls = transformers.MistralForCausalLM
    torch.manual_seed(args.seed)
    return HFDecoder(cls(cfg).float().eval())


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------


@dataclass
class Entry:
    label: str
    impl: str  # autoeff | transformers
    build: Callable[[], nn.Module]
    model: Optional[nn.Module] = None
    error: str = ""


def _error_text(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _entries(args, families: List[str], contexts: List[int], builder) -> List[Entry]:
    longest = max(contexts)
    entries = [Entry(f, "autoeff", (lambda f=f: builder(OURS[f](args.depth), args, longest))) for f in families]
    if not args.no_hf:
        for label, (twin, arch) in HF.items():
            if twin in families:
                entries.append(Entry(label, "transformers",
                                     (lambda arch=arch: build_hf(arch, args, longest + 64))))
    return entries


def run(args, builder: Callable = None, log: Callable[[str], None] = None) -> Dict[str, Any]:
    """Measure every entry at every context; returns the results document (rows, ratios, targets)."""
    builder = builder or build_ours
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    families = [s.strip() for s in args.families.split(",") if s.strip()]
    contexts = _ints(args.contexts, "--contexts")
    entries = _entries(args, families, contexts, builder)
    rows: List[Dict[str, Any]] = []
    total, done, t_start = len(entries) * len(contexts), 0, time.perf_counter()
    for e in entries:
        try:
            e.model = e.build()
        except Exception as ex:  # noqa: BLE001 - reported per cell
            e.error = f"build: {_error_text(ex)}"
            say(f"{e.label} ({e.impl}): cannot build: {e.error}")
    for ctx in contexts:
        for e in entries:
            done += 1
            row: Dict[str, Any] = {k: None for k in FIELDS}
            row.update(label=e.label, impl=e.impl, context=ctx)
            t0 = time.perf_counter()
            if e.model is None:
                row["status"] = f"error: {e.error}"
            else:
                try:
                    r = measure_decoder(e.model, batch_size=args.batch, prompt_len=ctx, context_len=ctx,
                                        warmup=args.warmup, repeats=args.repeats, prefill_warmup=1,
                                        prefill_repeats=args.prefill_repeats, threads=args.threads,
                                        vocab_size=args.vocab, seed=args.seed,
                                        progress=lambda m, e=e, ctx=ctx: say(f"    {e.label} @ {ctx}: {m}"))
                    m = r.as_metrics()
                    row.update({k: m[k] for k in ("prefill_ms", "decode_ms", "tokens_per_s", "cache_mb",
                                                  "cache_mb_analytic", "peak_memory_mb", "prefill_spread",
                                                  "decode_spread", "threads")})
                    row["decode_repeats"] = r.decode.repeats
                    row["status"] = "ok"
                except Exception as ex:  # noqa: BLE001 - reported per cell
                    row["status"] = f"error: {_error_text(ex)}"
            row["wall_s"] = round(time.perf_counter() - t0, 2)
            rows.append(row)
            elapsed = time.perf_counter() - t_start
            if row["status"] == "ok":
                say(f"[{done}/{total} {elapsed:6.0f}s] context {ctx:6d} {e.label:18s} prefill {row['prefill_ms']:9.2f} ms"
                    f"  decode {row['decode_ms']:8.3f} ms  cache {row['cache_mb']:8.2f} MiB")
            else:
                say(f"[{done}/{total} {elapsed:6.0f}s] context {ctx:6d} {e.label:18s} {row['status']}")
    doc = {"settings": {k: v for k, v in vars(args).items()},
           "command": "autoeff bench decode " + " ".join(shlex.quote(a) for a in getattr(args, "argv", [])),
           "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": machine_info("cpu"), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "rows": rows}
    if not args.no_hf and hf_available():
        import transformers

        doc["transformers"] = transformers.__version__
    doc["ratios"] = ratios(rows)
    doc["targets"] = targets(rows, contexts)
    return doc


def _cell(rows, label, ctx, key):
    for r in rows:
        if r["label"] == label and r["context"] == ctx and r["status"] == "ok":
            return r[key]
    return None


def ratios(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Ours / HF per context for each HF twin (decode, prefill, cache)."""
    out = []
    contexts = sorted({r["context"] for r in rows})
    for hf_label, (twin, _) in HF.items():
        for ctx in contexts:
            rec: Dict[str, Any] = {"ours": twin, "hf": hf_label, "context": ctx}
            for key in ("decode_ms", "prefill_ms", "cache_mb"):
                a, b = _cell(rows, twin, ctx, key), _cell(rows, hf_label, ctx, key)
                rec[key.replace("_ms", "").replace("_mb", "") + "_ratio"] = a / b if a is not None and b else None
            if any(v is not None for k, v in rec.items() if k.endswith("_ratio")):
                out.append(rec)
    return out


def targets(rows: List[Dict[str, Any]], contexts: List[int]) -> List[Dict[str, Any]]:
    """The issue's targets as measured: met True/False, or None when a cell is missing."""
    out: List[Dict[str, Any]] = []
    lo, hi = min(contexts), max(contexts)
    for ctx in contexts:
        a, b = _cell(rows, "full", ctx, "decode_ms"), _cell(rows, "hf_full", ctx, "decode_ms")
        val = a / b if a is not None and b else None
        out.append({"target": f"full decode_ms <= {HF_TOL:g} x transformers' at {ctx}", "value": val,
                    "met": None if val is None else val <= HF_TOL})
    for fam in ("sliding_window", "gated_deltanet"):
        for key in ("decode_ms", "cache_mb"):
            vals = [_cell(rows, fam, c, key) for c in contexts]
            ok = all(v is not None for v in vals) and len(vals) > 1 and min(vals) > 0
            val = max(vals) / min(vals) if ok else None
            out.append({"target": f"{fam} {key} flat from {lo} to {hi} (max/min <= {FLAT_TOL:g})", "value": val,
                        "met": None if val is None else val <= FLAT_TOL})
        a, b = _cell(rows, "full", hi, "decode_ms"), _cell(rows, fam, hi, "decode_ms")
        val = a / b if a is not None and b else None
        out.append({"target": f"{fam} decodes >= {SPEEDUP_MIN:g}x faster than full at {hi}", "value": val,
                    "met": None if val is None else val >= SPEEDUP_MIN})
    return out


# ------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------


def _fmt(v, digits=3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def markdown(doc: Dict[str, Any]) -> str:
    rows = doc["rows"]
    contexts = sorted({r["context"] for r in rows})
    labels = list(dict.fromkeys(r["label"] for r in rows))
    lines = []
    for key, unit in (("prefill_ms", "ms"), ("decode_ms", "ms"), ("decode_spread", "(p90 - p10) / median"),
                      ("cache_mb", "MiB"), ("peak_memory_mb", "MiB")):
        lines += [f"**{key}** ({unit}) against context", "",
                  "| model | " + " | ".join(str(c) for c in contexts) + " |",
                  "| --- | " + " | ".join("---:" for _ in contexts) + " |"]
        for lab in labels:
            lines.append(f"| {lab} | " + " | ".join(_fmt(_cell(rows, lab, c, key)) for c in contexts) + " |")
        lines.append("")
    if doc["ratios"]:
        lines += ["**ours / transformers** (decode, prefill, cache; < 1: ours is faster or smaller)", "",
                  "| ours | transformers | context | decode | prefill | cache |",
                  "| --- | --- | ---: | ---: | ---: | ---: |"]
        for r in doc["ratios"]:
            lines.append(f"| {r['ours']} | {r['hf']} | {r['context']} | {_fmt(r['decode_ratio'])} | "
                         f"{_fmt(r['prefill_ratio'])} | {_fmt(r['cache_ratio'])} |")
        lines.append("")
    lines += ["**targets** (as measured in this run)", "", "| target | value | met |", "| --- | ---: | --- |"]
    for t in doc["targets"]:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {_fmt(t['value'])} | {met} |")
    errors = [r for r in rows if r["status"] != "ok"]
    if errors:
        lines += ["", "**cells that failed**", ""]
        lines += [f"- {r['label']} @ {r['context']}: {r['status']}" for r in errors]
    return "\n".join(lines) + "\n"


def plot(doc: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax, (key, title) in zip(axes, (("prefill_ms", "prefill (ms)"), ("decode_ms", "decode step (ms)"),
                                       ("cache_mb", "cache (MiB)"))):
        for lab in labels:
            pts = sorted((r["context"], r[key]) for r in rows if r["label"] == lab and r["status"] == "ok")
            if pts:
                ax.plot(*zip(*pts), marker="o", linestyle="--" if lab.startswith("hf_") else "-", label=lab)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    s = doc["settings"]
    fig.suptitle(f"decoders: width {s['width']}, depth {s['depth']}, heads {s['heads']}, "
                 f"kv_heads {s['kv_heads'] or s['heads']}, batch {s['batch']}, fp32 - {doc['machine']['cpu']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(doc: Dict[str, Any], out: Path, with_plot: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_rows_csv(out / "results.csv", FIELDS, doc["rows"])
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    (out / "results.md").write_text(markdown(doc))
    if with_plot:
        plot(doc, out / "decode_bench.png")


def main(argv: Sequence[str] = (), builder: Callable = None) -> int:
    """Run the benchmark (``autoeff bench decode ARGS``); returns the exit status."""
    args = _parser().parse_args(list(argv))
    args.argv = list(argv)
    try:
        families = [s.strip() for s in args.families.split(",") if s.strip()]
        unknown = [f for f in families if f not in OURS]
        if unknown or not families:
            raise BenchError(f"--families {args.families!r}: unknown {unknown}; allowed: {', '.join(OURS)}")
        _ints(args.contexts, "--contexts")
        if args.heads < 1 or args.width % args.heads:
            raise BenchError(f"--heads {args.heads} must divide --width {args.width}")
        if args.kv_heads and (args.kv_heads < 0 or args.heads % args.kv_heads):
            raise BenchError(f"--kv-heads {args.kv_heads} must divide --heads {args.heads}")
        if args.repeats < 1 or args.warmup < 0 or args.prefill_repeats < 1:
            raise BenchError("--repeats and --prefill-repeats must be >= 1, --warmup >= 0")
        if not args.no_hf and not hf_available():
            raise BenchError("Hugging Face transformers is not installed; it is the baseline of this bench. "
                             "Install it with `pip install 'autoeff[bench]'` (or `pip install transformers`), "
                             "or pass --no-hf to measure our decoders alone")
    except BenchError as e:
        print(f"autoeff bench decode: {e}", file=sys.stderr)
        return 2
    doc = run(args, builder=builder)
    doc["settings"].pop("argv", None)
    out = Path(args.out)
    write(doc, out, with_plot=not args.no_plot)
    print(markdown(doc))
    print(f"wrote {out}/results.csv, results.json, results.md" + ("" if args.no_plot else ", decode_bench.png"),
          file=sys.stderr)
    failed = [r for r in doc["rows"] if r["status"] != "ok"]
    if failed:
        print(f"autoeff bench decode: {len(failed)} of {len(doc['rows'])} cells failed (see results.md)",
              file=sys.stderr)
        return 1
    return 0
