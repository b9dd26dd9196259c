"""The study store: everything a search keeps, in one Optuna study, through Optuna's public API.

A search's state lives in an Optuna study (sqlite by default, any database Optuna supports), so
several workers (processes, Ray drivers, machines sharing a database) and a resumed search read
and write one truth. :class:`StudyStore` is the only place that knows how autoeff's facts map
onto the study:

- **records**: each trial's :class:`~autoeff.search.record.TrialRecord` (user attr
  ``autoeff.record``), read back by :func:`study_records` / :func:`load_records`;
- **claims**: a worker counts finished and claimed trials and asks for the next one under the
  study's claim lock (:mod:`autoeff.search.locks`), so together the workers finish exactly
  ``n_trials``; trials left RUNNING by a dead process on this host are failed (``interrupted``)
  and their candidates enqueued again;
- **twins**: a re-proposal of a tried candidate is answered from its twin (status
  ``duplicate``, not counted);
- **the reference**: the reference model's figures (relative constraints), measured once per
  study and kind of machine, the first stored wins;
- **rung points**: early stopping's points per rung (user attrs ``autoeff.rung.<i>``, with
  ``autoeff.rung_learned.<i>``), judged by :class:`StudyRungJudge` in whatever process or machine
  a trial runs, and read back by the sampler (:func:`rung_model_proposal`);
- **finalists**: trials a strategy adds after the search (one-shot), run once each;
- **the space fingerprint**: a resumed study with another space (or other objectives) is refused
  with one ConfigError naming the keys that changed.

Only public Optuna API is used: the store creates the storage object itself
(``optuna.storages.RDBStorage``) and hands it to ``optuna.create_study``, so it holds a public
reference to it; trial ids come from ``BaseStorage.get_trial_id_from_study_id_trial_number``.

Study-level settings: multi-objective (accuracy max, latency min, memory min by default), seeded;
TPE by default (multivariate, grouped: the space is conditional), NSGA-II or random selectable.
Constraints go to the sampler through ``Trial.set_constraint``, so infeasible trials never enter
the front. Optuna cannot prune multi-objective trials through ``report``; a trial stopped early is
told PRUNED without values (samplers treat it as a bad region, its record says why).

The sampler learns from the rungs too (``search.early_stopping.inform_sampler``, TPE): until
``startup_trials`` (or TPE's 10) trials have finished the full budget, a proposal comes from a TPE
fitted to the points of the highest rung that holds that many trials, at least one of which has
learned (BOHB's rule, Falkner et al. 2018, on Optuna's multi-objective TPE): an in-memory study
with one trial per rung point (its values are the rung's point; one that has not learned is
infeasible there), the infeasible architectures with their constraints, and the trials stopped
before that rung as pruned. That study is the sampler's model only: the search's study keeps its
complete trials full-budget, and the proposal enters it as an enqueued trial
(``autoeff.proposed_by`` says which rung proposed it). See :func:`rung_model_proposal`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

import optuna
from optuna.trial import TrialState

from ..errors import ConfigError
from ..isolation import gate
from .locks import study_lock
from .multifidelity import decide
from .record import DUPLICATE, TrialRecord
from .space import Space, flatten
from .stores import sqlite_path
from .strategy import ANSWERED

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
FAIL_REASON = "autoeff.fail_reason"
RUNG = "autoeff.rung."  # user attr prefix: the trial's point at rung i (objective order)
LEARNED = "autoeff.rung_learned."  # user attr prefix: whether that point showed learning (learned_first)
PROPOSED_BY = "autoeff.proposed_by"  # user attr: which model proposed the trial (see rung_model_proposal)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
REFERENCE = "autoeff.reference"  # study user attr: the reference model's figures (relative constraints)
FINALIZING = "autoeff.finalizing"  # study system attr: the worker writing the front right now
SPACE = "autoeff.space"  # study user attr: the space's fingerprint (Space.fingerprint), compared on resume
SPACE_SPEC = "autoeff.space_spec"  # study user attr: what the fingerprint covers, key by key (to name changes)
MAX_DUPLICATES = 25  # consecutive already-tried proposals before the space counts as exhausted
RUNG_MODEL_TRIES = 3  # the rung model's proposals per claim that may be twins before the sampler proposes


def space_spec(space: Space) -> Dict[str, str]:
    """What :meth:`Space.fingerprint` covers, one short hash per key (``space.<dimension>``,
    ``objectives.<name>``, the fixed config's dotted keys, ``attention.per_layer``): a resumed
    study with another fingerprint names the keys that changed."""

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
    """The space's sampling interface (:meth:`Space.sample`) over an Optuna trial."""

    def __init__(self, trial: optuna.Trial):
        self.t = trial

    def categorical(self, name, choices):
        return self.t.suggest_categorical(name, choices)

    def int(self, name, low, high, *, log, step):
        return self.t.suggest_int(name, low, high, log=log, step=1 if log else step)

    def float(self, name, low, high, *, log, step):
        return self.t.suggest_float(name, low, high, log=log, step=None if log else step)


def worker_id() -> str:
    """This process, as the study records who runs a trial: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def alive(worker: str) -> bool:
    """Whether a worker (:func:`worker_id`) still runs; another machine's is assumed alive."""
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


class Claim(NamedTuple):
    """What :meth:`StudyStore.claim` hands a scheduler: ``trial`` None when nothing is left to
    claim, with ``why`` = "done", "claimed" (other workers hold the rest) or "exhausted";
    ``record`` set when sampling itself failed (nothing to run: tell it)."""

    trial: Optional[optuna.Trial]
    params: Dict[str, Any]
    record: Optional[TrialRecord]
    why: str


class StudyStore:
    """One search's study (see the module docstring). Creating it creates or loads the study by
    name, under the claim lock (several workers may start at once), and checks that a resumed
    study was made for the same objectives and space."""

    def __init__(self, space: Space):
        self.space = space
        s = space.search
        _sqlite_dir(s.storage)
        with study_lock(s.storage, s.study_name):  # several workers may create the tables and the study at once
            self.storage = optuna.storages.RDBStorage(s.storage)
            self.study = optuna.create_study(study_name=s.study_name, storage=self.storage,
                                             directions=space.directions, sampler=self._sampler(),
                                             load_if_exists=True)
        self.study_id = self.storage.get_study_id_from_name(s.study_name)
        self._asked = self._n_trials()  # trials in the study after this process's last ask
        if self._asked:  # resumed: a fresh stream, or a seeded sampler repeats its old proposals
            self.study.sampler = self._sampler(seed_offset=self._asked)
        self._check_resumed()

    # ---- the study itself -------------------------------------------------------------------
    def _check_resumed(self) -> None:
        space, s = self.space, self.space.search
        stored = [d.name.lower() for d in self.study.directions]
        if stored != [d.lower() for d in space.directions]:
            raise ConfigError(
                f"study '{s.study_name}' in {s.storage} was created with directions {stored}; "
                "use another search.study_name for different objectives",
                file=space.file, key="objectives", value=space.objective_names, has_value=True)
        attrs = self.study.user_attrs
        stored_fp = attrs.get(SPACE)
        if stored_fp and stored_fp != space.fingerprint():
            changed = changed_keys(attrs.get(SPACE_SPEC), space_spec(space))
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
        """The study's claim lock (see :mod:`autoeff.search.locks`), for other one-at-a-time work."""
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

    def _n_trials(self) -> int:
        return len(self.study.get_trials(deepcopy=False))

    def trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` of this study (what a worker's own connection to
        the storage addresses it by)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def _set_trial_system_attr(self, number: int, key: str, value: Any) -> None:
        self.storage.set_trial_system_attr(self.trial_id(number), key, value)

    def _set_constraints(self, trial: optuna.Trial, violations: Sequence[float]) -> None:
        for c, v in zip(self.space.constraints, violations):
            trial.set_constraint(c.text, float(v))

    # ---- records -------------------------------------------------------------------------
    def records(self) -> List[TrialRecord]:
        """One record per trial, in trial order (interrupted ones included)."""
        return study_records(self.study)

    def save_remeasured(self, rec: TrialRecord) -> None:
        """Keep a front candidate's re-measured figures (applied by :func:`study_records`)."""
        d = dict(self.study.user_attrs.get(REMEASURED, {}))
        d[str(rec.number)] = {"metrics": rec.metrics, "values": rec.values, "violations": rec.violations}
        self.study.set_user_attr(REMEASURED, d)

    def save_note(self, markdown: str) -> bool:
        """A Markdown note on the study for Optuna Dashboard's users (see
        :class:`autoeff.search.presenters.DashboardNote`); False when optuna-dashboard is not
        installed or the note could not be saved."""
        try:
            from optuna_dashboard import save_note
        except ImportError:
            return False
        try:
            save_note(self.study, markdown)
        except Exception:  # a note is a courtesy: never fail a finished search over it
            return False
        return True

    # ---- claims ----------------------------------------------------------------------------
    def recover_interrupted(self, log) -> List[int]:
        """Fail and re-enqueue trials left RUNNING by a dead process on this host."""
        redo = []
        for ft in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = ft.system_attrs.get(WORKER) or ""
            if worker and alive(worker):
                continue
            self._set_trial_system_attr(ft.number, INTERRUPTED, True)
            self.study.tell(ft.number, state=TrialState.FAIL, skip_if_finished=True)
            if FINALIST_OF in ft.user_attrs:  # the finalists pass runs it again
                continue
            self.study.enqueue_trial(dict(ft.params), user_attrs={RETRY_OF: ft.number}, skip_if_exists=False)
            redo.append(ft.number)
        if redo:
            log(f"resuming: trial(s) {redo} were interrupted; their candidates run again")
        return redo

    def count(self) -> Tuple[int, int]:
        """(finished trials that count towards ``n_trials``: not interrupted, not re-proposals,
        not finalists; trials other live workers have claimed and are running)."""
        done = running = 0
        for ft in self.study.get_trials(deepcopy=False, states=(*FINISHED_STATES, TrialState.RUNNING)):
            if FINALIST_OF in ft.user_attrs:
                continue
            if ft.state == TrialState.RUNNING:
                worker = ft.system_attrs.get(WORKER) or ""
                if ft.system_attrs.get(CLAIMED) and (not worker or alive(worker)):
                    running += 1
                continue
            dup = (ft.user_attrs.get(RECORD) or {}).get("status") == DUPLICATE
            if not ft.system_attrs.get(INTERRUPTED) and not dup:
                done += 1
        return done, running

    def done(self) -> int:
        """Finished trials that count towards ``n_trials``."""
        return self.count()[0]

    def others_running(self) -> bool:
        """Whether live workers still run claimed trials of this study."""
        return self.count()[1] > 0

    def _ask(self) -> optuna.Trial:
        trial = self.study.ask()
        self._asked = self._n_trials()
        self._set_trial_system_attr(trial.number, WORKER, worker_id())
        return trial

    def claim(self, log) -> Claim:
        """Under the study's claim lock: recover trials of dead workers, count finished and claimed
        trials, and if there is room ask for the next candidate (re-proposals of tried candidates
        are answered from their twins and do not count). See :class:`Claim`."""
        n = self.space.search.n_trials
        # sampling is work too (TPE can take a while). Lock order, everywhere: the machine's work
        # lock, then the study's claim lock (never the other way round: no deadlock with a
        # measurement waiting for this process's work)
        with gate().work(), self.exclusive():
            self.recover_interrupted(log)
            done, running = self.count()
            if done >= n:
                return Claim(None, {}, None, "done")
            if done + running >= n:
                return Claim(None, {}, None, "claimed")
            for _ in range(MAX_DUPLICATES):
                if self._n_trials() != self._asked:  # another worker asked since: a fresh stream
                    self.study.sampler = self._sampler(seed_offset=self._n_trials())
                proposal = self._rung_proposal(log)
                if proposal is not None:
                    self.study.enqueue_trial(proposal[0], user_attrs={PROPOSED_BY: proposal[1]}, skip_if_exists=False)
                trial = self._ask()
                try:
                    params = self.space.sample(_OptunaSuggest(trial))
                except Exception as e:  # a sampler problem: record and go on
                    rec = TrialRecord(number=trial.number, status="failed", reason=f"sampling failed: {e}")
                    self._set_trial_system_attr(trial.number, CLAIMED, True)
                    return Claim(trial, {}, rec, "")
                twin = self.twin(params)
                if twin is None:
                    self._set_trial_system_attr(trial.number, CLAIMED, True)
                    return Claim(trial, params, None, "")
                self.tell_duplicate(trial, twin, params)
            log(f"the sampler proposed {MAX_DUPLICATES} already-tried candidates in a row: "
                "the space looks exhausted, stopping early")
            return Claim(None, {}, None, "exhausted")

    def _rung_proposal(self, log) -> Optional[Tuple[Dict[str, Any], str]]:
        """A new candidate from :func:`rung_model_proposal`, or None (the study's own sampler
        proposes). The rung model exploits: it tends to re-propose its best point, a candidate
        already tried; after ``RUNG_MODEL_TRIES`` such twins the study's sampler proposes instead
        (so a chain of re-proposals cannot end the search as an exhausted space)."""
        seed = self.space.search.seed + self._n_trials()
        for k in range(RUNG_MODEL_TRIES):
            try:
                proposal = rung_model_proposal(self.space, self.study, seed=seed + 7919 * k)
            except Exception as e:  # the model is an aid: without it the study's own sampler proposes
                log(f"the rung model could not propose ({type(e).__name__}: {e}); the sampler proposes")
                return None
            if proposal is None or self.twin(proposal[0]) is None:
                return proposal
        return None

    def tell(self, trial: optuna.Trial, rec: TrialRecord) -> None:
        """Store a finished trial's record and tell Optuna: COMPLETE with values (complete,
        infeasible, proxy), PRUNED without values (stopped early), FAIL otherwise."""
        trial.set_user_attr(RECORD, json.loads(json.dumps(rec.to_json(), default=float)))
        if rec.status in ANSWERED and rec.values is not None:
            self._set_constraints(trial, rec.violations)
            self.study.tell(trial, rec.values)
        elif rec.status == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            trial.set_user_attr(FAIL_REASON, rec.reason[:2000])
            self.study.tell(trial, state=TrialState.FAIL)

    # ---- twins -----------------------------------------------------------------------------
    def twin(self, params: Dict[str, Any]) -> Optional[optuna.trial.FrozenTrial]:
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

    def tell_duplicate(self, trial: optuna.Trial, twin: optuna.trial.FrozenTrial, params: Dict[str, Any]) -> None:
        """Answer a re-proposal from its twin: status ``duplicate``, the twin's values (PRUNED
        without values for a twin stopped early); not counted towards ``n_trials``."""
        rec = TrialRecord(number=trial.number, status=DUPLICATE, params=params,
                          values=list(twin.values) if twin.values is not None else None,  # a pruned twin has none
                          violations=list((twin.user_attrs.get(RECORD) or {}).get("violations", [])),
                          reason=f"same candidate as trial {twin.number}")
        trial.set_user_attr(RECORD, rec.to_json())
        if twin.state == TrialState.PRUNED:  # answered as its twin was: stopped early
            self.study.tell(trial, state=TrialState.PRUNED)
            return
        self._set_constraints(trial, rec.violations)
        self.study.tell(trial, list(twin.values))

    # ---- finalists -------------------------------------------------------------------------
    def finished_finalists(self) -> Set[Tuple[int, str]]:
        """(proxy trial number, role) of the strategy's extra trials already finished (not interrupted)."""
        return {(ft.user_attrs[FINALIST_OF], ft.user_attrs.get(ROLE, "finalist"))
                for ft in self.study.get_trials(deepcopy=False)
                if FINALIST_OF in ft.user_attrs and ft.state in (TrialState.COMPLETE, TrialState.FAIL)
                and not ft.system_attrs.get(INTERRUPTED)}

    def add_finalist(self, of: TrialRecord, role: str) -> optuna.Trial:
        """A new trial of ``of``'s candidate for the strategy (``role``: finalist, rank_check),
        not counted towards ``n_trials``."""
        self.study.enqueue_trial(of.params, user_attrs={FINALIST_OF: of.number, ROLE: role}, skip_if_exists=False)
        trial = self._ask()
        self.space.sample(_OptunaSuggest(trial))  # the enqueued values: the study records them as params
        return trial

    # ---- rung points ---------------------------------------------------------------------------
    def rung_judge(self, trial: optuna.Trial) -> Optional["StudyRungJudge"]:
        """The early-stopping judge of one trial (None without ``search.early_stopping``)."""
        if self.space.search.early_stopping is None:
            return None
        return StudyRungJudge(self.storage, self.study_id, self.trial_id(trial.number), trial.number, self.space)

    # ---- the reference ---------------------------------------------------------------------------
    def reference(self) -> Optional[Dict[str, Any]]:
        """The reference model's stored figures (read under the claim lock: another worker may be storing them)."""
        with gate().work(), self.exclusive():
            return self.study.user_attrs.get(REFERENCE)

    def keep_reference(self, mine: Dict[str, Any]) -> Dict[str, Any]:
        """Store ``mine`` as the study's reference unless another worker of this kind of machine
        stored one for the same reference config meanwhile (the first stored wins); returns the
        one kept."""
        with gate().work(), self.exclusive():  # (lock order: see claim)
            first = self.study.user_attrs.get(REFERENCE)
            if first is not None and first.get("fingerprint") == mine.get("fingerprint") and \
                    first.get("host_tag") == mine.get("host_tag"):
                return first
            self.study.set_user_attr(REFERENCE, mine)
            return mine

    # ---- who writes the front -------------------------------------------------------------------
    def begin_finalizing(self) -> bool:
        """Claim the writing of the front: False while other workers still run trials or another
        live worker is already writing it."""
        with self.exclusive():
            busy = self.storage.get_study_system_attrs(self.study_id).get(FINALIZING) or ""
            if self.others_running() or (busy and busy != worker_id() and alive(busy)):
                return False
            self.storage.set_study_system_attr(self.study_id, FINALIZING, worker_id())
            return True

    def end_finalizing(self) -> None:
        self.storage.set_study_system_attr(self.study_id, FINALIZING, "")


class StudyRungJudge:
    """The early-stopping judge of one trial, over the study's storage: at rung ``i`` it stores
    the trial's point (``autoeff.rung.<i>``), reads the points every other trial stored at that
    rung (any process, any machine sharing the storage; interrupted trials and re-proposals left
    out) and applies :func:`autoeff.search.multifidelity.decide`. A Ray worker builds one over
    its own connection to the storage."""

    def __init__(self, storage: optuna.storages.BaseStorage, study_id: int, trial_id: int, number: int,
                 space: Space):
        self.storage, self.study_id, self.trial_id, self.number = storage, study_id, trial_id, number
        self.directions = space.directions
        self.eta = space.search.early_stopping.eta
        names = space.objective_names
        self.seed_column = names.index("accuracy") if "accuracy" in names else 0

    def __call__(self, rung: int, step: int, point: List[float], learned: Optional[bool] = None) -> Optional[str]:
        key, lkey = f"{RUNG}{rung}", f"{LEARNED}{rung}"
        self.storage.set_trial_user_attr(self.trial_id, key, [float(v) for v in point])
        if learned is not None:
            self.storage.set_trial_user_attr(self.trial_id, lkey, bool(learned))
        recorded, flags = [], []
        for ft in self.storage.get_all_trials(self.study_id, deepcopy=False):
            if ft.number == self.number or key not in ft.user_attrs or ft.system_attrs.get(INTERRUPTED):
                continue
            if (ft.user_attrs.get(RECORD) or {}).get("status") == DUPLICATE:
                continue
            recorded.append(ft.user_attrs[key])
            flags.append(bool(ft.user_attrs.get(lkey, True)))  # a point judged without the flag: as learned
        d = decide(point, recorded, self.directions, self.eta, self.seed_column, learned=learned,
                   recorded_learned=flags if learned is not None else None)
        return None if d.keep else d.reason(self.eta)


def rung_model_proposal(space: Space, study: optuna.Study, seed: int) -> Optional[Tuple[Dict[str, Any], str]]:
    """The next candidate from a TPE fitted to rung points, or None when the study's own sampler
    should propose (see the module docstring): ``(params, "rung <i>: <n> trials")``.

    Used only with ``search.early_stopping.inform_sampler`` and the TPE sampler, and only while
    fewer than ``n_min`` (``startup_trials``, else 10) trials have finished the full budget; the rung
    is the highest one holding ``n_min`` non-duplicate points, at least one of which has learned."""
    s = space.search
    es = s.early_stopping
    if es is None or not es.inform_sampler or s.sampler != "tpe":
        return None
    n_min = s.startup_trials or 10
    trials = [ft for ft in study.get_trials(deepcopy=False, states=FINISHED_STATES)
              if (ft.user_attrs.get(RECORD) or {}).get("status") not in (None, DUPLICATE)
              and FINALIST_OF not in ft.user_attrs and not ft.system_attrs.get(INTERRUPTED)]
    done = [ft for ft in trials if (ft.user_attrs[RECORD].get("status") == "complete")]
    if len(done) >= n_min:
        return None  # enough full-budget trials: the study's own TPE
    rungs = sorted({int(k[len(RUNG):]) for ft in trials for k in ft.user_attrs if k.startswith(RUNG)}, reverse=True)
    for r in rungs:
        key, lkey = f"{RUNG}{r}", f"{LEARNED}{r}"
        at = [ft for ft in trials if key in ft.user_attrs]
        if len(at) >= n_min and any(ft.user_attrs.get(lkey, True) for ft in at):
            break
    else:
        return None
    shadow = optuna.create_study(directions=space.directions, sampler=optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, n_startup_trials=n_min))
    n_constraints = len(space.constraints)
    q = space.objective_names.index("accuracy")  # the rung signal's column (checked: early stopping needs it)
    worst = min(float(ft.user_attrs[key][q]) for ft in at)  # an infeasible architecture's quality there
    for ft in trials:
        rec = ft.user_attrs[RECORD]
        if key in ft.user_attrs:  # reached the rung: its point there (infeasible there if it had not learned)
            cons = {"learned": 0.0 if ft.user_attrs.get(lkey, True) else 1.0}
            cons.update({f"c{j}": 0.0 for j in range(n_constraints)})
            shadow.add_trial(optuna.trial.create_trial(params=ft.params, distributions=ft.distributions,
                                                       values=ft.user_attrs[key], constraints=cons))
        elif rec.get("status") == "infeasible" and ft.values is not None:  # the architecture breaks a constraint
            cons = {"learned": 0.0}
            cons.update({f"c{j}": float(v) for j, v in enumerate(rec.get("violations") or [0.0] * n_constraints)})
            values = [worst if j == q else float(v) for j, v in enumerate(ft.values)]
            shadow.add_trial(optuna.trial.create_trial(params=ft.params, distributions=ft.distributions,
                                                       values=values, constraints=cons))
        elif rec.get("status") in ("pruned", "failed"):  # stopped before this rung, or failed: a bad region
            shadow.add_trial(optuna.trial.create_trial(params=ft.params, distributions=ft.distributions,
                                                       state=TrialState.PRUNED if rec.get("status") == "pruned"
                                                       else TrialState.FAIL))
    trial = shadow.ask()
    params = space.sample(_OptunaSuggest(trial))
    return params, f"rung {r}: {len(at)} trials"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """A connection to an existing study storage that creates and migrates nothing (a reader,
    or a Ray worker next to its driver)."""
    return optuna.storages.RDBStorage(url, skip_compatibility_check=True, skip_table_creation=True)


def study_records(study: optuna.Study) -> List[TrialRecord]:
    """One record per trial of a study, in trial order (interrupted ones included; re-proposals
    answered from a twin left out), with re-measured figures applied."""
    remeasured = study.user_attrs.get(REMEASURED, {})
    out = []
    for ft in study.get_trials(deepcopy=False):
        raw = ft.user_attrs.get(RECORD)
        if raw and raw.get("status") == DUPLICATE:
            continue  # a re-proposal answered from its twin: not a trial of its own
        if raw:
            rec = TrialRecord.from_json(raw)
        else:
            rec = TrialRecord(number=ft.number, status="running", params=dict(ft.params))
        if ft.state == TrialState.FAIL and not raw:
            rec.status, rec.reason = "failed", ft.user_attrs.get(FAIL_REASON, "failed")
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
    from .front import front_of

    def missing() -> ConfigError:
        return ConfigError(f"no study named '{space.search.study_name}' in {space.search.storage}; run "
                           f"`autoeff search --space {space.file}` first", file=space.file, key="search.study_name",
                           value=space.search.study_name, has_value=True)

    storage: Any = space.search.storage
    path = sqlite_path(storage)
    if path is not None:
        if not path.exists() or path.stat().st_size == 0:
            raise missing()
        storage = open_storage(storage)
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
