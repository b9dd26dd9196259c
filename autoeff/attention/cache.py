"""The per-layer cache/state for incremental (causal) decoding (docs/decoders.md §1).

A :class:`LayerCache` holds how many tokens the layer has seen (``length``) and the family's own
tensors by name (``cache["k"]``); ``tensors()`` lists everything it holds, so the decode
figures (``cache_mb``) can sum its bytes and check them against the family's ``cache_bytes``.
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional

import torch


class LayerCache:
    """What one attention layer keeps between decoding steps.

    ``length``: tokens seen so far (the next token's absolute position); the family's tensors
    live in ``state`` (name -> tensor, or None for a slot not yet filled)."""

    def __init__(self, length: int = 0, **state: Optional[torch.Tensor]):
        self.length = int(length)
        self.state: Dict[str, Optional[torch.Tensor]] = dict(state)

    def __getitem__(self, key: str) -> Optional[torch.Tensor]:
        return self.state[key]

    def __setitem__(self, key: str, value: Optional[torch.Tensor]) -> None:
        self.state[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self.state

    def __iter__(self) -> Iterator[str]:
        return iter(self.state)

    def tensors(self) -> List[torch.Tensor]:
        """Every tensor the cache holds (what ``cache_mb`` sums)."""
        return [t for t in self.state.values() if t is not None]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def __repr__(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in self.state.items() if v is not None}
        return f"LayerCache(length={self.length}, {shapes})"
