"""autoeff: search for deployable efficient transformers.

The public API is the names in ``__all__`` (documented in README.md, "Python API"); the same
verbs as the command line:

- spaces and searches: ``load_space`` (`autoeff validate`), ``run_search`` (`autoeff search`),
  ``load_study`` (what `autoeff pareto` / `autoeff report` read), ``export_trial``
  (`autoeff export`), ``train`` (`autoeff train`);
- configs, models, data: ``load_config``, ``create_model`` (fp32 or deployed, optionally from a
  checkpoint), ``task_spec``, ``example_inputs``, ``load_task``, ``evaluate``,
  ``measure_model``, ``list_attentions``, ``list_tasks``;
- fronts: ``hypervolume``, ``pareto_mask``;
- types: ``RunConfig``, ``Space``, ``StudyResult`` (a ``SearchResult``), ``TrialRecord``,
  ``Exported``, ``ConfigError``, ``PluginError``.

``build_model`` is the deprecated name of ``create_model(cfg, deployed=True)``. Everything else
(``autoeff.search.*``, ``autoeff.training.*``, ...) may change without notice. User attention
families and tasks plug in through entry points (README, "Plugins"; ``autoeff.registry``).

Importing ``autoeff`` is cheap: torch, Lightning, Optuna and MLflow are imported by the
functions that need them, and the names below are resolved on first use.
"""
from __future__ import annotations

import importlib as _importlib
import warnings as _warnings
from typing import Any as _Any

__version__ = "0.1.0"

from .config import RunConfig  # light: no torch
from .errors import ConfigError

#: public name -> the module that defines it (imported on first use, PEP 562)
_LAZY = {
    **{n: "api" for n in ("load_space", "run_search", "load_study", "export_trial", "train", "load_config",
                          "create_model", "task_spec", "example_inputs", "load_task", "evaluate",
                          "measure_model", "list_attentions", "list_tasks", "StudyResult", "Exported")},
    "SearchResult": "search.runner",
    "TrialRecord": "search.record",
    "Space": "search.space",
    "PluginError": "registry",
    "hypervolume": "search.pareto",
    "pareto_mask": "search.pareto",
}


def __getattr__(name: str) -> _Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'autoeff' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value  # resolved once
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def build_model(cfg, specs=None):
    """Deprecated: ``create_model(cfg, deployed=True)`` (the untrained model as deployed, its
    ``compress`` section applied, so a checkpoint of `autoeff train` or a trial loads into it)."""
    _warnings.warn("autoeff.build_model is deprecated; use autoeff.create_model(cfg, deployed=True)",
                  DeprecationWarning, stacklevel=2)
    from .api import create_model

    return create_model(cfg, specs, deployed=True)


__all__ = [
    # spaces and searches
    "load_space", "run_search", "load_study", "export_trial", "train",
    # configs, models, data
    "load_config", "create_model", "task_spec", "example_inputs", "load_task", "evaluate", "measure_model",
    "list_attentions", "list_tasks",
    # fronts
    "hypervolume", "pareto_mask",
    # types
    "RunConfig", "Space", "SearchResult", "StudyResult", "TrialRecord", "Exported", "ConfigError", "PluginError",
    # deprecated
    "build_model",
    "__version__",
]
