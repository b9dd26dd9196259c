"""The distillation teacher: trained once, cached on disk, reused.

A teacher is identified by a fingerprint of its config (``compress.teacher`` of the run, see
``autoeff.compress.distill.teacher_config``), its training settings and its tasks' data, so
every trial of a search, a resumed search, and `autoeff train` of an exported config that
distills all reuse the same trained teacher. The cache folder
``<data_dir or $AUTOEFF_CACHE or ~/.cache/autoeff>/teachers/<fingerprint>/`` holds
``teacher.pt`` (config, state_dict, the teacher's logits on every training example of every
task) and ``metrics.json`` (its accuracy). Files are written atomically.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch

from ..compress.distill import SoftTargets, teacher_config, teacher_fingerprint_data
from ..config import RunConfig, aggregate, task_spec
from ..model import build_model
from ..tasks import get_task
from ..tasks.base import TaskData, cache_dir, content_hash
from .data import eval_batches
from .fit import evaluate, fit

log = logging.getLogger(__name__)
_LOADED: Dict[str, SoftTargets] = {}  # per process: a search's trials share one teacher


def teacher_dir(cfg: RunConfig) -> Path:
    """Where the teacher of ``cfg`` is (or will be) cached."""
    tcfg = teacher_config(cfg)
    prints = [get_task(t.kind).fingerprint(t.options_typed()) for t in tcfg.tasks]
    return cache_dir(cfg.data_dir) / "teachers" / content_hash(teacher_fingerprint_data(tcfg, prints))


@torch.inference_mode()
def _train_logits(model, data: Sequence[TaskData]) -> Dict[str, torch.Tensor]:
    model.eval()
    out = {}
    for t in data:
        rows = [model(b["x"], b["mask"], t.spec.name).float() for b in eval_batches(t, "train", 128)]
        out[t.spec.name] = torch.cat(rows)  # (n_train, C), row i = train example i
    return out


def _atomic_save(obj, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_or_train_teacher(cfg: RunConfig, data: Sequence[TaskData], *,
                          log_fn: Callable[[str], None] = lambda s: None) -> SoftTargets:
    """The soft targets of ``cfg``'s teacher: loaded from the cache, or trained now and cached."""
    folder = teacher_dir(cfg)
    key = str(folder)
    c = cfg.compress
    if key not in _LOADED:
        path = folder / "teacher.pt"
        blob = None
        if path.exists():
            try:
                blob = torch.load(path, weights_only=True)
            except Exception as e:  # a corrupt cache is retrained, never trusted
                log.warning("ignoring unreadable teacher cache %s (%s)", path, e)
        if blob is None:
            tcfg = teacher_config(cfg)
            specs = [task_spec(t) for t in tcfg.tasks]
            model = build_model(tcfg, specs)
            log_fn(f"training the distillation teacher (full attention, width {tcfg.model.width}, depth "
                   f"{tcfg.model.depth}, {tcfg.train.max_steps} steps); cached in {folder}")
            weights = {t.name: t.weight for t in tcfg.tasks}
            fr = fit(model, data, tcfg.train, weights=[weights[t.spec.name] for t in data])
            val = evaluate(model, data, "val")
            metrics = {"teacher_accuracy": aggregate(val, tcfg.train.aggregate, weights),
                       "teacher_params": float(sum(p.numel() for p in model.parameters())),
                       "teacher_train_time_s": fr.seconds, "teacher_steps": float(fr.steps)}
            if len(val) > 1:
                metrics.update({f"teacher_accuracy.{k}": v for k, v in val.items()})
            blob = {"config": tcfg.to_dict(), "state_dict": model.state_dict(), "logits": _train_logits(model, data),
                    "metrics": metrics}
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_save(blob, path)
            (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
        _LOADED[key] = SoftTargets(logits=blob["logits"], metrics=dict(blob["metrics"]))
    st = _LOADED[key]
    for t in data:
        if st.logits[t.spec.name].shape[0] != len(t.splits["train"]):
            raise RuntimeError(f"teacher cache {folder} does not match task {t.spec.name}'s training split")
    return SoftTargets(logits=st.logits, alpha=c.distill_alpha, temperature=c.distill_temperature, metrics=st.metrics)
