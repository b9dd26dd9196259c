"""Optuna backend: one machine, a multi-objective study in sqlite, resumable.

- Multi-objective study (accuracy max, latency min, memory min by default), seeded; TPE by
  default (multivariate, grouped: the space is conditional), NSGA-II or random selectable.
- Constraints go to the sampler through ``Trial.set_constraint``, so infeasible trials never enter
  the front. Multi-objective studies cannot be pruned in Optuna; a candidate whose
  architecture already breaks a hard constraint is told COMPLETE with its measured
  latency/memory, accuracy 0.0 and a positive violation (see ``search.objective``).
- Trials run one at a time per process (ask/tell). Several processes may run the same command
  against one storage: each claims its next trial under the study's claim lock
  (:mod:`.locks`), counting finished and claimed trials, so together they finish exactly
  ``n_trials``; their measurements never overlap another trial's training (the measurement
  gate, :mod:`autoeff.isolation`). The last one to finish writes the front.
- Early stopping (``search.early_stopping``): a trial's point at each rung is stored on the trial
  (user attr ``autoeff.rung.<i>``) and judged against the points other trials stored at that
  rung (:func:`autoeff.search.multifidelity.decide`), in whatever process they ran. A stopped
  trial is told PRUNED, without values (Optuna forbids ``report``/pruning in multi-objective
  studies, but accepts a PRUNED state without values): it never looks complete with partial
  values, samplers treat it as a bad region, and its record (status ``pruned``) says why.
- Resume: re-running the same command loads the study by name. Trials left RUNNING by a
  killed process on this host (its pid is gone) are marked FAIL with reason "interrupted" and
  their parameters re-enqueued, so the interrupted candidate runs again and nothing is lost
  or counted twice; the target ``n_trials`` counts finished trials other than interrupted.
"""
from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import optuna
from optuna.trial import TrialState

from ...isolation import gate
from ..multifidelity import decide
from ..record import TrialRecord
from ..runner import Progress, SearchCallback, SearchResult, finalize
from ..space import Space
from ..strategy import ANSWERED, make_strategy
from .locks import study_lock

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

RECORD = "autoeff.record"
WORKER = "autoeff.worker"
RETRY_OF = "autoeff.retry_of"
FINALIST_OF = "autoeff.finalist_of"  # a strategy's extra trial (one-shot finalist): not counted in n_trials
ROLE = "autoeff.role"  # why a strategy added it: finalist | rank_check
REMEASURED = "autoeff.remeasured"
CLAIMED = "autoeff.claimed"  # system attr: the trial was counted towards n_trials when it started
INTERRUPTED = "autoeff.interrupted"
RUNG = "autoeff.rung."  # user attr prefix: the trial's point at rung i (objective order)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
REFERENCE = "autoeff.reference"  # study user attr: the reference model's figures (relative constraints)
FINALIZING = "autoeff.finalizing"  # study system attr: the worker writing the front right now
CLAIM_POLL_S = 2.0
MAX_DUPLICATES = 25  # consecutive already-tried proposals before the space counts as exhausted


SPACE = "autoeff.space"  # study user attr: the space's fingerprint (Space.fingerprint), compared on resume
SPACE_SPEC = "autoeff.space_spec"  # study user attr: what the fingerprint covers, key by key (to name changes)


def space_spec(space: Space) -> Dict[str, str]:
    """What :meth:`Space.fingerprint` covers, one short hash per key (``space.<dimension>``,
    ``objectives.<name>``, the fixed config's dotted keys, ``attention.per_layer``): a resumed
    study with another fingerprint names the keys that changed."""
    import dataclasses
    import hashlib

    from ..space import flatten

    def h(v: Any) -> str:
        return hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:8]

    out = {f"space.{d.name}": h(dataclasses.asdict(d)) for d in space.dims}
    out.update({f"objectives.{o.name}": h(dataclasses.asdict(o)) for o in space.objectives})
    out.update({k: h(v) for k, v in flatten(space.base).items()})
    if space.per_layer:
        out["attention.per_layer"] = h(space.per_layer)
    return out


