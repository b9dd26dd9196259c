"""The user's own dataset saved with Hugging Face ``datasets`` (``Dataset.save_to_disk`` or
``DatasetDict.save_to_disk``). Needs the optional ``datasets`` package (``pip install datasets``).

``text_column`` holds either text (UTF-8 bytes become tokens, exactly as in ``text_table`` and
the built-in text task) or lists of token ids from a tokenizer (ids are shifted by one so that
0 stays padding: the vocabulary is ``vocab_size + 1``, ``vocab_size`` = 0 meaning the largest id
+ 1). ``label_column`` holds the class: with a ``ClassLabel`` feature the class names and
order are the dataset's own (label -1, "no label", is an error), otherwise the label rules of
the other loaders apply.

Splits: a saved ``Dataset`` is split by ``val_fraction`` / ``test_fraction``. For a saved
``DatasetDict``, ``train_split`` names the training split; ``val_split`` / ``test_split`` name
the others, or (empty) take ``validation`` / ``val`` / ``valid`` / ``dev`` and ``test`` when
present; ``carve`` (or a missing split) carves it from train.

Space-file entry::

    tasks:
      - kind: hf_dataset
        path: data/imdb_saved        # relative to the working directory
        text_column: text
        label_column: label
        test_split: carve            # the saved test split is unlabeled
        seq_len: 4096
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import Split, TaskSpec
from .features import BYTE_VOCAB, bytes_to_tokens
from .text_table import check_texts
from .userdata import (ClassName, UserDataTask, check_fractions, check_positive, index_labels, norm_label,
                       plan_splits, require_folder, resolve)

VAL_NAMES = ("validation", "val", "valid", "dev")
TEST_NAMES = ("test",)
CARVE = "carve"


@dataclass
class HFDatasetOptions:
    path: str = ""  # folder written by save_to_disk
    text_column: str = "text"  # text, or lists of token ids
    label_column: str = "label"
    classes: List[ClassName] = field(default_factory=list)  # empty = ClassLabel names, else sorted labels
    seq_len: int = 1024  # tokens (bytes of text) per example, cut / zero-padded
    vocab_size: int = 0  # token-id columns: the tokenizer's vocabulary; 0 = largest id + 1
    train_split: str = "train"  # DatasetDict only
    val_split: str = ""  # "" = validation/val/valid/dev if present; "carve" = from train
    test_split: str = ""  # "" = test if present; "carve" = from train
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0


def _datasets(key: str):
    try:
        import datasets
    except ImportError:
        raise ConfigError("the hf_dataset task needs the Hugging Face 'datasets' package: pip install datasets",
                          key=f"{key}.kind", value="hf_dataset") from None
    return datasets


def load_saved(o: HFDatasetOptions, key: str):
    """(Dataset or DatasetDict) saved at ``o.path``."""
    if not o.path:
        raise ConfigError("no data given", key=f"{key}.path", allowed="a folder written by save_to_disk")
    folder = require_folder(o.path, f"{key}.path")
    datasets = _datasets(key)
    if not ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()):
        raise ConfigError("not a dataset saved with save_to_disk (no dataset_dict.json or state.json in it)",
                          key=f"{key}.path", value=o.path)
    try:
        return datasets.load_from_disk(str(folder))
    except Exception as e:  # datasets raises a variety of errors on damaged folders
        raise ConfigError(f"cannot load the saved dataset ({type(e).__name__}: {e})", key=f"{key}.path",
                          value=o.path) from None


def pick_splits(o: HFDatasetOptions, saved, key: str) -> Dict[str, Tuple[str, Any]]:
    """``{"all": ("", Dataset)}`` or ``{"train": (name, Dataset), ["val": ..], ["test": ..]}``."""
    if not hasattr(saved, "keys"):  # a single Dataset
        for opt in ("val_split", "test_split"):
            if getattr(o, opt) not in ("", CARVE):
                raise ConfigError("the saved dataset has no named splits (it is a single Dataset)",
                                  key=f"{key}.{opt}", value=getattr(o, opt))
        return {"all": ("", saved)}
    names = list(saved.keys())
    if o.train_split not in names:
        raise ConfigError("no such split in the saved DatasetDict", key=f"{key}.train_split", value=o.train_split,
                          allowed=names)
    out = {"train": (o.train_split, saved[o.train_split])}
    used = {o.train_split}
    for s, opt, auto in (("test", "test_split", TEST_NAMES), ("val", "val_split", VAL_NAMES)):
        want = getattr(o, opt)
        if want == CARVE:
            continue
        if want:
            if want not in names:
                raise ConfigError("no such split in the saved DatasetDict", key=f"{key}.{opt}", value=want,
                                  allowed=names + [CARVE])
            if want in used:
                raise ConfigError("split already used for another role", key=f"{key}.{opt}", value=want)
        else:
            want = next((n for n in auto if n in names and n not in used), "")
        if want:
            out[s] = (want, saved[want])
            used.add(want)
    return out


def read_columns(o: HFDatasetOptions, ds, where: str, key: str) -> Tuple[List[Any], List[Any], Optional[List[str]]]:
    """(inputs, raw labels, ClassLabel names or None) of one split."""
    cols = list(ds.column_names)
    for which in ("text_column", "label_column"):
        if getattr(o, which) not in cols:
            raise ConfigError(f"column not found in {where}", key=f"{key}.{which}", value=getattr(o, which),
                              allowed=cols)
    feat = ds.features[o.label_column]
    names = list(feat.names) if type(feat).__name__ == "ClassLabel" else None
    batch = ds.select_columns(list(dict.fromkeys([o.text_column, o.label_column])))[:]
    return batch[o.text_column], batch[o.label_column], names


def input_kind(values: List[Any], where: str, key: str, column: str) -> str:
    first = next((v for v in values if v is not None), None)
    if isinstance(first, str):
        return "text"
    if isinstance(first, (list, tuple, np.ndarray)):
        return "ids"
    raise ConfigError(f"column in {where} holds {type(first).__name__} values; expected text or lists of token ids",
                      key=f"{key}.text_column", value=column)


def check_ids(values: List[Any], where: str, key: str, column: str) -> int:
    """Every example a non-empty list of ids >= 0; returns the largest id."""
    top = 0
    for i, v in enumerate(values):
        if v is None or len(v) == 0:
            raise ConfigError(f"row {i + 1} of {where} has no tokens", key=f"{key}.text_column", value=column)
        a = np.asarray(v)
        if not np.issubdtype(a.dtype, np.integer) or a.ndim != 1:
            raise ConfigError(f"row {i + 1} of {where} is not a flat list of integer token ids",
                              key=f"{key}.text_column", value=column)
        if a.min() < 0:
            raise ConfigError(f"row {i + 1} of {where} has a negative token id ({int(a.min())})",
                              key=f"{key}.text_column", value=column)
        top = max(top, int(a.max()))
    return top


def ids_to_tokens(values: List[Any], seq_len: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> x (n, seq_len) int64 with ids + 1 (0 = padding), mask (n, seq_len)."""
    x = torch.zeros(len(values), seq_len, dtype=torch.long)
    for i, v in enumerate(values):
        v = list(v)[:seq_len]
        x[i, : len(v)] = torch.as_tensor(v, dtype=torch.long) + 1
    return x, x != 0


