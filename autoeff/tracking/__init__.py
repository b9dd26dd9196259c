"""Tracking: the only package that imports mlflow."""
from .mlflow_tracker import MLflowTracker, read_search

__all__ = ["MLflowTracker", "read_search"]
