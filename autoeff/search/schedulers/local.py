"""The in-process scheduler (``search.backend: optuna``): trials run one at a time in this
process, asked of and told to the study store.

- Several processes may run the same command against one storage: each claims its next trial
  under the study's claim lock (:meth:`autoeff.search.store.StudyStore.claim`), so together they
  finish exactly ``n_trials``; their measurements never overlap another trial's training (the
  measurement gate, :mod:`autoeff.isolation`). The last one to finish writes the front.
- A worker whose remaining trials other workers hold stays and waits: a worker that dies leaves
  its trial for the others to run again.
- Early stopping (``search.early_stopping``): each trial gets the study's rung judge
  (:class:`autoeff.search.store.StudyRungJudge`), which compares its point at each rung with the
  points other trials stored there, in whatever process they ran.
- Resume: re-running the same command loads the study by name; trials left RUNNING by a killed
  process on this host are failed ("interrupted") and their candidates run again, so nothing is
  lost or counted twice.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence

from ...isolation import gate
from ..front import SearchResult
from ..presenters import Presenter, Presenters
from .base import CLAIM_POLL_S, Scheduler


class LocalScheduler(Scheduler):
    """Trials in this process, one at a time (see the module docstring)."""

    name = "optuna"

    def run(self, presenters: Optional[Sequence[Presenter]] = None) -> SearchResult:
        out = Presenters(self.default_presenters() if presenters is None else presenters)
        store = self.store
        self.start(out)
        waiting = False
        t_search = time.monotonic()
        while True:
            if self.timeout_reached(t_search, out):
                break
            trial, params, rec, why = store.claim(out)
            if trial is None:
                if why == "claimed":  # stay: a worker that dies leaves its trial for us to run again
                    if not waiting:
                        out("the remaining trials are claimed by other workers; waiting for them to finish")
                    waiting = True
                    time.sleep(CLAIM_POLL_S)
                    continue
                break
            waiting = False
            t_start = time.perf_counter()
            with gate().work():
                out.on_trial_start(trial.number, params, done=store.done())
            if rec is None:
                judge = store.rung_judge(trial)
                with gate().work():  # the first trial imports torch and Lightning: seconds of CPU
                    import autoeff.search.objective  # noqa: F401
                rec = self.strategy.run_trial(params, trial.number, artifacts_dir=self.artifacts_dir, log=out,
                                              progress=out.on_training_step,
                                              **({"rung_judge": judge} if judge is not None else {}))
            rec.metrics["trial_wall_s"] = time.perf_counter() - t_start
            with gate().work():  # bookkeeping is work too: no trial on this machine measures meanwhile
                store.tell(trial, rec)
                out.on_trial_end(rec)
        return self.finish(out)
