"""Shared plumbing for the loaders of users' own data.

The loaders (``text_table``, ``image_folder``, ``audio_folder``, ``arrays``, ``hf_dataset``)
share these rules, so they behave alike:

* **Where the data is.** Either ``path`` (one source, split into train / val / test) or
  ``train_path`` with optional ``val_path`` and ``test_path``; a split without its own path is
  carved from the training source. Relative paths are taken from the current working
  directory (where autoeff is run); ``~`` is expanded.
* **Splits.** Carved splits take ``val_fraction`` / ``test_fraction`` of the source (at least
  one example each), stratified by class and deterministic by ``seed``; the splits are disjoint
  and together cover every example exactly once.
* **Labels.** Labels are compared as text (``1``, ``1.0`` and ``"1"`` are the same label;
  surrounding spaces are ignored). Without ``classes``, class ``i`` is the ``i``-th distinct
  label in sorted order (numeric order when every label is a number); with ``classes``, class
  ``i`` is ``classes[i]`` and every label must be one of them, every class must have examples.
* **Errors.** Everything that can be checked without decoding every example is checked by
  ``check_options`` when the config is parsed, before any training, as a ``ConfigError``
  naming the key, the bad value (the file) and what is allowed.
* **Cache.** ``fingerprint`` adds the data files' absolute paths, sizes and modification times,
  so edited data is re-read rather than served from the task cache.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError
from .base import Task, content_hash

#: type of the ``classes`` option: class names as written in the space file
ClassName = Union[str, int, float, bool]

#: split name -> option naming its source ("all" = one source split three ways)
SOURCE_KEYS = {"all": "path", "train": "train_path", "val": "val_path", "test": "test_path"}
CARVED = ("val", "test")


def resolve(p: str) -> Path:
    """A user path: ``~`` expanded, relative paths from the current working directory."""
    return Path(os.path.expanduser(p))


def _not_found(p: str, what: str) -> str:
    if os.path.isabs(os.path.expanduser(p)):
        return f"{what} not found"
    return f"{what} not found (relative paths are taken from the working directory {os.getcwd()})"


def require_file(p: str, key: str) -> Path:
    path = resolve(p)
    if path.is_dir():
        raise ConfigError("expected a file, found a folder", key=key, value=p)
    if not path.is_file():
        raise ConfigError(_not_found(p, "file"), key=key, value=p)
    if not os.access(path, os.R_OK):
        raise ConfigError("file is not readable (permissions)", key=key, value=p)
    return path


def require_folder(p: str, key: str) -> Path:
    path = resolve(p)
    if path.exists() and not path.is_dir():
        raise ConfigError("expected a folder, found a file", key=key, value=p)
    if not path.is_dir():
        raise ConfigError(_not_found(p, "folder"), key=key, value=p)
    return path


def sources(o, key: str) -> Dict[str, str]:
    """The data sources given in options ``o``: ``{"all": path}`` or ``{"train": ..., ["val": ...], ["test": ...]}``."""
    given = {s: getattr(o, k) for s, k in SOURCE_KEYS.items() if getattr(o, k)}
    if "all" in given and len(given) > 1:
        other = next(SOURCE_KEYS[s] for s in given if s != "all")
        raise ConfigError(
            "give either 'path' (one source, split by val_fraction / test_fraction) or 'train_path' "
            "with optional 'val_path' / 'test_path', not both",
            key=f"{key}.{other}", value=getattr(o, other))
    if not given:
        raise ConfigError("no data given", key=f"{key}.path",
                          allowed="a path relative to the working directory, or train_path [+ val_path, test_path]")
    if "all" not in given and "train" not in given:
        s = next(iter(given))
        raise ConfigError("needs 'train_path' as well (val/test alone cannot train a model)",
                          key=f"{key}.{SOURCE_KEYS[s]}", value=given[s])
    return given


def source_key(key: str, src: str) -> str:
    return f"{key}.{SOURCE_KEYS[src]}"


def carved_splits(srcs: Iterable[str]) -> List[str]:
    srcs = set(srcs)
    return [s for s in CARVED if s not in srcs]


def check_fractions(o, key: str, srcs: Iterable[str]) -> None:
    carve = carved_splits(srcs)
    for s in carve:
        f = getattr(o, f"{s}_fraction")
        if not 0.0 < f < 1.0:
            raise ConfigError(f"must be in (0, 1): the share of the examples split off for {s}",
                              key=f"{key}.{s}_fraction", value=f, has_value=True)
    if len(carve) == 2 and o.val_fraction + o.test_fraction >= 1.0:
        raise ConfigError("val_fraction + test_fraction must be < 1 (training needs examples)",
                          key=f"{key}.test_fraction", value=o.test_fraction, has_value=True)


def check_positive(o, key: str, *names: str, zero_ok: Sequence[str] = ()) -> None:
    for n in names:
        v = getattr(o, n)
        if v < 0 or (v == 0 and n not in zero_ok):
            raise ConfigError("must be >= 0" if n in zero_ok else "must be > 0",
                              key=f"{key}.{n}", value=v, has_value=True)


# --------------------------------------------------------------------------------------
# Folder-per-class trees (image_folder, audio_folder)
# --------------------------------------------------------------------------------------


def class_folders(root: Path, key: str, extensions: Tuple[str, ...], what: str) -> Dict[str, List[Path]]:
    """``{class name: sorted files}`` of a folder-per-class tree; empty classes are errors."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ConfigError(f"no class folders in {root}; expected {root}/<class name>/<{what} file>",
                          key=key, value=str(root))
    out: Dict[str, List[Path]] = {}
    for d in folders:
        files, others = [], []
        for f in sorted(d.iterdir()):
            if f.name.startswith(".") or not f.is_file():
                continue
            (files if f.suffix.lower() in extensions else others).append(f)
        if not files:
            note = f"; ignored: {', '.join(f.name for f in others[:5])}" if others else ""
            raise ConfigError(f"empty class: folder {d} has no {what} files{note}", key=key, value=str(d),
                              allowed=" ".join(extensions))
        out[d.name] = files
    return out


