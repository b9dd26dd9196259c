"""lm_text: byte-level language modelling on fixtures built here (a folder of text files, some
compressed; a glob; a table column; token ids) and on the interpreter's standard library.

The checks rebuild each split's token stream from the windows and cut it at the end-of-document
token, so "split by document" and "y is the next byte" are verified against the files' bytes,
not against the loader's own bookkeeping.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
from pathlib import Path

import pytest
import torch

from autoeff.config import parse_tasks
from autoeff.errors import ConfigError
from autoeff.tasks import get_task, lm_text, load_task, task_spec
from autoeff.tasks.base import SPLITS

EOD = 257
IGNORE = -100


# --------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------


def doc_text(i: int) -> str:
    """A distinct document of 40 to ~400 bytes, with multi-byte UTF-8 characters."""
    words = ["alpha", "beta", "gämma", "δelta", "漢字", "epsilon", "zeta\n", "eta\t"]
    body = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(5 + (i * 37) % 60))
    return f"<doc{i:02d}> {body} </doc{i:02d}>\n"


def make_folder(root: Path, n: int = 12) -> dict:
    """``n`` documents under ``root`` (nested, some compressed) plus files that must be ignored.
    Returns {relative name: bytes as read (decompressed)}."""
    writers = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}
    names = ["a/doc00.txt", "b/c/doc01.md", "doc02.py", "doc03.txt.gz", "doc04.txt.bz2", "doc05.rst.xz"]
    names += [f"doc{i:02d}.txt" for i in range(len(names), n)]
    docs = {}
    for i, name in enumerate(names):
        data = doc_text(i).encode("utf-8")
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        suffix = Path(name).suffix
        p.write_bytes(writers[suffix](data) if suffix in writers else data)
        docs[name] = data
    (root / ".hidden.txt").write_text("<hidden> never read")
    (root / ".git").mkdir()
    (root / ".git" / "notes.txt").write_text("<git> never read")
    (root / "image.bin").write_bytes(bytes(range(256)))
    return docs


def parse(**opts):
    return parse_tasks([{"kind": "lm_text", **opts}])[0]


def load(tmp_path: Path, **opts):
    cfg = parse(**opts)
    return cfg, load_task(cfg, data_dir=str(tmp_path / "cache"))


def config_error(key: str, *fragments: str, **opts) -> str:
    with pytest.raises(ConfigError) as ei:
        parse(**opts)
    msg = str(ei.value)
    assert f"key 'tasks[0].{key}" in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


def check_windows(sp, seq_len: int) -> None:
    """Shapes, padding, and y[k, i] == x[k, i + 1] inside every window."""
    assert sp.x.shape == sp.y.shape == sp.mask.shape == (len(sp), seq_len)
    assert sp.x.dtype == sp.y.dtype == torch.long and sp.mask.dtype == torch.bool
    assert torch.equal(sp.mask, sp.x != 0)
    assert (sp.y[~sp.mask] == IGNORE).all()  # padding is never scored
    nxt = sp.x[:, 1:]
    inside = nxt != 0
    assert torch.equal(sp.y[:, :-1][inside], nxt[inside])


def stream(sp) -> list:
    """The split's token stream, rebuilt from the windows: the first input, then every target."""
    out = [int(sp.x[0, 0])]
    for k in range(len(sp)):
        out += sp.y[k][sp.y[k] != IGNORE].tolist()
    return out


def documents(tokens: list) -> list:
    """Token stream -> the documents' bytes (cut after each end-of-document token)."""
    docs, cur = [], []
    for t in tokens:
        if t == EOD:
            docs.append(bytes(cur))
            cur = []
        else:
            assert 1 <= t <= 256
            cur.append(t - 1)
    assert not cur, "the stream must end with an end-of-document token"
    return docs


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------


