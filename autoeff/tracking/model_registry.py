"""`autoeff export --register NAME`: the chosen trial's model into the MLflow model registry.

The trial's checkpoint (trained with the search's budget) is logged with ``mlflow.pytorch`` into
the trial's own run (so the registered version links to it), with a signature and an input
example, registered and given an alias. Every exported form follows one serving contract
(``autoeff/model/serving.py``): ``logits = model(x, mask)``, both inputs required (``mask`` (B, N)
bool, True at real positions; all True without padding), the same inputs as the ONNX graph of
``autoeff export --onnx``. Load it with ``mlflow.pytorch.load_model("models:/NAME@ALIAS")``.

A multi-task model is registered once per task, each with its task's inputs and head: the first
task as ``NAME`` (the default) and every other task as ``NAME.<task>`` (one version each, the
same alias). A decoder is registered the same way: token ids and mask in, logits (B, N, vocab)
out (its prefill pass).

Each is saved as a ``torch.export`` graph (MLflow's "pt2": loads without autoeff, with a dynamic
batch dimension), traced with the families' traceable formulations (``attention/_traceable.py``:
Longformer and Reformer included; every built-in family traces), or, for an architecture that
cannot be traced (e.g. a plugin family), as the pickled ``ServingModel`` with the eager kernels
(autoeff must then be importable where it is loaded); the version's tag
``autoeff.serialization`` says which.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

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
    task: str = ""  # the task it serves
    also: List["Registered"] = field(default_factory=list)  # a multi-task model: the other tasks' models


def task_model_name(name: str, task: str, first: bool) -> str:
    """The registered name of one task's model: ``name`` for the first task, ``name.<task>`` else."""
    return name if first else f"{name}.{task}"


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


