"""Byte-level language modelling on the user's own text (or on the Python standard library).

A decoder task (``TaskSpec.target = "token"``, docs/decoders.md §2): x is a window of
``seq_len`` tokens, y the next token at every position, ``-100`` where nothing is scored
(padding). Sources (``path``):

* ``stdlib``: the ``*.py`` files of the standard library of the Python running autoeff
  (``sysconfig.get_paths()["stdlib"]``), without its tests (folders named ``test``, ``tests``,
  ``idle_test``: ``test/``, ``lib2to3/tests``, ``idlelib/idle_test``, ...) and without
  ``site-packages``. Different Pythons ship different files: the file list and a SHA-256 of
  them are part of the cache key and are recorded with the data (``TaskData.info``), so two
  machines never silently compare different corpora.
* a folder (every file with one of ``extensions``, recursively; hidden files skipped), a glob
  (``data/**/*.md``; every matched file) or one text file: one document per file. ``.gz``,
  ``.bz2`` and ``.xz`` files are decompressed transparently.
* a table (``.csv``, ``.tsv``, ``.parquet``, ``.jsonl``, ``.json``, optionally compressed; or
  ``format``): one document per row of ``text_column``, read by the ``text_table`` loader's
  readers. The column may also hold lists of token ids from a tokenizer (as ``hf_dataset``
  accepts); then ids are shifted by one (0 = padding), ``vocab_size`` is the tokenizer's
  vocabulary (0 = largest id + 1) and ``bytes_per_token`` is 0 (bits per byte unknown).

Tokens (bytes): 0 = padding, byte ``b`` -> ``b + 1`` (1..256), and **257 = end of document**,
appended after every document, so the vocabulary is **258** (``VOCAB``); ``bytes_per_token =
1.0`` (the end-of-document token is counted as one byte). Token-id documents: id ``i`` ->
``i + 1``, end of document = ``vocab_size + 1``, vocabulary ``vocab_size + 2``.

Splits are by document: the documents are shuffled by ``seed`` and ``val_fraction`` /
``test_fraction`` of them (at least one each) go to validation / test, the rest to training;
no document is in two splits. Within a split the documents are concatenated in that shuffled
order (``pack: true``, as in GPT-style training; the end-of-document token separates them) or
windowed one by one (``pack: false``, the last window of each document padded). Windows do not
overlap: window ``k`` is ``x = s[k*L : k*L + L]``, ``y = s[k*L + 1 : k*L + L + 1]`` (``L =
seq_len``), so every token but a stream's first is predicted exactly once. ``n_train`` /
``n_val`` / ``n_test`` cap the windows of each split (0 = all): a capped split reads only the
documents its first windows need, which keeps a capped ``stdlib`` task fast.

Space-file entry::

    tasks:
      - kind: lm_text
        path: stdlib            # or docs/, "corpus/**/*.txt.gz", data/posts.jsonl (text_column: body)
        seq_len: 512
        n_train: 4000           # windows; 0 = every window
"""
from __future__ import annotations

import glob
import hashlib
import os
import platform
import sysconfig
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import SPLITS, Split, TaskSpec
from .hf_dataset import check_ids, input_kind
from .text_table import COMPRESSED, EXTENSIONS as TABLE_EXTENSIONS, READERS, check_texts, table_format
from .userdata import UserDataTask, check_fractions, check_positive, files_stamp, resolve

STDLIB = "stdlib"
IGNORE = -100  # y where nothing is scored
EOD = 257  # end-of-document token (bytes)
VOCAB = 258  # 0 = padding, 1..256 = bytes, 257 = end of document
#: folders of the standard library that are not part of the corpus
STDLIB_SKIP = ("test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__")
TEXT_EXTENSIONS = [".txt", ".md", ".rst", ".py", ".text", ".tex", ".html", ".xml", ".c", ".h", ".cpp",
                   ".js", ".ts", ".java", ".go", ".rs", ".sh", ".yaml", ".yml", ".toml", ".cfg", ".ini"]
FORMATS = ("auto", "text", "csv", "tsv", "parquet", "jsonl", "json")


@dataclass
class LMTextOptions:
    path: str = ""  # "stdlib", a folder, a glob, a text file, or a table file (see text_column)
    text_column: str = "text"  # tables: the column holding one document per row
    format: str = field(default="auto", metadata={"choices": FORMATS})  # auto: tables by extension, else text
    extensions: List[str] = field(default_factory=lambda: list(TEXT_EXTENSIONS))  # folders: files taken
    seq_len: int = 512  # tokens per window
    n_train: int = 0  # windows per split; 0 = all of them
    n_val: int = 0
    n_test: int = 0
    val_fraction: float = 0.1  # of the documents
    test_fraction: float = 0.1
    pack: bool = True  # concatenate a split's documents (else one document per window run, padded)
    vocab_size: int = 0  # token-id tables: the tokenizer's vocabulary; 0 = largest id + 1
    seed: int = 0