def listing(o, key: str, extensions: Tuple[str, ...], what: str) -> Dict[str, Dict[str, List[Path]]]:
    return {s: class_folders(require_folder(p, source_key(key, s)), source_key(key, s), extensions, what)
            for s, p in sources(o, key).items()}


def flatten(tree: Dict[str, Dict[str, List[Path]]]) -> Tuple[Dict[str, List[Path]], Dict[str, List[str]]]:
    """Per source: files and their class (folder) names, in class then file order."""
    files = {s: [f for c in t for f in t[c]] for s, t in tree.items()}
    names = {s: [c for c in t for _ in t[c]] for s, t in tree.items()}
    return files, names


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------


_INT_FLOAT = re.compile(r"^[+-]?\d+\.0*$")


def norm_label(v: Any) -> Optional[str]:
    """A label as text (None when missing): 1, 1.0, "1" and "1.0" are the same label."""
    if v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return None
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    s = str(v).strip()
    if _INT_FLOAT.match(s):  # "1.0" as written by tools that stored ints as floats
        s = s.split(".")[0].lstrip("+") or "0"
        s = "0" if s in ("-0", "-") else s
    return s or None


def sort_labels(labels: Iterable[str]) -> List[str]:
    labels = set(labels)
    try:
        return sorted(labels, key=lambda s: (float(s), s))
    except ValueError:
        return sorted(labels)


def declared_classes(declared: Sequence[Any], key: str) -> Optional[List[str]]:
    """The ``classes`` option as label strings, or None when not declared."""
    if not declared:
        return None
    names: List[str] = []
    for i, c in enumerate(declared):
        n = norm_label(c)
        if n is None:
            raise ConfigError("empty class name", key=f"{key}.classes[{i}]", value=c, has_value=True)
        if n in names:
            raise ConfigError("class declared twice", key=f"{key}.classes[{i}]", value=c, has_value=True)
        names.append(n)
    if len(names) < 2:
        raise ConfigError("declare at least 2 classes", key=f"{key}.classes", value=list(declared))
    return names


def _show(items: Sequence[str], limit: int = 10) -> List[str]:
    items = list(items)
    return items[:limit] + ([f"... ({len(items) - limit} more)"] if len(items) > limit else [])


def index_labels(labels: Dict[str, Sequence[Optional[str]]], where: Dict[str, str], declared: Sequence[Any],
                 key: str, label_key: str, label_value: Any, row: str = "row",
                 ) -> Tuple[List[str], Dict[str, np.ndarray]]:
    """Normalized labels per source -> (class names, class index per source).

    ``label_key`` / ``label_value`` name the option that says where labels come from (e.g.
    ``label_column`` and its value), used when a label is missing.
    """
    for s, labs in labels.items():
        for i, lab in enumerate(labs):
            if lab is None:
                raise ConfigError(f"{row} {i + 1} of {where[s]} has no label", key=f"{key}.{label_key}",
                                  value=label_value, has_value=True)
    present = set().union(*(set(v) for v in labels.values())) if labels else set()
    names = declared_classes(declared, key)
    files = ", ".join(dict.fromkeys(where[s] for s in labels))
    if names is not None:
        stray = sort_labels(present - set(names))
        if stray:
            raise ConfigError(f"labels in {files} that are not among the declared classes",
                              key=f"{key}.classes", value=_show(stray), allowed=names)
        empty = [c for c in names if c not in present]
        if empty:
            found = ", ".join(_show(sort_labels(present)))
            raise ConfigError(f"declared class{'es' if len(empty) > 1 else ''} with no examples in {files} "
                              f"(labels found: {found})", key=f"{key}.classes",
                              value=empty if len(empty) > 1 else empty[0])
    else:
        names = sort_labels(present)
        if len(names) < 2:
            raise ConfigError(f"found {len(names)} distinct label(s) in {files}; a classifier needs at least 2",
                              key=f"{key}.{label_key}", value=label_value, allowed=names or None, has_value=True)
    index = {c: i for i, c in enumerate(names)}
    return names, {s: np.array([index[v] for v in labs], dtype=np.int64) for s, labs in labels.items()}


