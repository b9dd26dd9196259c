"""Search: the space file, the backend-independent trial, Pareto logic, and backends.

Submodules: ``space`` (YAML -> dimensions), ``objective`` (one trial), ``pareto`` (fronts,
hypervolume, selection rules), ``runner`` (what backends share), ``backends``. Import them
directly; this package keeps its own import light so that checking a space file stays fast.
"""
from .pareto import hypervolume, pareto_front, pareto_mask, select
from .space import Space, load_space

__all__ = ["Space", "load_space", "pareto_front", "pareto_mask", "hypervolume", "select"]