@dataclass
class Corpus:
    """What a scan finds: where the documents are, how they split, and what identifies them."""

    source: str  # "stdlib" | "files" | "table"
    root: str  # folder the names are relative to (the table file for tables)
    names: List[str]  # one per document: relative file path, or "row N"
    files: List[Path]  # the files read (one per document, or the table)
    sha256: str  # of the names and the bytes of the files
    plan: Dict[str, List[int]]  # split -> document indices, in reading order
    kind: str  # "bytes" | "ids"
    vocab_size: int
    python: str = ""  # stdlib: the interpreter's version

    def info(self) -> Dict[str, Any]:
        out = {"source": self.source, "root": self.root, "sha256": self.sha256, "n_documents": len(self.names),
               "files": [str(f) for f in self.names] if self.source != "table" else [self.root],
               "documents": {s: [self.names[i] for i in idx] for s, idx in self.plan.items()}}
        if self.python:
            out["python"] = self.python
        return out


# --------------------------------------------------------------------------------------
# Listing the documents
# --------------------------------------------------------------------------------------


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> Tuple[Path, List[str]]:
    """(root, sorted relative paths) of the standard library's ``*.py`` files, tests excluded."""
    root = stdlib_root()
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in STDLIB_SKIP and not x.startswith("."))
        rel = Path(d).relative_to(root)
        out.extend((rel / f).as_posix() for f in sorted(files) if f.endswith(".py") and not f.startswith("."))
    return root, sorted(out)


