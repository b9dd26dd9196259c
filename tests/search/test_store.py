"""The study store, a scheduler and its presenters, without training anything: claims count to
exactly ``n_trials``, re-proposals are answered from their twins (status ``duplicate``, not
counted, not listed), a dead worker's trial is interrupted and its candidate enqueued again,
the in-process scheduler tells its presenters every step in order, and the engine reaches no
private Optuna or Ray API."""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from autoeff.search.presenters import Presenter
from autoeff.search.record import STATUSES, TrialRecord
from autoeff.search.space import load_space
from autoeff.search.store import CLAIMED, INTERRUPTED, RECORD, RETRY_OF, WORKER, StudyStore, load_records

SEARCH = Path(__file__).resolve().parents[2] / "autoeff" / "search"


@pytest.fixture
def space(repo, tmp_path):
    return load_space(repo / "search_spaces" / "smoke.yaml",
                      ["search.n_trials=2", "search.sampler=random", "search.remeasure_front=false",
                       f"search.storage=sqlite:///{tmp_path}/study.db", f"search.artifacts={tmp_path}/art"])


def complete(space, number, params, acc):
    rec = TrialRecord(number=number, status="complete", params=dict(params),
                      metrics={"accuracy": acc, "latency_ms": 2.0 + number, "peak_memory_mb": 1.0})
    rec.score(space.objectives, space.constraints)
    return rec


def say(msg):
    pass


def test_claims_stop_at_n_trials_and_duplicates_do_not_count(space):
    store = StudyStore(space)
    for i in range(2):
        trial, params, rec, why = store.claim(say)
        assert trial is not None and rec is None and why == "" and params
        sys_attrs = store.storage.get_trial_system_attrs(store.trial_id(trial.number))
        assert sys_attrs[CLAIMED] is True and sys_attrs[WORKER].endswith(f":{os.getpid()}")
        store.tell(trial, complete(space, trial.number, params, 0.5 + 0.1 * i))
    assert store.claim(say).why == "done" and store.done() == 2

    first = store.study.get_trials(deepcopy=False)[0]
    params = first.user_attrs[RECORD]["params"]
    assert store.twin(params).number == first.number
    again = store.study.ask()
    store.tell_duplicate(again, first, params)
    told = store.study.get_trials(deepcopy=False)[again.number]
    assert told.state == TrialState.COMPLETE and list(told.values) == list(first.values)
    assert told.user_attrs[RECORD]["status"] == "duplicate" and "duplicate" in STATUSES
    assert store.done() == 2  # not counted
    assert [r.number for r in store.records()] == [0, 1]  # not listed
    assert [r.number for r in load_records(space) if r.pareto]  # the read-only path sees the same study


def test_a_dead_workers_trial_is_interrupted_and_its_candidate_enqueued(space):
    store = StudyStore(space)
    trial, params, _, _ = store.claim(say)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    store.storage.set_trial_system_attr(store.trial_id(trial.number), WORKER, f"{socket.gethostname()}:{dead}")
    assert store.count() == (0, 0)  # a dead worker's claim holds nothing
    said = []
    assert store.recover_interrupted(said.append) == [trial.number]
    assert said and "interrupted" in said[0]
    ft = store.study.get_trials(deepcopy=False)[trial.number]
    assert ft.state == TrialState.FAIL and ft.system_attrs[INTERRUPTED] is True
    assert store.records()[0].status == "interrupted"
    retry, params2, _, _ = store.claim(say)
    assert params2 == params  # the interrupted candidate runs again
    assert store.study.get_trials(deepcopy=False)[retry.number].user_attrs[RETRY_OF] == trial.number


class _Stub:
    """A strategy that scores candidates without training (accuracy grows with the trial number)."""

    name = "standalone"
    front_accuracy = "stub"

    def __init__(self, space):
        self.space = space

    def prepare(self, log, artifacts_dir):
        log("stub prepared")
        return {"stub_prepared": 1.0}

    def run_trial(self, params, number, *, artifacts_dir, log, progress=None, rung_judge=None):
        progress(1, 2, 0.5)
        return complete(self.space, number, params, 0.1 * (number + 1))

    def finalists(self, records):
        return []

    def summary(self, records):
        return {}