def test_folder_split_by_document_and_next_byte_targets(tmp_path):
    docs = make_folder(tmp_path / "corpus")
    cfg, data = load(tmp_path, path=str(tmp_path / "corpus"), seq_len=32, val_fraction=0.2, test_fraction=0.2)
    spec = task_spec(cfg)
    assert (spec.target, spec.bytes_per_token, spec.vocab_size, spec.num_classes) == ("token", 1.0, 258, 258)
    by_content = {v: k for k, v in docs.items()}
    seen = {}
    for s in SPLITS:
        sp = data.splits[s]
        check_windows(sp, 32)
        assert (sp.y[:, -1] != IGNORE)[:-1].all()  # packed: only the last window is padded
        got = documents(stream(sp))
        assert all(d in by_content for d in got), "every document is one file's bytes, whole"
        names = [by_content[d] for d in got]
        assert names == data.info["documents"][s]  # read in the recorded order
        for n in names:
            assert n not in seen, f"{n} is in {seen.get(n)} and {s}"
            seen[n] = s
    assert set(seen) == set(docs)  # every document once; hidden files, .git and image.bin never read
    assert [len(data.info["documents"][s]) for s in SPLITS] == [8, 2, 2]
    assert data.info["files"] == sorted(docs) and data.info["source"] == "files"