def _signature(x, mask, logits):
    """(x, mask) -> logits, each a tensor spec with a dynamic batch dimension."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    def spec(t, name):
        a = t.numpy()
        return TensorSpec(np.dtype(a.dtype), (-1, *a.shape[1:]), name)

    return ModelSignature(inputs=Schema([spec(x, "x"), spec(mask, "mask")]), outputs=Schema([spec(logits, "logits")]))


def _save_input_example(client: MlflowClient, info, x, mask) -> None:
    """The input example (x, mask) beside the logged model. MLflow's ``log_model`` saves none for
    a model of several inputs (it takes a tuple of arrays to trace the pt2 graph, and saves
    examples of named arrays only), so it is added to the logged model afterwards, as MLflow
    writes it for named tensors (``input_example.json``, listed in the MLmodel file).

    This uses MLflow's private ``mlflow.models.utils._save_example`` because MLflow 3 (checked on
    3.17) has no public way to save it: ``mlflow.pytorch.log_model`` and ``mlflow.models.Model.log``
    hand ``input_example`` to the same ``save_model``, where for ``serialization_format="pt2"`` a
    dict ``{"x": ..., "mask": ...}`` is refused (pt2 takes an array, a tensor or a tuple/list of
    them, to trace with) and a tuple ``(x, mask)`` is read as ``(data, params)`` by the example
    writer, which fails and is skipped (no example saved); ``ModelSignature`` holds the schema
    only; ``Model.saved_input_example_info`` is public but the example file's format is not
    (mlflow/mlflow#13931 asks for dicts of tensors in the pytorch flavor). If ``_save_example``
    goes away, registration still works: the model is logged before, only the example is lost."""
    import tempfile

    from mlflow.models import Model

    try:
        from mlflow.models.utils import _save_example
    except ImportError:  # a later MLflow without it: the model stays registered, without its example
        return
    if Model.load(info.model_uri).saved_input_example_info is not None:
        return
    meta = Model.load(info.model_uri)
    with tempfile.TemporaryDirectory() as d:
        _save_example(meta, {"x": x.numpy(), "mask": mask.numpy()}, d)
        meta.save(str(Path(d) / "MLmodel"))
        client.log_model_artifacts(info.model_id, d)


def register_trial_model(space: Space, rec: TrialRecord, name: str, alias: str = "chosen") -> Registered:
    """Log ``rec``'s trained model with a signature and input example, register it as ``name``
    (a multi-task model: one registered model per task, see the module's docstring) and point
    ``alias`` at the new versions. Returns the first task's; the others are in ``.also``."""
    import torch
    import mlflow.pytorch

    from ..attention._traceable import export_mode
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
    model.eval()

    uri = space.search.mlflow_uri
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    run_id = _trial_run(client, space, rec.number)
    torch_req = f"torch=={torch.__version__.split('+')[0]}"
    summary = (f"{run_name(rec)}: {arch_summary(rec)}, trial {rec.number} of study "
               f"'{space.search.study_name}' ({space.file}); " + ", ".join(
                   f"{k} {rec.metrics[k]:.4g}" for k in metric_names(view="summary")
                   if isinstance(rec.metrics.get(k), (int, float))))
    names = [task_model_name(name, s.name, i == 0) for i, s in enumerate(specs)]

    def register_one(i: int) -> Registered:
        spec, reg_name = specs[i], names[i]
        serving = ServingModel(model, spec.name).eval()  # the serving contract: (x, mask) -> logits
        x, mask = example_inputs(spec, batch=2)
        with torch.no_grad():
            logits = serving(x, mask)
        signature = _signature(x, mask, logits)
        artifact = "model" if i == 0 else f"model-{spec.name}"

        def log(fmt: str):
            # pt2 (torch.export): a traced graph that loads without autoeff and runs no pickled code;
            # pickle: the module itself (autoeff must be importable where it is loaded)
            reqs = [torch_req] if fmt == "pt2" else [torch_req, "autoeff"]
            return mlflow.pytorch.log_model(serving, name=artifact, signature=signature,
                                            input_example=(x.numpy(), mask.numpy()), registered_model_name=reg_name,
                                            pip_requirements=reqs, serialization_format=fmt)

        def log_any():
            try:
                with export_mode(serving):  # the families' traceable formulations, for torch.export
                    return log("pt2"), "pt2"
            except Exception:  # an architecture torch.export cannot trace: the module as it is (eager kernels)
                try:
                    return log("pickle"), "pickle"
                except MlflowException as e:  # MLflow refused the name or the store: the user's input
                    raise ConfigError(f"MLflow refused to register the model: {e.message}", key="--register",
                                      value=reg_name, has_value=True) from None

        if run_id is not None:
            with mlflow.start_run(run_id=run_id):
                info, fmt = log_any()
        else:  # a search run without MLflow: the model is logged on its own
            info, fmt = log_any()
        _save_input_example(client, info, x, mask)
        version = str(info.registered_model_version)
        client.set_registered_model_alias(reg_name, alias, version)
        others = [f"'{s.name}' as {n}" for s, n in zip(specs, names) if n != reg_name]
        client.update_model_version(reg_name, version, description=(
            f"{summary}; task '{spec.name}': logits = model(x, mask)"
            + (f"; the model's other tasks: {', '.join(others)}" if others else "")))
        for k, v in {"autoeff.study": space.search.study_name, "autoeff.trial": str(rec.number),
                     "autoeff.run_name": run_name(rec), "autoeff.task": spec.name,
                     "autoeff.tasks": ",".join(s.name for s in specs),
                     "autoeff.checkpoint": str(Path(rec.checkpoint).resolve()),
                     "autoeff.serialization": fmt}.items():
            client.set_model_version_tag(reg_name, version, k, v)
        return Registered(reg_name, version, alias, f"models:/{reg_name}@{alias}", run_id, fmt, spec.name)

    regs = [register_one(i) for i in range(len(specs))]
    if run_id is not None:
        client.set_tag(run_id, "autoeff.registered", ", ".join(f"{r.name} v{r.version} @{alias}" for r in regs))
    first = regs[0]
    first.also = regs[1:]
    return first