# --------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------


def stratified_order(y: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of ``range(len(y))`` in which every prefix holds each class in proportion.

    Each class's examples (shuffled) get evenly spaced positions ``(j + 0.5) / n_c`` in [0, 1);
    sorting by position (ties at random) interleaves the classes, so contiguous chunks are
    stratified, and a class with one or two examples lands in the (large) training chunk.
    """
    rng = np.random.default_rng(seed)
    u = np.empty(len(y))
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        u[idx[rng.permutation(len(idx))]] = (np.arange(len(idx)) + 0.5) / len(idx)
    return np.lexsort((rng.random(len(y)), u))


def plan_splits(y: Dict[str, np.ndarray], o, key: str, where: Dict[str, str],
                src_keys: Optional[Dict[str, str]] = None) -> Dict[str, Tuple[str, np.ndarray]]:
    """split -> (source, sorted row indices into that source); carves val/test where needed.

    ``y``: class index per example of each source ("all", or "train" [+ "val", "test"]);
    ``src_keys``: the option naming each source (default: path / train_path / ...).
    """
    def skey(s: str) -> str:
        return f"{key}.{src_keys[s]}" if src_keys else source_key(key, s)

    for s, ys in y.items():
        if len(ys) == 0:
            raise ConfigError(f"no examples in {where[s]}", key=skey(s), value=where[s])
    base = "all" if "all" in y else "train"
    carve = carved_splits(y)
    n = len(y[base])
    take = {s: max(1, int(round(n * getattr(o, f"{s}_fraction")))) for s in carve}
    n_train = n - sum(take.values())
    if n_train < 1:
        parts = ", ".join(f"{take[s]} for {s} ({s}_fraction={getattr(o, f'{s}_fraction')})" for s in carve)
        raise ConfigError(f"too few examples for the splits: {n} in {where[base]}, of which {parts} "
                          "are split off and training needs at least 1", key=skey(base), value=where[base])
    order = stratified_order(y[base], o.seed)
    out = {"train": (base, np.sort(order[:n_train]))}
    pos = n_train
    for s in carve:
        out[s] = (base, np.sort(order[pos: pos + take[s]]))
        pos += take[s]
    for s in CARVED:
        if s in y:
            out[s] = (s, np.arange(len(y[s])))
    return out


# --------------------------------------------------------------------------------------
# Fingerprints and the in-process scan cache
# --------------------------------------------------------------------------------------


def files_stamp(paths: Iterable[Path]) -> str:
    """Hash of the files' absolute paths, sizes and modification times."""
    h = hashlib.sha256()
    for p in sorted({str(Path(p).resolve()) for p in paths}):
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:16]


_FROZEN: Optional[Dict[Tuple[str, str], Tuple[str, str]]] = None  # see files_unchanged


@contextlib.contextmanager
def files_unchanged():
    """Within this scope the users' data files are taken as unchanged: a task's fingerprint
    (a walk of its files, a stat of each, the corpus hash) is computed once per task options and
    reused. ``load_space`` checks tens of candidates over the same tasks (the standard-library
    corpus has over a thousand files); outside the scope every scan looks at the files again."""
    global _FROZEN
    outer = _FROZEN
    if outer is None:
        _FROZEN = {}
    try:
        yield
    finally:
        _FROZEN = outer


class UserDataTask(Task):
    """Base of the loaders: ``scan`` validates and plans (cached per fingerprint in-process),
    ``check_options`` runs it at config-parse time."""

    version = 1
    _scans: "OrderedDict[Tuple[str, str], Any]" = OrderedDict()
    _max_scans = 32

    @classmethod
    def data_files(cls, o) -> List[Path]:  # pragma: no cover - abstract
        """The files whose sizes and mtimes go into the fingerprint."""
        raise NotImplementedError

    @classmethod
    def check_numbers(cls, o, key: str) -> None:
        """Checks of the plain options (no file access)."""

    @classmethod
    def _scan(cls, o, key: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def scan(cls, o, key: str = "") -> Any:
        key = key or f"task {cls.kind}"
        cls.check_numbers(o, key)
        ck = None
        if _FROZEN is not None:
            ok = (cls.kind, repr(dataclasses.asdict(o)))
            ck = _FROZEN.get(ok)
        if ck is None:
            ck = (cls.kind, content_hash(cls.fingerprint(o)))
            if _FROZEN is not None:
                _FROZEN[ok] = ck
        cache = UserDataTask._scans
        if ck in cache:
            cache.move_to_end(ck)
            return cache[ck]
        result = cls._scan(o, key)
        cache[ck] = result
        while len(cache) > cls._max_scans:
            cache.popitem(last=False)
        return result

    @classmethod
    def check_options(cls, o, key: str) -> None:
        cls.scan(o, key)

    @classmethod
    def fingerprint(cls, o) -> Dict[str, Any]:
        try:
            files = cls.data_files(o)
        except (ConfigError, OSError):
            files = []
        return {"kind": cls.kind, "version": cls.version, "options": dataclasses.asdict(o),
                "files": files_stamp(files)}
