"""Search: the space file, the backend-independent trial, Pareto logic, and backends."""
from .objective import TrialRecord, run_trial
from .pareto import hypervolume, pareto_front, pareto_mask, select
from .runner import Progress, SearchCallback, SearchResult
from .space import Space, load_space

__all__ = ["Space", "load_space", "TrialRecord", "run_trial", "pareto_front", "pareto_mask", "hypervolume",
           "select", "SearchCallback", "SearchResult", "Progress"]
