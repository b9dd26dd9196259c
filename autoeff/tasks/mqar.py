"""Multi-query associative recall (MQAR), as in Arora et al. 2023, "Zoology: Measuring and
Improving Recall in Efficient Language Models" (their ``multiquery_ar`` generator).

Each example is one sequence for a decoder (``TaskSpec.target = "token"``, docs/decoders.md §2):

    k_1 v_1 k_2 v_2 ... k_P v_P | filler ... k_a v_a ... filler ... k_b v_b ... filler

The first ``2 * n_pairs`` positions hold ``n_pairs`` key-value pairs (distinct keys, distinct
values). The rest of the sequence is random filler tokens into which every key is queried once,
in random order: a query is the key followed by its value. The query slots are drawn as in
Zoology, without replacement with probability proportional to ``slot ** (power_a - 1)``
(``power_a = 0.01``), so most queries sit near the pairs and a few lie far back from them.

Targets are next-token targets scored only where the model must recall: ``y[i]`` is the value
id at a query's key position ``i`` (the next token), ``-100`` everywhere else; the metric is the
accuracy over those positions. Token ids: 0 = padding (never used: every position is real),
keys ``1 .. K``, values ``K+1 .. vocab-1`` with ``K = (vocab - 1) // 2`` (disjoint ranges); the
filler is drawn from the whole non-padding vocabulary, as Zoology's ``random_non_queries``.
``bytes_per_token = 0``: bits per byte mean nothing here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import Split, Task, TaskSpec, check_positive

IGNORE = -100  # y at positions that are not scored
POWER_A = 0.01  # Zoology's default exponent of the query-slot distribution


@dataclass
class MQAROptions:
    n_pairs: int = 16  # key-value pairs per sequence (= queries per sequence)
    vocab: int = 8192  # token ids 0 .. vocab-1 (0 = padding): keys and values get half each
    seq_len: int = 256  # positions per sequence; needs seq_len + 1 >= 4 * n_pairs
    n_train: int = 2000
    n_val: int = 500
    n_test: int = 500
    seed: int = 0


def key_range(vocab: int) -> Tuple[int, int]:
    """[lo, hi) of the key ids; values are [hi, vocab)."""
    return 1, 1 + (vocab - 1) // 2


def generate(o: MQAROptions, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` sequences: x (n, seq_len) int64 and y (n, seq_len) int64 (value at query keys, else -100)."""
    p, length = o.n_pairs, o.seq_len
    k_lo, k_hi = key_range(o.vocab)
    full = rng.integers(1, o.vocab, size=(n, length + 1))  # filler everywhere first; x = full[:, :-1]
    keys = np.stack([rng.choice(np.arange(k_lo, k_hi), size=p, replace=False) for _ in range(n)])  # (n, P)
    values = np.stack([rng.choice(np.arange(k_hi, o.vocab), size=p, replace=False) for _ in range(n)])  # (n, P)
    full[:, 0: 2 * p: 2] = keys
    full[:, 1: 2 * p: 2] = values
    slots = (length + 1 - 2 * p) // 2  # query slot g = positions (2P + 2g, 2P + 2g + 1)
    w = np.arange(1, slots + 1, dtype=np.float64) ** (POWER_A - 1)
    w /= w.sum()
    y = np.full((n, length), IGNORE, dtype=np.int64)
    for i in range(n):
        gaps = rng.choice(slots, size=p, replace=False, p=w)  # (P,) slot of each query
        order = rng.permutation(p)  # which pair each query asks for
        kpos = 2 * p + 2 * gaps  # (P,) position of the queried key
        full[i, kpos] = keys[i, order]
        full[i, kpos + 1] = values[i, order]
        y[i, kpos] = values[i, order]  # the next token at the key is its value
    return full[:, :length].astype(np.int64), y


@register_task("mqar")
class MQAR(Task):
    """Multi-query associative recall (Zoology, Arora et al. 2023) for decoders."""

    options = MQAROptions
    version = 1

    @classmethod
    def spec(cls, o: MQAROptions) -> TaskSpec:
        return TaskSpec(input_kind="tokens", seq_len=o.seq_len, num_classes=o.vocab, vocab_size=o.vocab,
                        target="token", bytes_per_token=0.0)

    @classmethod
    def check_options(cls, o: MQAROptions, key: str) -> None:
        check_positive(o, key, "n_pairs", "vocab", "seq_len", "n_train", "n_val", "n_test")
        k_lo, k_hi = key_range(o.vocab)
        room = min(k_hi - k_lo, o.vocab - k_hi)
        if o.n_pairs > room:
            raise ConfigError(f"must be <= {room}: keys and values are distinct ids from two halves of vocab "
                              f"({o.vocab}); raise vocab or lower n_pairs", key=f"{key}.n_pairs", value=o.n_pairs,
                              has_value=True)
        if o.seq_len + 1 < 4 * o.n_pairs:
            raise ConfigError(f"must be >= 4 * n_pairs - 1 = {4 * o.n_pairs - 1} (the pairs, then one query and its "
                              "value per pair)", key=f"{key}.seq_len", value=o.seq_len, has_value=True)

    @classmethod
    def build(cls, o: MQAROptions) -> Dict[str, Split]:
        rng = np.random.default_rng(o.seed)
        out = {}
        for split, n in (("train", o.n_train), ("val", o.n_val), ("test", o.n_test)):
            x, y = generate(o, n, rng)
            xt = torch.from_numpy(x)
            out[split] = Split(xt, torch.ones_like(xt, dtype=torch.bool), torch.from_numpy(y))
        return out
