"""The Ray Tune scheduler (``search.backend: ray``): the same space, study store, trial and
presenters as the in-process scheduler, on one machine or a cluster.

How it maps onto Tune, and the traps it handles:

- **The searcher is the Optuna study.** ``_StudySearcher`` (a Tune ``Searcher``) claims each
  trial from the same multi-objective study, with the same sampler and seed, through the study
  store's ``claim``/``tell`` (:class:`autoeff.search.store.StudyStore`: twins of tried
  candidates, constraints, PRUNED for early-stopped trials, interrupted trials re-run). Tune's own ``OptunaSearch`` is not used: it tells Optuna
  without constraints, turns a trial without values into PRUNED, keeps its own copy of the study
  in Tune's checkpoints, and knows nothing of re-proposals or the claim lock that keeps several
  workers to exactly ``n_trials``. The objective names and directions go to the searcher
  (``metric``/``mode`` lists), never to ``TuneConfig``, which would make the search single-objective.
- **One report per trial.** The trainable calls :func:`autoeff.search.objective.run_trial` (the
  function the in-process scheduler's strategy calls) and reports once, at the end: the record as JSON plus every
  objective (NaN where a failed or pruned trial has none), so Tune's strict metric checking is
  satisfied without switching it off. Rung decisions do not go through Tune (its schedulers
  assume one metric and stop a trial from outside, leaving partial values): the trial asks the
  study's rung judge itself (:class:`autoeff.search.store.StudyRungJudge`, over the worker's own
  connection to the storage) and records itself ``pruned``; the driver tells Optuna PRUNED.
- **Resources from the space file**: ``search.ray.cpus_per_trial`` / ``gpus_per_trial`` plus the
  custom resources in ``search.ray.resources`` (pin measurements to one kind of node); each trial pins
  torch's thread count to its CPUs (Ray sets ``OMP_NUM_THREADS=1`` in workers). Trials on one node
  measure inside the machine's measurement gate, like separate processes do.
- **Paths**: the storage URL and artifacts folder are made absolute and the workers keep the
  driver's working directory (``RAY_CHDIR_TO_TRIAL_DIR=0``), so every worker writes the same
  stores; on a cluster they must be a database server and a shared folder (see README).
- ``reuse_actors``: a worker process runs trial after trial, paying the torch/Lightning import once.
- **Local by default**: ``ray.init`` with the machine's CPUs (or ``search.ray.num_cpus``), no
  dashboard, a small object store, Ray's session folder under the run folder; Ray's processes
  share the driver's fate, and ``ray.shutdown`` runs on every exit. ``search.ray.address``
  (``--ray-address``) joins an existing cluster instead (left running at the end); a host:port
  where nothing accepts a TCP connection is refused at once (one ConfigError line) instead of
  waiting minutes in Ray's connection retries.
- **Measured where trials are measured**: the ``reference:`` model of relative budgets is
  measured by a Ray task with a trial's resources (the candidates' protocol, on a worker of the
  kind trials run on), as is the front's re-measurement on a cluster.
- ``search.timeout_s``: the searcher starts no trial after it (running ones finish), as in the
  in-process loop.
- **Resume**: re-run the same command. The Optuna study is the one source of truth: finished
  trials are kept, the killed driver's running trials are marked interrupted and run again.
  ``Tuner.restore`` is not used: it would replay Tune's own snapshot of the experiment, which
  lags the study (it is written every few seconds, the study at every tell), so a restored run
  could re-run trials the study already has or resurrect ones the study already failed, and it
  cannot serve several drivers or an in-process worker on the same study.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from ...isolation import gate
from ..front import SearchResult
from ..presenters import Presenter, Presenters
from ..record import TrialRecord
from ..space import Space
from ..store import StudyRungJudge, StudyStore, open_storage
from ..strategy_base import Strategy
from .base import CLAIM_POLL_S, Scheduler

RECORD_KEY = "autoeff_record"
PROBE_TIMEOUT_S = 10.0  # a Ray address that does not accept a TCP connection within this is refused
_MAX_TEMP_DIR = 40  # Ray's socket paths (<temp>/session_<date>_<pid>/sockets/plasma_store) must fit 107 bytes


def _abs_sqlite(url: str) -> str:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rest = url[len("sqlite:///"):]
        path, q, query = rest.partition("?")
        if path and path != ":memory:":
            return "sqlite:///" + str(Path(path).expanduser().resolve()) + (q + query)
    return url


def _temp_dir(space: Space) -> str:
    r = space.search.ray
    if r.temp_dir:
        return str(Path(r.temp_dir).expanduser().resolve())
    d = Path(space.search.artifacts).expanduser().resolve() / "ray"
    if len(str(d)) <= _MAX_TEMP_DIR:
        return str(d)
    key = hashlib.sha1(str(d).encode()).hexdigest()[:8]
    return str(Path(tempfile.gettempdir()) / f"autoeff-ray-{key}")


# ---- the worker side ---------------------------------------------------------------------
_STORAGES: Dict[str, Any] = {}


def _worker_storage(url: str):
    if url not in _STORAGES:
        _STORAGES[url] = open_storage(url)
    return _STORAGES[url]


def _ray_trial(config: Dict[str, Any], space: Space = None, storage: str = "", artifacts: str = "") -> None:
    """One trial in a Ray worker: pin torch's threads to the trial's CPUs, run the shared
    objective (rung decisions against the study), report the record once."""
    from ray import tune

    with gate().work():  # the first trial of a worker imports torch and Lightning: seconds of CPU
        import torch

        from ..objective import run_trial

    _pin_threads()  # Ray sets OMP_NUM_THREADS=1; a trial uses the CPUs it holds
    judge = None
    if space.search.early_stopping is not None:
        judge = StudyRungJudge(_worker_storage(storage), config["study_id"], config["trial_id"], config["number"],
                               space)
    rec = run_trial(space, config["params"], config["number"], artifacts_dir=artifacts, rung_judge=judge)
    rec.metrics["threads_train"] = float(torch.get_num_threads())
    values = dict(zip(space.objective_names, rec.values or []))
    report = {name: float(values.get(name, math.nan)) for name in space.objective_names}
    report[RECORD_KEY] = json.dumps(rec.to_json(), default=float)
    tune.report(report)


def _pin_threads() -> None:
    """torch's thread count = the CPUs Ray assigned to this task (Ray sets OMP_NUM_THREADS=1)."""
    import ray
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))


