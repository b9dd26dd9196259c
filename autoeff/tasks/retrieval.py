"""Byte-level document matching, modelled on Long Range Arena's Retrieval task (Tay et al. 2020).

LRA Retrieval (from the ACL Anthology Network) asks whether two papers are linked by a
citation, reading each as bytes through a shared encoder; the two encodings meet only in the
final classifier (``pair=True``: x is (n, 2, seq_len), combined as [u, v, u*v, u-v]).

Here every pair gets fresh latent *topics*: a topic is ``topic_words`` content words (from the
fixed ``text.CONTENT`` list, disjoint from the ``text.COMMON`` filler vocabulary). A
document of a topic is filler sentences (as in the ``text`` task) in which a fraction
``topic_rate`` of the words are the topic's words, each of them at least once. Label rule::

    label 1 (match): both documents are written from the same topic
    label 0:         from two different topics that share at most ``max_shared`` words

so, counting the distinct content words (words not in ``COMMON``) of both documents
together: a match has exactly ``topic_words`` of them, a non-match at least
``2 * topic_words - max_shared``. Topics are drawn afresh for every pair (``topic_words``
of 2000 content words), so the model cannot memorize them: it has to compare the content of
the two documents. Documents are ``min_len`` (0 = ``seq_len // 2``) to ``seq_len`` bytes,
never truncated; labels are exactly balanced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import Split, Task, TaskSpec, check_positive
from .features import BYTE_VOCAB, bytes_to_tokens
from .text import CONTENT, filler_words

AVG_WORD_BYTES = 7.0  # a word and its space, averaged over filler and content words


@dataclass
class RetrievalOptions:
    n_train: int = 2000
    n_val: int = 500
    n_test: int = 500
    seq_len: int = 1024  # bytes per document
    min_len: int = 0  # shortest document in bytes; 0 = seq_len // 2
    topic_words: int = 8
    topic_rate: float = 0.2  # fraction of a document's words that come from its topic
    max_shared: int = 2  # words two different topics may share
    seed: int = 0


def make_topic_pair(rng: np.random.Generator, o: RetrievalOptions, match: bool) -> Tuple[List[str], List[str]]:
    words = rng.choice(len(CONTENT), size=2 * o.topic_words, replace=False)
    a = [CONTENT[i] for i in words[: o.topic_words]]
    if match:
        return a, a
    shared = int(rng.integers(0, o.max_shared + 1))
    b = [CONTENT[i] for i in words[o.topic_words:]]
    keep = rng.choice(o.topic_words, size=shared, replace=False)
    b[: shared] = [a[i] for i in keep]
    return a, b


def make_document(rng: np.random.Generator, topic: List[str], o: RetrievalOptions, doc_len: int) -> str:
    """Filler sentences with topic words inserted at random places: every topic word at least once,
    about ``topic_rate`` of all words, at most ``doc_len`` bytes."""
    n_topic = max(len(topic), int(round(o.topic_rate * doc_len / AVG_WORD_BYTES)))
    picks = list(topic) + [topic[int(i)] for i in rng.integers(0, len(topic), size=n_topic - len(topic))]
    while len(picks) > len(topic) and sum(len(w) + 1 for w in picks) > doc_len // 2:
        picks.pop()
    words = filler_words(rng, doc_len - sum(len(w) + 1 for w in picks))
    for w in rng.permutation(picks):
        words.insert(int(rng.integers(0, len(words) + 1)), str(w))
    return " ".join(words)


def generate(o: RetrievalOptions, n: int, rng: np.random.Generator) -> Tuple[List[Tuple[str, str]], np.ndarray]:
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    lo = min(o.seq_len, (o.min_len or o.seq_len // 2) + 2)  # filler may end up to 2 bytes short
    pairs = []
    for y in labels:
        ta, tb = make_topic_pair(rng, o, bool(y))
        la, lb = rng.integers(lo, o.seq_len + 1, size=2)
        pairs.append((make_document(rng, ta, o, int(la)), make_document(rng, tb, o, int(lb))))
    return pairs, labels


@register_task("retrieval")
class Retrieval(Task):
    options = RetrievalOptions
    version = 1

    @classmethod
    def spec(cls, o: RetrievalOptions) -> TaskSpec:
        return TaskSpec(input_kind="tokens", seq_len=o.seq_len, num_classes=2, vocab_size=BYTE_VOCAB, pair=True)

    @classmethod
    def check_options(cls, o: RetrievalOptions, key: str) -> None:
        check_positive(o, key, "n_train", "n_val", "n_test", "seq_len", "topic_words", "topic_rate")
        if o.topic_words > 50:
            raise ConfigError("must be <= 50", key=f"{key}.topic_words", value=o.topic_words, has_value=True)
        if not 0 <= o.max_shared < o.topic_words:
            raise ConfigError(f"must be >= 0 and below topic_words ({o.topic_words})", key=f"{key}.max_shared",
                              value=o.max_shared, has_value=True)
        if o.topic_rate > 0.8:
            raise ConfigError("must be <= 0.8", key=f"{key}.topic_rate", value=o.topic_rate, has_value=True)
        need = 16 * o.topic_words  # room for every topic word at least once (content words are <= 12 bytes)
        lo = o.min_len or o.seq_len // 2
        if lo < need:
            what = "min_len" if o.min_len else "seq_len"
            raise ConfigError(f"documents too short for {o.topic_words} topic words; "
                              f"min_len (default seq_len // 2) must be >= {need}", key=f"{key}.{what}",
                              value=getattr(o, what), has_value=True)
        if o.min_len > o.seq_len - 2:
            raise ConfigError(f"must be <= seq_len - 2 ({o.seq_len - 2})", key=f"{key}.min_len", value=o.min_len,
                              has_value=True)

    @classmethod
    def build(cls, o: RetrievalOptions) -> Dict[str, Split]:
        rng = np.random.default_rng(o.seed)
        out = {}
        for split, n in (("train", o.n_train), ("val", o.n_val), ("test", o.n_test)):
            pairs, labels = generate(o, n, rng)
            xa, ma = bytes_to_tokens([a for a, _ in pairs], o.seq_len)
            xb, mb = bytes_to_tokens([b for _, b in pairs], o.seq_len)
            out[split] = Split(torch.stack([xa, xb], 1), torch.stack([ma, mb], 1), torch.from_numpy(labels).long())
        return out
