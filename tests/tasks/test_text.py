"""The built-in ``text`` task: labels re-derived from the decoded bytes, determinism, caching, options."""
import re
from collections import Counter

import pytest
import torch

from autoeff.config import parse_tasks
from autoeff.errors import ConfigError
from autoeff.tasks import get_task, task_spec
from autoeff.tasks.text import COMMON, KEY_WORDS

SMALL = {"kind": "text", "seq_len": 256, "n_train": 40, "n_val": 12, "n_test": 12}


def cfg(**kw):
    return parse_tasks([{**SMALL, **kw}])[0]


def build(**kw):
    return get_task("text").build(cfg(**kw).options_typed())


def decode(x: torch.Tensor) -> str:
    return bytes((x[x > 0] - 1).tolist()).decode("utf-8")


def votes(doc: str, num_classes: int, key_words: int):
    """Independent reading of a document: the upper-case words and the class each votes for."""
    table = {w: v for v in range(num_classes) for w in KEY_WORDS[v][:key_words]}
    caps = re.findall(r"\b[A-Z]{2,}\b", doc)
    assert all(w in table for w in caps), caps
    return [table[w] for w in caps]


@pytest.mark.parametrize("opts", [{}, {"num_classes": 3, "n_keys": 4}, {"n_keys": 5, "seq_len": 512, "min_len": 400},
                                  {"n_keys": 5, "margin": 3, "seq_len": 512}, {"n_keys": 4, "margin": 4, "seq_len": 512},
                                  {"num_classes": 4, "n_keys": 6, "margin": 2, "seq_len": 512}])
def test_label_is_the_vote_of_the_key_words(opts):
    o = cfg(**opts).options_typed()
    for split in build(**opts).values():
        for x, m, y in zip(split.x, split.mask, split.y):
            doc = decode(x)
            assert len(doc) == int(m.sum()) and m[: len(doc)].all()  # mask covers exactly the document
            assert (o.min_len or o.seq_len // 2) <= len(doc) <= o.seq_len
            v = votes(doc, o.num_classes, o.key_words)
            assert len(v) == o.n_keys
            counts = Counter(v).most_common()
            runner_up = counts[1][1] if len(counts) > 1 else 0
            assert counts[0][0] == int(y)
            assert counts[0][1] == runner_up + o.margin  # the winner leads by exactly the margin


def test_documents_are_words_and_keys_lie_far_apart():
    split = build(n_keys=3, seq_len=512)["train"]
    common = set(COMMON)
    gaps = []
    for x in split.x:
        words = decode(x).split(" ")
        for w in words:
            assert re.fullmatch(r"[A-Za-z]+\.?", w), w
            if not w.isupper():
                assert w.rstrip(".").lower() in common
        pos = [i for i, w in enumerate(words) if w.isupper()]
        gaps.append(min(b - a for a, b in zip(pos, pos[1:])) / len(words))
    # insertion points are >= n_words / (2 * n_keys) apart, i.e. about 1/6 of the document
    assert min(gaps) > 0.12


def test_single_key_word_is_not_enough():
    """Reading one key word (the first) predicts the label only about 2/3 of the time."""
    split = build(n_train=300)["train"]
    hits = [votes(decode(x), 2, 4)[0] == int(y) for x, y in zip(split.x, split.y)]
    assert 0.55 < sum(hits) / len(hits) < 0.78


def test_spec_shapes_and_balance():
    c = cfg(num_classes=4, n_keys=5)
    spec = task_spec(c)
    got = (spec.input_kind, spec.seq_len, spec.num_classes, spec.vocab_size, spec.pair)
    assert got == ("tokens", 256, 4, 257, False)
    for name, split in build(num_classes=4, n_keys=5).items():
        n = SMALL[f"n_{name}"]
        assert split.x.shape == (n, 256) and split.x.dtype == torch.long
        assert split.mask.shape == (n, 256) and split.mask.dtype == torch.bool
        assert torch.equal(split.mask, split.x != 0)
        assert split.y.dtype == torch.long
        assert int(split.x.max()) < spec.vocab_size
        assert torch.bincount(split.y, minlength=4).tolist() == [n // 4 + (k < n % 4) for k in range(4)]


@pytest.mark.parametrize("bad, key", [
    ({"n_train": 0}, "n_train"), ({"num_classes": 1}, "num_classes"), ({"num_classes": 9}, "num_classes"),
    ({"n_keys": 2}, "n_keys"), ({"n_keys": 4}, "n_keys"), ({"num_classes": 3, "n_keys": 2}, "n_keys"),
    ({"n_keys": 3, "margin": 2}, "n_keys"), ({"n_keys": 3, "margin": 4}, "margin"),
    ({"key_words": 7}, "key_words"), ({"key_words": 0}, "key_words"), ({"seq_len": 40}, "seq_len"),
    ({"min_len": 255}, "min_len"), ({"min_len": 10}, "min_len"), ({"bogus": 1}, "bogus"),
    ({"seq_len": "long"}, "seq_len"),
])
def test_check_options_rejects(bad, key):
    with pytest.raises(ConfigError) as e:
        cfg(**bad)
    assert f"tasks[0].{key}" in str(e.value)