def _suffix(name: str) -> str:
    """The extension that says what a file holds, compression ignored (``a.txt.gz`` -> ``.txt``)."""
    suffixes = [s.lower() for s in Path(name).suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def is_glob(p: str) -> bool:
    return any(c in p for c in "*?[")


def folder_files(root: Path, extensions: List[str]) -> List[str]:
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        rel = Path(d).relative_to(root)
        for f in sorted(files):
            if not f.startswith(".") and _suffix(f) in exts and (Path(d) / f).is_file():
                out.append((rel / f).as_posix())
    return sorted(out)


def glob_files(pattern: str) -> Tuple[Path, List[str]]:
    """(the folder before the first wildcard, the matched files relative to it)."""
    expanded = os.path.expanduser(pattern)
    parts = Path(expanded).parts
    fixed = []
    for part in parts:
        if is_glob(part):
            break
        fixed.append(part)
    root = Path(*fixed) if fixed else Path(".")
    hits = sorted(h for h in glob.glob(expanded, recursive=True) if os.path.isfile(h))
    return root, sorted(Path(os.path.relpath(h, root)).as_posix() for h in hits)


def corpus_hash(root: Path, names: List[str]) -> str:
    """SHA-256 of each file's name and bytes as stored (compressed files are hashed compressed)."""
    h = hashlib.sha256()
    for n in names:
        data = (root / n).read_bytes()
        h.update(f"{n}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


_HASHES: "OrderedDict[str, str]" = OrderedDict()  # files_stamp -> corpus_hash, in-process


def cached_corpus_hash(root: Path, names: List[str], key: str, value: str) -> str:
    stamp = files_stamp([root / n for n in names]) + content_hash_names(names)
    if stamp not in _HASHES:
        try:
            _HASHES[stamp] = corpus_hash(root, names)
        except OSError as e:
            raise ConfigError(f"cannot read {e.filename} ({e.strerror})", key=key, value=value) from None
        while len(_HASHES) > 64:
            _HASHES.popitem(last=False)
    return _HASHES[stamp]


def content_hash_names(names: List[str]) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def source_kind(o: LMTextOptions) -> str:
    """"stdlib", "table" or "files"."""
    if o.path == STDLIB:
        return STDLIB
    if o.format not in ("auto", "text"):
        return "table"
    if o.format == "auto" and not is_glob(o.path) and _suffix(o.path) in TABLE_EXTENSIONS \
            and not resolve(o.path).is_dir():
        return "table"
    return "files"


def list_files(o: LMTextOptions, key: str) -> Tuple[str, Path, List[str]]:
    """(source, root, relative names) of a stdlib / files source; ConfigError when nothing matches."""
    pkey = f"{key}.path"
    if not o.path:
        raise ConfigError("no data given", key=pkey,
                          allowed="'stdlib', a folder, a glob of text files, a text file or a table file")
    if o.path == STDLIB:
        root, names = stdlib_files()
        if not names:
            raise ConfigError(f"no standard-library sources found under {root}", key=pkey, value=o.path)
        return STDLIB, root, names
    if is_glob(o.path):
        root, names = glob_files(o.path)
        if not names:
            raise ConfigError("no files match the glob", key=pkey, value=o.path)
        return "files", root, names
    p = resolve(o.path)
    if p.is_dir():
        names = folder_files(p, o.extensions)
        if not names:
            raise ConfigError(f"no text files in the folder (extensions: {' '.join(o.extensions)}; "
                              "compressed .gz/.bz2/.xz variants count)", key=pkey, value=o.path)
        return "files", p, names
    if p.is_file():
        return "files", p.parent, [p.name]
    where = "" if os.path.isabs(os.path.expanduser(o.path)) else \
        f" (relative paths are taken from the working directory {os.getcwd()})"
    raise ConfigError(f"no such file or folder{where}", key=pkey, value=o.path)


# --------------------------------------------------------------------------------------
# Reading documents
# --------------------------------------------------------------------------------------


def read_bytes(path: Path, key: str, value: str) -> bytes:
    opener = COMPRESSED.get(path.suffix.lower())
    try:
        if opener is None:
            return path.read_bytes()
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error, ValueError) as e:  # damaged gzip/bz2/xz raise these
        raise ConfigError(f"cannot read {path} ({type(e).__name__}: {e})", key=key, value=value) from None


def read_table(o: LMTextOptions, key: str) -> Tuple[Path, List[Any]]:
    """The table's ``text_column`` (text or token-id lists), via the text_table loader's readers."""
    pkey = f"{key}.path"
    path = resolve(o.path)
    if path.is_dir() or not path.is_file():
        raise ConfigError("table file not found" if not path.is_dir() else "expected a table file, found a folder",
                          key=pkey, value=o.path)
    fmt = table_format(path, "auto" if o.format == "auto" else o.format, key)
    # the readers take a text and a label column: ask for the text column twice
    cols = SimpleNamespace(text_column=o.text_column, label_column=o.text_column)
    texts, _ = READERS[fmt](path, cols, key, pkey)
    if not texts:
        raise ConfigError("the table has no rows", key=pkey, value=o.path)
    return path, texts


def doc_tokens(doc: Any, kind: str, eod: int) -> np.ndarray:
    """One document -> token ids (shifted by one, 0 = padding) followed by the end-of-document id."""
    if kind == "bytes":
        b = doc.encode("utf-8") if isinstance(doc, str) else doc
        a = np.frombuffer(b, dtype=np.uint8).astype(np.int64) + 1
    else:
        a = np.asarray(doc, dtype=np.int64) + 1
    return np.concatenate([a, np.array([eod], dtype=np.int64)])


def windows(stream: np.ndarray, seq_len: int, cap: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Non-overlapping next-token windows of one token stream: x (n, L), y (n, L) (-100 past the end)."""
    n = max(0, -(-(len(stream) - 1) // seq_len))  # every token but the first is a target once
    if cap:
        n = min(n, cap)
    x = np.zeros((n, seq_len), dtype=np.int64)
    y = np.full((n, seq_len), IGNORE, dtype=np.int64)
    for k in range(n):
        xs = stream[k * seq_len: k * seq_len + seq_len]
        ys = stream[k * seq_len + 1: k * seq_len + seq_len + 1]
        x[k, : len(xs)] = xs
        y[k, : len(ys)] = ys
    return x, y


# --------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------


@register_task("lm_text")
class LMText(UserDataTask):
    """Byte-level language modelling on text files, a table column, or the Python standard library."""

    options = LMTextOptions
    version = 1

    @classmethod
    def data_files(cls, o: LMTextOptions) -> List[Path]:
        if source_kind(o) == "table":
            return [resolve(o.path)]
        _, root, names = list_files(o, f"task {cls.kind}")
        return [root / n for n in names]

    @classmethod
    def fingerprint(cls, o: LMTextOptions) -> Dict[str, Any]:
        """Options plus the corpus's SHA-256 (names and bytes of every file): edited files or another
        Python's standard library give another cache entry."""
        fp = super().fingerprint(o)
        try:
            fp["sha256"] = cls._corpus_hash(o, f"task {cls.kind}")
        except ConfigError:
            fp["sha256"] = ""
        if o.path == STDLIB:
            fp["python"] = platform.python_version()
        return fp

    @classmethod
    def _corpus_hash(cls, o: LMTextOptions, key: str) -> str:
        if source_kind(o) == "table":
            p = resolve(o.path)
            if not p.is_file():
                raise ConfigError("table file not found", key=f"{key}.path", value=o.path)
            return cached_corpus_hash(p.parent, [p.name], f"{key}.path", o.path)
        _, root, names = list_files(o, key)
        return cached_corpus_hash(root, names, f"{key}.path", o.path)

    @classmethod
    def check_numbers(cls, o: LMTextOptions, key: str) -> None:
        check_positive(o, key, "seq_len")
        check_positive(o, key, "n_train", "n_val", "n_test", "vocab_size",
                       zero_ok=("n_train", "n_val", "n_test", "vocab_size"))
        check_fractions(o, key, ["all"])
        if o.path == STDLIB and o.format not in ("auto", "text"):
            raise ConfigError("the standard library is read as text files", key=f"{key}.format", value=o.format,
                              allowed=["auto", "text"])

    @classmethod
    def _scan(cls, o: LMTextOptions, key: str) -> Corpus:
        src = source_kind(o)
        vocab, kind, python = VOCAB, "bytes", ""
        if src == "table":
            path, docs = read_table(o, key)
            where = str(o.path)
            kind = "bytes" if input_kind(docs, where, key, o.text_column) == "text" else "ids"
            if kind == "bytes":
                check_texts(docs, where, key, "text_column", o.text_column)
            else:
                top = check_ids(docs, where, key, o.text_column)
                if o.vocab_size and top >= o.vocab_size:
                    raise ConfigError(f"token id {top} in {where} is outside the vocabulary (ids must be < "
                                      "vocab_size)", key=f"{key}.vocab_size", value=o.vocab_size, has_value=True)
                vocab = (o.vocab_size or top + 1) + 2  # shifted by one (0 = padding), plus end of document
            root, names, files = str(path), [f"row {i + 1}" for i in range(len(docs))], [path]
            sha = cached_corpus_hash(path.parent, [path.name], f"{key}.path", o.path)
        else:
            src, root_p, names = list_files(o, key)
            root, files = str(root_p), [root_p / n for n in names]
            sha = cached_corpus_hash(root_p, names, f"{key}.path", o.path)
            if src == STDLIB:
                python = platform.python_version()
        n = len(names)
        take = {s: max(1, int(round(n * getattr(o, f"{s}_fraction")))) for s in ("val", "test")}
        if n - take["val"] - take["test"] < 1:
            raise ConfigError(f"found {n} document(s) in {o.path}; splitting by document needs at least "
                              f"{take['val'] + take['test'] + 1} (one for training, {take['val']} for validation, "
                              f"{take['test']} for test). Give more files (or rows), or cut a long text into several",
                              key=f"{key}.path", value=o.path)
        order = np.random.default_rng(o.seed).permutation(n).tolist()
        nv, nt = take["val"], take["test"]
        plan = {"train": order[nv + nt:], "val": order[:nv], "test": order[nv: nv + nt]}
        return Corpus(src, root, names, files, sha, plan, kind, vocab, python)

    @classmethod
    def spec(cls, o: LMTextOptions) -> TaskSpec:
        c = cls.scan(o)
        return TaskSpec(input_kind="tokens", seq_len=o.seq_len, num_classes=c.vocab_size, vocab_size=c.vocab_size,
                        target="token", bytes_per_token=1.0 if c.kind == "bytes" else 0.0)

    @classmethod
    def info(cls, o: LMTextOptions) -> Dict[str, Any]:
        """The corpus's identity: source, file list, SHA-256, documents per split (and the Python version
        for ``stdlib``)."""
        return cls.scan(o).info()

    @classmethod
    def build(cls, o: LMTextOptions) -> Dict[str, Split]:
        key = f"task {cls.kind}"
        c = cls.scan(o)
        eod = EOD if c.kind == "bytes" else c.vocab_size - 1
        table: Optional[List[Any]] = read_table(o, key)[1] if c.source == "table" else None

        def doc(i: int) -> np.ndarray:
            raw = table[i] if table is not None else read_bytes(c.files[i], f"{key}.path", o.path)
            return doc_tokens(raw, c.kind, eod)

        out = {}
        for split in SPLITS:
            cap = int(getattr(o, f"n_{split}"))
            xs, ys, have = [], [], 0
            if o.pack:
                parts, length = [], 0
                for i in c.plan[split]:
                    parts.append(doc(i))
                    length += len(parts[-1])
                    if cap and length > cap * o.seq_len:  # enough for `cap` full windows
                        break
                x, y = windows(np.concatenate(parts), o.seq_len, cap)
                xs, ys = [x], [y]
            else:
                for i in c.plan[split]:
                    x, y = windows(doc(i), o.seq_len, cap - have if cap else 0)
                    xs.append(x)
                    ys.append(y)
                    have += len(x)
                    if cap and have >= cap:
                        break
            x = torch.from_numpy(np.concatenate(xs))
            out[split] = Split(x, x != 0, torch.from_numpy(np.concatenate(ys)))
        return out
