"""What every scheduler does around its trials: start (the reference model, the strategy's
preparation, crash recovery, the presenters' start), the time budget, the strategy's extra
trials after the search (finalists) and the end (the front re-measured and written by one worker).

A scheduler depends on the study store (:class:`autoeff.search.store.StudyStore`), the strategy
(:mod:`autoeff.search.strategy_base`) and a list of presenters
(:mod:`autoeff.search.presenters`), nothing else: where a candidate runs is the subclass's
business (:class:`~autoeff.search.schedulers.local.LocalScheduler`: in this process;
:class:`~autoeff.search.schedulers.ray_tune.RayScheduler`: as Ray Tune trials). A subclass says
where the reference model and the front are measured through :meth:`Scheduler.reference_machine`,
:meth:`Scheduler.measure_reference` and :meth:`Scheduler.remeasure_fn`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from ...errors import ConfigError
from ...isolation import gate
from ..front import SearchResult, finalize, front_of
from ..presenters import DashboardNote, Presenter, Presenters
from ..record import TrialRecord
from ..space import Space
from ..store import StudyStore
from ..strategy_base import Strategy

CLAIM_POLL_S = 2.0  # how often a worker whose remaining trials other workers hold looks again


class Scheduler:
    """Runs a study's trials (see the module docstring); ``run`` returns the finished search."""

    name = "base"

    def __init__(self, store: StudyStore, strategy: Strategy):
        self.store = store
        self.strategy = strategy
        self.space: Space = store.space
        self.artifacts_dir = str(Path(self.space.search.artifacts) / self.space.search.study_name)
        self.prepared: Dict[str, float] = {}
        self._timeout_said = False

    def exclusive(self):
        """The study's claim lock, for other one-at-a-time set-up work (e.g. creating the MLflow store)."""
        return self.store.exclusive()

    def default_presenters(self) -> Sequence[Presenter]:
        """What ``run()`` shows without presenters: the progress on stderr and the dashboard note."""
        from ..progress import Progress

        return [Progress(self.space.search.n_trials, space=self.space), DashboardNote(self.store.save_note)]

    def run(self, presenters: Optional[Sequence[Presenter]] = None) -> SearchResult:
        raise NotImplementedError

    # ---- where things are measured (here: in this process) -------------------------------
    def reference_machine(self, device: str) -> Dict[str, str]:
        """The machine this scheduler's trials are measured on."""
        from ...measure.host import machine_info

        return machine_info(device)

    def measure_reference(self) -> Dict[str, Any]:
        """The reference model measured where this scheduler's trials are measured."""
        from .. import objective

        return objective.measure_reference(self.space)

    def remeasure_fn(self) -> Optional[Callable[[Space, TrialRecord], TrialRecord]]:
        """How the front's candidates are re-measured (None: here, in this process)."""
        return None

    # ---- the parts of a run -----------------------------------------------------------------
    def timeout_reached(self, started: float, log) -> bool:
        """Whether ``search.timeout_s`` has passed since ``started`` (``time.monotonic``): then no
        new trial starts (every scheduler asks before each claim); said once."""
        t = self.space.search.timeout_s
        if not t or time.monotonic() - started < t:
            return False
        if not self._timeout_said:
            self._timeout_said = True
            log(f"search.timeout_s = {t:g} s reached after {self.store.done()} trials: no new trials")
        return True

    def resolve_reference(self, log) -> None:
        """Relative constraints' bounds: the ``reference:`` model measured once per study, by the
        first worker (the first stored wins if two measure at once), with the candidates' protocol
        (:func:`autoeff.search.objective.deployment_figures`), and kept in the study (with the
        reference config's fingerprint and the host tag, the kind of machine) so that every worker
        and a resumed search keep the same bounds.

        On resume: a changed ``reference:`` section (another fingerprint) is refused (a
        ConfigError naming the study: the bounds its trials were judged by would change under
        them); a different kind of machine re-measures the reference here, says so, and stores
        it (the stored figures would judge this machine's candidates by another machine's speed)."""
        space = self.space
        if not space.reference:
            return
        from ..objective import host_tag, reference_fingerprint  # torch: only a search with a reference needs it

        ref_cfg = space.reference_config()
        fingerprint = reference_fingerprint(ref_cfg.to_dict())
        ref = self.store.reference()
        why = "measured on {}"
        if ref is not None:
            stored = ref.get("fingerprint") or reference_fingerprint(ref.get("config") or {})
            if stored != fingerprint:
                s = space.search
                raise ConfigError(
                    f"study '{s.study_name}' in {s.storage} judged its trials against another reference "
                    f"model (fingerprint {stored}, now {fingerprint}); keep the reference: section the study "
                    f"started with, or start a new study (e.g. search.study_name={s.study_name}-2)",
                    file=space.file, key="reference", value=space.reference, has_value=True)
            there = ref.get("host_tag") or host_tag(ref.get("machine") or {})
            here = host_tag(self.reference_machine(ref_cfg.deploy.device))
            if there != here:
                log(f"the reference model was measured on another kind of machine ({there}); this one is "
                    f"{here}: measuring it again here")
                why = "re-measured on {} (the study's was measured on " + there + ")"
                ref = None
        if ref is None:
            # measured holding neither the machine's work lock nor the study's claim lock: the
            # measurement takes the machine alone (in this process, or in a Ray worker that must
            # not wait for this process's lock); two workers starting at once may both measure,
            # and the first stored wins, so every worker of a study keeps the same bounds
            log("measuring the reference model (relative constraints take their bounds from it)")
            ref = self.store.keep_reference(self.measure_reference())
            how = why.format(ref.get("host_tag") or (ref.get("machine") or {}).get("host", "this machine"))
            if ref.get("measured_by"):
                how += f", by a {ref['measured_by']}"
        else:
            how = f"as measured on {ref.get('host_tag') or host_tag(ref.get('machine') or {})} when the study started"
        space.resolve_reference(ref["metrics"])
        figures = ", ".join(f"{k} {ref['metrics'][k]:.4g}" for k in ("latency_ms", "peak_memory_mb")
                            if k in ref["metrics"])
        rel = [c.label for c in space.constraints if c.factor is not None]
        log(f"reference model: {figures} ({how}); {'; '.join(rel) or 'no relative constraint'}")

    def start(self, presenters: Presenters) -> None:
        """Resolve the reference, prepare the strategy, recover trials of dead workers and start
        the presenters (under the claim lock, so that several workers starting at once find or
        create one MLflow parent run)."""
        space, store = self.space, self.store
        existing = len(store.study.get_trials(deepcopy=False))
        self.resolve_reference(presenters)
        self.prepared = self.strategy.prepare(presenters, self.artifacts_dir)
        with gate().work(), store.exclusive():  # (lock order: see StudyStore.claim)
            interrupted = store.recover_interrupted(presenters)
            done = store.done()
            info = {"backend": self.name, "study_name": space.search.study_name, "storage": space.search.storage,
                    "resumed": existing > 0, "interrupted": interrupted, "done": done,
                    "strategy": self.strategy.name, "front_accuracy": self.strategy.front_accuracy,
                    "prepared": self.prepared}
            if existing:
                presenters(f"resuming study '{space.search.study_name}' from {space.search.storage}: "
                           f"{done}/{space.search.n_trials} trials finished")
            presenters.on_search_start(space, store.records(), info)

    def run_finalists(self, presenters: Presenters) -> None:
        """The trials a strategy adds after the search (one-shot finalists), each once: a resumed
        search runs only those not finished yet."""
        done = self.store.finished_finalists()
        todo = [(r, role) for r, role in self.strategy.finalists(self.store.records()) if (r.number, role) not in done]
        if todo:
            presenters(f"training {len(todo)} more candidate(s) as standalone trials: "
                       + ", ".join(f"proxy trial {r.number} ({role})" for r, role in todo))
        for i, (of, role) in enumerate(todo):
            trial = self.store.add_finalist(of, role)
            presenters.on_trial_start(trial.number, of.params, done=i,
                                      what=f"{role.replace('_', ' ')} {i + 1}/{len(todo)}, proxy trial {of.number}")
            rec = self.strategy.run_finalist(of, role, trial.number, artifacts_dir=self.artifacts_dir,
                                             log=presenters, progress=presenters.on_training_step)
            self.store.tell(trial, rec)
            presenters.on_trial_end(rec)

    def finish(self, presenters: Presenters) -> SearchResult:
        """The front, re-measured, and the presenters' end, by one worker: not while other
        workers still run trials, nor while another is already writing it (they return the
        front as it stands)."""
        if not self.store.begin_finalizing():
            presenters("another worker of this study writes the front")
            records = self.store.records()
            return SearchResult(self.space, records, front_of(self.space, records), {})
        try:
            self.run_finalists(presenters)
            records = self.store.records()
            result = finalize(self.space, records, presenters, self.store.save_remeasured,
                              remeasure=self.remeasure_fn())
            result.summary.update(self.prepared)
            result.summary.update(self.strategy.summary(records))
            presenters.on_search_end(self.space, result.front, result.records, result.summary)
        finally:
            self.store.end_finalizing()
        return result