def _remote_machine(device: str) -> Dict[str, str]:
    from ...measure.host import machine_info

    return machine_info(device)


def _remote_reference(space: Space) -> Dict[str, Any]:
    """The reference model measured in a Ray worker, as a trial's worker would measure a candidate."""
    import ray

    with gate().work():
        from ..objective import measure_reference
    _pin_threads()
    ref = measure_reference(space)
    ref["measured_by"] = f"ray worker on node {ray.get_runtime_context().get_node_id()[:12]}"
    return ref


def _remote_remeasure(space: Space, rec: TrialRecord) -> TrialRecord:
    from ..objective import remeasure

    return remeasure(space, rec)


# ---- the driver side ---------------------------------------------------------------------
def _searcher_class():
    from ray.tune.search import Searcher

    class _StudySearcher(Searcher):
        """Tune's searcher over the Optuna study (see the module docstring)."""

        def __init__(self, scheduler: "RayScheduler", presenters: Presenters):
            space = scheduler.space
            super().__init__(metric=list(space.objective_names),
                             mode=["max" if d == "maximize" else "min" for d in space.directions])
            self.scheduler, self.presenters = scheduler, presenters
            self.pending: Dict[str, Any] = {}  # Tune trial id -> (optuna trial, started at)
            self._next_poll = 0.0
            self.started = time.monotonic()  # search.timeout_s counts from here (as the Optuna loop's)

        def suggest(self, trial_id: str):
            store, out = self.scheduler.store, self.presenters
            while True:
                if self.scheduler.timeout_reached(self.started, out):  # no new trials; running ones finish
                    return Searcher.FINISHED
                if time.monotonic() < self._next_poll:
                    return None
                trial, params, rec, why = store.claim(out)
                if trial is None:
                    if why == "claimed":
                        mine = len(self.pending)
                        if mine and mine >= store.count()[1]:
                            return Searcher.FINISHED  # every claimed trial left is one of ours
                        self._next_poll = time.monotonic() + CLAIM_POLL_S  # other workers hold the rest
                        return None
                    return Searcher.FINISHED
                with gate().work():
                    out.on_trial_start(trial.number, params, done=store.done())
                if rec is not None:  # sampling failed: nothing to run
                    self.finish_trial(trial, rec, time.perf_counter())
                    continue
                self.pending[trial_id] = (trial, time.perf_counter())
                return {"number": trial.number, "trial_id": store.trial_id(trial.number), "study_id": store.study_id,
                        "params": params}

        def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
            if trial_id not in self.pending:
                return
            trial, t0 = self.pending.pop(trial_id)
            raw = (result or {}).get(RECORD_KEY)
            if raw:
                rec = TrialRecord.from_json(json.loads(raw))
            else:
                rec = TrialRecord(number=trial.number, status="failed", params=dict(trial.params),
                                  reason="the Ray worker running this trial failed before reporting (killed, out of "
                                         "memory, or its node was lost); see the Ray logs"
                                         + (" [Tune reported an error]" if error else ""))
            self.finish_trial(trial, rec, t0)

        def finish_trial(self, trial, rec: TrialRecord, t0: float) -> None:
            """Tell the study and the presenters that a trial finished (started at ``t0``)."""
            rec.metrics["trial_wall_s"] = time.perf_counter() - t0
            with gate().work():  # bookkeeping is work too: no trial on this machine measures meanwhile
                self.scheduler.store.tell(trial, rec)
                self.presenters.on_trial_end(rec)

        def __getstate__(self):  # Tune pickles its config (tuner.pkl); the study is the state, not this
            return {"metric": self._metric, "mode": self._mode}

        def __setstate__(self, state):
            self._metric, self._mode = state["metric"], state["mode"]
            self.pending = {}

        def save(self, checkpoint_path: str) -> None:  # the study is the state: nothing to save
            pass

        def restore(self, checkpoint_path: str) -> None:
            pass

    return _StudySearcher