def changed_keys(old: Optional[Dict[str, str]], new: Dict[str, str]) -> List[str]:
    """Keys added, removed or changed between two :func:`space_spec` (none known without the old one)."""
    if not old:
        return []
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class _OptunaSuggest:
    def __init__(self, trial: optuna.Trial):
        self.t = trial

    def categorical(self, name, choices):
        return self.t.suggest_categorical(name, choices)

    def int(self, name, low, high, *, log, step):
        return self.t.suggest_int(name, low, high, log=log, step=1 if log else step)

    def float(self, name, low, high, *, log, step):
        return self.t.suggest_float(name, low, high, log=log, step=None if log else step)


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's worker: not ours to judge
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _sqlite_dir(url: str) -> None:
    if url.startswith("sqlite:///"):
        p = Path(url[len("sqlite:///"):])
        if str(p) and p.parent and not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)


class OptunaBackend:
    name = "optuna"

    def __init__(self, space: Space):
        self.space = space
        s = space.search
        _sqlite_dir(s.storage)
        with study_lock(s.storage, s.study_name):  # several workers may create it at once
            self.study = optuna.create_study(
                study_name=s.study_name,
                storage=s.storage,
                directions=space.directions,
                sampler=self._sampler(),
                load_if_exists=True,
            )
        self._asked = len(self.study.trials)  # trials in the study after this process's last ask
        if self._asked:  # resumed: a fresh stream, or a seeded sampler repeats its old proposals
            self.study.sampler = self._sampler(seed_offset=self._asked)
        stored = [d.name.lower() for d in self.study.directions]
        if stored != [d.lower() for d in space.directions]:
            from ...errors import ConfigError

            raise ConfigError(
                f"study '{s.study_name}' in {s.storage} was created with directions {stored}; "
                "use another search.study_name for different objectives",
                file=space.file, key="objectives", value=space.objective_names, has_value=True,
            )
        stored_fp = self.study.user_attrs.get(SPACE)
        if stored_fp and stored_fp != space.fingerprint():
            from ...errors import ConfigError

            changed = changed_keys(self.study.user_attrs.get(SPACE_SPEC), space_spec(space))
            raise ConfigError(
                f"study '{s.study_name}' in {s.storage} was created with another space"
                + (f" (changed: {', '.join(changed[:8])}{', ...' if len(changed) > 8 else ''})" if changed else "")
                + f"; its trials would share one front with this one's: keep the space it started with, or start "
                f"a new study (e.g. search.study_name={s.study_name}-2)",
                file=space.file, key="search.study_name", value=s.study_name, has_value=True)
        if not stored_fp:
            self.study.set_user_attr(SPACE, space.fingerprint())
            self.study.set_user_attr(SPACE_SPEC, space_spec(space))
            self.study.set_user_attr("autoeff.objectives", space.objective_names)
            self.study.set_metric_names(space.objective_names)

    def exclusive(self):
        """The study's claim lock (see :mod:`.locks`), for other one-at-a-time set-up work."""
        return study_lock(self.space.search.storage, self.space.search.study_name)

    def _sampler(self, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
        s = self.space.search
        seed = s.seed + seed_offset
        # constraints reach the samplers through Trial.set_constraint (Optuna >= 5)
        if s.sampler == "tpe":
            kw: Dict[str, Any] = dict(seed=seed, multivariate=True, group=True)
            if s.startup_trials:
                kw["n_startup_trials"] = s.startup_trials
            return optuna.samplers.TPESampler(**kw)
        if s.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)

    def _set_constraints(self, trial: optuna.Trial, violations: Sequence[float]) -> None:
        for c, v in zip(self.space.constraints, violations):
            trial.set_constraint(c.text, float(v))

    # ---- records ------------------------------------------------------------------
    def records(self) -> List[TrialRecord]:
        """One record per trial, in trial order (interrupted ones included)."""
        return study_records(self.study)

    def _save_remeasured(self, rec: TrialRecord) -> None:
        d = dict(self.study.user_attrs.get(REMEASURED, {}))
        d[str(rec.number)] = {"metrics": rec.metrics, "values": rec.values, "violations": rec.violations}
        self.study.set_user_attr(REMEASURED, d)

    def _recover_interrupted(self, log) -> List[int]:
        """Fail and re-enqueue trials left RUNNING by a dead process on this host."""
        redo = []
        for ft in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = ft.system_attrs.get(WORKER) or ""
            if worker and _alive(worker):
                continue
            self.study._storage.set_trial_system_attr(ft._trial_id, INTERRUPTED, True)
            self.study.tell(ft.number, state=TrialState.FAIL, skip_if_finished=True)
            if FINALIST_OF in ft.user_attrs:  # the finalists pass runs it again
                continue
            params = dict(ft.params)
            self.study.enqueue_trial(params, user_attrs={RETRY_OF: ft.number}, skip_if_exists=False)
            redo.append(ft.number)
        if redo:
            log(f"resuming: trial(s) {redo} were interrupted; their candidates run again")
        return redo

    def _twin(self, params: Dict[str, Any]) -> Optional[optuna.trial.FrozenTrial]:
        """A finished, non-duplicate trial with exactly these parameters, if any (a strategy's
        finalists are not twins: they score the same candidate another way). A trial stopped
        early is a twin too: its candidate would be stopped again."""
        for ft in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            rec = ft.user_attrs.get(RECORD) or {}
            if FINALIST_OF in ft.user_attrs:
                continue
            if rec.get("status") in (*ANSWERED, "pruned") and rec.get("params") == params:
                return ft
        return None

    def _tell_duplicate(self, trial: optuna.Trial, twin: optuna.trial.FrozenTrial, params: Dict[str, Any]) -> None:
        rec = TrialRecord(number=trial.number, status="duplicate", params=params,
                          values=list(twin.values) if twin.values is not None else None,  # a pruned twin has none
                          violations=list((twin.user_attrs.get(RECORD) or {}).get("violations", [])),
                          reason=f"same candidate as trial {twin.number}")
        trial.set_user_attr(RECORD, rec.to_json())
        if twin.state == TrialState.PRUNED:  # answered as its twin was: stopped early
            self.study.tell(trial, state=TrialState.PRUNED)
            return
        self._set_constraints(trial, rec.violations)
        self.study.tell(trial, list(twin.values))

    def _done(self) -> int:
        """Finished trials that count towards ``n_trials`` (not interrupted, not re-proposals)."""
        return self._count()[0]

    def _count(self) -> Tuple[int, int]:
        """(finished trials that count, trials other live workers have claimed and are running)."""
        done = running = 0
        for ft in self.study.get_trials(deepcopy=False, states=(*FINISHED_STATES, TrialState.RUNNING)):
            if FINALIST_OF in ft.user_attrs:
                continue
            if ft.state == TrialState.RUNNING:
                worker = ft.system_attrs.get(WORKER) or ""
                if ft.system_attrs.get(CLAIMED) and (not worker or _alive(worker)):
                    running += 1
                continue
            dup = (ft.user_attrs.get(RECORD) or {}).get("status") == "duplicate"
            if not ft.system_attrs.get(INTERRUPTED) and not dup:
                done += 1
        return done, running

    # ---- one trial: claim, judge its rungs, tell ------------------------------------------
    def claim(self, log) -> Tuple[Optional[optuna.Trial], Dict[str, Any], Optional[TrialRecord], str]:
        """Under the study's claim lock: recover trials of dead workers, count finished and claimed
        trials, and if there is room ask for the next candidate (re-proposals of tried candidates
        are answered from their twins and do not count). Returns ``(trial, params, record, why)``:
        ``trial`` None when nothing is left to claim, with ``why`` = "done", "claimed" (other
        workers hold the rest) or "exhausted"; ``record`` is set when sampling itself failed."""
        n = self.space.search.n_trials
        # sampling is work too (TPE can take a while). Lock order, everywhere: the machine's work
        # lock, then the study's claim lock (never the other way round: no deadlock with a
        # measurement waiting for this process's work)
        with gate().work(), self.exclusive():
            self._recover_interrupted(log)
            done, running = self._count()
            if done >= n:
                return None, {}, None, "done"
            if done + running >= n:
                return None, {}, None, "claimed"
            for _ in range(MAX_DUPLICATES):
                if len(self.study.trials) != self._asked:  # another worker asked since: a fresh stream
                    self.study.sampler = self._sampler(seed_offset=len(self.study.trials))
                trial = self.study.ask()
                self._asked = len(self.study.trials)
                self.study._storage.set_trial_system_attr(trial._trial_id, WORKER, _worker_id())
                try:
                    params = self.space.sample(_OptunaSuggest(trial))
                except Exception as e:  # a sampler problem: record and go on
                    rec = TrialRecord(number=trial.number, status="failed", reason=f"sampling failed: {e}")
                    self.study._storage.set_trial_system_attr(trial._trial_id, CLAIMED, True)
                    return trial, {}, rec, ""
                twin = self._twin(params)
                if twin is None:
                    self.study._storage.set_trial_system_attr(trial._trial_id, CLAIMED, True)
                    return trial, params, None, ""
                self._tell_duplicate(trial, twin, params)
            log(f"the sampler proposed {MAX_DUPLICATES} already-tried candidates in a row: "
                "the space looks exhausted, stopping early")
            return None, {}, None, "exhausted"

    def timeout_reached(self, started: float, log) -> bool:
        """Whether ``search.timeout_s`` has passed since ``started`` (``time.monotonic``): then no
        new trial starts (both backends ask before each claim); said once."""
        t = self.space.search.timeout_s
        if not t or time.monotonic() - started < t:
            return False
        if not getattr(self, "_timeout_said", False):
            self._timeout_said = True
            log(f"search.timeout_s = {t:g} s reached after {self._done()} trials: no new trials")
        return True

    def _tell(self, trial: optuna.Trial, rec: TrialRecord) -> None:
        """Store a finished trial's record and tell Optuna: COMPLETE with values (complete,
        infeasible, proxy), PRUNED without values (stopped early), FAIL otherwise."""
        trial.set_user_attr(RECORD, json.loads(json.dumps(rec.to_json(), default=float)))
        if rec.status in ANSWERED and rec.values is not None:
            self._set_constraints(trial, rec.violations)
            self.study.tell(trial, rec.values)
        elif rec.status == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            trial.set_user_attr("autoeff.fail_reason", rec.reason[:2000])
            self.study.tell(trial, state=TrialState.FAIL)

    def _run_finalists(self, strategy, callbacks, progress, artifacts: str) -> None:
        """The trials a strategy adds after the search (one-shot finalists), each once: a resumed
        search runs only those not finished yet."""
        done = {(ft.user_attrs[FINALIST_OF], ft.user_attrs.get(ROLE, "finalist"))
                for ft in self.study.get_trials(deepcopy=False)
                if FINALIST_OF in ft.user_attrs and ft.state in (TrialState.COMPLETE, TrialState.FAIL)
                and not ft.system_attrs.get(INTERRUPTED)}
        todo = [(r, role) for r, role in strategy.finalists(self.records()) if (r.number, role) not in done]
        if todo:
            progress(f"training {len(todo)} more candidate(s) as standalone trials: "
                     + ", ".join(f"proxy trial {r.number} ({role})" for r, role in todo))
        for i, (of, role) in enumerate(todo):
            self.study.enqueue_trial(of.params, user_attrs={FINALIST_OF: of.number, ROLE: role}, skip_if_exists=False)
            trial = self.study.ask()
            self._asked = len(self.study.trials)
            self.study._storage.set_trial_system_attr(trial._trial_id, WORKER, _worker_id())
            self.space.sample(_OptunaSuggest(trial))  # the enqueued values: the study records them as params
            progress.trial_start(i, trial.number, of.params,
                                 what=f"{role.replace('_', ' ')} {i + 1}/{len(todo)}, proxy trial {of.number}")
            for cb in callbacks:
                cb.on_trial_start(trial.number, of.params)
            rec = strategy.run_finalist(of, role, trial.number, artifacts_dir=artifacts, log=progress,
                                        progress=progress.training)
            self._tell(trial, rec)
            progress.trial_end(rec)
            for cb in callbacks:
                cb.on_trial_end(rec)

    def rung_judge(self, trial: optuna.Trial):
        """The early-stopping judge of one trial (None without ``search.early_stopping``)."""
        if self.space.search.early_stopping is None:
            return None
        return StudyRungJudge(self.study._storage, self.study._study_id, trial._trial_id, trial.number, self.space)

    def others_running(self) -> bool:
        """Whether other live workers still run claimed trials of this study."""
        return self._count()[1] > 0

    def resolve_reference(self, log) -> None:
        """Relative constraints' bounds: the ``reference:`` model measured once per study, by the
        first worker (the first stored wins if two measure at once), with the candidates' protocol
        (:func:`autoeff.search.objective.deployment_figures`), and stored in the study
        (``autoeff.reference``, with the reference config's fingerprint and the host tag, the
        kind of machine) so that every worker and a resumed search keep the same bounds.

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
        with gate().work(), self.exclusive():
            ref = self.study.user_attrs.get(REFERENCE)  # read from the storage: another worker may have stored it
        why = "measured on {}"
        if ref is not None:
            stored = ref.get("fingerprint") or reference_fingerprint(ref.get("config") or {})
            if stored != fingerprint:
                from ...errors import ConfigError

                s = space.search
                raise ConfigError(
                    f"study '{s.study_name}' in {s.storage} judged its trials against another reference "
                    f"model (fingerprint {stored}, now {fingerprint}); keep the reference: section the study "
                    f"started with, or start a new study (e.g. search.study_name={s.study_name}-2)",
                    file=space.file, key="reference", value=space.reference, has_value=True)
            there = ref.get("host_tag") or host_tag(ref.get("machine") or {})
            here = host_tag(self._reference_machine(ref_cfg.deploy.device))
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
            mine = self._measure_reference()
            with gate().work(), self.exclusive():
                first = self.study.user_attrs.get(REFERENCE)
                if first is not None and first.get("fingerprint") == fingerprint and \
                        first.get("host_tag") == mine.get("host_tag"):
                    ref = first  # another worker of this kind of machine stored one meanwhile
                else:
                    ref = mine
                    self.study.set_user_attr(REFERENCE, ref)
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

    def _reference_machine(self, device: str) -> Dict[str, str]:
        """The machine this backend's trials are measured on (here: this one)."""
        from ...measure.host import machine_info

        return machine_info(device)

    def _measure_reference(self) -> Dict[str, Any]:
        """The reference model measured where this backend's trials are measured (here: in this process)."""
        from .. import objective

        return objective.measure_reference(self.space)

    # ---- the loop -----------------------------------------------------------------------
    def start(self, callbacks: Sequence[SearchCallback], log) -> None:
        """Prepare the strategy, recover trials of dead workers and start the callbacks (under
        the claim lock, so that several workers starting at once find or create one MLflow
        parent run)."""
        space = self.space
        existing = len(self.study.trials)
        self.artifacts_dir = str(Path(space.search.artifacts) / space.search.study_name)
        self.resolve_reference(log)
        self.strategy = make_strategy(space)
        self.prepared = self.strategy.prepare(log, self.artifacts_dir)
        with gate().work(), self.exclusive():  # (lock order: see claim)
            interrupted = self._recover_interrupted(log)
            done = self._done()
            info = {"backend": self.name, "study_name": space.search.study_name, "storage": space.search.storage,
                    "resumed": existing > 0, "interrupted": interrupted, "done": done,
                    "strategy": self.strategy.name, "front_accuracy": self.strategy.front_accuracy,
                    "prepared": self.prepared}
            if existing:
                log(f"resuming study '{space.search.study_name}' from {space.search.storage}: "
                    f"{done}/{space.search.n_trials} trials finished")
            records = self.records()
            if isinstance(log, Progress):
                log.begin(space, records)
            for cb in callbacks:
                cb.on_search_start(space, records, info)

    def run(self, callbacks: Sequence[SearchCallback] = (), progress: Optional[Progress] = None) -> SearchResult:
        space = self.space
        progress = progress or Progress(space.search.n_trials)
        log = progress
        self.start(callbacks, log)
        artifacts = self.artifacts_dir
        waiting = False
        t_search = time.monotonic()
        while True:
            if self.timeout_reached(t_search, log):
                break
            trial, params, rec, why = self.claim(log)
            if trial is None:
                if why == "claimed":  # stay: a worker that dies leaves its trial for us to run again
                    if not waiting:
                        log("the remaining trials are claimed by other workers; waiting for them to finish")
                    waiting = True
                    time.sleep(CLAIM_POLL_S)
                    continue
                break
            waiting = False
            t_start = time.perf_counter()
            with gate().work():
                progress.trial_start(self._done(), trial.number, params)
                for cb in callbacks:
                    cb.on_trial_start(trial.number, params)
            if rec is None:
                judge = self.rung_judge(trial)
                with gate().work():  # the first trial imports torch and Lightning: seconds of CPU
                    import autoeff.search.objective  # noqa: F401
                rec = self.strategy.run_trial(params, trial.number, artifacts_dir=artifacts, log=log,
                                              progress=progress.training,
                                              **({"rung_judge": judge} if judge is not None else {}))
            rec.metrics["trial_wall_s"] = time.perf_counter() - t_start
            with gate().work():  # bookkeeping is work too: no trial on this machine measures meanwhile
                self._tell(trial, rec)
                progress.trial_end(rec)
                for cb in callbacks:
                    cb.on_trial_end(rec)
        return self.finish(callbacks, log)

    def finish(self, callbacks: Sequence[SearchCallback], log, remeasure=None) -> SearchResult:
        """The front, re-measured, and the callbacks' end, by one worker: not while other
        workers still run trials, nor while another is already writing it (they return the
        front as it stands)."""
        storage = self.study._storage
        with self.exclusive():
            busy = storage.get_study_system_attrs(self.study._study_id).get(FINALIZING) or ""
            skip = self.others_running() or (busy and busy != _worker_id() and _alive(busy))
            if not skip:
                storage.set_study_system_attr(self.study._study_id, FINALIZING, _worker_id())
        if skip:
            log("another worker of this study writes the front")
            from ..runner import front_of

            records = self.records()
            return SearchResult(self.space, records, front_of(self.space, records), {})
        try:
            progress = log if isinstance(log, Progress) else Progress(self.space.search.n_trials)
            self._run_finalists(self.strategy, callbacks, progress, self.artifacts_dir)
            records = self.records()
            result = finalize(self.space, records, log, self._save_remeasured, remeasure=remeasure)
            result.summary.update(self.prepared)
            result.summary.update(self.strategy.summary(records))
            dashboard_note(self.study, self.space, result)
            for cb in callbacks:
                cb.on_search_end(self.space, result.front, result.records, result.summary)
        finally:
            storage.set_study_system_attr(self.study._study_id, FINALIZING, "")
        return result


