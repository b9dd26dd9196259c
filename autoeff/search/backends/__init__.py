"""Search backends. Only modules in this package import optuna or ray.

``optuna``: trials run in this process, one at a time (several processes may share a study).
``ray``: trials run as Ray Tune trials, on this machine or a cluster, with the same study.
Both keep the study in the same Optuna storage, so reading it back is the same code.
"""
from __future__ import annotations

from typing import List

from ..record import TrialRecord
from ..space import Space


def make_backend(space: Space):
    if space.search.backend == "optuna":
        from .optuna_backend import OptunaBackend

        return OptunaBackend(space)
    if space.search.backend == "ray":
        from .ray_backend import RayBackend

        return RayBackend(space)
    raise ValueError(f"unknown backend {space.search.backend!r}")


def load_records(space: Space) -> List[TrialRecord]:
    """The stored trials of a space's study, with the front flagged (either backend: the study
    is an Optuna study in both)."""
    if space.search.backend in ("optuna", "ray"):
        from .optuna_backend import load_records as _load

        return _load(space)
    raise ValueError(f"unknown backend {space.search.backend!r}")
