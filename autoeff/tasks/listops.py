"""ListOps (Nangia & Bowman 2018), generated as in Long Range Arena (Tay et al. 2020).

Follows LRA's ``listops.py`` generator: a random tree in which each node is a value (digit
0-9) with probability 1 - VALUE_P or, below the depth limit, an operator applied to 2 to
``max_args`` children; operators MIN, MAX, MED (int of the median) and SM (sum mod 10);
trees are kept when their token length lies strictly inside (min_len, max_len). The label is
the value of the expression (10 classes).

One deliberate difference: the released LRA input pipeline tokenized with a splitter that
dropped the ``[`` and ``]`` characters, so the closing brackets vanished and the task became
ambiguous. Here every operator is one token (``[MAX``) and every ``]`` is kept.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import Split, Task, TaskSpec, check_positive

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
VALUES = tuple(range(10))
VALUE_P = 0.25  # LRA: probability that a node below the depth limit becomes an operator
END = "]"
# token ids: 0 = padding, 1..10 = digits 0-9, then operators, then ']'
VOCAB = ["<pad>"] + [str(v) for v in VALUES] + list(OPERATORS) + [END]
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}


@dataclass
class ListOpsOptions:
    n_train: int = 2000
    n_val: int = 500
    n_test: int = 500
    seq_len: int = 512  # model input length (= max_len of the generator)
    min_len: int = 32  # keep trees with min_len < length < seq_len
    max_depth: int = 10
    max_args: int = 10
    seed: int = 0


def generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int):
    """LRA's generator: returns (tree, length in tokens). Trees are nested tuples."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        return rng.choice(VALUES), 1
    length = 2  # operator token and closing bracket
    n_args = rng.randint(2, max_args)
    args = []
    for _ in range(n_args):
        sub, sub_len = generate_tree(rng, depth + 1, max_depth, max_args)
        args.append(sub)
        length += sub_len
    return (rng.choice(OPERATORS), tuple(args)), length


def evaluate(tree) -> int:
    if isinstance(tree, int):
        return tree
    op, args = tree
    vals = [evaluate(a) for a in args]
    if op == "[MIN":
        return min(vals)
    if op == "[MAX":
        return max(vals)
    if op == "[MED":
        return int(np.median(vals))
    if op == "[SM":
        return sum(vals) % 10
    raise ValueError(op)


def to_tokens(tree) -> List[str]:
    if isinstance(tree, int):
        return [str(tree)]
    op, args = tree
    out = [op]
    for a in args:
        out.extend(to_tokens(a))
    out.append(END)
    return out


def generate(n: int, *, min_len: int, max_len: int, max_depth: int, max_args: int, rng: random.Random,
             seen: set) -> List[Tuple[List[str], int]]:
    """``n`` distinct examples (token list, label) not already in ``seen``."""
    out = []
    tries = 0
    limit = max(100_000, 2000 * n)
    while len(out) < n:
        tries += 1
        if tries > limit:
            raise RuntimeError(
                f"ListOps generator found only {len(out)} of {n} trees with {min_len} < length < {max_len}; "
                "widen the length window or raise max_depth"
            )
        tree, length = generate_tree(rng, 1, max_depth, max_args)
        if not (min_len < length < max_len):
            continue
        toks = to_tokens(tree)
        key = " ".join(toks)
        if key in seen:
            continue
        seen.add(key)
        out.append((toks, evaluate(tree)))
    return out


def encode(examples: List[Tuple[List[str], int]], seq_len: int) -> Split:
    x = torch.zeros(len(examples), seq_len, dtype=torch.long)
    y = torch.empty(len(examples), dtype=torch.long)
    for i, (toks, label) in enumerate(examples):
        ids = [TOKEN_ID[t] for t in toks]
        x[i, : len(ids)] = torch.tensor(ids)
        y[i] = label
    return Split(x, x != 0, y)


@register_task("listops")
class ListOps(Task):
    options = ListOpsOptions
    version = 1

    @classmethod
    def spec(cls, o: ListOpsOptions) -> TaskSpec:
        return TaskSpec(input_kind="tokens", seq_len=o.seq_len, num_classes=10, vocab_size=len(VOCAB))

    @classmethod
    def check_options(cls, o: ListOpsOptions, key: str) -> None:
        check_positive(o, key, "n_train", "n_val", "n_test", "seq_len", "max_depth")
        if o.max_args < 2:
            raise ConfigError("must be >= 2", key=f"{key}.max_args", value=o.max_args, has_value=True)
        if not 0 <= o.min_len < o.seq_len - 1:
            raise ConfigError(f"must be >= 0 and below seq_len - 1 ({o.seq_len - 1})",
                              key=f"{key}.min_len", value=o.min_len, has_value=True)
        if o.seq_len < 6:
            raise ConfigError("must be >= 6 (the shortest operator expression has 4 tokens)",
                              key=f"{key}.seq_len", value=o.seq_len, has_value=True)

    @classmethod
    def build(cls, o: ListOpsOptions) -> Dict[str, Split]:
        rng = random.Random(o.seed)
        seen: set = set()  # splits are disjoint
        out = {}
        for split, n in (("train", o.n_train), ("val", o.n_val), ("test", o.n_test)):
            ex = generate(n, min_len=o.min_len, max_len=o.seq_len, max_depth=o.max_depth,
                          max_args=o.max_args, rng=rng, seen=seen)
            out[split] = encode(ex, o.seq_len)
        return out
