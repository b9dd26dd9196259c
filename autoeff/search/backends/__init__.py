"""Search backends. Only modules in this package import optuna (or, later, ray)."""
from __future__ import annotations

from typing import List

from ..record import TrialRecord
from ..space import Space


def make_backend(space: Space):
    if space.search.backend == "optuna":
        from .optuna_backend import OptunaBackend

        return OptunaBackend(space)
    raise ValueError(f"unknown backend {space.search.backend!r}")


def load_records(space: Space) -> List[TrialRecord]:
    """The stored trials of a space's study, with the front flagged."""
    if space.search.backend == "optuna":
        from .optuna_backend import load_records as _load

        return _load(space)
    raise ValueError(f"unknown backend {space.search.backend!r}")
