"""`register_trial_model` (autoeff export --register): one serving contract, ``model(x, mask)``,
as the ONNX graph; a multi-task model serves every task from the registry (the first as NAME,
the others as NAME.<task>), each with its own head; Longformer and Reformer are saved as
torch.export graphs (pt2) that load without autoeff; a decoder registers its prefill pass (token
ids in, logits out)."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("mlflow")

from autoeff.compress import build_deployed  # noqa: E402
from autoeff.config import parse_run_config, task_spec  # noqa: E402
from autoeff.model import example_inputs  # noqa: E402
from autoeff.search.record import TrialRecord  # noqa: E402


def _space(tmp_path, monkeypatch=None):
    if monkeypatch is not None:
        monkeypatch.chdir(tmp_path)  # MLflow's default artifact root (./mlruns) of a sqlite store
    search = SimpleNamespace(mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="reg", study_name="reg",
                             storage=f"sqlite:///{tmp_path / 'autoeff.db'}")
    return SimpleNamespace(search=search, file=str(tmp_path / "space.yaml"), name="reg")


def _record(tmp_path, data):
    cfg = parse_run_config(data)
    model = build_deployed(cfg)  # untrained weights are enough: the test compares with the same checkpoint
    path = tmp_path / "model.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    rec = TrialRecord(number=3, status="complete", config=data, checkpoint=str(path),
                      metrics={"accuracy": 0.5, "latency_ms": 1.0, "peak_memory_mb": 2.0})
    model.eval()
    return cfg, model, rec


def _padded(spec, batch, seed):
    x, mask = example_inputs(spec, batch=batch, seed=seed)
    mask[..., -5:] = False  # the last example's tail is padding
    if spec.input_kind == "tokens":
        x = x.masked_fill(~mask, 0)
    return x, mask


def test_multi_task_model_serves_every_task_from_the_registry(tmp_path, monkeypatch):
    import mlflow
    import mlflow.pytorch
    from mlflow.tracking import MlflowClient

    from autoeff.tracking.model_registry import register_trial_model

    data = {"model": {"width": 32, "heads": 2, "depth": 2, "dropout": 0.0},
            "attention": {"layers": [{"kind": "longformer", "longformer": {"window": 8, "global_tokens": 1}},
                                     {"kind": "reformer", "reformer": {"bucket_size": 8, "n_hashes": 2}}]},
            "tasks": [{"kind": "listops", "seq_len": 48, "min_len": 8, "max_depth": 3,
                       "n_train": 16, "n_val": 16, "n_test": 16},
                      {"kind": "image", "image_size": 16, "input": "patches", "patch": 4, "min_scale": 0.35, "n_train": 16, "n_val": 16, "n_test": 16}]}
    cfg, model, rec = _record(tmp_path, data)
    space = _space(tmp_path, monkeypatch)
    reg = register_trial_model(space, rec, "multi", "chosen")
    specs = [task_spec(t) for t in cfg.tasks]
    regs = [reg, *reg.also]
    assert [r.name for r in regs] == ["multi", f"multi.{specs[1].name}"]
    assert [r.task for r in regs] == [s.name for s in specs]
    # Longformer and Reformer trace with their export formulations: graphs, no pickled module
    assert [r.serialization for r in regs] == ["pt2", "pt2"]

    mlflow.set_tracking_uri(space.search.mlflow_uri)
    client = MlflowClient(tracking_uri=space.search.mlflow_uri)
    for r, spec in zip(regs, specs):
        mv = client.get_model_version_by_alias(r.name, "chosen")
        assert mv.tags["autoeff.task"] == spec.name and mv.tags["autoeff.serialization"] == "pt2"
        info = mlflow.models.get_model_info(r.model_uri)
        assert [i.name for i in info.signature.inputs.inputs] == ["x", "mask"]
        assert info.saved_input_example_info is not None
        example = mlflow.models.Model.load(r.model_uri).load_input_example()  # x and mask, named
        assert sorted(example) == ["mask", "x"] and example["mask"].dtype == bool
        assert info.signature.inputs.inputs[0].shape == (-1, *example_inputs(spec, 1)[0].shape[1:])
        served = mlflow.pytorch.load_model(r.model_uri)
        x, mask = _padded(spec, batch=3, seed=1)  # another batch size than the input example's (2)
        with torch.no_grad():
            got = served(x, mask)
            want = model(x, mask, task=spec.name)  # the eager kernels, this task's head
        assert got.shape == (3, spec.num_classes)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bits", [32, 16])
def test_registered_graph_loads_without_autoeff(tmp_path, monkeypatch, bits):
    """The pt2 model of a Reformer runs in a Python that cannot import autoeff."""
    from autoeff.tracking.model_registry import register_trial_model

    data = {"model": {"width": 32, "heads": 2, "depth": 1, "dropout": 0.0},
            "attention": {"kind": "reformer", "reformer": {"bucket_size": 8}},
            "tasks": [{"kind": "listops", "seq_len": 32, "min_len": 8, "max_depth": 3,
                       "n_train": 16, "n_val": 16, "n_test": 16}],
            "compress": {"bits": bits}}  # 16: a bf16 model serves fp32 logits
    cfg, model, rec = _record(tmp_path, data)
    space = _space(tmp_path, monkeypatch)
    reg = register_trial_model(space, rec, "alone")
    assert reg.serialization == "pt2" and reg.also == []
    spec = task_spec(cfg.tasks[0])
    x, mask = _padded(spec, batch=2, seed=4)
    torch.save({"x": x, "mask": mask}, tmp_path / "inputs.pt")
    probe = (
        "import sys, builtins, torch, mlflow, mlflow.pytorch\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name == 'autoeff' or name.startswith('autoeff.'):\n"
        "        raise ImportError('autoeff is not installed here')\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        f"mlflow.set_tracking_uri({space.search.mlflow_uri!r})\n"
        "m = mlflow.pytorch.load_model('models:/alone@chosen')\n"
        f"d = torch.load({str(tmp_path / 'inputs.pt')!r})\n"
        f"torch.save(m(d['x'], d['mask']), {str(tmp_path / 'out.pt')!r})\n"
        "assert not [k for k in sys.modules if k.startswith('autoeff')]\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")
    assert got.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(got, model(x, mask).float(), rtol=1e-4, atol=1e-5)


def test_decoder_registers_its_prefill_pass(tmp_path, monkeypatch):
    import mlflow
    import mlflow.pytorch

    from autoeff.tracking.model_registry import register_trial_model

    data = {"model": {"arch": "decoder", "width": 32, "heads": 4, "depth": 1, "dropout": 0.0},
            "attention": {"kind": "longformer", "longformer": {"window": 8, "global_tokens": 1}},
            "tasks": [{"kind": "mqar", "seq_len": 32, "n_pairs": 4, "vocab": 64,
                       "n_train": 16, "n_val": 16, "n_test": 16}]}
    cfg, model, rec = _record(tmp_path, data)
    space = _space(tmp_path, monkeypatch)
    reg = register_trial_model(space, rec, "lm")
    assert reg.serialization == "pt2"
    mlflow.set_tracking_uri(space.search.mlflow_uri)
    info = mlflow.models.get_model_info(reg.model_uri)
    spec = task_spec(cfg.tasks[0])
    ins, outs = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert [(i.name, str(i.type), i.shape) for i in ins] == [("x", "int64", (-1, 32)), ("mask", "bool", (-1, 32))]
    assert outs[0].shape == (-1, 32, spec.vocab_size)  # token ids in, logits out
    x, mask = example_inputs(spec, batch=3, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(mlflow.pytorch.load_model(reg.model_uri)(x, mask), model(x, mask),
                                   rtol=1e-4, atol=1e-5)