class _Recorder(Presenter):
    def __init__(self):
        self.calls = []

    def on_search_start(self, space, records, info):
        self.calls.append(("start", info["backend"], info["done"]))

    def on_trial_start(self, number, params, *, done=0, what=""):
        self.calls.append(("trial", number, done))

    def on_training_step(self, step, max_steps, loss):
        self.calls.append(("step", step, max_steps))

    def on_trial_end(self, record):
        self.calls.append(("end", record.number, record.status))

    def on_search_end(self, space, front, records, summary):
        self.calls.append(("finish", sorted(r.number for r in front), summary["stub_prepared"]))


def test_the_local_scheduler_tells_its_presenters_in_order(space):
    from autoeff.search.schedulers.local import LocalScheduler

    store = StudyStore(space)
    rec = _Recorder()
    result = LocalScheduler(store, _Stub(space)).run([rec])
    assert rec.calls == [("start", "optuna", 0),
                         ("trial", 0, 0), ("step", 1, 2), ("end", 0, "complete"),
                         ("trial", 1, 1), ("step", 1, 2), ("end", 1, "complete"),
                         ("finish", [r.number for r in sorted(result.front, key=lambda r: r.number)], 1.0)]
    assert [r.status for r in store.records()] == ["complete", "complete"]


def test_the_search_engine_uses_no_private_optuna_or_ray_api():
    private = re.compile(r"\._storage\b|\._trial_id\b|\._study_id\b|ray\._private|_CachedStorage|isinstance\([^)]*Progress")
    hits = [f"{p.relative_to(SEARCH)}:{i}" for p in sorted(SEARCH.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if private.search(line)]
    assert not hits, hits


def _rung_space(repo, tmp_path, *extra):
    return load_space(repo / "search_spaces" / "smoke.yaml",
                      ["search.n_trials=40", "search.sampler=tpe", "search.startup_trials=6",
                       "search.early_stopping={rungs: [0.5], signal: loss}", "search.remeasure_front=false",
                       f"search.storage=sqlite:///{tmp_path}/study.db", f"search.artifacts={tmp_path}/art", *extra])


def _stopped_at_rung(store, space, params, loss, learned, cost):
    """A trial of ``params`` stopped at rung 1 with validation loss ``loss`` (as the judge stores it)."""
    from autoeff.search.store import LEARNED, RUNG

    store.study.enqueue_trial(params)
    trial = store.study.ask()
    space.sample(_suggest(trial))
    trial.set_user_attr(f"{RUNG}1", [-loss, cost, cost])
    trial.set_user_attr(f"{LEARNED}1", learned)
    store.tell(trial, TrialRecord(number=trial.number, status="pruned", params=dict(params), reason="stopped"))
    return trial


def _suggest(trial):
    from autoeff.search.store import _OptunaSuggest

    return _OptunaSuggest(trial)


def _params(kind, width, depth=1):
    p = {"model.depth": depth, "model.width": width, "model.heads": 2, "attention.kind": kind}
    if kind == "linformer":
        p["attention.linformer.rank"] = 16
    return p


def test_the_sampler_learns_from_rung_points(repo, tmp_path):
    """Early stopping's rung points inform the proposals (BOHB's rule on a TPE over them): where
    only linformer trials learned at the rung, the rung model proposes linformer far more often
    than the 1 in 2 of a blind draw; it waits for enough points with some learning, and hands
    back to the study's own TPE once enough trials finished the full budget."""
    from autoeff.search.store import PROPOSED_BY, rung_model_proposal

    space = _rung_space(repo, tmp_path)
    store = StudyStore(space)
    assert rung_model_proposal(space, store.study, seed=0) is None  # nothing yet
    for i in range(6):  # six points, none learned: a rung that cannot tell quality yet
        _stopped_at_rung(store, space, _params("full", 32 if i % 2 else 64, 1 + i // 3), 1.30 + 0.001 * i, False, 1.0)
    assert rung_model_proposal(space, store.study, seed=0) is None
    for i in range(6):  # linformer learned; they cost more
        _stopped_at_rung(store, space, _params("linformer", 32 if i % 2 else 64, 1 + i // 3), 0.9 + 0.01 * i, True, 5.0)
    kinds = [rung_model_proposal(space, store.study, seed=s)[0]["attention.kind"] for s in range(20)]
    assert kinds.count("linformer") >= 18, kinds  # without the "learned" constraint: 15 of 20 here
    _, by = rung_model_proposal(space, store.study, seed=0)
    assert by == "rung 1: 12 trials"

    trial, params, rec, why = store.claim(say)  # the claim enqueues the model's proposal
    assert rec is None and trial.user_attrs[PROPOSED_BY] == "rung 1: 12 trials" and trial.params == params

    off = _rung_space(repo, tmp_path, "search.study_name=blind",
                      "search.early_stopping={rungs: [0.5], signal: loss, inform_sampler: false}")
    assert rung_model_proposal(off, store.study, seed=0) is None

    for i in range(6):  # six trials finished the full budget: the study's own TPE proposes again
        store.study.enqueue_trial(_params("linformer", 64, 2))
        t = store.study.ask()
        p = space.sample(_suggest(t))
        store.tell(t, complete(space, t.number, p, 0.5))
    assert rung_model_proposal(space, store.study, seed=0) is None


def test_the_rung_judge_keeps_the_learned_flag_and_ranks_learned_first(repo, tmp_path):
    """The judge stores each point's flag beside it (``autoeff.rung_learned.<i>``) and ranks a
    later point against the stored ones learned first: a cheap point that has not learned stops
    behind an expensive one that has (eta 2: one of two goes on)."""
    from autoeff.search.store import LEARNED, RUNG

    space = _rung_space(repo, tmp_path, "search.early_stopping={rungs: [0.5], eta: 2, signal: loss}")
    store = StudyStore(space)
    first, _, _, _ = store.claim(say)
    second, _, _, _ = store.claim(say)
    assert store.rung_judge(first)(1, 6, [-0.9, 5.0, 5.0], True) is None  # the first at a rung goes on
    stored = store.study.get_trials(deepcopy=False)[first.number].user_attrs
    assert stored[f"{RUNG}1"] == [-0.9, 5.0, 5.0] and stored[f"{LEARNED}1"] is True
    reason = store.rung_judge(second)(1, 6, [-1.3, 1.0, 1.0], False)
    assert reason and reason.startswith("has not learned yet")
    third, _, _, _ = store.claim(say)  # without flags (learned_first off) the cheap point is not dominated
    assert store.rung_judge(third)(1, 6, [-1.3, 1.0, 0.9], None) is None


def test_a_rung_model_that_insists_on_a_tried_candidate_hands_over_to_the_sampler(repo, tmp_path, monkeypatch):
    """The rung model exploits and may re-propose a tried candidate again and again; after
    RUNG_MODEL_TRIES twins in one claim the study's own sampler proposes (no chain of duplicates
    that would end the search as an exhausted space)."""
    import autoeff.search.store as store_mod

    space = _rung_space(repo, tmp_path)
    store = StudyStore(space)
    tried = _params("full", 32)
    _stopped_at_rung(store, space, tried, 1.0, True, 1.0)
    calls = []

    def insists(space_, study, seed):
        calls.append(seed)
        return dict(tried), "rung 1: 1 trials"

    monkeypatch.setattr(store_mod, "rung_model_proposal", insists)
    trial, params, rec, why = store.claim(say)
    assert len(calls) == store_mod.RUNG_MODEL_TRIES and len(set(calls)) == len(calls)  # a fresh seed each try
    assert rec is None and store_mod.PROPOSED_BY not in trial.user_attrs
    statuses = [(t.user_attrs.get(RECORD) or {}).get("status") for t in store.study.get_trials(deepcopy=False)]
    assert "duplicate" not in statuses and params != tried  # nothing enqueued and answered from its twin
