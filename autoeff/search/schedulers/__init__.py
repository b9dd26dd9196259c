"""Schedulers: where and in what order a study's trials run. Each takes the study store
(:class:`autoeff.search.store.StudyStore`) and the strategy (:mod:`autoeff.search.strategy`) and
tells a list of presenters (:mod:`autoeff.search.presenters`) what happens.

``optuna`` (:class:`.local.LocalScheduler`): trials in this process, one at a time (several
processes may share a study). ``ray`` (:class:`.ray_tune.RayScheduler`): trials as Ray Tune
trials, on this machine or a cluster, with the same study store.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..space import Space

if TYPE_CHECKING:  # the schedulers import Optuna: only a running search needs them
    from .base import Scheduler

SCHEDULERS = ("optuna", "ray")


def make_scheduler(space: Space) -> "Scheduler":
    """The scheduler ``search.backend`` names, over the space's study (created or resumed) and strategy."""
    if space.search.backend not in SCHEDULERS:
        raise ValueError(f"unknown backend {space.search.backend!r}")
    from ..store import StudyStore
    from ..strategy import make_strategy

    store = StudyStore(space)
    strategy = make_strategy(space)
    if space.search.backend == "ray":
        from .ray_tune import RayScheduler

        return RayScheduler(store, strategy)
    from .local import LocalScheduler

    return LocalScheduler(store, strategy)
