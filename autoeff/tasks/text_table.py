"""The user's own text classification data from a CSV, TSV, Parquet, JSON Lines or JSON file.

Each row is one example: ``text_column`` holds the document, ``label_column`` its class. Texts
become byte-level tokens (UTF-8 byte + 1, 0 = padding), cut or padded to ``seq_len``, exactly
as the built-in byte-level text task does (:func:`autoeff.tasks.features.bytes_to_tokens`).

Space-file entry::

    tasks:
      - kind: text_table
        path: data/reviews.csv        # relative to the working directory
        text_column: review
        label_column: stars
        classes: [1, 2, 3, 4, 5]      # optional: fixes the class order, rejects other labels
        seq_len: 2048

The format comes from the extension (``.csv``, ``.tsv``/``.tab``, ``.parquet``/``.pq``,
``.jsonl``/``.ndjson``, ``.json`` = an array of objects; ``.gz``/``.bz2``/``.xz`` compression of
the text formats is read transparently) or from ``format``. CSV/TSV need a header row and are
read as UTF-8 (a byte-order mark is ignored); Parquet needs ``pyarrow``.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import Split, TaskSpec
from .features import BYTE_VOCAB, bytes_to_tokens
from .userdata import (ClassName, UserDataTask, check_fractions, check_positive, index_labels, norm_label,
                       plan_splits, require_file, resolve, source_key, sources)

FORMATS = ("auto", "csv", "tsv", "parquet", "jsonl", "json")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
              ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


@dataclass
class TextTableOptions:
    path: str = ""  # one file, split into train/val/test
    train_path: str = ""  # or separate files per split (val/test optional: carved from train)
    val_path: str = ""
    test_path: str = ""
    format: str = field(default="auto", metadata={"choices": FORMATS})
    text_column: str = "text"
    label_column: str = "label"
    classes: List[ClassName] = field(default_factory=list)  # empty = the sorted distinct labels
    seq_len: int = 1024  # bytes per example (cut / zero-padded)
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0


def table_format(path: Path, fmt: str, key: str) -> str:
    if fmt != "auto":
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    raise ConfigError(f"cannot tell the format of {path.name} from its extension; set 'format'",
                      key=f"{key}.format", value=fmt, allowed=[f for f in FORMATS if f != "auto"])


def _open_text(path: Path):
    opener = COMPRESSED.get(path.suffix.lower())
    if opener is not None:
        return io.TextIOWrapper(opener(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, "r", encoding="utf-8-sig", newline="")


def _missing_column(o, key: str, which: str, path: Path, columns: List[str]) -> ConfigError:
    return ConfigError(f"column not found in {path}", key=f"{key}.{which}", value=getattr(o, which),
                       allowed=columns or "(the file has no columns)")


def _read_csv(path: Path, o, key: str, src_key: str, delimiter: str) -> Tuple[List[Any], List[Any]]:
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents exceed the 128 KiB default
    try:
        with _open_text(path) as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise ConfigError(f"{path} is empty (expected a header row naming the columns)",
                                  key=src_key, value=str(path))
            header = [h.strip() for h in header]
            for which in ("text_column", "label_column"):
                if getattr(o, which) not in header:
                    raise _missing_column(o, key, which, path, header)
            ti, li = header.index(o.text_column), header.index(o.label_column)
            texts, labels = [], []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip() and len(header) > 1):
                    continue  # blank line
                if len(row) <= max(ti, li):
                    raise ConfigError(f"row {len(texts) + 1} of {path} has {len(row)} fields but the header "
                                      f"has {len(header)}", key=src_key, value=str(path))
                texts.append(row[ti])
                labels.append(row[li])
            return texts, labels
    except (UnicodeDecodeError, csv.Error, OSError, EOFError) as e:
        raise ConfigError(f"cannot read {path} as {'TSV' if delimiter == chr(9) else 'CSV'} ({e})",
                          key=src_key, value=str(path)) from None
    finally:
        csv.field_size_limit(old)


def _records(rows: List[Any], path: Path, o, key: str, src_key: str, row: str) -> Tuple[List[Any], List[Any]]:
    texts, labels = [], []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ConfigError(f"{row} {i + 1} of {path} is not a JSON object", key=src_key, value=str(path))
        for which in ("text_column", "label_column"):
            col = getattr(o, which)
            if col not in r:
                if i == 0:
                    raise _missing_column(o, key, which, path, list(r))
                raise ConfigError(f"{row} {i + 1} of {path} has no '{col}'", key=f"{key}.{which}", value=col)
        texts.append(r[o.text_column])
        labels.append(r[o.label_column])
    return texts, labels


def _read_jsonl(path: Path, o, key: str, src_key: str) -> Tuple[List[Any], List[Any]]:
    rows = []
    try:
        with _open_text(path) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ConfigError(f"line {n} of {path} is not valid JSON ({e})", key=src_key,
                                          value=str(path)) from None
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise ConfigError(f"cannot read {path} as JSON Lines ({e})", key=src_key, value=str(path)) from None
    return _records(rows, path, o, key, src_key, "line")


def _read_json(path: Path, o, key: str, src_key: str) -> Tuple[List[Any], List[Any]]:
    try:
        with _open_text(path) as f:
            rows = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as e:
        raise ConfigError(f"cannot read {path} as JSON ({e})", key=src_key, value=str(path)) from None
    if not isinstance(rows, list):
        raise ConfigError(f"{path} must hold a JSON array of objects (one per example); "
                          "for one object per line use a .jsonl file", key=src_key, value=str(path))
    return _records(rows, path, o, key, src_key, "record")


def _read_parquet(path: Path, o, key: str, src_key: str) -> Tuple[List[Any], List[Any]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("reading Parquet needs pyarrow: pip install pyarrow", key=src_key,
                          value=str(path)) from None
    try:
        names = list(pq.read_schema(path).names)
        for which in ("text_column", "label_column"):
            if getattr(o, which) not in names:
                raise _missing_column(o, key, which, path, names)
        cols = list(dict.fromkeys([o.text_column, o.label_column]))
        table = pq.read_table(path, columns=cols)
    except (pa.ArrowException, OSError) as e:
        raise ConfigError(f"cannot read {path} as Parquet ({e})", key=src_key, value=str(path)) from None
    return table.column(o.text_column).to_pylist(), table.column(o.label_column).to_pylist()


READERS = {"csv": lambda p, o, k, sk: _read_csv(p, o, k, sk, ","),
           "tsv": lambda p, o, k, sk: _read_csv(p, o, k, sk, "\t"),
           "jsonl": _read_jsonl, "json": _read_json, "parquet": _read_parquet}


def check_texts(texts: List[Any], where: str, key: str, column_key: str, column: str, row: str = "row") -> None:
    """Every text is a non-empty string (an empty one would give a sequence with no real tokens)."""
    empty = []
    for i, t in enumerate(texts):
        if t is None:
            raise ConfigError(f"{row} {i + 1} of {where} has no text", key=f"{key}.{column_key}", value=column)
        if not isinstance(t, str):
            raise ConfigError(f"{row} {i + 1} of {where} holds a {type(t).__name__}, not text",
                              key=f"{key}.{column_key}", value=column)
        if not t:
            empty.append(i + 1)
    if empty:
        raise ConfigError(f"{len(empty)} {row}(s) of {where} have empty text (first: {row} {empty[0]}); "
                          "remove them or give them text", key=f"{key}.{column_key}", value=column)


def read_texts(o: TextTableOptions, src: str, path_str: str, key: str) -> Tuple[List[str], List[Optional[str]]]:
    """(texts, normalized labels) of one source, validated."""
    sk = source_key(key, src)
    path = require_file(path_str, sk)
    fmt = table_format(path, o.format, key)
    texts, labels = READERS[fmt](path, o, key, sk)
    check_texts(texts, str(path_str), key, "text_column", o.text_column, "line" if fmt == "jsonl" else "row")
    return texts, [norm_label(v) for v in labels]


@dataclass
class TextScan:
    classes: List[str]
    y: Dict[str, np.ndarray]  # class index per row, per source
    plan: Dict[str, Tuple[str, np.ndarray]]  # split -> (source, rows)


@register_task("text_table")
class TextTable(UserDataTask):
    """Text classification from the user's CSV / TSV / Parquet / JSON Lines / JSON file(s)."""

    options = TextTableOptions
    version = 1

    @classmethod
    def data_files(cls, o: TextTableOptions) -> List[Path]:
        return [resolve(p) for p in (o.path, o.train_path, o.val_path, o.test_path) if p]

    @classmethod
    def check_numbers(cls, o: TextTableOptions, key: str) -> None:
        check_positive(o, key, "seq_len")
        check_fractions(o, key, sources(o, key))
        if o.text_column == o.label_column:
            raise ConfigError("text and label must be different columns", key=f"{key}.label_column",
                              value=o.label_column)

    @classmethod
    def _scan(cls, o: TextTableOptions, key: str) -> TextScan:
        srcs = sources(o, key)
        labels = {s: read_texts(o, s, p, key)[1] for s, p in srcs.items()}
        classes, y = index_labels(labels, srcs, o.classes, key, "label_column", o.label_column)
        return TextScan(classes, y, plan_splits(y, o, key, srcs))

    @classmethod
    def spec(cls, o: TextTableOptions) -> TaskSpec:
        return TaskSpec(input_kind="tokens", seq_len=o.seq_len, num_classes=len(cls.scan(o).classes),
                        vocab_size=BYTE_VOCAB)

    @classmethod
    def build(cls, o: TextTableOptions) -> Dict[str, Split]:
        key = f"task {cls.kind}"
        scan = cls.scan(o)
        texts = {s: read_texts(o, s, p, key)[0] for s, p in sources(o, key).items()}
        out = {}
        for split, (src, rows) in scan.plan.items():
            x, mask = bytes_to_tokens([texts[src][i] for i in rows], o.seq_len)
            out[split] = Split(x, mask, torch.from_numpy(scan.y[src][rows]))
        return out