def test_unpacked_windows_stay_inside_one_document(tmp_path):
    docs = make_folder(tmp_path / "corpus")
    _, data = load(tmp_path, path=str(tmp_path / "corpus"), seq_len=16, pack=False)
    lengths = {v: len(v) + 1 for v in docs.values()}  # + end of document
    for s in SPLITS:
        sp = data.splits[s]
        check_windows(sp, 16)
        runs, cur = [], None  # each document restarts the stream: its first byte is an input only
        for k in range(len(sp)):
            cur = [int(sp.x[k, 0])] if cur is None else cur
            cur += sp.y[k][sp.y[k] != IGNORE].tolist()
            if cur[-1] == EOD:
                runs.append(cur)
                cur = None
        assert cur is None
        got = [d for r in runs for d in documents(r)]
        assert len(got) == len(runs) and set(got) <= set(lengths)
        assert sum(-(-(lengths[d] - 1) // 16) for d in got) == len(sp)  # ceil((len - 1) / L) windows each
        for k in range(len(sp)):
            real = sp.x[k][sp.mask[k]].tolist()
            assert EOD not in real[:-1]  # a window never runs past its document's end
            if len(real) < 16:  # a padded window is a document's last: its last input is the end token
                assert sp.y[k, len(real) - 1] == IGNORE and real[-1] == EOD


def test_window_caps_take_the_first_windows(tmp_path):
    make_folder(tmp_path / "corpus")
    _, full = load(tmp_path, path=str(tmp_path / "corpus"), seq_len=16)
    _, capped = load(tmp_path, path=str(tmp_path / "corpus"), seq_len=16, n_train=3, n_val=1, n_test=1000)
    assert len(capped.splits["train"]) == 3 and len(capped.splits["val"]) == 1
    assert len(capped.splits["test"]) == len(full.splits["test"])  # a cap above the supply takes all
    for s in SPLITS:
        n = len(capped.splits[s])
        assert torch.equal(capped.splits[s].x, full.splits[s].x[:n])
        assert torch.equal(capped.splits[s].y, full.splits[s].y[:n])


def test_glob_and_single_extension(tmp_path):
    docs = make_folder(tmp_path / "corpus")
    pattern = str(tmp_path / "corpus" / "**" / "*.txt")
    _, data = load(tmp_path, path=pattern, seq_len=32)
    want = sorted(n for n in docs if n.endswith(".txt"))
    assert data.info["files"] == want  # recursive, relative to the folder before the wildcard
    got = [d for s in SPLITS for d in documents(stream(data.splits[s]))]
    assert sorted(got) == sorted(docs[n] for n in want)
    _, some = load(tmp_path, path=str(tmp_path / "corpus"), extensions=["md", ".py", "RST"], seq_len=32,
                   val_fraction=0.3, test_fraction=0.3)
    assert some.info["files"] == ["b/c/doc01.md", "doc02.py", "doc05.rst.xz"]  # compressed variants count


def test_deterministic_by_seed(tmp_path):
    make_folder(tmp_path / "corpus")
    path = str(tmp_path / "corpus")
    a = get_task("lm_text").build(parse(path=path, seq_len=32, seed=5).options_typed())
    b = get_task("lm_text").build(parse(path=path, seq_len=32, seed=5).options_typed())
    c_info = get_task("lm_text").info(parse(path=path, seq_len=32, seed=6).options_typed())
    a_info = get_task("lm_text").info(parse(path=path, seq_len=32, seed=5).options_typed())
    for s in SPLITS:
        assert torch.equal(a[s].x, b[s].x) and torch.equal(a[s].y, b[s].y)
    assert a_info["documents"] != c_info["documents"]


def test_cache_reuse_info_and_edited_files(tmp_path, monkeypatch):
    make_folder(tmp_path / "corpus")
    path = str(tmp_path / "corpus")
    cfg = parse(path=path, seq_len=32)
    first = load_task(cfg, data_dir=str(tmp_path / "cache"))
    with monkeypatch.context() as m:
        m.setattr(get_task("lm_text"), "build", classmethod(lambda cls, o: 1 / 0))
        again = load_task(cfg, data_dir=str(tmp_path / "cache"))  # from the cache
    assert again.info == first.info and first.info["sha256"]
    assert all(torch.equal(first.splits[s].x, again.splits[s].x) for s in SPLITS)
    (tmp_path / "corpus" / "doc07.txt").write_text("<doc07> edited, and longer than it was before\n" * 3)
    edited = load_task(parse(path=path, seq_len=32), data_dir=str(tmp_path / "cache"))
    assert edited.info["sha256"] != first.info["sha256"]
    assert len(list((tmp_path / "cache" / "tasks").glob("lm_text-*.pt"))) == 2
    assert any(b"edited" in d for s in SPLITS for d in documents(stream(edited.splits[s])))


# --------------------------------------------------------------------------------------
# tables and token ids
# --------------------------------------------------------------------------------------


def test_table_column_one_document_per_row(tmp_path):
    rows = [{"id": i, "body": doc_text(i)} for i in range(10)]
    with gzip.open(tmp_path / "posts.csv.gz", "wt", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "body"])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "posts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    for name in ("posts.csv.gz", "posts.jsonl"):
        cfg, data = load(tmp_path, path=str(tmp_path / name), text_column="body", seq_len=24)
        assert data.info["source"] == "table" and task_spec(cfg).vocab_size == 258
        got = {s: documents(stream(data.splits[s])) for s in SPLITS}
        for s in SPLITS:
            check_windows(data.splits[s], 24)
            want = [doc_text(int(r.split()[1]) - 1).encode() for r in data.info["documents"][s]]
            assert got[s] == want  # "row N" = the N-th row, in reading order
        assert sorted(d for s in SPLITS for d in got[s]) == sorted(doc_text(i).encode() for i in range(10))
    config_error("text_column", "column not found", "body", path=str(tmp_path / "posts.jsonl"), text_column="text")


def test_token_id_column(tmp_path):
    rows = [{"ids": [(i * 3 + j) % 40 for j in range(5 + i)]} for i in range(10)]
    (tmp_path / "tok.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg, data = load(tmp_path, path=str(tmp_path / "tok.jsonl"), text_column="ids", vocab_size=50, seq_len=8)
    spec = task_spec(cfg)
    assert (spec.vocab_size, spec.bytes_per_token) == (52, 0.0)  # ids + 1, end of document = 51
    seqs = []
    for s in SPLITS:
        check_windows(data.splits[s], 8)
        toks, cur = stream(data.splits[s]), []
        for t in toks:
            if t == 51:
                seqs.append(cur)
                cur = []
            else:
                cur.append(t - 1)
    assert sorted(seqs) == sorted(r["ids"] for r in rows)
    config_error("vocab_size", "outside the vocabulary", path=str(tmp_path / "tok.jsonl"), text_column="ids",
                 vocab_size=30)


# --------------------------------------------------------------------------------------
# the standard library
# --------------------------------------------------------------------------------------


def make_stdlib(root: Path) -> None:
    for name in ("os.py", "json/__init__.py", "json/decoder.py", "email/mime/text.py", "abc.py", "ast.py",
                 "test/test_os.py", "unittest/test/test_case.py", "lib2to3/tests/test_all.py",
                 "idlelib/idle_test/test_x.py", "site-packages/pkg/mod.py", "__pycache__/os.py",
                 "json/README.txt"):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"# {name}\nprint({name!r})\n")


def test_stdlib_excludes_tests_and_records_its_files(tmp_path, monkeypatch):
    fake = tmp_path / "python3.x"
    make_stdlib(fake)
    monkeypatch.setattr(lm_text, "stdlib_root", lambda: fake)
    cfg = parse(path="stdlib", seq_len=16, val_fraction=0.2, test_fraction=0.2)
    data = load_task(cfg, data_dir=str(tmp_path / "cache"))
    want = ["abc.py", "ast.py", "email/mime/text.py", "json/__init__.py", "json/decoder.py", "os.py"]
    assert data.info["files"] == want and data.info["source"] == "stdlib" and data.info["root"] == str(fake)
    assert data.info["python"] and len(data.info["sha256"]) == 64
    got = sorted(d for s in SPLITS for d in documents(stream(data.splits[s])))
    assert got == sorted((fake / n).read_bytes() for n in want)
    # another Python's standard library (one file differs) is another corpus and another cache entry
    (fake / "json" / "decoder.py").write_text("# json/decoder.py of another Python version\n")
    other = load_task(parse(path="stdlib", seq_len=16, val_fraction=0.2, test_fraction=0.2),
                      data_dir=str(tmp_path / "cache"))
    assert other.info["sha256"] != data.info["sha256"]
    assert len(list((tmp_path / "cache" / "tasks").glob("lm_text-*.pt"))) == 2


def test_real_stdlib_capped(tmp_path):
    opts = dict(path="stdlib", seq_len=64, n_train=4, n_val=2, n_test=2)
    one = load_task(parse(**opts), data_dir=str(tmp_path / "a"))
    two = load_task(parse(**opts), data_dir=str(tmp_path / "b"))  # a second, independent build
    files = one.info["files"]
    assert "os.py" in files and "json/__init__.py" in files and all(f.endswith(".py") for f in files)
    skip = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
    assert not any(skip & set(f.split("/")[:-1]) for f in files)
    assert one.info["sha256"] == two.info["sha256"] and one.info["files"] == two.info["files"]
    assert one.info["python"] == two.info["python"]
    fp = get_task("lm_text").fingerprint(parse(**opts).options_typed())
    assert fp["sha256"] == one.info["sha256"]  # the cache key hashes the corpus itself
    for s, n in (("train", 4), ("val", 2), ("test", 2)):
        assert len(one.splits[s]) == n and torch.equal(one.splits[s].x, two.splits[s].x)
        check_windows(one.splits[s], 64)
        text = bytes((one.splits[s].x[0] - 1).tolist()).decode("utf-8", "replace")
        assert text.isprintable() or "\n" in text


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


def test_errors_name_the_key_and_value(tmp_path):
    config_error("path", "no data given")
    config_error("path", "no such file or folder", "nowhere", path=str(tmp_path / "nowhere"))
    config_error("path", "no files match the glob", path=str(tmp_path / "*.nothing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.bin").write_bytes(b"\0")
    config_error("path", "no text files in the folder", path=str(tmp_path / "empty"))
    (tmp_path / "two").mkdir()
    for i in range(2):
        (tmp_path / "two" / f"{i}.txt").write_text("x")
    config_error("path", "found 2 document(s)", "at least 3", path=str(tmp_path / "two"))
    config_error("val_fraction", "must be in (0, 1)", path="stdlib", val_fraction=0.0)
    config_error("seq_len", "must be > 0", path="stdlib", seq_len=0)
    config_error("n_train", "must be >= 0", path="stdlib", n_train=-1)
    config_error("format", "read as text files", path="stdlib", format="csv")


def test_damaged_compressed_file_is_a_config_error(tmp_path):
    make_folder(tmp_path / "corpus")
    (tmp_path / "corpus" / "doc03.txt.gz").write_bytes(b"not gzip at all")
    cfg = parse(path=str(tmp_path / "corpus"), seq_len=32)  # listing is fine: the bytes are read in build
    with pytest.raises(ConfigError) as ei:
        load_task(cfg, data_dir=str(tmp_path / "cache"))
    assert "doc03.txt.gz" in str(ei.value) and "lm_text.path" in str(ei.value)
