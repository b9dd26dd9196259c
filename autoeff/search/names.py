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


#: one letter per attention family in the placement column (``F S S G``: layer 0 first, the bottom of
#: the stack); a family not listed (a plugin) shows its first letter in lower case
FAMILY_CODES = {"full": "F", "sliding_window": "S", "gated_deltanet": "G", "linear": "L", "longformer": "W",
                "reformer": "R", "linformer": "K", "synthesizer": "Y"}


def _short(v: Any) -> str:
    if isinstance(v, bool):
        return "y" if v else "n"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def compress_label(rec: TrialRecord) -> str:
    """'int8' / 'bf16' (or 'fp16', ``compress.half``) / 'int4' from ``config["compress"]["bits"]`` (empty for 32 bits or no
    compress section), plus any other searched ``compress.*`` knob as ``<knob><value>``."""
    cfg = rec.config or {}
    comp = cfg.get("compress") if isinstance(cfg.get("compress"), dict) else {}
    bits = comp.get("bits", rec.params.get("compress.bits"))
    parts = []
    if bits is not None:
        try:
            parts.append(comp.get("half", "bf16") if int(bits) == 16 else BITS_NAMES.get(int(bits), f"{int(bits)}bit"))
        except (TypeError, ValueError):
            parts.append(f"bits{bits}")
    for k, v in rec.params.items():
        if k.startswith("compress.") and k != "compress.bits":
            parts.append(f"{k.split('.')[-1]}{_short(v)}")
    return "-".join(p for p in parts if p)


def _layers(rec: TrialRecord):
    """[(kind, {knob: value})] for each attention layer: one entry for a plain model, one per
    layer for a hybrid (``attention.layers``), knobs as sampled (``attention[.layers.<i>].<kind>.<knob>``)."""
    cfg = rec.config or {}
    att = cfg.get("attention") if isinstance(cfg.get("attention"), dict) else {}
    if isinstance(att.get("layers"), list) and att["layers"]:
        out = []
        for i, layer in enumerate(att["layers"]):
            kind = str(layer.get("kind", "?"))
            pre = f"attention.layers.{i}.{kind}."
            out.append((kind, {k[len(pre):]: v for k, v in rec.params.items() if k.startswith(pre)}))
        return out
    n_layers = sorted({int(k.split(".")[2]) for k in rec.params
                       if k.startswith("attention.layers.") and k.split(".")[2].isdigit()})
    if not att and n_layers:  # no config yet (failed early): the sampled per-layer kinds
        return [(str(rec.params.get(f"attention.layers.{i}.kind", "?")), {}) for i in n_layers]
    kind = str(att.get("kind") or rec.params.get("attention.kind") or "")
    pre = f"attention.{kind}."
    return [(kind, {k[len(pre):]: v for k, v in rec.params.items() if k.startswith(pre)})] if kind else []


def placement_label(rec: TrialRecord) -> str:
    """Which family each layer has, bottom layer first, one letter each (:data:`FAMILY_CODES`):
    'F S S G' for a 4-layer hybrid, 'S S S S' for a plain 4-layer sliding-window model."""
    layers = _layers(rec)
    if len(layers) == 1:  # one family for the whole model: repeat it over its depth
        cfg = rec.config or {}
        model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
        depth = model.get("depth", rec.params.get("model.depth", 1))
        try:
            layers = layers * max(int(depth), 1)
        except (TypeError, ValueError):
            pass
    return " ".join(FAMILY_CODES.get(kind, kind[:1].lower() or "?") for kind, _ in layers)


def family_label(rec: TrialRecord, *, short: bool = True) -> str:
    """'linformer-k64' (short) / 'linformer(rank=64)'; hybrids join their layers with '+'."""
    parts = []
    for kind, knobs in _layers(rec):
        if short:
            parts.append("-".join([kind, *[f"{KNOB_ABBREVIATIONS.get(k, k)}{_short(v)}" for k, v in knobs.items()]]))
        else:
            parts.append(kind + ("(" + ",".join(f"{k}={v}" for k, v in knobs.items()) + ")" if knobs else ""))
    return "+".join(parts)


def run_name(rec: TrialRecord) -> str:
    """What the model is, readable in a runs table: 't017-linformer-k64-d4-w128-int8'
    (trial number, attention family and its searched knobs (hybrids: one per layer, joined by
    '+'), depth, width, compression)."""
    cfg = rec.config or {}
    parts = [f"t{rec.number:03d}"]
    fam = family_label(rec)
    if fam:
        parts.append(fam)
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
