"""The built-in ``retrieval`` task: match labels re-derived from the two decoded documents."""
import re

import pytest
import torch

from autoeff.config import ModelConfig, RunConfig, parse_tasks
from autoeff.errors import ConfigError
from autoeff.model import build_model
from autoeff.tasks import get_task, task_spec
from autoeff.tasks.text import COMMON

SMALL = {"kind": "retrieval", "seq_len": 256, "min_len": 200, "n_train": 40, "n_val": 10, "n_test": 10,
         "topic_words": 6}


def cfg(**kw):
    return parse_tasks([{**SMALL, **kw}])[0]


def build(**kw):
    return get_task("retrieval").build(cfg(**kw).options_typed())


def decode(x: torch.Tensor) -> str:
    return bytes((x[x > 0] - 1).tolist()).decode("utf-8")


def content(doc: str) -> set:
    """Words that are not everyday filler (compared case-blind, punctuation dropped)."""
    common = set(COMMON)
    return {w for w in re.findall(r"[a-z]+", doc.lower()) if w not in common}


@pytest.mark.parametrize("opts", [{}, {"topic_words": 4, "max_shared": 3, "seed": 2}, {"topic_rate": 0.05}])
def test_match_means_the_same_content_words(opts):
    o = cfg(**opts).options_typed()
    for split in build(**opts).values():
        for x, m, y in zip(split.x, split.mask, split.y):
            a, b = decode(x[0]), decode(x[1])
            for doc, mask in ((a, m[0]), (b, m[1])):
                assert len(doc) == int(mask.sum()) and mask[: len(doc)].all()
                assert (o.min_len or o.seq_len // 2) <= len(doc) <= o.seq_len
                assert len(content(doc)) == o.topic_words  # every topic word, and nothing else
            union = len(content(a) | content(b))
            if y == 1:
                assert union == o.topic_words
            else:
                assert 2 * o.topic_words - o.max_shared <= union <= 2 * o.topic_words


def test_topics_are_fresh_and_about_topic_rate_of_the_words():
    split = build(n_train=60, seq_len=1024, min_len=0, topic_words=8)["train"]
    topics = [frozenset(content(decode(x[0]))) for x in split.x]
    assert len(set(topics)) == len(topics)
    rates = []
    for x in split.x[:, 0]:
        words = re.findall(r"[a-z]+", decode(x).lower())
        rates.append(sum(w not in set(COMMON) for w in words) / len(words))
    assert 0.12 < sum(rates) / len(rates) < 0.28  # topic_rate 0.2


def test_spec_pair_shapes_and_balance():
    spec = task_spec(cfg())
    got = (spec.input_kind, spec.seq_len, spec.num_classes, spec.vocab_size, spec.pair)
    assert got == ("tokens", 256, 2, 257, True)
    for name, split in build().items():
        n = SMALL[f"n_{name}"]
        assert split.x.shape == (n, 2, 256) and split.x.dtype == torch.long
        assert split.mask.shape == (n, 2, 256) and split.mask.dtype == torch.bool
        assert torch.equal(split.mask, split.x != 0)
        assert torch.bincount(split.y).tolist() == [n // 2, n // 2]
    # the pair reaches the dual encoder as (B, 2, L)
    c = cfg()
    model = build_model(RunConfig(model=ModelConfig(depth=1, width=16, heads=2), tasks=[c]), [spec])
    split = build()["val"]
    assert model(split.x[:3], split.mask[:3]).shape == (3, 2)


@pytest.mark.parametrize("bad, key", [
    ({"n_val": 0}, "n_val"), ({"topic_words": 0}, "topic_words"), ({"topic_words": 51}, "topic_words"),
    ({"max_shared": 6}, "max_shared"), ({"max_shared": -1}, "max_shared"), ({"topic_rate": 0.0}, "topic_rate"),
    ({"topic_rate": 0.9}, "topic_rate"), ({"min_len": 50}, "min_len"), ({"min_len": 255}, "min_len"),
    ({"seq_len": 128, "min_len": 0}, "seq_len"),
])
def test_check_options_rejects(bad, key):
    with pytest.raises(ConfigError) as e:
        cfg(**bad)
    assert f"tasks[0].{key}" in str(e.value)
