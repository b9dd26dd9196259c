"""The public API (autoeff/__init__.py, autoeff/api.py): what ``__all__`` promises exists, stays
cheap to import, builds fp32 and deployed models under one name, reads a finished study as the
CLI does, and the README's Python examples run as written."""
import json
import os
import pkgutil
import re
import shutil
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import autoeff

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pytorch_lightning", "lightning", "optuna", "mlflow", "ray")


def _python(code: str, cwd, timeout=600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_every_public_name_resolves_and_importing_stays_cheap(tmp_path):
    code = ("import sys, autoeff\n"
            "names = [n for n in autoeff.__all__ if getattr(autoeff, n) is None and n != '__version__']\n"
            f"print(names, sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    r = _python(code, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[] []", r.stdout
    assert len(set(autoeff.__all__)) == len(autoeff.__all__)
    assert set(autoeff.__all__) <= set(dir(autoeff))


def test_no_public_name_is_a_subpackage():
    """Python rebinds ``autoeff.<name>`` to a submodule when it is imported (DESIGN.md)."""
    subs = {m.name for m in pkgutil.iter_modules(autoeff.__path__)}
    assert not subs & set(autoeff.__all__), subs & set(autoeff.__all__)


def _cfg(**compress):
    return autoeff.load_config({"tasks": [{"kind": "listops", "seq_len": 32, "min_len": 8, "n_train": 64, "n_val": 16, "n_test": 16}],
                                "model": {"depth": 1, "width": 32, "heads": 2},
                                "attention": {"kind": "full"}, "compress": compress})


def test_load_config_takes_a_mapping_with_overrides_and_checks_it():
    cfg = autoeff.load_config({"tasks": [{"kind": "listops", "seq_len": 32, "min_len": 8}], "model": {"width": 32, "heads": 2}},
                              ["model.depth=3"])
    assert (cfg.model.depth, cfg.model.width) == (3, 32)
    with pytest.raises(autoeff.ConfigError, match="attention.kind"):
        autoeff.load_config({"attention": {"kind": "nope"}})


def test_create_model_fp32_and_deployed_under_one_name(tmp_path):
    import torch

    cfg = _cfg(bits=8)
    fp32 = autoeff.create_model(cfg)
    deployed = autoeff.create_model(cfg, deployed=True)
    q = lambda m: sorted(k for k in m.state_dict() if "parametrizations" in k)  # noqa: E731
    assert not q(fp32) and q(deployed)  # the deployed form stores int8 weights and scales
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        old = autoeff.build_model(cfg)  # the deprecated name: the deployed form
    assert any(issubclass(x.category, DeprecationWarning) for x in w)
    assert q(old) == q(deployed)

    # a checkpoint (as `autoeff train` saves it) loads into the deployed form only
    ref = autoeff.create_model(cfg, deployed=True)
    with torch.no_grad():
        for p in ref.parameters():
            if p.is_floating_point():  # the int8 weights stay as quantized
                p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "model.pt"
    torch.save({"config": cfg.to_dict(), "state_dict": ref.state_dict()}, path)
    loaded = autoeff.create_model(cfg, deployed=True, checkpoint=path).eval()
    x, mask = autoeff.example_inputs(autoeff.task_spec(cfg.tasks[0]), batch=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, mask), ref.eval()(x, mask), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(loaded(x, mask), deployed.eval()(x, mask), atol=1e-4)
    with pytest.raises(autoeff.ConfigError, match="deployed=True"):
        autoeff.create_model(cfg, checkpoint=path)
    # uncompressed: fp32 and deployed are the same model, same seed, same weights
    plain = _cfg()
    a, b = autoeff.create_model(plain), autoeff.create_model(plain, deployed=True)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


@pytest.fixture
def smoke_copy(smoke_store, tmp_path):
    """A private copy of the session's finished smoke search (its MLflow artifacts re-pointed),
    so a test may write next to its stores."""
    shutil.copytree(smoke_store["dir"], tmp_path, dirs_exist_ok=True)
    con = sqlite3.connect(tmp_path / "mlflow.db")
    src, dst = str(smoke_store["dir"]), str(tmp_path)
    con.execute("update experiments set artifact_location = replace(artifact_location, ?, ?)", (src, dst))
    con.execute("update runs set artifact_uri = replace(artifact_uri, ?, ?)", (src, dst))
    con.commit()
    con.close()
    return tmp_path


def test_load_study_reads_what_the_cli_reads(smoke_store, monkeypatch):
    d = smoke_store["dir"]
    monkeypatch.chdir(d)
    space = smoke_store["space"]
    study = autoeff.load_study(space)
    assert isinstance(study, autoeff.StudyResult) and isinstance(study, autoeff.SearchResult)
    assert len(study.records) == 4 and all(isinstance(r, autoeff.TrialRecord) for r in study.records)
    r = subprocess.run(smoke_store["cmd"] + ["pareto", "--space", space, "--format", "json"], cwd=d,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(row["trial"] for row in json.loads(r.stdout)) == sorted(t.number for t in study.front)
    assert [row["trial"] for row in study.rows()] == [row["trial"] for row in json.loads(r.stdout)]
    assert study.summary["n_complete"] == 4 and study.summary["front_size"] == len(study.front)
    assert study.summary["hypervolume"] == pytest.approx(study.hypervolume_history()[-1][1], rel=1e-9)
    best = study.select("highest accuracy with latency_ms <= 1000")
    assert best.metrics["accuracy"] == max(t.metrics["accuracy"] for t in study.records if t.feasible)
    assert study.trial(best.number) is best
    with pytest.raises(autoeff.ConfigError, match="no such trial"):
        study.trial(999)
    # read-only and light, as `autoeff pareto`
    code = (f"import sys, autoeff\ns = autoeff.load_study({space!r})\nprint(len(s.records), s.table().count('\\n') > 0, "
            f"sorted(m for m in {HEAVY[:2] + HEAVY[4:5]!r} if m in sys.modules))")
    r = _python(code, d)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "4 True []", r.stdout
    with pytest.raises(autoeff.ConfigError, match="no study named"):
        autoeff.load_study(space, ["search.study_name=absent"])


def test_export_trial_and_a_trials_model(smoke_store, monkeypatch, tmp_path):
    import torch

    monkeypatch.chdir(smoke_store["dir"])
    space = smoke_store["space"]
    study = autoeff.load_study(space)
    best = study.select("highest accuracy with latency_ms <= 1000")
    out = tmp_path / "m.yaml"
    ex = autoeff.export_trial(space, rule="highest accuracy with latency_ms <= 1000", out=str(out))
    assert ex.record.number == best.number and ex.config_path == out
    cfg = autoeff.load_config(out)
    assert cfg.train.max_steps == 50  # the space's export budget
    trained = study.create_model(best.number)
    blob = torch.load(best.checkpoint, weights_only=True)
    assert all(torch.equal(trained.state_dict()[k], v) for k, v in blob["state_dict"].items())
    with pytest.raises(autoeff.ConfigError, match="give exactly one"):
        autoeff.export_trial(space, out=str(out))


def test_readme_python_examples_run(smoke_copy):
    """Every ```python block of README.md, as written, where the quick start's commands ran
    (a finished smoke search, `autoeff export ... -o model.yaml`, `autoeff train --config model.yaml`)."""
    d = smoke_copy
    (d / "search_spaces").symlink_to(REPO / "search_spaces")
    space = "search_spaces/smoke.yaml"
    setup = (f"import os, autoeff\nos.chdir({str(d)!r})\n"
             f"autoeff.export_trial({space!r}, rule='highest accuracy with latency_ms <= 1000', out='model.yaml')\n"
             "autoeff.train('model.yaml', 'runs/model', ['train.max_steps=2'])\n")
    r = _python(setup, d)
    assert r.returncode == 0, r.stderr[-3000:]
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert blocks, "README.md has no Python example"
    for code in blocks:
        r = _python(code, d)
        assert r.returncode == 0, f"{code}\n{r.stderr[-3000:]}"
    assert "full" in r.stdout and "linformer" in r.stdout
