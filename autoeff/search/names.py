"""Readable names of trials: what the model is, for run names, tables, plots and progress.

Built generically from ``record.config`` and ``record.params`` (no torch), so new config sections
(e.g. ``compress``) show up without changes here.
"""
from __future__ import annotations

from typing import Any

from .record import TrialRecord

#: short names of attention knobs in run names (``t017-linformer-k64-d4``); other knobs keep their name
KNOB_ABBREVIATIONS = {"rank": "k", "window": "win", "n_hashes": "h", "bucket_size": "b", "features": "f",
                      "global_tokens": "g", "dilation": "dil", "mode": "", "feature_map": "", "share_kv": "skv",
                      "share_layers": "sl", "mix": "mix", "redraw_interval": "rd"}
#: what a ``compress.bits`` value is called in run names and tables
BITS_NAMES = {32: "", 16: "fp16", 8: "int8", 4: "int4"}


def _short(v: Any) -> str:
    if isinstance(v, bool):
        return "y" if v else "n"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def compress_label(rec: TrialRecord) -> str:
    """'int8' / 'fp16' / 'int4' from ``config["compress"]["bits"]`` (empty for 32 bits or no
    compress section), plus any other searched ``compress.*`` knob as ``<knob><value>``."""
    cfg = rec.config or {}
    comp = cfg.get("compress") if isinstance(cfg.get("compress"), dict) else {}
    bits = comp.get("bits", rec.params.get("compress.bits"))
    parts = []
    if bits is not None:
        try:
            parts.append(BITS_NAMES.get(int(bits), f"{int(bits)}bit"))
        except (TypeError, ValueError):
            parts.append(f"bits{bits}")
    for k, v in rec.params.items():
        if k.startswith("compress.") and k != "compress.bits":
            parts.append(f"{k.split('.')[-1]}{_short(v)}")
    return "-".join(p for p in parts if p)


def run_name(rec: TrialRecord) -> str:
    """What the model is, readable in a runs table: 't017-linformer-k64-d4-w128-int8'
    (trial number, attention family and its searched knobs, depth, width, compression)."""
    cfg = rec.config or {}
    att = cfg.get("attention", {}) if isinstance(cfg.get("attention"), dict) else {}
    kind = att.get("kind") or rec.params.get("attention.kind") or ""
    parts = [f"t{rec.number:03d}"]
    if kind:
        parts.append(str(kind))
        for k, v in rec.params.items():
            if k.startswith(f"attention.{kind}."):
                knob = k.split(".")[-1]
                parts.append(f"{KNOB_ABBREVIATIONS.get(knob, knob)}{_short(v)}")
    model = cfg.get("model", {}) if isinstance(cfg.get("model"), dict) else {}
    depth = model.get("depth", rec.params.get("model.depth"))
    width = model.get("width", rec.params.get("model.width"))
    if depth is not None:
        parts.append(f"d{depth}")
    if width is not None:
        parts.append(f"w{width}")
    comp = compress_label(rec)
    if comp:
        parts.append(comp)
    return "-".join(parts)
