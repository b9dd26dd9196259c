"""The Python entry point behind `autoeff search`: space file -> backend + MLflow -> front."""
from __future__ import annotations

from typing import Sequence

from .isolation import gate
from .search.backends import make_backend
from .search.runner import Progress, SearchResult
from .search.space import load_space


def run_search(space_path: str, overrides: Sequence[str] = (), *, quiet: bool = False, track: bool = True) -> SearchResult:
    """Run (or resume) the search a space file describes; returns the records and the front."""
    with gate().work():  # starting up (imports, stores) is work: no trial on this machine measures meanwhile
        space = load_space(space_path, overrides)
        backend = make_backend(space)
        callbacks = []
        if track:
            from .tracking import MLflowTracker

            with backend.exclusive():  # several workers starting at once must not create the store twice
                callbacks.append(MLflowTracker(space.search.mlflow_uri, space.search.experiment,
                                               space.search.artifacts))
    progress = Progress(space.search.n_trials, quiet=quiet, space=space)
    try:
        return backend.run(callbacks, progress)
    finally:
        progress.close()
