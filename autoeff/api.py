"""The Python entry point behind `autoeff search`: space file -> backend + MLflow -> front."""
from __future__ import annotations

from typing import Sequence

from .search.backends import make_backend
from .search.runner import Progress, SearchResult
from .search.space import load_space


def run_search(space_path: str, overrides: Sequence[str] = (), *, quiet: bool = False, track: bool = True) -> SearchResult:
    """Run (or resume) the search a space file describes; returns the records and the front."""
    space = load_space(space_path, overrides)
    callbacks = []
    if track:
        from .tracking import MLflowTracker

        callbacks.append(MLflowTracker(space.search.mlflow_uri, space.search.experiment, space.search.artifacts))
    backend = make_backend(space)
    progress = Progress(space.search.n_trials, quiet=quiet, space=space)
    try:
        return backend.run(callbacks, progress)
    finally:
        progress.close()
