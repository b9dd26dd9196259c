"""MLflow tracking: one parent run per search, one nested run per trial, the front at the end.

The same run structure whichever backend ran the search (it only sees TrialRecords):

- the **experiment** is marked as a model-training experiment (``mlflow.experimentKind``), has a
  description, and a saved runs view ``autoeff`` (every trial flat, sorted by accuracy, the
  objectives, size, status and front columns chosen); `ui_link` is the address that opens it;
- parent run ``search:<study>`` (renamed at the end to say what it holds), tags
  ``autoeff.role=search``, ``autoeff.study``, ``autoeff.storage``, versions and machine; params
  (sampler, seed, objectives, constraints); artifacts: the space file and ``resolved_space.yaml``;
  at the end: metrics (front size, counts, best accuracy; ``hypervolume`` stepped by trial
  number), the description = what the search was + the front as a Markdown table, artifacts
  ``pareto_front.csv|md|json``, ``trials.csv``, ``front_table.json`` / ``trials_table.json``
  (MLflow's table view), ``pareto_front.png`` and ``pareto_front.html`` (interactive);
- nested run per trial, named for its model (``t017-linformer-k64-d4-w128-int8``), tag
  ``mlflow.parentRunId``; params = every sampled dimension plus the architecture (dotted names);
  all metrics; tags ``autoeff.trial``, ``status``, ``reason``, ``pareto=true|false``; artifact
  ``config.yaml``.

Resuming a search reuses the parent run and repairs what a kill left behind: a trial run left
RUNNING is closed as KILLED (interrupted) or completed from the study's record.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ..metrics import get as metric_def, names as metric_names
from ..search.record import TrialRecord
from ..search.front import hypervolume_history
from ..search.presenters import Presenter
from ..search.space import Space, flatten
from .plots import front_figure, html_page, interactive_figures
from .tables import (arch_summary, front_rows, glossary_markdown, placement_label, run_name, to_csv, to_table_json,
                     to_text)

logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" lines amid the progress

STATUS = {"complete": "FINISHED", "infeasible": "FINISHED", "proxy": "FINISHED", "pruned": "FINISHED",
          "failed": "FAILED", "interrupted": "KILLED"}
#: experiment tag read by MLflow 3 UIs: a model-training (not GenAI) experiment
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
#: the saved runs view autoeff writes (MLflow >= 3.x "saved views": experiment tags with this prefix)
VIEW_KEY = "autoeff"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def _artifact_uri(folder: str) -> str:
    p = Path(folder).expanduser().resolve() / "mlflow"
    p.mkdir(parents=True, exist_ok=True)
    return p.as_uri()


def _sqlite_parent(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def trial_params(rec: TrialRecord) -> Dict[str, str]:
    """A trial's params: the architecture and compression sections of its config (dotted names,
    e.g. ``attention.linformer.rank``), every sampled dimension, the tasks and a summary."""
    out: Dict[str, str] = {}
    cfg = rec.config or {}
    for section in ("model", "attention", "compress"):
        if isinstance(cfg.get(section), dict):
            for k, v in flatten({section: cfg[section]}).items():
                out[k] = str(v)
    for k, v in rec.params.items():
        out[k] = str(v)
    if cfg.get("tasks"):
        out["tasks"] = ",".join(t["name"] for t in cfg["tasks"])
    if cfg:
        out["architecture"] = arch_summary(rec)
        out["placement"] = placement_label(rec)
    return out


def _logged(rec: TrialRecord) -> Dict[str, Any]:
    """The metrics a trial run logs: a trial that was never trained logs no training figure (an
    old study stored accuracy 0.0 for it, which sorted it above trained ones)."""
    if rec.trained:
        return dict(rec.metrics)
    return {k: v for k, v in rec.metrics.items() if metric_def(k) is None or metric_def(k).untrained is None}


def _numeric(metrics: Mapping[str, Any]) -> Dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))}


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_tags() -> Dict[str, str]:
    """Versions and machine: latency and memory depend on them."""
    import autoeff
    from ..measure.host import cpu_model

    tags = {"versions.autoeff": autoeff.__version__, "versions.python": platform.python_version()}
    for dist in ("torch", "optuna", "ray", "mlflow", "pytorch-lightning"):
        tags[f"versions.{dist}"] = _version(dist)
    tags.update({"machine.cpu": cpu_model(), "machine.cpu_threads": str(os.cpu_count() or 0),
                 "machine.os": f"{platform.system()} {platform.release()}", "machine.arch": platform.machine()})
    try:
        import torch

        tags["machine.torch_threads"] = str(torch.get_num_threads())
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            tags["machine.gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(n))
            tags["versions.cuda"] = str(torch.version.cuda)
        else:
            tags["machine.gpu"] = "none"
    except Exception:  # torch missing or broken: the other tags still help
        tags["machine.gpu"] = "unknown"
    return tags


def resolved_space(space: Space) -> Dict[str, Any]:
    """The space as the search used it (file + overrides + defaults), as plain data."""
    dims = {}
    for d in space.dims:
        spec: Dict[str, Any] = {"type": d.type}
        if d.type == "categorical":
            spec["choices"] = list(d.choices)
        else:
            spec.update({"low": d.low, "high": d.high})
            if d.log:
                spec["log"] = True
            if d.step is not None:
                spec["step"] = d.step
        if d.when:
            spec["when"] = {k: list(v) for k, v in d.when.items()}
        dims[d.name] = spec
    return {"name": space.name, **json.loads(json.dumps(space.base, default=str)), "space": dims,
            "objectives": {o.name: {"direction": o.direction, "aggregate": o.aggregate} for o in space.objectives},
            "constraints": [c.label for c in space.constraints],
            **({"reference": {**space.reference, "measured": space.reference_metrics}} if space.reference else {}),
            "search": dataclasses.asdict(space.search), "export": space.export_overrides}


def view_state(space: Space) -> Dict[str, Any]:
    """The saved runs view: trials flat (sorting by a metric un-nests them), best accuracy first,
    the columns that matter chosen."""
    quality = "accuracy" if "accuracy" in space.objective_names else space.objective_names[0]
    metrics = [*space.objective_names, *[m for m in metric_names(view="table")
                                         if m not in space.objective_names and m != "proxy_accuracy"]]
    if len(space.base.get("tasks") or []) > 1:
        metrics += [f"accuracy.{t.get('name') or t.get('kind')}" for t in space.base["tasks"]]
    if space.search.strategy == "oneshot":
        metrics.insert(1, "proxy_accuracy")
    cols = [f"metrics.`{m}`" for m in metrics]
    cols += ["tags.`pareto`", "tags.`status`", "tags.`reason`", "params.`attention.kind`"]
    if space.per_layer:  # hybrids: which family each layer has, at a glance ('F S S G')
        cols.append("params.`placement`")
    return {"searchFilter": "", "orderByKey": f"metrics.`{quality}`",
            "orderByAsc": next(o.direction for o in space.objectives if o.name == quality) == "minimize",
            "selectedColumns": cols}


def ui_link(tracking_uri: str, experiment: str, address: str = UI_ADDRESS) -> Optional[str]:
    """The MLflow UI address that opens the experiment's runs in autoeff's saved view."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    return (f"{address.rstrip('/')}/#/experiments/{exp.experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")


