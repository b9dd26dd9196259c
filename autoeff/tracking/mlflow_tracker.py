"""MLflow tracking: one parent run per search, one nested run per trial, the front at the end.

The same run structure whichever backend ran the search (it only sees TrialRecords):

- parent run ``search:<study>``, tags ``autoeff.role=search``, ``autoeff.study``, ``autoeff.storage``;
  at the end: metrics (front size, hypervolume, counts), artifacts ``pareto_front.csv``,
  ``pareto_front.md``, ``pareto_front.json``, ``trials.csv`` and the plot ``pareto_front.png``;
- nested run ``trial-<n>`` per trial (tag ``mlflow.parentRunId``), params = every sampled
  dimension plus the architecture (dotted names: ``attention.kind``, ``attention.linformer.rank``,
  ``model.depth``...), all metrics, tags ``autoeff.trial``, ``status``, ``fail_reason``,
  ``pareto=true|false``, artifact ``config.yaml`` (the trial's training config).

Resuming a search reuses the parent run and repairs what a kill left behind: a trial run left
RUNNING is closed as KILLED (interrupted) or completed from the study's record.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import yaml

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ..search.record import TrialRecord
from ..search.runner import SearchCallback
from ..search.space import Space, flatten
from .plots import front_figure
from .tables import front_rows, glossary_markdown, to_csv, to_text

logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" lines amid the progress

STATUS = {"complete": "FINISHED", "infeasible": "FINISHED", "proxy": "FINISHED", "pruned": "FINISHED",
          "failed": "FAILED", "interrupted": "KILLED"}


def _artifact_uri(folder: str) -> str:
    p = Path(folder).expanduser().resolve() / "mlflow"
    p.mkdir(parents=True, exist_ok=True)
    return p.as_uri()


def _sqlite_parent(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def trial_params(rec: TrialRecord) -> Dict[str, str]:
    out: Dict[str, str] = {}
    cfg = rec.config or {}
    for section in ("model", "attention"):
        for k, v in flatten({section: cfg.get(section, {})}).items():
            out[k] = str(v)
    for k, v in rec.params.items():
        out[k] = str(v)
    if cfg.get("tasks"):
        out["tasks"] = ",".join(t["name"] for t in cfg["tasks"])
    return out


class MLflowTracker(SearchCallback):
    def __init__(self, tracking_uri: str, experiment: str, artifacts: str = "mlartifacts"):
        _sqlite_parent(tracking_uri)
        self.uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            exp_id = self.client.create_experiment(experiment, artifact_location=_artifact_uri(artifacts))
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        self.parent_id: Optional[str] = None
        self.trial_runs: Dict[int, str] = {}

    # ---- helpers ------------------------------------------------------------------
    def _find_parent(self, space: Space) -> Optional[str]:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`autoeff.role` = 'search' and tags.`autoeff.study` = '{space.search.study_name}' "
                          f"and tags.`autoeff.storage` = '{space.search.storage}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def _children(self) -> Dict[int, Any]:
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'",
                                       max_results=5000)
        out = {}
        for r in runs:
            t = r.data.tags.get("autoeff.trial")
            if t is not None:
                out[int(t)] = r
        return out

    def _log_record(self, run_id: str, rec: TrialRecord) -> None:
        params = [Param(k, v[:6000]) for k, v in trial_params(rec).items()]
        existing = self.client.get_run(run_id).data.params
        params = [p for p in params if p.key not in existing]
        metrics = [Metric(k, float(v), 0, 0) for k, v in rec.metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        tags = [RunTag("status", rec.status), RunTag("autoeff.trial", str(rec.number))]
        if rec.reason:
            tags.append(RunTag("fail_reason" if rec.status != "infeasible" else "infeasible_reason", rec.reason[:5000]))
        if rec.checkpoint:
            tags.append(RunTag("checkpoint", str(Path(rec.checkpoint).resolve())))
        self.client.log_batch(run_id, tags=tags)
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=params[i:i + 100])
        for i in range(0, len(metrics), 1000):  # and 1000 metrics
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])
        if rec.config:
            self.client.log_text(run_id, yaml.safe_dump(rec.config, sort_keys=False), "config.yaml")
        self.client.set_terminated(run_id, STATUS.get(rec.status, "FAILED"))

    def _new_trial_run(self, number: int) -> str:
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number}",
                                     tags={"mlflow.parentRunId": self.parent_id, "autoeff.trial": str(number),
                                           "status": "running"})
        self.trial_runs[number] = run.info.run_id
        return run.info.run_id

    # ---- callbacks ----------------------------------------------------------------------
    def on_search_start(self, space: Space, records: Sequence[TrialRecord], info: Mapping[str, Any]) -> None:
        self.parent_id = self._find_parent(space)
        if self.parent_id is None:
            run = self.client.create_run(
                self.experiment_id, run_name=f"search:{space.search.study_name}",
                tags={"autoeff.role": "search", "autoeff.study": space.search.study_name,
                      "autoeff.storage": space.search.storage, "autoeff.backend": info.get("backend", ""),
                      "autoeff.space_file": str(space.file),
                      "mlflow.note.content": f"autoeff search of `{space.file}` (study `{space.search.study_name}`)."
                                             "\n\n## Metrics of the trial runs\n\n" + glossary_markdown()},
            )
            self.parent_id = run.info.run_id
            self.client.log_batch(self.parent_id, params=[
                Param("search.sampler", space.search.sampler), Param("search.n_trials", str(space.search.n_trials)),
                Param("search.seed", str(space.search.seed)),
                Param("objectives", ",".join(f"{o.name}:{o.direction}:{o.aggregate}" for o in space.objectives)),
                Param("constraints", ";".join(c.text for c in space.constraints) or "none"),
                Param("search.strategy", str(info.get("strategy", space.search.strategy))),
                Param("front_accuracy", str(info.get("front_accuracy", ""))[:6000]),
            ])
            try:
                self.client.log_artifact(self.parent_id, space.file)
            except Exception:
                pass
        else:
            self.client.update_run(self.parent_id, status="RUNNING")
        # repair what a killed process left behind
        children = self._children()
        for rec in records:
            run = children.get(rec.number)
            if rec.status == "running":
                continue
            if run is None:
                self._log_record(self._new_trial_run(rec.number), rec)
            elif run.info.status == "RUNNING" or run.data.tags.get("status") != rec.status:
                self._log_record(run.info.run_id, rec)
            self.trial_runs[rec.number] = (run.info.run_id if run else self.trial_runs[rec.number])

    def on_trial_start(self, number: int, params: Mapping[str, Any]) -> None:
        self._new_trial_run(number)

    def on_trial_end(self, rec: TrialRecord) -> None:
        run_id = self.trial_runs.get(rec.number) or self._new_trial_run(rec.number)
        self._log_record(run_id, rec)

    def on_search_end(self, space: Space, front: Sequence[TrialRecord], records: Sequence[TrialRecord],
                      summary: Mapping[str, float]) -> None:
        children = self._children()
        for rec in records:
            run = children.get(rec.number)
            if run is None:
                continue
            if rec.status == "complete":
                self.client.set_tag(run.info.run_id, "pareto", "true" if rec.pareto else "false")
            if rec.remeasured:  # the front's figures, measured again alone on the machine
                self.client.log_batch(run.info.run_id, metrics=[
                    Metric(k, float(v), 0, 1) for k, v in rec.metrics.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))])
                self.client.set_tag(run.info.run_id, "remeasured", "true")
        pid = self.parent_id
        self.client.log_batch(pid, metrics=[Metric(k, float(v), 0, 0) for k, v in summary.items()])
        rows = front_rows(space, front)
        self.client.log_text(pid, to_csv(rows), "pareto_front.csv")
        self.client.log_text(pid, to_text(space, front, markdown=True), "pareto_front.md")
        self.client.log_text(pid, json.dumps(rows, indent=1, default=str), "pareto_front.json")
        self.client.log_text(pid, to_csv(front_rows(space, records)), "trials.csv")
        fig = front_figure(space, records, front)
        self.client.log_figure(pid, fig, "pareto_front.png")
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.client.set_tag(pid, "front_trials", ",".join(str(r.number) for r in front))
        self.client.set_terminated(pid, "FINISHED")


def read_search(tracking_uri: str, experiment: str) -> Dict[str, Any]:
    """Parent and trial runs of an experiment (for tests and scripts)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {"parents": [], "trials": []}
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("autoeff.role") == "search"]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return {"parents": parents, "trials": trials, "client": client}
