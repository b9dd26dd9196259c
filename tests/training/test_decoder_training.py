"""Training and evaluating decoders (token targets, docs/decoders.md section 2): next-token loss
over the scored positions, validation loss / accuracy / bits per byte, multi-task decoders."""
import math

import pytest
import torch
from torch import nn

import autoeff
from autoeff.config import TaskSpec, parse_run_config
from autoeff.tasks import load_task
from autoeff.tasks.base import Split, TaskData
from autoeff.training.fit import bits_per_byte, evaluate, evaluate_tasks, fit
from autoeff.training.module import token_loss
from autoeff.training.run import lm_metrics, train_and_evaluate

V = 8  # ids 0 (padding) .. 7
PERIOD = 6  # the toy sequence cycles 1, 2, ..., 6


def cycle_split(n, seq_len=16, seed=0, unscored=4):
    """x: the cycle 1..6 from a random phase; y: the next element; the first ``unscored``
    positions are not scored (-100)."""
    g = torch.Generator().manual_seed(seed)
    phase = torch.randint(0, PERIOD, (n, 1), generator=g)
    pos = torch.arange(seq_len + 1)[None]
    s = 1 + (phase + pos) % PERIOD  # (n, L + 1)
    y = s[:, 1:].clone()
    y[:, :unscored] = -100
    return Split(x=s[:, :-1].clone(), mask=torch.ones(n, seq_len, dtype=torch.bool), y=y)


def cycle_task(name="cycle", bytes_per_token=1.0, n=64):
    spec = TaskSpec(input_kind="tokens", seq_len=16, num_classes=V, vocab_size=V, name=name, target="token",
                    bytes_per_token=bytes_per_token)
    return TaskData(spec=spec, splits={"train": cycle_split(n, seed=0), "val": cycle_split(32, seed=1),
                                       "test": cycle_split(32, seed=2)})


def decoder_cfg(**train):
    t = {"max_steps": 40, "batch_size": 16, "lr": 0.005, "warmup_steps": 2}
    t.update(train)
    return parse_run_config({"model": {"arch": "decoder", "depth": 1, "width": 32, "heads": 4, "dropout": 0.0},
                             "attention": {"kind": "full"},
                             "tasks": [{"kind": "mqar", "name": "cycle", "seq_len": 16, "n_pairs": 2, "vocab": V}],
                             "train": t})


def test_a_tiny_decoder_learns_the_toy_sequence():
    data = [cycle_task()]
    cfg = decoder_cfg()
    model = autoeff.create_model(cfg, [data[0].spec])
    before = evaluate_tasks(model, data)["cycle"]
    assert before["loss"] > 1.5  # about ln 8 untrained
    fit(model, data, cfg.train)
    after = evaluate_tasks(model, data)["cycle"]
    assert after["loss"] < 0.25 * before["loss"], (before, after)
    assert after["accuracy"] > 0.95
    assert evaluate(model, data)["cycle"] == after["accuracy"]  # evaluate() is evaluate_tasks' accuracy
    assert after["bpb"] == pytest.approx(after["loss"] / math.log(2))


class FixedLM(nn.Module):
    """Knows the cycle: at every position puts logit ln 7 on the right next id and 0 elsewhere
    (p = 7 / (7 + 7) = 1/2), except at the first 4 positions, where it bets on id 0 instead."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.task_names = ["cycle"]

    def forward(self, x, mask=None, task=None):
        nxt = 1 + x % PERIOD  # (B, N)
        logits = torch.zeros(*x.shape, V)
        logits.scatter_(-1, nxt[..., None], math.log(7.0))
        logits[:, :4] = 0.0
        logits[:, :4, 0] = 10.0  # wrong, but unscored
        return logits + self.w


@pytest.mark.parametrize("bytes_per_token", [0.5, 1.0, 0.0])
def test_loss_accuracy_and_bpb_by_hand(bytes_per_token):
    s = evaluate_tasks(FixedLM(), [cycle_task(bytes_per_token=bytes_per_token)])["cycle"]
    assert s["accuracy"] == 1.0  # scored positions only
    assert s["loss"] == pytest.approx(math.log(2), rel=1e-6)  # -ln(1/2) per scored token
    if bytes_per_token:
        assert s["bpb"] == pytest.approx(1.0 / bytes_per_token, rel=1e-6)  # ln 2 / ln 2 / bpt
    else:
        assert "bpb" not in s  # bits per byte mean nothing without bytes per token
    assert bits_per_byte(math.log(2) * 3, 1.5) == pytest.approx(2.0)


def test_token_loss_ignores_unscored_positions():
    logits = torch.randn(2, 5, V)
    y = torch.randint(0, V, (2, 5))
    y[0, :2] = -100
    keep = y != -100
    want = torch.nn.functional.cross_entropy(logits[keep], y[keep])
    assert token_loss(logits, y) == pytest.approx(float(want), rel=1e-6)


def test_lm_metrics_weighted_bpb():
    val = {"a": {"accuracy": 0.5, "loss": 1.0, "bpb": 2.0}, "b": {"accuracy": 0.5, "loss": 2.0, "bpb": 1.0},
           "m": {"accuracy": 0.1, "loss": 3.0}}
    out = lm_metrics(val, val, {"a": 1.0, "b": 3.0, "m": 1.0})
    assert out["bpb"] == pytest.approx(1.25) and out["test_bpb"] == pytest.approx(1.25)
    assert out["val_loss.m"] == 3.0 and out["test_loss.a"] == 1.0 and "bpb.m" not in out


def test_multitask_decoder_trains_and_reports_per_task(tmp_path):
    cfg = parse_run_config({
        "model": {"arch": "decoder", "depth": 1, "width": 32, "heads": 4, "dropout": 0.0},
        "attention": {"kind": "sliding_window", "sliding_window": {"window": 8}},
        "tasks": [{"kind": "mqar", "name": "recall", "seq_len": 16, "n_pairs": 2, "vocab": 24,
                   "n_train": 16, "n_val": 8, "n_test": 8},
                  {"kind": "mqar", "name": "cycle", "seq_len": 16, "n_pairs": 2, "vocab": V}],
        "train": {"max_steps": 6, "batch_size": 8, "warmup_steps": 1}, "data_dir": str(tmp_path)})
    recall = load_task(cfg.tasks[0], str(tmp_path))
    data = [recall, cycle_task()]
    model = autoeff.create_model(cfg, [d.spec for d in data])
    assert set(model.embed) == {"v24", f"v{V}"}  # two vocabularies, one trunk
    m = train_and_evaluate(model, data, cfg)
    assert m["train_steps.recall"] == m["train_steps.cycle"] == 3.0
    for t in ("recall", "cycle"):
        assert 0.0 <= m[f"accuracy.{t}"] <= 1.0 and math.isfinite(m[f"val_loss.{t}"]) and f"test_loss.{t}" in m
    assert "bpb.recall" not in m  # mqar: bits per byte mean nothing
    assert m["bpb"] == pytest.approx(m["bpb.cycle"]) == pytest.approx(m["val_loss.cycle"] / math.log(2))
    assert m["accuracy"] == pytest.approx((m["accuracy.recall"] + m["accuracy.cycle"]) / 2)
