"""`autoeff export --register NAME`: the chosen trial's model into the MLflow model registry.

The trial's checkpoint (trained with the search's budget) is logged with ``mlflow.pytorch`` into
the trial's own run (so the registered version links to it), with a signature and an input
example of the first task's shape, registered under NAME and given an alias. Load it with
``mlflow.pytorch.load_model("models:/NAME@ALIAS")``: a module whose ``forward(x)`` takes the
task's inputs (token ids or features) and returns logits. It is saved as a ``torch.export``
graph (MLflow's default "pt2": loads without autoeff), or, for an architecture that cannot be
traced, as the pickled ``ServingModel``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..errors import ConfigError
from ..metrics import names as metric_names
from ..search.record import TrialRecord
from ..search.space import Space
from .tables import arch_summary, run_name


@dataclass
class Registered:
    name: str
    version: str
    alias: str
    model_uri: str  # models:/NAME@ALIAS
    run_id: Optional[str]
    serialization: str  # "pt2" (torch.export) or "pickle"


def _trial_run(client: MlflowClient, space: Space, number: int) -> Optional[str]:
    exp = client.get_experiment_by_name(space.search.experiment)
    if exp is None:
        return None
    parents = client.search_runs([exp.experiment_id], filter_string=(
        f"tags.`autoeff.role` = 'search' and tags.`autoeff.study` = '{space.search.study_name}' "
        f"and tags.`autoeff.storage` = '{space.search.storage}'"), max_results=1)
    if not parents:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{parents[0].info.run_id}' and tags.`autoeff.trial` = '{number}'"),
        max_results=1)
    return runs[0].info.run_id if runs else None


def register_trial_model(space: Space, rec: TrialRecord, name: str, alias: str = "chosen") -> Registered:
    """Log ``rec``'s trained model with a signature and input example, register it as ``name``
    and point ``alias`` at the new version."""
    import torch
    import mlflow.pytorch
    from mlflow.models import infer_signature

    from ..compress import build_deployed
    from ..config import parse_run_config, task_spec
    from ..model import example_inputs
    from ..model.serving import ServingModel

    if not name.strip() or any(c in name for c in "/:"):  # MLflow's rule, checked before anything is logged
        raise ConfigError("a registered model's name cannot be empty or contain '/' or ':'", key="--register",
                          value=name, has_value=True)
    if not rec.checkpoint or not Path(rec.checkpoint).exists():
        raise ConfigError(f"trial {rec.number} has no checkpoint to register (looked for {rec.checkpoint or 'none'})",
                          key="--register", value=name, has_value=True)
    cfg = parse_run_config(rec.config, file=f"trial {rec.number}")
    specs = [task_spec(t) for t in cfg.tasks]
    model = build_deployed(cfg, specs)  # a compressed trial's checkpoint holds the deployed (compressed) model
    model.load_state_dict(torch.load(rec.checkpoint, weights_only=True)["state_dict"])
    spec = specs[0]
    serving = ServingModel(model, spec.name, tokens=spec.input_kind == "tokens").eval()
    x, _ = example_inputs(spec, batch=2)
    with torch.no_grad():
        logits = serving(x)
    signature = infer_signature(x.numpy(), logits.numpy())

    uri = space.search.mlflow_uri
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    run_id = _trial_run(client, space, rec.number)
    description = (f"{run_name(rec)}: {arch_summary(rec)}, trial {rec.number} of study "
                   f"'{space.search.study_name}' ({space.file}); " + ", ".join(
                       f"{k} {rec.metrics[k]:.4g}" for k in metric_names(view="summary")
                       if isinstance(rec.metrics.get(k), (int, float))) + f"; task '{spec.name}' inputs")
    torch_req = f"torch=={torch.__version__.split('+')[0]}"

    def log(fmt: str):
        # pt2 (torch.export): a traced graph that loads without autoeff and runs no pickled code;
        # pickle: the module itself (autoeff must be importable where it is loaded)
        reqs = [torch_req] if fmt == "pt2" else [torch_req, "autoeff"]
        return mlflow.pytorch.log_model(serving, name="model", signature=signature, input_example=x.numpy(),
                                        registered_model_name=name, pip_requirements=reqs,
                                        serialization_format=fmt)

    def log_any():
        try:
            return log("pt2"), "pt2"
        except Exception:  # e.g. an architecture torch.export cannot trace: keep the module as it is
            try:
                return log("pickle"), "pickle"
            except MlflowException as e:  # MLflow refused the name or the store: the user's input
                raise ConfigError(f"MLflow refused to register the model: {e.message}", key="--register",
                                  value=name, has_value=True) from None

    if run_id is not None:
        with mlflow.start_run(run_id=run_id):
            info, fmt = log_any()
    else:  # a search run without MLflow: the model is logged on its own
        info, fmt = log_any()
    version = str(info.registered_model_version)
    client.set_registered_model_alias(name, alias, version)
    client.update_model_version(name, version, description=description)
    for k, v in {"autoeff.study": space.search.study_name, "autoeff.trial": str(rec.number),
                 "autoeff.run_name": run_name(rec), "autoeff.checkpoint": str(Path(rec.checkpoint).resolve())}.items():
        client.set_model_version_tag(name, version, k, v)
    if run_id is not None:
        client.set_tag(run_id, "autoeff.registered", f"{name} v{version} @{alias}")
    client.set_model_version_tag(name, version, "autoeff.serialization", fmt)
    return Registered(name, version, alias, f"models:/{name}@{alias}", run_id, fmt)
