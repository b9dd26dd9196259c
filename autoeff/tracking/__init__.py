"""Tracking: the only package that imports mlflow.

``tables``, ``plots`` and ``report`` import no mlflow; ``MLflowTracker``, ``read_search`` and
``ui_link`` (and ``model_registry``) import it on first use, so `autoeff pareto` stays fast.
"""


def __getattr__(name):
    if name in ("MLflowTracker", "read_search", "ui_link"):
        from . import mlflow_tracker

        return getattr(mlflow_tracker, name)
    raise AttributeError(name)


__all__ = ["MLflowTracker", "read_search", "ui_link"]