class StudyRungJudge:
    """The early-stopping judge of one trial, over the study's storage: at rung ``i`` it stores
    the trial's point (``autoeff.rung.<i>``), reads the points every other trial stored at that
    rung (any process, any machine sharing the storage; interrupted trials and re-proposals left
    out) and applies :func:`autoeff.search.multifidelity.decide`. A Ray worker builds one over
    its own connection to the storage."""

    def __init__(self, storage: Any, study_id: int, trial_id: int, number: int, space: Space):
        self.storage, self.study_id, self.trial_id, self.number = storage, study_id, trial_id, number
        self.directions = space.directions
        self.eta = space.search.early_stopping.eta
        names = space.objective_names
        self.seed_column = names.index("accuracy") if "accuracy" in names else 0

    def __call__(self, rung: int, step: int, point: List[float]) -> Optional[str]:
        key = f"{RUNG}{rung}"
        self.storage.set_trial_user_attr(self.trial_id, key, [float(v) for v in point])
        recorded = []
        for ft in self.storage.get_all_trials(self.study_id, deepcopy=False):
            if ft.number == self.number or key not in ft.user_attrs or ft.system_attrs.get(INTERRUPTED):
                continue
            if (ft.user_attrs.get(RECORD) or {}).get("status") == "duplicate":
                continue
            recorded.append(ft.user_attrs[key])
        d = decide(point, recorded, self.directions, self.eta, self.seed_column)
        return None if d.keep else d.reason(self.eta)


