"""The hybrid language-model study's space (search_spaces/lm.yaml), per-task objectives and the
placement column (``F S S G``)."""
from pathlib import Path

import pytest

from autoeff import ConfigError, load_space
from autoeff.search.names import placement_label
from autoeff.search.record import TrialRecord

REPO = Path(__file__).resolve().parents[2]


def test_lm_space_is_the_study_the_issue_asks_for():
    s = load_space(REPO / "search_spaces" / "lm.yaml")  # check=True: every candidate against the registries
    tasks = {t["kind"]: t for t in s.base["tasks"]}
    assert set(tasks) == {"lm_text", "mqar"}
    assert tasks["lm_text"]["path"] == "stdlib"
    assert all(t["seq_len"] >= 1024 for t in s.base["tasks"])  # long sequences, every task
    assert s.base["model"]["arch"] == "decoder" and s.base["model"]["depth"] >= 4 and s.per_layer
    kinds = {tuple(d.choices) for d in s.dims if d.name.endswith(".kind")}
    assert kinds == {("full", "sliding_window", "gated_deltanet", "linear")}
    assert len([d for d in s.dims if d.name.endswith(".kind")]) == s.base["model"]["depth"]  # a family per layer
    assert any(d.name.endswith("full.kv_heads") and len(d.choices) > 1 for d in s.dims)  # GQA searched
    assert s.objective_names == ["bpb", "decode_ms", "cache_mb"]  # recall at chance at this budget: recorded, not an axis
    assert s.base["deploy"]["context_len"] >= 4096  # decoding timed at a long context
    assert s.reference == {"attention": {"kind": "full"}}  # all-full, same size
    assert [c.label for c in s.constraints] == ["decode_ms <= 0.75 * reference"]
    cfg = s.materialize(s.sample(_Cycle()))
    assert cfg.model.arch == "decoder"
    assert [a.kind for a in cfg.attention.layers] == ["full", "sliding_window", "gated_deltanet", "linear"]


class _Cycle:
    """A suggest-like whose n-th layer takes the n-th family (knobs: their first choice)."""

    def __init__(self):
        self.layer = 0

    def categorical(self, name, choices):
        if name.endswith(".kind"):
            self.layer += 1
            return choices[(self.layer - 1) % len(choices)]
        return choices[0]

    def __getattr__(self, name):
        raise AssertionError(f"lm.yaml has only categorical dimensions ({name})")


BASE = """
name: t
tasks:
  - {kind: lm_text, path: stdlib, seq_len: 32}
  - {kind: mqar, seq_len: 64, n_pairs: 4, vocab: 32}
model: {arch: decoder, depth: 1}
space: {model.width: [32]}
"""


def _write(tmp_path, objectives):
    p = tmp_path / "s.yaml"
    p.write_text(BASE + f"objectives: {objectives}\n")
    return p


def test_a_per_task_objective_names_a_task_of_the_space(tmp_path):
    s = load_space(_write(tmp_path, "{bpb: min, accuracy.mqar: max}"), check=False)
    assert [(o.name, o.direction) for o in s.objectives] == [("bpb", "minimize"), ("accuracy.mqar", "maximize")]
    with pytest.raises(ConfigError) as e:
        load_space(_write(tmp_path, "{accuracy.listops: max}"), check=False)
    assert e.value.key == "objectives.accuracy.listops" and "accuracy.mqar" in str(e.value)
    with pytest.raises(ConfigError) as e:  # a figure of the whole model has no per-task value
        load_space(_write(tmp_path, "{cache_mb.mqar: min}"), check=False)
    assert "not measured per task" in str(e.value)


def test_a_per_task_objective_scores_that_task_only():
    from autoeff.search.space import Objective

    rec = TrialRecord(number=0, status="complete", params={}, config={},
                      metrics={"accuracy": 0.5, "accuracy.mqar": 0.2, "accuracy.lm_text": 0.8, "bpb": 3.0})
    rec.score([Objective("accuracy.mqar", "maximize", "mean"), Objective("bpb", "minimize", "mean")], [])
    assert rec.values == [0.2, 3.0]


def _rec(config, params=None):
    return TrialRecord(number=1, status="complete", params=params or {}, config=config, metrics={})


def test_placement_shows_each_layers_family_bottom_first():
    hybrid = {"model": {"depth": 4}, "attention": {"kind": "hybrid", "layers": [
        {"kind": "full"}, {"kind": "sliding_window"}, {"kind": "sliding_window"}, {"kind": "gated_deltanet"}]}}
    assert placement_label(_rec(hybrid)) == "F S S G"
    plain = {"model": {"depth": 3}, "attention": {"kind": "linear"}}
    assert placement_label(_rec(plain)) == "L L L"
    plugin = {"model": {"depth": 2}, "attention": {"kind": "hybrid", "layers": [{"kind": "myattn"}, {"kind": "full"}]}}
    assert placement_label(_rec(plugin)) == "m F"