class MLflowTracker(Presenter):
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
        self.experiment = experiment
        self.parent_id: Optional[str] = None
        self.trial_runs: Dict[int, str] = {}
        self.info: Dict[str, Any] = {}

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

    def _run_link(self, run_id: str) -> str:
        return f"#/experiments/{self.experiment_id}/runs/{run_id}"

    def _setup_experiment(self, space: Space) -> None:
        """Model-training kind, a description, and the saved runs view (refreshed every search:
        the columns follow the space's objectives and tasks)."""
        eid = self.experiment_id
        self.client.set_experiment_tag(eid, *EXPERIMENT_KIND)
        now = int(time.time() * 1000)
        envelope = {"name": "autoeff: trials by accuracy", "createdAt": now, "updatedAt": now,
                    "state": json.dumps(view_state(space))}
        self.client.set_experiment_tag(eid, VIEW_TAG_PREFIX + VIEW_KEY, json.dumps(envelope))
        desc = (f"autoeff architecture searches (space `{space.file}`). Each search is a parent run "
                "(`search:<study>`: its description holds the Pareto front, its artifacts the plots and "
                "tables); each trial is a nested run named for its model. The saved view "
                "**autoeff: trials by accuracy** (views menu above the runs) lists every trial with "
                "the objectives, size, status and front columns.")
        exp = self.client.get_experiment(eid)
        current = (exp.tags or {}).get("mlflow.note.content", "")
        if not current or current.startswith("autoeff "):  # never overwrite what a person wrote
            self.client.set_experiment_tag(eid, "mlflow.note.content", desc)

    def _log_record(self, run_id: str, rec: TrialRecord) -> None:
        params = [Param(k, v[:6000]) for k, v in trial_params(rec).items()]
        existing = self.client.get_run(run_id).data.params
        params = [p for p in params if p.key not in existing]
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in _numeric(_logged(rec)).items()]
        tags = [RunTag("status", rec.status), RunTag("autoeff.trial", str(rec.number)),
                RunTag("autoeff.role", "trial"), RunTag("mlflow.note.content", self._trial_note(rec))]
        if rec.reason:
            tags.append(RunTag("reason", rec.reason[:5000]))
            if rec.status in ("failed", "interrupted"):
                tags.append(RunTag("fail_reason", rec.reason[:5000]))
        tags += [RunTag(f"measured_on.{k}", str(v)[:5000]) for k, v in rec.machine.items() if v]
        if rec.checkpoint:
            tags.append(RunTag("checkpoint", str(Path(rec.checkpoint).resolve())))
        self.client.log_batch(run_id, tags=tags)
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=params[i:i + 100])
        for i in range(0, len(metrics), 1000):  # and 1000 metrics
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])
        if rec.config:
            self.client.log_text(run_id, yaml.safe_dump(rec.config, sort_keys=False), "config.yaml")
        self.client.update_run(run_id, name=run_name(rec))
        self.client.set_terminated(run_id, STATUS.get(rec.status, "FAILED"))

    @staticmethod
    def _trial_note(rec: TrialRecord) -> str:
        m = rec.metrics
        lines = [f"**{run_name(rec)}**: {arch_summary(rec) if rec.config else 'no config'}", "",
                 f"status: **{rec.status}**" + (f" ({rec.reason})" if rec.reason else "")]
        shown = [f"{k} {m[k]:.4g}" for k in metric_names(view="summary") if isinstance(m.get(k), (int, float))]
        if not rec.trained:
            shown.insert(0, "not trained")
        if shown:
            lines += ["", " | ".join(shown)]
        return "\n".join(lines)

    def _new_trial_run(self, number: int, params: Optional[Mapping[str, Any]] = None) -> str:
        name = run_name(TrialRecord(number=number, status="running", params=dict(params or {})))
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={"mlflow.parentRunId": self.parent_id, "autoeff.trial": str(number),
                                           "autoeff.role": "trial", "status": "running"})
        self.trial_runs[number] = run.info.run_id
        return run.info.run_id

    def _log_table(self, run_id: str, rows: Sequence[Dict[str, Any]], path: str) -> None:
        """What ``mlflow.log_table`` writes (the UI shows it in its table view), without its
        append-to-existing behaviour: a resumed search replaces the table."""
        self.client.log_text(run_id, json.dumps(to_table_json(rows), default=str), path)
        tag = json.loads(self.client.get_run(run_id).data.tags.get("mlflow.loggedArtifacts", "[]"))
        entry = {"path": path, "type": "table"}
        if entry not in tag:
            tag.append(entry)
            self.client.set_tag(run_id, "mlflow.loggedArtifacts", json.dumps(tag))

    # ---- callbacks ----------------------------------------------------------------------
    def on_search_start(self, space: Space, records: Sequence[TrialRecord], info: Mapping[str, Any]) -> None:
        self.info = dict(info)
        self._setup_experiment(space)
        self.parent_id = self._find_parent(space)
        if self.parent_id is None:
            run = self.client.create_run(
                self.experiment_id, run_name=f"search:{space.search.study_name}",
                tags={"autoeff.role": "search", "autoeff.study": space.search.study_name,
                      "autoeff.storage": space.search.storage, "autoeff.backend": info.get("backend", ""),
                      "autoeff.space_file": str(space.file),
                      "mlflow.note.content": self._description(space, [], [], {})},
            )
            self.parent_id = run.info.run_id
            self.client.log_batch(self.parent_id, params=[
                Param("search.sampler", space.search.sampler), Param("search.n_trials", str(space.search.n_trials)),
                Param("search.seed", str(space.search.seed)),
                Param("objectives", ",".join(f"{o.name}:{o.direction}:{o.aggregate}" for o in space.objectives)),
                Param("constraints", ";".join(c.label for c in space.constraints) or "none"),
                Param("search.strategy", str(info.get("strategy", space.search.strategy))),
                Param("front_accuracy", str(info.get("front_accuracy", ""))[:6000]),
            ])
            try:
                self.client.log_artifact(self.parent_id, space.file)
            except Exception:
                pass
        else:
            self.client.update_run(self.parent_id, status="RUNNING")
        self.client.log_batch(self.parent_id, tags=[RunTag(k, v[:5000]) for k, v in machine_tags().items()])
        if space.reference_metrics:  # what relative constraints were measured against
            now = int(time.time() * 1000)
            self.client.log_batch(self.parent_id, metrics=[Metric(f"reference.{k}", float(v), now, 0)
                                                           for k, v in space.reference_metrics.items()])
        self.client.log_text(self.parent_id, yaml.safe_dump(resolved_space(space), sort_keys=False),
                             "resolved_space.yaml")
        # repair what a killed process left behind
        children = self._children()
        for rec in records:
            run = children.get(rec.number)
            if rec.status == "running":
                continue
            if run is None:
                self._log_record(self._new_trial_run(rec.number, rec.params), rec)
            elif run.info.status == "RUNNING" or run.data.tags.get("status") != rec.status:
                self._log_record(run.info.run_id, rec)
            self.trial_runs[rec.number] = (run.info.run_id if run else self.trial_runs[rec.number])

    def on_trial_start(self, number: int, params: Mapping[str, Any], *, done: int = 0, what: str = "") -> None:
        self._new_trial_run(number, params)

    def on_trial_end(self, rec: TrialRecord) -> None:
        run_id = self.trial_runs.get(rec.number) or self._new_trial_run(rec.number, rec.params)
        self._log_record(run_id, rec)
        self._log_teacher(rec)

    def _log_teacher(self, rec: TrialRecord) -> None:
        """A distillation teacher is trained once per search: its figures (``teacher_*``) go on
        the parent run, from the first trial that reports them."""
        teacher = [Metric(k, float(v), 0, 0) for k, v in rec.metrics.items() if k.startswith("teacher_")]
        if teacher and self.parent_id and not getattr(self, "_teacher_logged", False):
            self.client.log_batch(self.parent_id, metrics=teacher)
            self._teacher_logged = True

    def on_search_end(self, space: Space, front: Sequence[TrialRecord], records: Sequence[TrialRecord],
                      summary: Mapping[str, float]) -> None:
        children = self._children()
        links = {}
        for rec in records:
            run = children.get(rec.number)
            if run is None:
                continue
            links[rec.number] = self._run_link(run.info.run_id)
            if rec.status == "complete":
                self.client.set_tag(run.info.run_id, "pareto", "true" if rec.pareto else "false")
            if rec.remeasured:  # the front's figures, measured again alone on the machine
                now = int(time.time() * 1000)
                self.client.log_batch(run.info.run_id, metrics=[
                    Metric(k, v, now, 1) for k, v in _numeric(rec.metrics).items()])
                self.client.set_tag(run.info.run_id, "remeasured", "true")
        pid = self.parent_id
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in summary.items() if k != "hypervolume"]
        # hypervolume of the front so far, stepped by trial number: the UI charts the search's progress
        metrics += [Metric("hypervolume", hv, now, n) for n, hv in hypervolume_history(space, records)]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(pid, metrics=metrics[i:i + 1000])
        rows = front_rows(space, front)
        all_rows = front_rows(space, records)
        self.client.log_text(pid, to_csv(rows), "pareto_front.csv")
        self.client.log_text(pid, to_text(space, front, markdown=True), "pareto_front.md")
        self.client.log_text(pid, json.dumps(rows, indent=1, default=str), "pareto_front.json")
        self.client.log_text(pid, to_csv(all_rows), "trials.csv")
        self._log_table(pid, rows, "front_table.json")
        self._log_table(pid, all_rows, "trials_table.json")
        fig = front_figure(space, records, front)
        self.client.log_figure(pid, fig, "pareto_front.png", save_kwargs={"dpi": 110})
        import matplotlib.pyplot as plt

        plt.close(fig)
        page = html_page(f"{space.name}: Pareto front", interactive_figures(space, records, front),
                         intro=f"<p class=\"muted\">{len(records)} trials, {len(front)} on the front. "
                               "Hover a point for its run; the front is circled.</p>")
        self.client.log_text(pid, page, "pareto_front.html")
        self.client.set_tag(pid, "front_trials", ",".join(str(r.number) for r in front))
        self.client.set_tag(pid, "mlflow.note.content", self._description(space, front, records, summary, links))
        self.client.update_run(pid, name=f"search:{space.search.study_name} ({len(records)} trials, "
                                         f"{len(front)} on the front)")
        self.client.set_terminated(pid, "FINISHED")

    def _description(self, space: Space, front: Sequence[TrialRecord], records: Sequence[TrialRecord],
                     summary: Mapping[str, float], links: Optional[Mapping[int, str]] = None) -> str:
        """The parent run's description: the front as a Markdown table first (what the collapsed
        description shows), then what the search was, how to export, the artifacts, the glossary."""
        tasks = ", ".join(f"{t.get('kind')} (seq_len {t.get('seq_len', '?')})" for t in space.base.get("tasks") or [])
        what = ["## What was searched", "",
                f"- space file: `{space.file}`; tasks: {tasks or 'default'}",
                f"- searched: {', '.join(f'`{d.name}`' for d in space.dims)}",
                "- objectives: " + ", ".join(f"{o.name} ({o.direction[:3]})" for o in space.objectives)
                + "; constraints: " + (", ".join(f"`{c.label}`" for c in space.constraints) or "none"),
                f"- {space.search.sampler} sampler, seed {space.search.seed}, {space.search.n_trials} trials, "
                f"{space.search.strategy} strategy"]
        if self.info.get("front_accuracy"):
            what.append(f"- the front's accuracy: {self.info['front_accuracy']}")
        head = f"autoeff search `{space.search.study_name}` of `{Path(space.file).name}`"
        if not records:
            return "\n".join([head, "", "_running: the front appears here when the search ends._", "", *what]) + "\n"
        counts = {s: sum(r.status == s for r in records) for s in ("proxy", "complete", "infeasible", "pruned", "failed")}
        counts = {k: v for k, v in counts.items() if v or k != "proxy"}
        out = [f"## Pareto front: {len(front)} of {len(records)} trials", "",
               head + ": " + ", ".join(f"{v} {k}" for k, v in counts.items())
               + (f"; hypervolume {summary['hypervolume']:.4g}" if "hypervolume" in summary else "") + ".", "",
               to_text(space, front, markdown=True, links=links) if front else "_no feasible trial_", "",
               "Export one: `autoeff export --space " + str(space.file) + " --trial N -o model.yaml` "
               "(add `--register NAME` to register its model in MLflow).", "",
               *what, "", "## Artifacts", "",
               "`pareto_front.html` (interactive plots), `pareto_front.png`, `front_table.json` / "
               "`trials_table.json` (table view), `pareto_front.csv`, `trials.csv`, the space file and "
               "`resolved_space.yaml`; the metric `hypervolume` is charted by trial.", "",
               "## Metrics of the trial runs", "",
               glossary_markdown({k for r in records for k in r.metrics} | set(space.objective_names))]
        return "\n".join(out)


def read_search(tracking_uri: str, experiment: str) -> Dict[str, Any]:
    """Parent and trial runs of an experiment (for tests and scripts)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {"parents": [], "trials": []}
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("autoeff.role") == "search"]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return {"parents": parents, "trials": trials, "client": client, "experiment": exp}
