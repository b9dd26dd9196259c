"""Loaders of the user's own data: each on a small fixture built here, and each error case.

Every loader is exercised through ``autoeff.config.parse_tasks`` (which runs ``check_options``)
and ``autoeff.tasks.load_task`` (spec + build + the on-disk cache).
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from autoeff.config import parse_tasks
from autoeff.errors import ConfigError
from autoeff.tasks import get_task, list_tasks, load_task, task_spec
from autoeff.tasks.base import SPLITS
from autoeff.tasks.features import BYTE_VOCAB, PIXEL_VOCAB, n_frames, read_wav, resample_linear
from autoeff.tasks.userdata import norm_label, stratified_order

LOADERS = ("text_table", "image_folder", "audio_folder", "arrays", "hf_dataset")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def parse(kind: str, **opts):
    return parse_tasks([{"kind": kind, **opts}])[0]


def load(tmp_path: Path, kind: str, **opts):
    cfg = parse(kind, **opts)
    return cfg, load_task(cfg, data_dir=str(tmp_path / "cache"))


def config_error(kind: str, key: str, *fragments: str, **opts) -> str:
    """parse_tasks raises a ConfigError naming tasks[0].<key> and every fragment."""
    with pytest.raises(ConfigError) as ei:
        parse(kind, **opts)
    msg = str(ei.value)
    assert f"key 'tasks[0].{key}" in msg, msg
    for f in fragments:
        assert str(f) in msg, (f, msg)
    return msg


def decode(x: torch.Tensor) -> list:
    """Byte tokens back to strings."""
    return [bytes((row[row != 0] - 1).tolist()).decode("utf-8") for row in x]


def assert_partition(data, n_total: int):
    assert set(data.splits) == set(SPLITS)
    sizes = [len(data.splits[s]) for s in SPLITS]
    assert all(n >= 1 for n in sizes) and sum(sizes) == n_total, sizes


def assert_same(a, b):
    for s in SPLITS:
        for t, u in zip((a.splits[s].x, a.splits[s].mask, a.splits[s].y), (b.splits[s].x, b.splits[s].mask, b.splits[s].y)):
            assert torch.equal(t, u)


def test_loaders_registered():
    assert set(LOADERS) <= set(list_tasks())
    for kind in LOADERS:
        assert get_task(kind).options is not None


# --------------------------------------------------------------------------------------
# shared rules: labels and splits
# --------------------------------------------------------------------------------------


def test_norm_label_makes_equal_labels_equal():
    assert norm_label(1) == norm_label(1.0) == norm_label("1") == norm_label(np.int64(1)) == norm_label(" 1 ") == "1"
    assert norm_label("1.0") == "1" and norm_label("01") == "01"
    assert norm_label(float("nan")) is None and norm_label("") is None and norm_label(None) is None
    assert norm_label(True) == "true" and norm_label(0.5) == "0.5"


def test_stratified_order_keeps_class_proportions_in_every_chunk():
    y = np.array([0] * 60 + [1] * 30 + [2] * 10)
    order = stratified_order(y, seed=3)
    assert sorted(order.tolist()) == list(range(100))
    tail = y[order[-20:]]  # what val + test take at 10% each
    assert np.bincount(tail, minlength=3).tolist() == [12, 6, 2]
    assert not np.array_equal(order, stratified_order(y, seed=4))
    assert np.array_equal(order, stratified_order(y, seed=3))


# --------------------------------------------------------------------------------------
# text_table
# --------------------------------------------------------------------------------------

TEXT_ROWS = [(f"document {i} about {'cats' if i % 3 == 0 else 'dogs' if i % 3 == 1 else 'fish'}, é {i * 7}",
              ["cat", "dog", "fish"][i % 3]) for i in range(30)]


def write_csv(path: Path, rows=TEXT_ROWS, header=("text", "label"), delimiter=","):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path: Path, rows=TEXT_ROWS):
    path.write_text("".join(json.dumps({"text": t, "label": l, "extra": 1}) + "\n" for t, l in rows), encoding="utf-8")
    return path


def test_text_table_csv_splits_labels_and_determinism(tmp_path):
    p = write_csv(tmp_path / "data.csv")
    cfg, data = load(tmp_path, "text_table", path=str(p), seq_len=64)
    spec = task_spec(cfg)
    assert (spec.input_kind, spec.seq_len, spec.num_classes, spec.vocab_size) == ("tokens", 64, 3, BYTE_VOCAB)
    assert_partition(data, 30)
    assert (len(data.splits["val"]), len(data.splits["test"])) == (3, 3)
    seen = []
    truth = dict(TEXT_ROWS)
    for s in SPLITS:
        sp = data.splits[s]
        assert sp.x.shape == (len(sp), 64) and sp.x.dtype == torch.long and sp.mask.dtype == torch.bool
        assert torch.equal(sp.mask, sp.x != 0)
        texts = decode(sp.x)
        seen += texts
        # classes are the sorted labels: cat=0, dog=1, fish=2
        assert [["cat", "dog", "fish"][int(c)] for c in sp.y] == [truth[t] for t in texts]
    assert sorted(seen) == sorted(truth)  # disjoint and complete
    assert set(data.splits["val"].y.tolist()) == {0, 1, 2}  # stratified
    _, again = load(tmp_path / "other", "text_table", path=str(p), seq_len=64)
    assert_same(data, again)
    _, reseeded = load(tmp_path, "text_table", path=str(p), seq_len=64, seed=1)
    assert decode(reseeded.splits["test"].x) != decode(data.splits["test"].x)


def test_text_table_formats_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_csv(tmp_path / "d.csv")
    write_csv(tmp_path / "d.tsv", delimiter="\t")
    write_jsonl(tmp_path / "d.jsonl")
    (tmp_path / "d.json").write_text(json.dumps([{"text": t, "label": l} for t, l in TEXT_ROWS]), encoding="utf-8")
    with gzip.open(tmp_path / "d.csv.gz", "wt", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("text", "label")] + TEXT_ROWS)
    pq.write_table(pa.table({"label": [l for _, l in TEXT_ROWS], "text": [t for t, _ in TEXT_ROWS]}), tmp_path / "d.parquet")
    write_jsonl(tmp_path / "d.txt")
    _, ref = load(tmp_path, "text_table", path=str(tmp_path / "d.csv"), seq_len=48)
    for name, extra in (("d.tsv", {}), ("d.jsonl", {}), ("d.json", {}), ("d.csv.gz", {}), ("d.parquet", {}),
                        ("d.txt", {"format": "jsonl"})):
        _, data = load(tmp_path, "text_table", path=str(tmp_path / name), seq_len=48, **extra)
        assert_same(ref, data)


def test_text_table_separate_split_files_and_declared_classes(tmp_path):
    write_csv(tmp_path / "train.csv", TEXT_ROWS[:24])
    write_jsonl(tmp_path / "test.jsonl", TEXT_ROWS[24:])
    cfg, data = load(tmp_path, "text_table", train_path=str(tmp_path / "train.csv"),
                     test_path=str(tmp_path / "test.jsonl"), classes=["fish", "dog", "cat"], seq_len=40,
                     val_fraction=0.25)
    assert task_spec(cfg).num_classes == 3
    assert decode(data.splits["test"].x) == [t for t, _ in TEXT_ROWS[24:]]  # the test file, in order
    assert data.splits["test"].y.tolist() == [["fish", "dog", "cat"].index(l) for _, l in TEXT_ROWS[24:]]
    assert (len(data.splits["train"]), len(data.splits["val"])) == (18, 6)  # val carved from train
    assert not set(decode(data.splits["val"].x)) & set(decode(data.splits["train"].x))


def test_text_table_numeric_labels_relative_path_and_long_texts(tmp_path, monkeypatch):
    rows = [("x" * 200_000 if i == 0 else f"t{i}", str(i % 2 + 1) if i % 4 else f"{i % 2 + 1}.0") for i in range(12)]
    write_csv(tmp_path / "num.csv", rows)
    monkeypatch.chdir(tmp_path)
    cfg, data = load(tmp_path, "text_table", path="num.csv", classes=[2, 1], seq_len=16)
    y = torch.cat([data.splits[s].y for s in SPLITS])
    assert sorted(y.tolist()) == sorted(0 if r[1].startswith("2") else 1 for r in rows)


def test_text_table_cache_sees_edited_file(tmp_path):
    p = write_csv(tmp_path / "data.csv")
    cfg, first = load(tmp_path, "text_table", path=str(p), seq_len=32)
    fp = get_task("text_table").fingerprint(cfg.options_typed())
    edited = [(t.upper(), l) for t, l in TEXT_ROWS]
    write_csv(p, edited)
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert get_task("text_table").fingerprint(cfg.options_typed()) != fp
    second = load_task(cfg, data_dir=str(tmp_path / "cache"))
    assert set(decode(second.splits["train"].x)) <= {t[:32] for t, _ in edited}


def test_text_table_errors(tmp_path):
    p = write_csv(tmp_path / "data.csv")
    config_error("text_table", "path", "file not found", "missing.csv", path=str(tmp_path / "missing.csv"))
    config_error("text_table", "path", "expected a file", path=str(tmp_path))
    config_error("text_table", "path", "no data given")
    config_error("text_table", "train_path", "not both", path=str(p), train_path=str(p))
    config_error("text_table", "val_path", "train_path", val_path=str(p))
    msg = config_error("text_table", "text_column", "column not found", "'body'", "text, label",
                       path=str(p), text_column="body")
    assert "data.csv" in msg
    config_error("text_table", "label_column", "column not found", "'y'", path=str(p), label_column="y")
    config_error("text_table", "classes", "not among the declared classes", "fish", path=str(p), classes=["cat", "dog"])
    config_error("text_table", "classes", "no examples", "bird", path=str(p), classes=["cat", "dog", "fish", "bird"])
    config_error("text_table", "classes", "twice", path=str(p), classes=["cat", "cat"])
    config_error("text_table", "format", "cannot tell the format", "auto", path=str(write_jsonl(tmp_path / "d.txt")))
    config_error("text_table", "val_fraction", "(0, 1)", path=str(p), val_fraction=0.0)
    config_error("text_table", "test_fraction", "< 1", path=str(p), val_fraction=0.5, test_fraction=0.5)
    config_error("text_table", "seq_len", "> 0", path=str(p), seq_len=0)
    config_error("text_table", "format", "not allowed", path=str(p), format="xlsx")
    small = write_csv(tmp_path / "small.csv", TEXT_ROWS[:2])
    config_error("text_table", "path", "too few examples", "small.csv", path=str(small))
    one = write_csv(tmp_path / "one.csv", [(f"t{i}", "cat") for i in range(9)])
    config_error("text_table", "label_column", "at least 2", path=str(one))
    nolabel = write_csv(tmp_path / "nolabel.csv", TEXT_ROWS[:5] + [("orphan", "")] + TEXT_ROWS[5:])
    config_error("text_table", "label_column", "row 6", "has no label", path=str(nolabel))
    empty = write_csv(tmp_path / "empty_text.csv", TEXT_ROWS[:5] + [("", "cat")])
    config_error("text_table", "text_column", "empty text", "row 6", path=str(empty))
    (tmp_path / "bad.csv").write_bytes(b"text,label\n\xff\xfe broken,cat\n")
    config_error("text_table", "path", "cannot read", "bad.csv", path=str(tmp_path / "bad.csv"))
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": "x"}\n{not json\n')
    config_error("text_table", "path", "line 2", "not valid JSON", path=str(tmp_path / "bad.jsonl"))
    (tmp_path / "bad.parquet").write_bytes(b"this is not parquet")
    config_error("text_table", "path", "cannot read", "Parquet", path=str(tmp_path / "bad.parquet"))
    (tmp_path / "headless.csv").write_text("")
    config_error("text_table", "path", "empty", path=str(tmp_path / "headless.csv"))
    (tmp_path / "missing_key.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    config_error("text_table", "label_column", "line 2", path=str(tmp_path / "missing_key.jsonl"))
    (tmp_path / "nums.jsonl").write_text('{"text": 5, "label": "x"}\n')
    config_error("text_table", "text_column", "int", path=str(tmp_path / "nums.jsonl"))


# --------------------------------------------------------------------------------------
# image_folder
# --------------------------------------------------------------------------------------


def make_images(root: Path, classes=("circle", "square", "tri"), per_class=6, size=(10, 8)) -> dict:
    """Constant-intensity images, intensity 10 * id, so each example is identifiable after resize."""
    from PIL import Image

    truth = {}
    i = 0
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            v = 10 * i
            if j % 2:  # RGB PNG with a colour tint; gray value stays v
                img = Image.new("RGB", size, (v, v, v))
            else:
                img = Image.new("L", size, v)
            img.save(root / c / f"img{j}.png")
            truth[v] = c
            i += 1
    (root / classes[0] / "notes.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    return truth


def test_image_folder_pixels(tmp_path):
    truth = make_images(tmp_path / "imgs")
    cfg, data = load(tmp_path, "image_folder", path=str(tmp_path / "imgs"), size=8, seed=5)
    spec = task_spec(cfg)
    assert (spec.input_kind, spec.seq_len, spec.num_classes, spec.vocab_size) == ("tokens", 64, 3, PIXEL_VOCAB)
    assert_partition(data, 18)
    seen = []
    for s in SPLITS:
        sp = data.splits[s]
        assert sp.x.shape == (len(sp), 64) and sp.mask.all()
        assert (sp.x == sp.x[:, :1]).all()  # constant images stay constant
        ids = (sp.x[:, 0] - 1).tolist()
        seen += ids
        assert [["circle", "square", "tri"][int(c)] for c in sp.y] == [truth[v] for v in ids]
    assert sorted(seen) == sorted(truth)
    _, again = load(tmp_path / "c2", "image_folder", path=str(tmp_path / "imgs"), size=8, seed=5)
    assert_same(data, again)


def test_image_folder_patches_rgb_jpeg_and_split_folders(tmp_path):
    from PIL import Image

    make_images(tmp_path / "train", per_class=4, size=(12, 12))
    (tmp_path / "test" / "square").mkdir(parents=True)
    Image.new("RGB", (20, 16), (255, 0, 0)).save(tmp_path / "test" / "square" / "red.jpg", quality=95)
    cfg, data = load(tmp_path, "image_folder", train_path=str(tmp_path / "train"), test_path=str(tmp_path / "test"),
                     size=8, input="patches", patch=4, grayscale=False, val_fraction=0.25)
    spec = task_spec(cfg)
    assert (spec.input_kind, spec.seq_len, spec.feature_dim) == ("features", 4, 48)
    assert (len(data.splits["train"]), len(data.splits["val"]), len(data.splits["test"])) == (9, 3, 1)
    x = data.splits["test"].x
    assert x.shape == (1, 4, 48) and x.dtype == torch.float32
    red = x[0].reshape(4, 3, 16).mean(-1)  # (patches, channels): channel-major patch vectors
    assert (red[:, 0] > 0.9).all() and (red[:, 1:] < 0.1).all()
    assert data.splits["test"].y.tolist() == [1]


def test_image_folder_errors(tmp_path):
    root = tmp_path / "imgs"
    make_images(root)
    config_error("image_folder", "path", "folder not found", "nowhere", path=str(tmp_path / "nowhere"))
    (tmp_path / "flat").mkdir()
    config_error("image_folder", "path", "no class folders", path=str(tmp_path / "flat"))
    config_error("image_folder", "classes", "not among the declared classes", "tri", path=str(root),
                 classes=["circle", "square"])
    config_error("image_folder", "classes", "no examples", "star", path=str(root),
                 classes=["circle", "square", "tri", "star"])
    config_error("image_folder", "grayscale", "grayscale: true", path=str(root), grayscale=False)
    config_error("image_folder", "patch", "must divide size", path=str(root), input="patches", patch=5, size=32)
    config_error("image_folder", "input", "not allowed", path=str(root), input="voxels")
    (root / "empty").mkdir()
    (root / "empty" / "readme.md").write_text("nothing")
    msg = config_error("image_folder", "path", "empty class", "empty", path=str(root))
    assert "readme.md" in msg
    (root / "empty" / "broken.png").write_bytes(b"not a png at all")
    config_error("image_folder", "path", "unreadable image", "broken.png", path=str(root))
    few = tmp_path / "few"
    make_images(few, classes=("a", "b"), per_class=1)
    config_error("image_folder", "path", "too few examples", path=str(few))


# --------------------------------------------------------------------------------------
# audio_folder
# --------------------------------------------------------------------------------------


def write_wav(path: Path, freq: float, seconds: float, rate: int = 8000, channels: int = 1, width: int = 2):
    t = np.arange(int(seconds * rate)) / rate
    a = np.repeat(0.5 * np.sin(2 * np.pi * freq * t)[:, None], channels, 1)  # (frames, channels)
    if width == 1:
        pcm = np.round(a * 127 + 128).astype(np.uint8).tobytes()
    elif width == 2:
        pcm = np.round(a * 32767).astype("<i2").tobytes()
    elif width == 3:  # the low three bytes of little-endian int32
        pcm = np.round(a * 8388607).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        pcm = np.round(a * 2147483647).astype("<i4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


def make_audio(root: Path, per_class=5, rate=8000):
    for j in range(per_class):
        write_wav(root / "low" / f"c{j}.wav", 300 + 10 * j, 0.25 + 0.05 * j, rate, channels=1 + j % 2)
        write_wav(root / "high" / f"c{j}.wav", 2500 + 10 * j, 0.3, rate)
    (root / "low" / "cover.png").write_bytes(b"")


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_read_wav_sample_widths(tmp_path, width):
    p = write_wav(tmp_path / "w.wav", 100, 0.05, 8000, channels=2, width=width)
    a, rate = read_wav(p)
    expect = 0.5 * np.sin(2 * np.pi * 100 * np.arange(400) / 8000)
    assert rate == 8000 and a.shape == (400,) and np.abs(a - expect).max() < 0.02


def test_resample_linear():
    a = np.sin(2 * np.pi * 5 * np.arange(800) / 800).astype(np.float32)
    b = resample_linear(a, 800, 400)
    assert b.shape == (400,) and np.abs(b - a[::2]).max() < 1e-5


def test_audio_folder_frames_and_labels(tmp_path):
    make_audio(tmp_path / "wav")
    cfg, data = load(tmp_path, "audio_folder", path=str(tmp_path / "wav"), clip_seconds=0.3, n_fft=128, hop=64,
                     n_bins=16, val_fraction=0.2, test_fraction=0.2)
    spec = task_spec(cfg)
    frames = n_frames(2400, 128, 64)
    assert (spec.input_kind, spec.seq_len, spec.feature_dim, spec.num_classes) == ("features", frames, 16, 2)
    assert_partition(data, 10)
    for s in SPLITS:
        sp = data.splits[s]
        assert sp.x.shape == (len(sp), frames, 16) and sp.mask.all() and torch.isfinite(sp.x).all()
        # class 0 = high (sorted names): energy in the upper bins; class 1 = low
        hi = sp.x[:, 2:-2, 8:].mean((1, 2)) > sp.x[:, 2:-2, :4].mean((1, 2))
        assert hi.tolist() == (sp.y == 0).tolist()
    _, again = load(tmp_path / "c2", "audio_folder", path=str(tmp_path / "wav"), clip_seconds=0.3, n_fft=128, hop=64,
                    n_bins=16, val_fraction=0.2, test_fraction=0.2)
    assert_same(data, again)


def test_audio_folder_sample_rates(tmp_path):
    root = tmp_path / "wav"
    make_audio(root)
    write_wav(root / "high" / "odd.wav", 2500, 0.3, rate=16000)
    msg = config_error("audio_folder", "sample_rate", "different sample rates", "16000 Hz", "8000 Hz", "odd.wav",
                       path=str(root))
    assert "resample" in msg
    config_error("audio_folder", "sample_rate", "another sample rate", "16000", path=str(root), sample_rate=8000)
    config_error("audio_folder", "sample_rate", "needs the target rate", path=str(root), resample=True)
    cfg, data = load(tmp_path, "audio_folder", path=str(root), sample_rate=4000, resample=True, clip_seconds=0.5,
                     n_fft=64, hop=32, n_bins=8, seq_len=50)
    assert task_spec(cfg).seq_len == 50
    assert_partition(data, 11)
    assert data.splits["train"].x.shape[1:] == (50, 8)
    assert not data.splits["train"].mask[:, n_frames(2000, 64, 32):].any()  # padded frames are masked


def test_audio_folder_errors(tmp_path):
    root = tmp_path / "wav"
    make_audio(root)
    config_error("audio_folder", "path", "folder not found", path=str(tmp_path / "none"))
    config_error("audio_folder", "n_bins", "n_fft / 2 + 1", path=str(root), n_fft=64, n_bins=40)
    config_error("audio_folder", "clip_seconds", "too short", path=str(root), clip_seconds=0.001)
    config_error("audio_folder", "classes", "no examples", "maybe", path=str(root), classes=["low", "high", "maybe"])
    (root / "silence").mkdir()
    config_error("audio_folder", "path", "empty class", "silence", path=str(root))
    (root / "silence" / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    config_error("audio_folder", "path", "unreadable WAV", "bad.wav", path=str(root))


# --------------------------------------------------------------------------------------
# arrays
# --------------------------------------------------------------------------------------


def token_arrays(n=20, length=12):
    rng = np.random.default_rng(0)
    x = rng.integers(3, 50, size=(n, length))
    x[:, 0] = np.arange(n) + 1  # example id as the first token
    for i in range(n):
        x[i, length - i % 4:] = 0  # padding
    y = np.arange(n) % 2
    return x.astype(np.int32), y


def test_arrays_tokens_npz(tmp_path):
    x, y = token_arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cfg, data = load(tmp_path, "arrays", path=str(tmp_path / "d.npz"))
    spec = task_spec(cfg)
    assert (spec.input_kind, spec.seq_len, spec.vocab_size, spec.num_classes) == ("tokens", 12, int(x.max()) + 1, 2)
    assert_partition(data, 20)
    ids = []
    for s in SPLITS:
        sp = data.splits[s]
        assert sp.x.dtype == torch.long and torch.equal(sp.mask, sp.x != 0)
        rows = (sp.x[:, 0] - 1).tolist()
        ids += rows
        assert torch.equal(sp.x, torch.from_numpy(x[rows]).long()) and sp.y.tolist() == y[rows].tolist()
    assert sorted(ids) == list(range(20))
    # seq_len pads / cuts, declared vocabulary
    cfg, data = load(tmp_path, "arrays", path=str(tmp_path / "d.npz"), seq_len=16, vocab_size=100)
    assert task_spec(cfg).vocab_size == 100 and data.splits["train"].x.shape[1] == 16
    assert not data.splits["train"].mask[:, 12:].any()
    _, data = load(tmp_path, "arrays", path=str(tmp_path / "d.npz"), seq_len=5)
    assert data.splits["train"].x.shape[1] == 5


def test_arrays_features_npy_folder_with_mask_and_string_labels(tmp_path):
    n, L, F = 15, 7, 3
    x = np.random.default_rng(1).normal(size=(n, L, F)).astype(np.float32)
    x[:, 0, 0] = np.arange(n)
    mask = np.ones((n, L), bool)
    mask[:, 5:] = False
    y = np.array(["spam", "ham", "eggs"] * 5)
    for name, a in (("x", x), ("y", y), ("mask", mask)):
        np.save(tmp_path / f"{name}.npy", a)
    cfg, data = load(tmp_path, "arrays", path=str(tmp_path), classes=["ham", "spam", "eggs"])
    spec = task_spec(cfg)
    assert (spec.input_kind, spec.seq_len, spec.feature_dim, spec.num_classes) == ("features", 7, 3, 3)
    assert_partition(data, n)
    for s in SPLITS:
        sp = data.splits[s]
        rows = sp.x[:, 0, 0].round().long().tolist()
        assert torch.allclose(sp.x, torch.from_numpy(x[rows])) and torch.equal(sp.mask, torch.from_numpy(mask[rows]))
        assert sp.y.tolist() == [["ham", "spam", "eggs"].index(v) for v in y[rows]]


def test_arrays_split_files(tmp_path):
    x, y = token_arrays(30)
    np.savez(tmp_path / "train.npz", x=x[:20], y=y[:20])
    np.savez(tmp_path / "val.npz", x=x[20:25, :10], y=y[20:25])  # shorter: padded to 12
    np.savez(tmp_path / "test.npz", inputs=x[25:], labels=y[25:])
    cfg, data = load(tmp_path, "arrays", train_path=str(tmp_path / "train.npz"), val_path=str(tmp_path / "val.npz"),
                     test_path=str(tmp_path / "train.npz"))
    assert [len(data.splits[s]) for s in SPLITS] == [20, 5, 20]
    assert data.splits["val"].x.shape == (5, 12) and torch.equal(data.splits["val"].x[:, :10], torch.from_numpy(x[20:25, :10]).long())
    config_error("arrays", "x_key", "no array 'x'", "inputs, labels", train_path=str(tmp_path / "train.npz"),
                 test_path=str(tmp_path / "test.npz"))


def test_arrays_errors(tmp_path):
    x, y = token_arrays()

    def save(name, **arrays):
        np.savez(tmp_path / name, **arrays)
        return str(tmp_path / name)

    config_error("arrays", "path", "file not found", path=str(tmp_path / "none.npz"))
    config_error("arrays", "y_key", "shape (20,)", path=save("a.npz", x=x, y=y[:-1]))
    config_error("arrays", "x_key", "shape (examples, length)", path=save("b.npz", x=x[:, :, None], y=y))
    config_error("arrays", "x_key", "(examples, length, features)", path=save("c.npz", x=np.zeros((20, 2, 2, 2)), y=y))
    config_error("arrays", "x_key", ">= 0", path=save("d.npz", x=x - 10, y=y))
    config_error("arrays", "vocab_size", "outside the vocabulary", "20", path=save("e.npz", x=x, y=y), vocab_size=20)
    config_error("arrays", "mask_key", "shape", path=save("f.npz", x=x, y=y, mask=np.ones((20, 3), bool)))
    zero = x.copy()
    zero[3] = 0
    config_error("arrays", "x_key", "no real positions", "row 4", path=save("g.npz", x=zero, y=y))
    config_error("arrays", "x_key", "neither integer", path=save("h.npz", x=x.astype(str), y=y))
    config_error("arrays", "y_key", "not a class label", path=save("i.npz", x=x, y=y + 0.5))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    folder = tmp_path / "objdir"
    folder.mkdir()
    os.replace(tmp_path / "obj.npy", folder / "x.npy")
    np.save(folder / "y.npy", np.array([0]))
    config_error("arrays", "path", "cannot read", "x.npy", path=str(folder))
    (tmp_path / "nox").mkdir()
    np.save(tmp_path / "nox" / "y.npy", y)
    config_error("arrays", "x_key", "no x.npy", "y.npy", path=str(tmp_path / "nox"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    config_error("arrays", "path", "cannot read", "junk.npz", path=str(tmp_path / "junk.npz"))
    np.savez(tmp_path / "feats.npz", x=np.zeros((4, 3, 2), np.float32), y=np.arange(4) % 2)
    config_error("arrays", "x_key", "mix token ids", train_path=save("t.npz", x=x, y=y), test_path=str(tmp_path / "feats.npz"))
    config_error("arrays", "classes", "not among the declared classes", "1", path=save("j.npz", x=x, y=y), classes=[0, 2])
    config_error("arrays", "seq_len", "within the first 1", path=save("k.npz", x=np.pad(x, ((0, 0), (1, 0))), y=y), seq_len=1)


# --------------------------------------------------------------------------------------
# hf_dataset
# --------------------------------------------------------------------------------------


def test_hf_dataset_missing_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    config_error("hf_dataset", "kind", "pip install datasets", path=str(tmp_path))


def test_hf_dataset_text_classlabel_and_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos", "mixed"])})
    rows = {"text": [f"review {i}" for i in range(30)], "label": [i % 3 for i in range(30)]}
    datasets.Dataset.from_dict(rows, features=feats).save_to_disk(str(tmp_path / "single"))
    cfg, data = load(tmp_path, "hf_dataset", path=str(tmp_path / "single"), seq_len=24)
    spec = task_spec(cfg)
    assert (spec.input_kind, spec.num_classes, spec.vocab_size, spec.seq_len) == ("tokens", 3, BYTE_VOCAB, 24)
    assert_partition(data, 30)
    texts = []
    for s in SPLITS:
        t = decode(data.splits[s].x)
        texts += t
        assert data.splits[s].y.tolist() == [int(v.split()[1]) % 3 for v in t]  # ClassLabel order kept
    assert sorted(texts) == sorted(rows["text"])

    d = datasets.Dataset.from_dict(rows, features=feats)
    datasets.DatasetDict(train=d.select(range(20)), validation=d.select(range(20, 25)),
                         test=d.select(range(25, 30))).save_to_disk(str(tmp_path / "dict"))
    _, data = load(tmp_path, "hf_dataset", path=str(tmp_path / "dict"), seq_len=24)
    assert [len(data.splits[s]) for s in SPLITS] == [20, 5, 5]
    assert decode(data.splits["test"].x) == rows["text"][25:]
    _, data = load(tmp_path, "hf_dataset", path=str(tmp_path / "dict"), test_split="carve", seq_len=24, test_fraction=0.2)
    assert [len(data.splits[s]) for s in SPLITS] == [16, 5, 4]
    config_error("hf_dataset", "test_split", "no such split", "'final'", path=str(tmp_path / "dict"), test_split="final")
    config_error("hf_dataset", "train_split", "no such split", "validation", path=str(tmp_path / "dict"), train_split="all")
    config_error("hf_dataset", "text_column", "column not found", "'body'", path=str(tmp_path / "dict"), text_column="body")
    config_error("hf_dataset", "classes", "not among the declared classes", "mixed", path=str(tmp_path / "dict"),
                 classes=["neg", "pos"])


def test_hf_dataset_token_ids_and_errors(tmp_path):
    datasets = pytest.importorskip("datasets")
    ids = [[i % 7, 5, 9, i] for i in range(12)]
    datasets.Dataset.from_dict({"input_ids": ids, "y": ["a", "b"] * 6}).save_to_disk(str(tmp_path / "ids"))
    cfg, data = load(tmp_path, "hf_dataset", path=str(tmp_path / "ids"), text_column="input_ids", label_column="y",
                     seq_len=6, val_fraction=0.25, test_fraction=0.25)
    spec = task_spec(cfg)
    assert spec.vocab_size == 12 + 1  # largest id 11, shifted by one
    sp = data.splits["train"]
    assert sp.x.shape == (len(sp), 6) and (sp.x[:, :4] >= 1).all() and not sp.mask[:, 4:].any()
    config_error("hf_dataset", "vocab_size", "outside the vocabulary", path=str(tmp_path / "ids"),
                 text_column="input_ids", label_column="y", vocab_size=8)
    unlabeled = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, -1, 1]},
                                           features=datasets.Features({"text": datasets.Value("string"),
                                                                       "label": datasets.ClassLabel(names=["x", "y"])}))
    unlabeled.save_to_disk(str(tmp_path / "unlab"))
    config_error("hf_dataset", "label_column", "no label (-1)", path=str(tmp_path / "unlab"))
    (tmp_path / "plain").mkdir()
    config_error("hf_dataset", "path", "save_to_disk", path=str(tmp_path / "plain"))
    config_error("hf_dataset", "path", "folder not found", path=str(tmp_path / "nowhere"))


# --------------------------------------------------------------------------------------
# every loader feeds the model
# --------------------------------------------------------------------------------------


def test_loaded_user_data_feeds_a_multitask_model(tmp_path):
    from autoeff import create_model as build_model
    from autoeff.config import parse_run_config

    write_csv(tmp_path / "t.csv")
    make_images(tmp_path / "imgs", per_class=3)
    make_audio(tmp_path / "wav", per_class=4)
    x, y = token_arrays()
    np.savez(tmp_path / "a.npz", x=x, y=y)
    tasks = [
        {"kind": "text_table", "path": str(tmp_path / "t.csv"), "seq_len": 32},
        {"kind": "image_folder", "path": str(tmp_path / "imgs"), "size": 8, "input": "patches", "patch": 4,
         "grayscale": False},
        {"kind": "audio_folder", "path": str(tmp_path / "wav"), "clip_seconds": 0.25, "val_fraction": 0.25,
         "test_fraction": 0.25},
        {"kind": "arrays", "path": str(tmp_path / "a.npz")},
    ]
    cfg = parse_run_config({"model": {"depth": 1, "width": 16, "heads": 2}, "tasks": tasks})
    model = build_model(cfg).eval()
    for t in cfg.tasks:
        data = load_task(t, data_dir=str(tmp_path / "cache"))
        sp = data.splits["train"]
        with torch.no_grad():
            logits = model(sp.x, sp.mask, task=t.name)
        assert logits.shape == (len(sp), data.spec.num_classes) and torch.isfinite(logits).all()
