"""autoeff: search for deployable efficient transformers.

Public surface, the same verbs as the command line: ``run_search`` (`autoeff search`),
``load_config`` and ``build_model`` (what `autoeff train` consumes), ``list_attentions``
(`autoeff list attentions`). Importing ``autoeff`` is cheap: torch, Lightning, Optuna and
MLflow are imported by the functions that need them.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .config import RunConfig, load_config


def build_model(cfg, specs=None):
    """Build the (untrained) model a RunConfig, or a training-config YAML path, describes, as it
    is deployed: with its ``compress`` section applied (pruned and quantized structure), so the
    checkpoint that `autoeff train` or a trial saved loads into it with ``load_state_dict``."""
    from .compress import build_deployed

    if not isinstance(cfg, RunConfig):
        cfg = load_config(cfg)
    return build_deployed(cfg, specs)


def run_search(space, overrides=(), **kwargs):
    """Run (or resume) the search a space file describes; returns a ``SearchResult``
    (``.records``, ``.front``, ``.summary``). Same as `autoeff search --space SPACE k=v ...`."""
    from .api import run_search as _run

    return _run(space, overrides, **kwargs)


def list_attentions():
    """Names of the registered attention families."""
    from .registry import ATTENTIONS

    return ATTENTIONS.names()


__all__ = ["build_model", "load_config", "run_search", "list_attentions", "RunConfig", "__version__"]