@dataclass
class HFScan:
    classes: List[str]
    y: Dict[str, np.ndarray]
    plan: Dict[str, Tuple[str, np.ndarray]]
    kind: str  # "text" | "ids"
    vocab_size: int


@register_task("hf_dataset")
class HFDataset(UserDataTask):
    """Classification from a dataset saved with Hugging Face ``datasets.save_to_disk``."""

    options = HFDatasetOptions
    version = 1

    @classmethod
    def data_files(cls, o: HFDatasetOptions) -> List[Path]:
        root = resolve(o.path) if o.path else None
        if root is None or not root.is_dir():
            return []
        return sorted(p for p in root.rglob("*") if p.is_file())

    @classmethod
    def check_numbers(cls, o: HFDatasetOptions, key: str) -> None:
        _datasets(key)
        check_positive(o, key, "seq_len")
        check_positive(o, key, "vocab_size", zero_ok=("vocab_size",))
        if o.text_column == o.label_column:
            raise ConfigError("text and label must be different columns", key=f"{key}.label_column",
                              value=o.label_column)
        # which splits are carved is known only once the dataset is open: check both fractions
        check_fractions(o, key, [s for s in ("val", "test") if getattr(o, f"{s}_split") not in ("", CARVE)])

    @classmethod
    def _scan(cls, o: HFDatasetOptions, key: str) -> HFScan:
        parts = pick_splits(o, load_saved(o, key), key)
        where = {s: f"{o.path} (split '{name}')" if name else o.path for s, (name, _) in parts.items()}
        src_keys = {"all": "path", "train": "train_split", "val": "val_split", "test": "test_split"}
        kinds, labels, tops, class_names = {}, {}, [], None
        for s, (_, ds) in parts.items():
            inputs, raw, names = read_columns(o, ds, where[s], key)
            if names is not None:
                class_names = names
                raw = [names[v] if v is not None and 0 <= v < len(names) else None for v in raw]
            kinds[s] = input_kind(inputs, where[s], key, o.text_column)
            if kinds[s] == "text":
                check_texts(inputs, where[s], key, "text_column", o.text_column)
            else:
                tops.append(check_ids(inputs, where[s], key, o.text_column))
            labels[s] = [norm_label(v) for v in raw]
        if len(set(kinds.values())) > 1:
            raise ConfigError("splits mix text and token-id lists: " + ", ".join(f"{where[s]}: {k}" for s, k in kinds.items()),
                              key=f"{key}.text_column", value=o.text_column)
        kind = next(iter(kinds.values()))
        vocab = BYTE_VOCAB
        if kind == "ids":
            top = max(tops)
            if o.vocab_size and top >= o.vocab_size:
                raise ConfigError(f"token id {top} in {o.path} is outside the vocabulary (ids must be < vocab_size)",
                                  key=f"{key}.vocab_size", value=o.vocab_size, has_value=True)
            vocab = (o.vocab_size or top + 1) + 1  # ids shifted by one: 0 = padding
        if class_names is not None and not o.classes:
            classes = [norm_label(c) for c in class_names]
            for s, labs in labels.items():  # ClassLabel: the dataset's own order, -1 = no label
                for i, lab in enumerate(labs):
                    if lab is None:
                        raise ConfigError(f"row {i + 1} of {where[s]} has no label (-1)", key=f"{key}.label_column",
                                          value=o.label_column)
            index = {c: i for i, c in enumerate(classes)}
            y = {s: np.array([index[v] for v in labs], dtype=np.int64) for s, labs in labels.items()}
        else:
            classes, y = index_labels(labels, where, o.classes, key, "label_column", o.label_column)
        check_fractions(o, key, parts)
        plan = plan_splits(y, o, key, where, src_keys)
        return HFScan(classes, y, plan, kind, vocab)

    @classmethod
    def spec(cls, o: HFDatasetOptions) -> TaskSpec:
        s = cls.scan(o)
        return TaskSpec(input_kind="tokens", seq_len=o.seq_len, num_classes=len(s.classes), vocab_size=s.vocab_size)

    @classmethod
    def build(cls, o: HFDatasetOptions) -> Dict[str, Split]:
        key = f"task {cls.kind}"
        scan = cls.scan(o)
        parts = pick_splits(o, load_saved(o, key), key)
        inputs = {s: ds.select_columns([o.text_column])[:][o.text_column] for s, (_, ds) in parts.items()}
        out = {}
        for split, (src, rows) in scan.plan.items():
            vals = [inputs[src][i] for i in rows]
            x, mask = bytes_to_tokens(vals, o.seq_len) if scan.kind == "text" else ids_to_tokens(vals, o.seq_len)
            out[split] = Split(x, mask, torch.from_numpy(scan.y[src][rows]))
        return out
