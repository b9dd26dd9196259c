"""Presenters: whoever shows or records a search, told by the scheduler as it goes.

A scheduler (:mod:`autoeff.search.schedulers`) knows nothing of terminals, MLflow or dashboards:
it calls the same hooks on a list of presenters. The terminal progress
(:class:`autoeff.search.progress.Progress`), the MLflow tracker
(:class:`autoeff.tracking.MLflowTracker`) and the Optuna Dashboard note (:class:`DashboardNote`)
are presenters; every hook is optional (the base class does nothing).
"""
from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Sequence

from .record import TrialRecord
from .space import Space


class Presenter:
    """The hooks a scheduler calls, in this order: ``on_search_start`` once (with the records a
    resumed study already holds), then per trial ``on_trial_start``, ``on_training_step`` (as it
    trains) and ``on_trial_end``; ``on_message`` for anything worth saying in between; and
    ``on_search_end`` once, with the front, by the worker that writes it."""

    def on_search_start(self, space: Space, records: Sequence[TrialRecord], info: Mapping[str, Any]) -> None:
        """The search starts, or resumes with ``records`` already stored; ``info``: the backend,
        the study, whether it resumed, the strategy and its preparation figures."""

    def on_message(self, msg: str) -> None:
        """One line worth telling the user (resuming, waiting for other workers, a timeout)."""

    def on_trial_start(self, number: int, params: Mapping[str, Any], *, done: int = 0, what: str = "") -> None:
        """Trial ``number`` starts with ``params``; ``done``: the study's trials finished so far
        (every worker's); ``what``: how to label it instead of ``done + 1 / n_trials`` (a finalist)."""

    def on_training_step(self, step: int, max_steps: int, loss: float) -> None:
        """The running trial's training reached ``step`` (trials in this process only)."""

    def on_trial_end(self, record: TrialRecord) -> None:
        """A trial finished with this record (any status)."""

    def on_search_end(self, space: Space, front: Sequence[TrialRecord], records: Sequence[TrialRecord],
                      summary: Mapping[str, float]) -> None:
        """The front is written: re-measured, with every record and the summary."""


class Presenters(Presenter):
    """A list of presenters called as one, in order; calling it says a message (so it is the
    ``log`` function a strategy receives)."""

    def __init__(self, presenters: Sequence[Presenter] = ()):
        self.items: List[Presenter] = list(presenters)

    def __call__(self, msg: str) -> None:
        self.on_message(msg)

    def on_search_start(self, space, records, info) -> None:
        for p in self.items:
            p.on_search_start(space, records, info)

    def on_message(self, msg: str) -> None:
        for p in self.items:
            p.on_message(msg)

    def on_trial_start(self, number, params, *, done: int = 0, what: str = "") -> None:
        for p in self.items:
            p.on_trial_start(number, params, done=done, what=what)

    def on_training_step(self, step: int, max_steps: int, loss: float) -> None:
        for p in self.items:
            p.on_training_step(step, max_steps, loss)

    def on_trial_end(self, record: TrialRecord) -> None:
        for p in self.items:
            p.on_trial_end(record)

    def on_search_end(self, space, front, records, summary) -> None:
        for p in self.items:
            p.on_search_end(space, front, records, summary)


class DashboardNote(Presenter):
    """Tell Optuna Dashboard's users which front to trust: a Markdown note on the study.

    The dashboard computes its Pareto front from the values told to Optuna during the search;
    autoeff re-measures the front's candidates alone afterwards and recomputes the front on those
    figures. The note lists both fronts and the re-measured figures. ``save`` writes the note
    (:meth:`autoeff.search.store.StudyStore.save_note`) and returns False when it cannot (no
    optuna-dashboard installed, or the storage refused): a note is a courtesy, never an error.
    """

    def __init__(self, save: Callable[[str], bool]):
        self.save = save
        self.written: Optional[bool] = None  # after on_search_end: whether the note was saved

    def on_search_end(self, space, front, records, summary) -> None:
        self.written = self.save(dashboard_note_text(space, front, records))


def dashboard_note_text(space: Space, front: Sequence[TrialRecord], records: Sequence[TrialRecord]) -> str:
    """The note :class:`DashboardNote` writes (Markdown)."""
    from .front import search_time_front

    ours = [r.number for r in front]
    theirs = [r.number for r in search_time_front(space, records)]
    names = space.objective_names
    shown = [n for n in names if f"search_{n}" in _any_metrics(front)]
    lines = ["## autoeff: which front to trust", "",
             "This dashboard's Pareto front uses the figures measured **during the search** (what the "
             "sampler saw). After the search, autoeff re-measured the front's candidates one at a time, "
             "alone on the machine, and recomputed the front on those figures. **Trust autoeff's front** "
             "(`autoeff pareto`, the MLflow parent run, `autoeff report`) for deployment.", "",
             f"- autoeff's front (re-measured): trials {', '.join(map(str, ours)) or 'none'}",
             f"- this dashboard's front (search-time figures): trials {', '.join(map(str, theirs)) or 'none'}"
             + ("" if sorted(ours) == sorted(theirs) else "  (they differ)"), "",
             "| trial | " + " | ".join(f"{n} (re-measured)" for n in names) + " | "
             + " | ".join(f"{n} (search)" for n in shown) + " |"]
    lines.append("|---|" + "---|" * (len(names) + len(shown)))
    for r in front:
        lines.append(f"| {r.number} | " + " | ".join(_g(r.metrics.get(n)) for n in names) + " | "
                     + " | ".join(_g(r.metrics.get(f"search_{n}")) for n in shown) + " |")
    return "\n".join(lines) + "\n"


def _any_metrics(recs: Sequence[TrialRecord]) -> set:
    return {k for r in recs for k in r.metrics}


def _g(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else ""