def dashboard_note(study: optuna.Study, space: Space, result: SearchResult) -> bool:
    """Tell Optuna Dashboard's users which front to trust: a Markdown note on the study.

    The dashboard computes its Pareto front from the values told to Optuna during the search;
    autoeff re-measures the front's candidates alone afterwards and recomputes the front on those
    figures (kept in the study's user attributes). The note lists both fronts and the re-measured
    figures. Returns False when optuna-dashboard is not installed (nothing to annotate).
    """
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return False
    from ..runner import search_time_front

    ours = [r.number for r in result.front]
    theirs = [r.number for r in search_time_front(space, result.records)]
    names = space.objective_names
    lines = ["## autoeff: which front to trust", "",
             "This dashboard's Pareto front uses the figures measured **during the search** (what the "
             "sampler saw). After the search, autoeff re-measured the front's candidates one at a time, "
             "alone on the machine, and recomputed the front on those figures. **Trust autoeff's front** "
             "(`autoeff pareto`, the MLflow parent run, `autoeff report`) for deployment.", "",
             f"- autoeff's front (re-measured): trials {', '.join(map(str, ours)) or 'none'}",
             f"- this dashboard's front (search-time figures): trials {', '.join(map(str, theirs)) or 'none'}"
             + ("" if sorted(ours) == sorted(theirs) else "  (they differ)"), "",
             "| trial | " + " | ".join(f"{n} (re-measured)" for n in names) + " | "
             + " | ".join(f"{n} (search)" for n in names if f"search_{n}" in _any_metrics(result.front)) + " |"]
    shown = [n for n in names if f"search_{n}" in _any_metrics(result.front)]
    lines.append("|---|" + "---|" * (len(names) + len(shown)))
    for r in result.front:
        lines.append(f"| {r.number} | " + " | ".join(_g(r.metrics.get(n)) for n in names) + " | "
                     + " | ".join(_g(r.metrics.get(f"search_{n}")) for n in shown) + " |")
    try:
        save_note(study, "\n".join(lines) + "\n")
    except Exception:  # a note is a courtesy: never fail a finished search over it
        return False
    return True


