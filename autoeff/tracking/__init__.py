"""Tracking: the only package that imports mlflow.

``tables`` and ``plots`` import no mlflow; ``MLflowTracker`` and ``read_search`` import it on
first use, so `autoeff pareto` stays fast.
"""


def __getattr__(name):
    if name in ("MLflowTracker", "read_search"):
        from . import mlflow_tracker

        return getattr(mlflow_tracker, name)
    raise AttributeError(name)


__all__ = ["MLflowTracker", "read_search"]