class RayScheduler(Scheduler):
    """Runs the study's trials as Ray Tune trials (see the module docstring)."""

    name = "ray"

    def __init__(self, store: StudyStore, strategy: Strategy):
        super().__init__(store, strategy)
        s = self.space.search
        self.worker_storage = _abs_sqlite(s.storage)
        self.artifacts = str(Path(s.artifacts).expanduser().resolve() / s.study_name)
        self._session_dir = ""
        self._reaper = None
        self._reaper_pipe: Optional[int] = None

    def _init_ray(self, log) -> bool:
        """Start a local Ray instance or join the cluster; True if this call connected."""
        import ray

        if ray.is_initialized():
            return False
        r = self.space.search.ray
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # no result files: ok
        kw: Dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                                  configure_logging=True)
        if r.address:
            self._probe_address(r.address)
            log(f"joining the Ray cluster at {r.address}")
            try:
                ray.init(address=r.address, **kw)
            except Exception as e:  # unreachable, or token authentication: one clear line, no traceback
                from ...errors import ConfigError

                first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                raise ConfigError(
                    f"cannot join the Ray cluster ({type(e).__name__}: {first[:300]}); is `ray start --head` running "
                    "there? A cluster with token authentication needs RAY_AUTH_MODE=token and its token "
                    "(RAY_AUTH_TOKEN or ~/.ray/auth_token) in this shell",
                    file=self.space.file, key="search.ray.address", value=r.address, has_value=True) from None
        else:
            tmp = _temp_dir(self.space)
            Path(tmp).mkdir(parents=True, exist_ok=True)
            ctx = ray.init(num_cpus=r.num_cpus or None, object_store_memory=r.object_store_mb * 2**20,
                           _temp_dir=tmp, **kw)
            self._start_reaper(ctx.address_info["session_dir"])
            log(f"started a local Ray instance ({int(ray.cluster_resources().get('CPU', 0))} CPUs, "
                f"session folder {self._session_dir})")
        return True

    def _probe_address(self, address: str) -> None:
        """Fail fast when nothing listens at ``host:port`` (``ray://host:port`` too): ``ray.init``
        would retry the GCS connection for minutes. One TCP connection attempt, at most
        :data:`PROBE_TIMEOUT_S` seconds; ``auto`` is left to Ray (it reads the local cluster's address file)."""
        import socket

        from ...errors import ConfigError

        hostport = address.split("://", 1)[-1].rstrip("/")
        host, sep, port = hostport.rpartition(":")
        if address == "auto" or not sep or not port.isdigit():
            return
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S):
                return
        except OSError as e:
            why = e.strerror or type(e).__name__
        raise ConfigError(
            f"no Ray cluster answers at {address} ({why}); start one there with `ray start --head --port={port}` "
            "(on that machine), or leave out --ray-address / search.ray.address for a local Ray instance",
            file=self.space.file, key="search.ray.address", value=address, has_value=True)

    def _start_reaper(self, session_dir: str) -> None:
        """A watcher that ends this instance's processes if the driver dies (see ``_reaper``);
        ``session_dir``: the instance's session folder (``ray.init(...).address_info``)."""
        import subprocess
        import sys

        self._session_dir = session_dir
        read_end, self._reaper_pipe = os.pipe()
        try:
            self._reaper = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_reaper.py")), self._session_dir,
                                             str(os.getpid())],
                                            stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True, close_fds=True)
        finally:
            os.close(read_end)

    def _stop_local_ray(self) -> None:
        """Shut the local instance down, end what it left behind, release the reaper."""
        import ray

        from ._reaper import end_processes_using

        ray.shutdown()
        if self._session_dir:
            end_processes_using(self._session_dir)
        if self._reaper_pipe is not None:
            os.close(self._reaper_pipe)
            self._reaper_pipe = None
        if self._reaper is not None:
            try:
                self._reaper.wait(timeout=10)
            except Exception:
                pass

    def _resources(self) -> Dict[str, float]:
        r = self.space.search.ray
        res = {"CPU": float(r.cpus_per_trial), **{str(k): float(v) for k, v in r.resources.items()}}
        if r.gpus_per_trial:
            res["GPU"] = float(r.gpus_per_trial)
        return res

    def _max_concurrent(self, res: Dict[str, float]) -> int:
        import ray

        if self.space.search.ray.max_concurrent:
            return self.space.search.ray.max_concurrent
        total = ray.cluster_resources()
        fits = [int(total.get(k, 0.0) // v) for k, v in res.items() if v > 0]
        return max(1, min(fits) if fits else 1)

    def run(self, presenters: Optional[Sequence[Presenter]] = None) -> SearchResult:
        os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # workers keep the driver's working directory
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the study and MLflow are the record
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C: stop now; the re-run resumes
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "60")
        out = Presenters(self.default_presenters() if presenters is None else presenters)
        old_term = signal.getsignal(signal.SIGTERM)
        if old_term in (signal.SIG_DFL, None):  # a terminated driver shuts Ray down on its way out
            signal.signal(signal.SIGTERM, _raise_interrupt)
        connected = False
        try:
            connected = self._init_ray(out)  # first: the reference model is measured on a worker
            self.start(out)
            self._tune(out)
            return self.finish(out)
        finally:
            if connected and self._session_dir:
                self._stop_local_ray()
            elif connected:
                import ray

                ray.shutdown()
            if old_term in (signal.SIG_DFL, None):
                signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def _tune(self, presenters: Presenters) -> None:
        from ray import tune

        space = self.space
        res = self._resources()
        trainable = tune.with_resources(
            tune.with_parameters(_ray_trial, space=space, storage=self.worker_storage, artifacts=self.artifacts),
            tune.PlacementGroupFactory([res]))
        searcher = _searcher_class()(self, presenters)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, reuse_actors=True,
                                        max_concurrent_trials=self._max_concurrent(res),
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=f"{space.search.study_name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
                storage_path=str(Path(self.artifacts) / "ray-tune"), verbose=0,
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
        )
        tuner.fit()
        for trial, _ in list(searcher.pending.values()):  # should not happen: Tune ended with trials unreported
            searcher.finish_trial(trial, TrialRecord(number=trial.number, status="failed", params=dict(trial.params),
                                                     reason="Ray Tune ended without a result for this trial"),
                                  time.perf_counter())

    def _remote_options(self) -> Dict[str, Any]:
        """``ray.remote`` options for a task with one trial's resources (so it lands on a node of
        the kind trials run on)."""
        res = self._resources()
        opts: Dict[str, Any] = {"num_cpus": res.pop("CPU"), "num_gpus": res.pop("GPU", 0.0)}
        if res:
            opts["resources"] = res
        return opts

    def reference_machine(self, device: str) -> Dict[str, str]:
        """The kind of machine trials are measured on: asked of a worker with a trial's resources."""
        import ray

        return ray.get(ray.remote(_remote_machine).options(**self._remote_options()).remote(device))

    def measure_reference(self) -> Dict[str, Any]:
        """The reference model measured like the candidates it judges: on a Ray worker, as a task
        with a trial's resources and thread count, not by the driver."""
        import ray

        return ray.get(ray.remote(_remote_reference).options(**self._remote_options()).remote(self.space))

    def remeasure_fn(self) -> Optional[Callable[[Space, TrialRecord], TrialRecord]]:
        """On a cluster, the front is re-measured on a node of the kind trials ran on; locally, here."""
        return self._remote_remeasure if self.space.search.ray.address else None

    def _remote_remeasure(self, space: Space, rec: TrialRecord) -> TrialRecord:
        """Re-measure a front candidate on a cluster node of the kind trials ran on (the
        ``search.ray.resources`` kind, when set), not on the driver's machine."""
        import ray

        fn = ray.remote(_remote_remeasure).options(**self._remote_options())
        return ray.get(fn.remote(space, rec))


def _trial_name(trial) -> str:
    return f"trial-{trial.config.get('number', trial.trial_id)}"


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def ray_available() -> Optional[str]:
    """None if Ray Tune imports, else why not."""
    try:
        import ray.tune  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the installation
        return f"{type(e).__name__}: {e}"
    return None