def _any_metrics(recs: Sequence[TrialRecord]) -> set:
    return {k for r in recs for k in r.metrics}


def _g(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else ""


def study_records(study: optuna.Study) -> List[TrialRecord]:
    """One record per trial of a study, in trial order (interrupted ones included; re-proposals
    answered from a twin left out), with re-measured figures applied."""
    remeasured = study.user_attrs.get(REMEASURED, {})
    out = []
    for ft in study.get_trials(deepcopy=False):
        raw = ft.user_attrs.get(RECORD)
        if raw and raw.get("status") == "duplicate":
            continue  # a re-proposal answered from its twin: not a trial of its own
        if raw:
            rec = TrialRecord.from_json(raw)
        else:
            rec = TrialRecord(number=ft.number, status="running", params=dict(ft.params))
        if ft.state == TrialState.FAIL and not raw:
            rec.status, rec.reason = "failed", ft.user_attrs.get("autoeff.fail_reason", "failed")
        if ft.user_attrs.get(INTERRUPTED) or ft.system_attrs.get(INTERRUPTED):
            rec.status, rec.reason = "interrupted", "the search process was killed during this trial"
        if str(ft.number) in remeasured:
            upd = remeasured[str(ft.number)]
            rec.metrics.update(upd["metrics"])
            rec.values, rec.violations, rec.remeasured = upd["values"], upd["violations"], True
        out.append(rec)
    return out


def load_records(space: Space) -> List[TrialRecord]:
    """Records of a stored study (for `autoeff pareto` / `autoeff export`), front flags set.
    Reads the storage only: nothing is created or migrated."""
    from ...errors import ConfigError
    from ..runner import front_of
    from ..stores import sqlite_path

    def missing() -> ConfigError:
        return ConfigError(f"no study named '{space.search.study_name}' in {space.search.storage}; run "
                           f"`autoeff search --space {space.file}` first", file=space.file, key="search.study_name",
                           value=space.search.study_name, has_value=True)

    storage: Any = space.search.storage
    path = sqlite_path(storage)
    if path is not None:
        if not path.exists() or path.stat().st_size == 0:
            raise missing()
        storage = optuna.storages.RDBStorage(storage, skip_compatibility_check=True, skip_table_creation=True)
    try:
        study = optuna.load_study(study_name=space.search.study_name, storage=storage)
    except KeyError:
        raise missing() from None
    ref = study.user_attrs.get(REFERENCE)
    if ref and space.reference:  # relative constraints: the bounds the search used
        space.resolve_reference(ref["metrics"])
    recs = study_records(study)
    front = {r.number for r in front_of(space, recs)}
    for r in recs:
        r.pareto = r.number in front
    return recs
