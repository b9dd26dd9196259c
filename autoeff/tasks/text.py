"""Byte-level document classification, modelled on Long Range Arena's Text task (Tay et al. 2020).

LRA Text classifies IMDB reviews read byte by byte (1K-4K bytes): a model must compose
characters into words and weigh evidence spread over the whole review. Here the documents are
generated locally: sentences of lowercase pseudo-words drawn from a fixed, Zipf-weighted
vocabulary (``COMMON``), with ``n_keys`` **key words** inserted at random positions at least
``len(doc) / (2 * n_keys)`` words apart. Key words are upper-case pseudo-words
(``KEY_WORDS``); each is a vote for one class (its *value*), ``key_words`` distinct words per
class, and every word voting for class v starts with the letter ``KEY_INITIALS[v]`` - so
reading one key word is easy, and the difficulty is finding and counting all of them.

Label rule (a vote, like sentiment words in a review)::

    label = the class with the most key words in the document

and the generator makes every vote close: the winner has exactly one key word more than the
runner-up (for 2 classes and 3 keys: 2 against 1). ``margin`` widens the lead (the winner has
``margin`` more key words than the runner-up; ``margin = n_keys`` makes the vote unanimous), which
spreads more evidence through a long document: at thousands of bytes a model in a small training
budget needs it. A model that reads a single key word is
right only (w / n_keys) of the time (2/3 with the defaults, 3/5 with ``n_keys: 5``); to be
always right it must find every key word, wherever it lies, and compare the counts.
Documents are between ``min_len`` (0 = ``seq_len // 2``) and ``seq_len`` bytes and never
truncated, so every key word is inside the model's input. Classes are exactly balanced within
each split. (A depth-2, width-64 encoder with full attention reaches about 80% validation
accuracy at seq_len 512 after 300 steps of batch 32 with the defaults.)

The word lists and :func:`filler_words` are shared with the ``retrieval`` task.
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import Split, Task, TaskSpec, check_positive
from .features import BYTE_VOCAB, bytes_to_tokens

_CONS = "bdfghklmnprstvz"
_VOWELS = "aeiou"
MAX_CLASSES = 8
MAX_KEY_WORDS = 6  # distinct key words per value


def pseudo_words(n: int, rng: random.Random, syllables: Tuple[int, int] = (1, 3), exclude=()) -> List[str]:
    """``n`` distinct pronounceable pseudo-words (consonant-vowel syllables, optional coda)."""
    seen = set(exclude)
    out: List[str] = []
    while len(out) < n:
        w = "".join(rng.choice(_CONS) + rng.choice(_VOWELS) + (rng.choice(_CONS) if rng.random() < 0.3 else "")
                    for _ in range(rng.randint(*syllables)))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


# A fixed "language" (independent of the task seed): the seed only changes the documents.
_LANG = random.Random(20200808)  # LRA's arXiv date
COMMON: List[str] = pseudo_words(600, _LANG, (1, 3))
#: content words for the retrieval task's topics: longer, never in COMMON
CONTENT: List[str] = pseudo_words(2000, _LANG, (2, 4), exclude=COMMON)
#: the letter every key word of value v starts with (a one-byte cue to the value once found)
KEY_INITIALS = "BKMSDTGV"
#: KEY_WORDS[v] = upper-case key words whose value is v
KEY_WORDS: List[List[str]] = [
    [(KEY_INITIALS[v] + w).upper() for w in pseudo_words(MAX_KEY_WORDS, _LANG, (1, 2))] for v in range(MAX_CLASSES)
]
_ZIPF = 1.0 / (np.arange(len(COMMON)) + 2.7)
ZIPF_CUM = np.cumsum(_ZIPF / _ZIPF.sum())
_BY_LEN = sorted((len(w), w) for w in COMMON)


@dataclass
class TextOptions:
    n_train: int = 2000
    n_val: int = 500
    n_test: int = 500
    seq_len: int = 1024  # bytes fed to the model; documents are never longer
    min_len: int = 0  # shortest document in bytes; 0 = seq_len // 2
    num_classes: int = 2
    n_keys: int = 3  # key words (votes) per document
    margin: int = 1  # the winner's lead over the runner-up (1: a close vote; n_keys: unanimous)
    key_words: int = 4  # distinct key words per class (<= 6)
    seed: int = 0


def filler_words(rng: np.random.Generator, budget: int) -> List[str]:
    """Sentences of COMMON words whose joined length (with spaces) is ``budget`` - 2 to ``budget``.

    Returns word strings; a sentence starts capitalized and ends with a period.
    """
    words: List[str] = []
    used = -1  # no leading space
    # draw generously in one go; Zipf-weighted indices via the cumulative table
    idx = np.searchsorted(ZIPF_CUM, rng.random(budget // 2 + 8))
    lens = rng.integers(5, 16, size=budget // 8 + 4)
    s, k = 0, 0
    start = True
    for i in idx:
        w = COMMON[min(int(i), len(COMMON) - 1)]
        if start:
            w = w.capitalize()
            start = False
        k += 1
        if k >= lens[s % len(lens)]:
            w += "."
            s, k, start = s + 1, 0, True
        if used + 1 + len(w) > budget:
            break
        words.append(w)
        used += 1 + len(w)
    while budget - used >= 1 + _BY_LEN[0][0]:  # top up with words that still fit: ends <= 2 bytes short
        fits = _BY_LEN[: bisect.bisect_right(_BY_LEN, (budget - used - 1, "~"))]
        w = fits[int(rng.integers(0, len(fits)))][1]
        words.append(w)
        used += 1 + len(w)
    return words


def spread_positions(rng: np.random.Generator, n_slots: int, k: int) -> List[int]:
    """``k`` sorted insertion points in ``0..n_slots``, consecutive ones at least ``n_slots // (2k)``
    apart, uniformly among all such placements."""
    gap = n_slots // (2 * k)
    free = np.sort(rng.integers(0, n_slots - (k - 1) * gap + 1, size=k))
    return [int(p) + i * gap for i, p in enumerate(free)]


def _vote_sizes(num_classes: int, n_keys: int, margin: int = 1) -> List[int]:
    """Winner counts w for which the other n_keys - w votes fit with the runner-up at w - margin
    and every other class at most that."""
    return [w for w in range(max(1, margin), n_keys + 1)
            if 2 * w - margin <= n_keys <= w + (num_classes - 1) * (w - margin)]


def key_counts(rng: np.random.Generator, label: int, num_classes: int, n_keys: int, margin: int = 1) -> List[int]:
    """How many key words of each value: ``label`` gets w, one other class w - margin, the rest
    no more than that."""
    w = int(rng.choice(_vote_sizes(num_classes, n_keys, margin)))
    counts = [0] * num_classes
    counts[label] = w
    others = [c for c in range(num_classes) if c != label]
    rng.shuffle(others)
    counts[others[0]] = w - margin
    for _ in range(n_keys - 2 * w + margin):  # the remainder goes to classes with room left
        room = [c for c in others[1:] if counts[c] < w - margin]
        counts[room[int(rng.integers(0, len(room)))]] += 1
    return counts


def make_document(rng: np.random.Generator, label: int, o: TextOptions, doc_len: int) -> str:
    counts = key_counts(rng, label, o.num_classes, o.n_keys, o.margin)
    keys = [KEY_WORDS[v][int(rng.integers(0, o.key_words))] for v, c in enumerate(counts) for _ in range(c)]
    rng.shuffle(keys)
    budget = doc_len - sum(len(k) + 1 for k in keys)
    words = filler_words(rng, budget)
    for p, key in sorted(zip(spread_positions(rng, len(words), len(keys)), keys), reverse=True):
        words.insert(p, key)
    return " ".join(words)


def generate(o: TextOptions, n: int, rng: np.random.Generator) -> Tuple[List[str], List[int]]:
    labels = np.arange(n) % o.num_classes
    rng.shuffle(labels)
    lo = min(o.seq_len, (o.min_len or o.seq_len // 2) + 2)  # filler may end up to 2 bytes short
    lens = rng.integers(lo, o.seq_len + 1, size=n)
    docs = [make_document(rng, int(y), o, int(L)) for y, L in zip(labels, lens)]
    return docs, [int(y) for y in labels]


@register_task("text")
class Text(Task):
    options = TextOptions
    version = 1

    @classmethod
    def spec(cls, o: TextOptions) -> TaskSpec:
        return TaskSpec(input_kind="tokens", seq_len=o.seq_len, num_classes=o.num_classes, vocab_size=BYTE_VOCAB)

    @classmethod
    def check_options(cls, o: TextOptions, key: str) -> None:
        check_positive(o, key, "n_train", "n_val", "n_test", "seq_len", "n_keys", "key_words")
        if not 2 <= o.num_classes <= MAX_CLASSES:
            raise ConfigError(f"must be between 2 and {MAX_CLASSES}", key=f"{key}.num_classes",
                              value=o.num_classes, has_value=True)
        if o.key_words > MAX_KEY_WORDS:
            raise ConfigError(f"must be <= {MAX_KEY_WORDS}", key=f"{key}.key_words", value=o.key_words, has_value=True)
        if not 1 <= o.margin <= o.n_keys:
            raise ConfigError(f"must be between 1 and n_keys ({o.n_keys})", key=f"{key}.margin", value=o.margin,
                              has_value=True)
        if not _vote_sizes(o.num_classes, o.n_keys, o.margin):
            hint = ("n_keys and margin of the same parity for 2 classes" if o.num_classes == 2
                    else "another n_keys or margin")
            raise ConfigError(f"no vote with the winner {o.margin} ahead exists; use {hint}", key=f"{key}.n_keys",
                              value=o.n_keys, has_value=True)
        # room for the key words plus a few filler words between them
        need = o.n_keys * 12 + 16
        if o.seq_len < need:
            raise ConfigError(f"too short for {o.n_keys} key words; must be >= {need}", key=f"{key}.seq_len",
                              value=o.seq_len, has_value=True)
        if o.min_len and not need <= o.min_len <= o.seq_len - 2:
            raise ConfigError(f"must be 0 (= seq_len // 2) or between {need} and seq_len - 2 ({o.seq_len - 2})",
                              key=f"{key}.min_len", value=o.min_len, has_value=True)

    @classmethod
    def build(cls, o: TextOptions) -> Dict[str, Split]:
        rng = np.random.default_rng(o.seed)
        out = {}
        for split, n in (("train", o.n_train), ("val", o.n_val), ("test", o.n_test)):
            docs, labels = generate(o, n, rng)
            x, mask = bytes_to_tokens(docs, o.seq_len)
            out[split] = Split(x, mask, torch.tensor(labels, dtype=torch.long))
        return out
