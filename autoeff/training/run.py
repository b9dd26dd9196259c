"""`autoeff train`: train one exported config with its full budget and save a checkpoint."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict

import torch

from ..config import RunConfig, save_config
from ..model import build_model
from ..tasks import load_task, task_spec
from .fit import evaluate, fit


def train_config(cfg: RunConfig, out_dir: str, *, log: Callable[[str], None] = print,
                 progress=None) -> Dict[str, float]:
    """Train ``cfg``'s model from scratch; write ``model.pt`` (config + state_dict + metrics),
    ``metrics.json`` and ``config.yaml`` to ``out_dir``; return the metrics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = [task_spec(t) for t in cfg.tasks]
    log(f"loading {len(cfg.tasks)} task(s): {', '.join(s.name for s in specs)}")
    data = [load_task(t, cfg.data_dir) for t in cfg.tasks]
    model = build_model(cfg, specs)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"training {cfg.attention.kind} encoder ({n_params:,} parameters) for {cfg.train.max_steps} steps")
    fr = fit(model, data, cfg.train, progress=progress)
    val = evaluate(model, data, "val")
    test = evaluate(model, data, "test")
    metrics: Dict[str, float] = {"train_steps": float(fr.steps), "train_time_s": fr.seconds, "train_loss": fr.last_loss}
    for name in val:
        metrics[f"accuracy.{name}"] = val[name]
        metrics[f"test_accuracy.{name}"] = test[name]
    metrics["accuracy"] = sum(val.values()) / len(val)
    metrics["test_accuracy"] = sum(test.values()) / len(test)
    torch.save({"config": cfg.to_dict(), "state_dict": model.state_dict(), "metrics": metrics}, out / "model.pt")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    save_config(cfg, out / "config.yaml")
    return metrics


def load_checkpoint(path: str):
    """(model, RunConfig, metrics) from a ``model.pt`` written by `autoeff train` or a trial."""
    from ..config import parse_run_config

    blob = torch.load(path, weights_only=True)
    cfg = parse_run_config(blob["config"], file=str(path))
    model = build_model(cfg)
    model.load_state_dict(blob["state_dict"])
    return model.eval(), cfg, blob.get("metrics", {})
