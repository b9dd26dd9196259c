"""Export one point of a search as a self-contained training config."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..config import RunConfig, parse_run_config, save_config
from ..errors import ConfigError
from ..metrics import names as metric_names
from ..search.backends import load_records
from ..search.record import TrialRecord
from ..search.pareto import parse_rule, select
from ..search.space import Space, flatten, load_space, set_path


def choose(space: Space, records: Sequence[TrialRecord], *, trial: Optional[int] = None,
           rule: Optional[str] = None) -> TrialRecord:
    """The trial named by number, or the one a rule picks among feasible complete trials."""
    if (trial is None) == (rule is None):
        raise ConfigError("give exactly one of --trial N or --rule '...'", key="export")
    if trial is not None:
        by_num = {r.number: r for r in records}
        if trial not in by_num:
            raise ConfigError("no such trial in the study", key="--trial", value=trial,
                              allowed=sorted(by_num) or "none yet", has_value=True)
        rec = by_num[trial]
        if rec.status != "complete" or not rec.config:
            raise ConfigError(f"trial {trial} did not complete ({rec.status}: {rec.reason})", key="--trial",
                              value=trial, allowed=[r.number for r in records if r.status == "complete"], has_value=True)
        return rec
    _, metric, conds = parse_rule(rule, space.reference_metrics)  # ConfigError naming --rule
    # front points first, so that a tie on the rule's metric goes to the one that is not dominated
    pool = sorted((r for r in records if r.feasible and r.config), key=lambda r: (not r.pareto, r.number))
    known = sorted({k for r in pool for k in r.metrics})
    for name in [metric, *[c.metric for c in conds]]:
        if pool and name not in known:
            raise ConfigError("unknown metric in rule", key="--rule", value=name, allowed=known, has_value=True)
    i = select([r.metrics for r in pool], rule, space.reference_metrics)
    if i is None:
        raise ConfigError("no feasible completed trial satisfies the rule", key="--rule", value=rule, has_value=True)
    return pool[i]


#: sections whose validation needs the attention/task registries (and so torch)
_REGISTERED_SECTIONS = ("model", "attention", "tasks", "data_dir")


def exported_config(space: Space, rec: TrialRecord, notes: Optional[List[str]] = None) -> RunConfig:
    """The trial's config with the space's ``export:`` overrides (e.g. a full training budget).

    The exported config trains at its full step budget: the search's wall-clock cap
    (``train.max_time_s``, there to keep trials short) is dropped (set to 0) unless the
    ``export:`` section sets one itself; ``notes`` (if given) receives one line saying so.

    The trial's config was validated when it ran; when the overrides leave the architecture and
    the tasks alone, only the other sections are checked again, without importing torch.
    """
    data = json.loads(json.dumps(rec.config))
    overrides = flatten(space.export_overrides)
    for k, v in overrides.items():
        set_path(data, k, v)
    train = data.get("train") or {}
    cap = float(train.get("max_time_s") or 0.0)
    if cap > 0 and "train.max_time_s" not in overrides:
        train["max_time_s"] = 0.0
        if notes is not None:
            notes.append(f"train.max_time_s: the search's {cap:g} s wall-clock cap is dropped (set to 0): the exported "
                         f"config trains its full {train.get('max_steps', '?')} steps (set export.train.max_time_s "
                         "to keep a cap)")
    registered = any(k.split(".")[0] in _REGISTERED_SECTIONS for k in overrides)
    return parse_run_config(data, file=f"{space.file} (export)", registered=registered)


def export_point(space_path: str, overrides: Sequence[str] = (), *, trial: Optional[int] = None,
                 rule: Optional[str] = None, out: Optional[str] = None) -> Tuple[TrialRecord, Path, List[str]]:
    """Write the chosen trial's training config; returns (record, path, notes on what the export
    changed beyond the ``export:`` overrides, e.g. a dropped time cap)."""
    space = load_space(space_path, overrides, check=False)
    records = load_records(space)
    rec = choose(space, records, trial=trial, rule=rule)
    notes: List[str] = []
    cfg = exported_config(space, rec, notes)
    path = Path(out or f"{space.name}-trial{rec.number}.yaml")
    keep = metric_names(view="summary")  # the headline figures (autoeff/metrics.py)
    extra = {"exported_from": {"space": str(space.file), "study": space.search.study_name,
                               "storage": space.search.storage, "trial": rec.number, "pareto": rec.pareto,
                               "checkpoint": rec.checkpoint,
                               "metrics": {k: round(float(rec.metrics[k]), 6) for k in keep if k in rec.metrics}}}
    save_config(cfg, path, extra=extra)
    return rec, path, notes
