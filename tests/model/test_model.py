"""The model builder: shapes, heads per task, masks, checkpoints round-trip."""
import pytest
import torch

import autoeff
from autoeff.config import parse_run_config
from autoeff.model import example_inputs
from autoeff.tasks import task_spec


def cfg_for(attention="full", **model):
    m = {"depth": 2, "width": 32, "heads": 4, "dropout": 0.0}
    m.update(model)
    att = {"kind": attention}
    if attention == "linformer":
        att["linformer"] = {"rank": 16}
    return parse_run_config({"model": m, "attention": att,
                             "tasks": [{"kind": "listops", "seq_len": 48, "min_len": 8, "n_train": 8, "n_val": 4, "n_test": 4}]})


@pytest.mark.parametrize("attention", ["full", "linformer"])
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_build_and_forward(attention, pool):
    cfg = cfg_for(attention, pool=pool)
    model = autoeff.create_model(cfg)
    spec = task_spec(cfg.tasks[0])
    x, mask = example_inputs(spec, 3)
    assert model(x, mask).shape == (3, 10)
    assert len(model.encoder.blocks) == 2
    # padded tail changes nothing at real positions (pool sees only real ones)
    model.eval()
    mask[:, 30:] = False
    y1 = model(x, mask)
    x2 = x.clone()
    x2[:, 30:] = 3
    assert torch.allclose(y1, model(x2, mask), atol=1e-5)


def test_heads_must_divide_width():
    from autoeff.errors import ConfigError

    with pytest.raises(ConfigError, match="model.heads"):
        cfg_for(heads=3)


def test_deterministic_build_and_state_dict_round_trip(tmp_path):
    cfg = cfg_for("linformer")
    a, b = autoeff.create_model(cfg), autoeff.create_model(cfg)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    torch.save(a.state_dict(), tmp_path / "m.pt")
    c = autoeff.create_model(cfg)
    c.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))


def test_linformer_shared_projection_across_layers():
    cfg = parse_run_config({"model": {"depth": 3, "width": 32, "heads": 2},
                            "attention": {"kind": "linformer", "linformer": {"rank": 8, "share_layers": True, "share_kv": True}},
                            "tasks": [{"kind": "listops", "seq_len": 32, "min_len": 4}]})
    m = autoeff.create_model(cfg)
    projs = {id(blk.attn.proj_k) for blk in m.encoder.blocks}
    assert len(projs) == 1
