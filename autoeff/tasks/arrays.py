"""The user's own pre-tokenized (or pre-featurized) data as NumPy arrays.

A source is either an ``.npz`` file holding arrays ``x``, ``y`` and optionally ``mask``, or a
folder holding ``x.npy``, ``y.npy`` and optionally ``mask.npy`` (the names are set by
``x_key`` / ``y_key`` / ``mask_key``). Object (pickled) arrays are refused.

* ``x`` of an integer dtype, shape (n, L): **tokens**. Ids must be >= 0 and 0 is padding; the
  vocabulary is ``vocab_size``, or (0) the largest id + 1 over all splits. The default mask is
  ``x != 0``.
* ``x`` of a floating dtype, shape (n, L, F) (or (n, L), read as F = 1): **features** (e.g.
  precomputed frames or patches). The default mask is all true.
* ``y``, shape (n,): integer or string labels (see the label rules in ``userdata``).
* ``mask``, shape (n, L), bool or 0/1: True at real positions. Every example needs at least one.

Sequences are cut or zero-padded to ``seq_len``, or (0) to the longest L among the sources.

Space-file entry::

    tasks:
      - kind: arrays
        train_path: data/train.npz
        test_path: data/test.npz      # val is carved from train (val_fraction)
        vocab_size: 32000
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import Split, TaskSpec
from .userdata import (ClassName, UserDataTask, check_fractions, check_positive, index_labels, norm_label,
                       plan_splits, require_file, require_folder, resolve, source_key, sources)


@dataclass
class ArraysOptions:
    path: str = ""  # one .npz file (or folder of .npy files), split into train/val/test
    train_path: str = ""  # or one per split (val/test optional: carved from train)
    val_path: str = ""
    test_path: str = ""
    x_key: str = "x"
    y_key: str = "y"
    mask_key: str = "mask"  # optional array
    classes: List[ClassName] = field(default_factory=list)  # empty = the sorted distinct labels
    vocab_size: int = 0  # tokens: 0 = largest id + 1
    seq_len: int = 0  # 0 = the arrays' (longest) length
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0


def source_files(o: ArraysOptions, p: str, key: str, sk: str) -> Dict[str, Optional[Path]]:
    """``{"npz": file}`` or ``{"x": .., "y": .., "mask": .. or None}`` for a folder of .npy files."""
    path = resolve(p)
    if path.is_dir():
        folder = require_folder(p, sk)
        out: Dict[str, Optional[Path]] = {}
        for name, k in (("x", o.x_key), ("y", o.y_key), ("mask", o.mask_key)):
            f = folder / f"{k}.npy"
            if not f.is_file():
                if name == "mask":
                    out[name] = None
                    continue
                have = sorted(q.name for q in folder.glob("*.npy"))
                raise ConfigError(f"no {k}.npy in folder {p}", key=f"{key}.{name}_key", value=k,
                                  allowed=have or "(no .npy files there)")
            out[name] = f
        return out
    return {"npz": require_file(p, sk)}


def _load(f: Path, key: str, name: str) -> np.ndarray:
    try:
        return np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ConfigError(f"cannot read {name} from {f} ({e})", key=key, value=str(f)) from None


def read_arrays(o: ArraysOptions, src: str, p: str, key: str) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """(x, y, mask or None) of one source, shapes and dtypes checked."""
    sk = source_key(key, src)
    files = source_files(o, p, key, sk)
    if "npz" in files:
        f = files["npz"]
        try:
            with np.load(f, allow_pickle=False) as z:
                names = list(z.files)
                arrays = {}
                for name, k in (("x", o.x_key), ("y", o.y_key), ("mask", o.mask_key)):
                    if k not in names:
                        if name == "mask":
                            arrays[name] = None
                            continue
                        raise ConfigError(f"no array '{k}' in {p}", key=f"{key}.{name}_key", value=k,
                                          allowed=names or "(the file holds no arrays)")
                    arrays[name] = z[k]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ConfigError(f"cannot read {p} as .npz ({e})", key=sk, value=p) from None
        x, y, mask = arrays["x"], arrays["y"], arrays["mask"]
    else:
        x = _load(files["x"], sk, o.x_key)
        y = _load(files["y"], sk, o.y_key)
        mask = _load(files["mask"], sk, o.mask_key) if files["mask"] is not None else None
    return check_arrays(o, x, y, mask, p, key)


def check_arrays(o: ArraysOptions, x, y, mask, p: str, key: str):
    def bad(name: str, problem: str):
        k = {"x": o.x_key, "y": o.y_key, "mask": o.mask_key}[name]
        return ConfigError(f"array '{k}' in {p}: {problem}", key=f"{key}.{name}_key", value=k)

    if np.issubdtype(x.dtype, np.integer):
        if x.ndim != 2:
            raise bad("x", f"token arrays must have shape (examples, length), got {x.shape}")
        if x.size and x.min() < 0:
            raise bad("x", f"token ids must be >= 0 (0 = padding), found {int(x.min())}")
    elif np.issubdtype(x.dtype, np.floating):
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3:
            raise bad("x", f"feature arrays must have shape (examples, length, features), got {x.shape}")
        if x.size and not np.isfinite(x).all():
            raise bad("x", "holds NaN or infinite values")
    else:
        raise bad("x", f"dtype {x.dtype} is neither integer (tokens) nor floating point (features)")
    if x.shape[1] < 1 or (x.ndim == 3 and x.shape[2] < 1):
        raise bad("x", f"empty sequence or feature axis, shape {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise bad("y", f"labels must have shape ({x.shape[0]},), one per example of x, got {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype.kind in "USb"
            or (np.issubdtype(y.dtype, np.floating) and np.all(np.isnan(y) | (y == np.round(y))))):
        raise bad("y", f"dtype {y.dtype} is not a class label (integers or strings)")
    if mask is not None:
        if mask.shape != x.shape[:2]:
            raise bad("mask", f"must have the shape of x's first two axes {x.shape[:2]}, got {mask.shape}")
        if not (mask.dtype == bool or (np.issubdtype(mask.dtype, np.integer) and np.isin(mask, (0, 1)).all())):
            raise bad("mask", f"must be boolean (or 0/1), got dtype {mask.dtype}")
        mask = mask.astype(bool)
    m = mask if mask is not None else (x != 0 if x.ndim == 2 else None)
    if m is not None and len(m):
        empty = np.flatnonzero(~m.any(1))
        if len(empty):
            raise bad("mask" if mask is not None else "x",
                      f"{len(empty)} example(s) have no real positions (first: row {empty[0] + 1})")
        if o.seq_len and o.seq_len < m.shape[1]:
            empty = np.flatnonzero(~m[:, : o.seq_len].any(1))
            if len(empty):
                raise ConfigError(f"{len(empty)} example(s) of {p} have no real positions within the first "
                                  f"{o.seq_len} (first: row {empty[0] + 1})", key=f"{key}.seq_len",
                                  value=o.seq_len, has_value=True)
    return x, y, mask


@dataclass
class ArraysScan:
    classes: List[str]
    y: Dict[str, np.ndarray]
    plan: Dict[str, Tuple[str, np.ndarray]]
    input_kind: str
    length: int  # longest L over the sources
    feature_dim: int
    vocab_size: int


@register_task("arrays")
class Arrays(UserDataTask):
    """Pre-tokenized / pre-featurized NumPy arrays (.npz, or a folder of .npy files)."""

    options = ArraysOptions
    version = 1

    @classmethod
    def data_files(cls, o: ArraysOptions) -> List[Path]:
        out = []
        for p in (o.path, o.train_path, o.val_path, o.test_path):
            if p:
                d = resolve(p)
                out.extend(sorted(d.glob("*.npy")) if d.is_dir() else [d])
        return out

    @classmethod
    def check_numbers(cls, o: ArraysOptions, key: str) -> None:
        check_positive(o, key, "vocab_size", "seq_len", zero_ok=("vocab_size", "seq_len"))
        check_fractions(o, key, sources(o, key))

    @classmethod
    def _scan(cls, o: ArraysOptions, key: str) -> ArraysScan:
        srcs = sources(o, key)
        data = {s: read_arrays(o, s, p, key) for s, p in srcs.items()}
        kinds = {s: "tokens" if d[0].ndim == 2 else "features" for s, d in data.items()}
        if len(set(kinds.values())) > 1:
            raise ConfigError("sources mix token ids (integers) and features (floats): "
                              + ", ".join(f"{srcs[s]}: {k}" for s, k in kinds.items()),
                              key=f"{key}.x_key", value=o.x_key)
        kind = next(iter(kinds.values()))
        feature_dim = 0
        vocab = 0
        if kind == "features":
            dims = {s: d[0].shape[2] for s, d in data.items()}
            if len(set(dims.values())) > 1:
                raise ConfigError("sources have different feature sizes: "
                                  + ", ".join(f"{srcs[s]}: {f}" for s, f in dims.items()),
                                  key=f"{key}.x_key", value=o.x_key)
            feature_dim = next(iter(dims.values()))
        else:
            top = max(int(d[0].max()) if d[0].size else 0 for d in data.values())
            if o.vocab_size and top >= o.vocab_size:
                where = next(srcs[s] for s, d in data.items() if d[0].size and int(d[0].max()) == top)
                raise ConfigError(f"token id {top} in {where} is outside the vocabulary (ids must be < vocab_size)",
                                  key=f"{key}.vocab_size", value=o.vocab_size, has_value=True)
            vocab = o.vocab_size or top + 1
            if vocab < 2:
                raise ConfigError("token arrays hold only padding (0)", key=f"{key}.x_key", value=o.x_key)
        labels = {s: [norm_label(v) for v in d[1].tolist()] for s, d in data.items()}
        classes, y = index_labels(labels, srcs, o.classes, key, "y_key", o.y_key)
        length = max(d[0].shape[1] for d in data.values())
        return ArraysScan(classes, y, plan_splits(y, o, key, srcs), kind, length, feature_dim, vocab)

    @classmethod
    def spec(cls, o: ArraysOptions) -> TaskSpec:
        s = cls.scan(o)
        return TaskSpec(input_kind=s.input_kind, seq_len=o.seq_len or s.length, num_classes=len(s.classes),
                        vocab_size=s.vocab_size, feature_dim=s.feature_dim)

    @classmethod
    def build(cls, o: ArraysOptions) -> Dict[str, Split]:
        key = f"task {cls.kind}"
        scan = cls.scan(o)
        L = o.seq_len or scan.length
        data = {s: read_arrays(o, s, p, key) for s, p in sources(o, key).items()}
        out = {}
        for split, (src, rows) in scan.plan.items():
            x, _, mask = data[src]
            x = torch.from_numpy(np.ascontiguousarray(x[rows]))
            if scan.input_kind == "tokens":
                x = x.long()
                m = torch.from_numpy(mask[rows]) if mask is not None else x != 0
            else:
                x = x.float()
                m = torch.from_numpy(mask[rows]) if mask is not None else torch.ones(x.shape[:2], dtype=torch.bool)
            n, have = x.shape[0], x.shape[1]
            if have >= L:
                x, m = x[:, :L], m[:, :L]
            else:
                x = torch.cat([x, x.new_zeros((n, L - have) + tuple(x.shape[2:]))], 1)
                m = torch.cat([m, m.new_zeros(n, L - have)], 1)
            if scan.input_kind == "tokens":
                x = x.masked_fill(~m, 0)  # padding id where masked
            empty = torch.nonzero(~m.any(1)).flatten()
            if len(empty):
                raise ConfigError(f"{len(empty)} example(s) of {sources(o, key)[src]} have no real positions "
                                  f"within the first {L} (first: row {int(rows[empty[0]]) + 1})",
                                  key=f"{key}.seq_len", value=o.seq_len, has_value=True)
            out[split] = Split(x.contiguous(), m.contiguous(), torch.from_numpy(scan.y[src][rows]))
        return out
