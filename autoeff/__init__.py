"""autoeff: search for deployable efficient transformers.

Public surface: ``build_model``, ``load_config``, ``search``, ``list_attentions``.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .attention import list_attentions
from .config import RunConfig, load_config
from . import tasks as _tasks  # noqa: F401,E402  (fills the task registry)


def build_model(cfg, specs=None):
    """Build the model described by a RunConfig (or a path to a training-config YAML)."""
    from .model import build_model as _build

    if not isinstance(cfg, RunConfig):
        cfg = load_config(cfg)
    return _build(cfg, specs)


def search(space, overrides=(), **kwargs):
    """Run a search from a space file (path) with optional dotlist overrides; returns the front."""
    from .api import run_search

    return run_search(space, overrides, **kwargs)


__all__ = ["build_model", "load_config", "search", "list_attentions", "RunConfig", "__version__"]
