"""The metric registry and the condition language (autoeff/metrics.py)."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest

from autoeff import metrics
from autoeff.errors import ConfigError
from autoeff.metrics import REGISTRY, parse_condition


def test_registry_is_the_one_source_of_every_metric_list():
    from autoeff.export import export_point  # noqa: F401  (imports the keep list's source)
    from autoeff.search import space
    from autoeff.tracking import tables

    assert space.METRICS == metrics.objective_metrics()
    assert space.DEPLOY_METRICS == metrics.architecture_metrics()
    assert tables.EXTRA_COLUMNS == metrics.names(view="table")
    # the decoder figures of docs/decoders.md section 4, each one entry
    want = {"prefill_ms": ("ms", "minimize", "architecture"), "decode_ms": ("ms", "minimize", "architecture"),
            "tokens_per_s": ("tokens/s", "maximize", "architecture"), "cache_mb": ("MiB", "minimize", "architecture"),
            "bpb": ("bits/byte", "minimize", "training")}
    for name, (unit, direction, phase) in want.items():
        d = REGISTRY[name]
        assert (d.unit, d.direction, d.phase) == (unit, direction, phase) and d.objective
    assert "bpb" not in metrics.architecture_metrics() and "cache_mb" in metrics.architecture_metrics()
    # sizes are MiB and say so; the names stay for compatibility
    for name in ("peak_memory_mb", "activation_peak_mb", "size_mb", "cache_mb"):
        assert REGISTRY[name].unit == "MiB"
    glossary = metrics.glossary_markdown()
    assert "| `size_mb` | MiB |" in glossary and " MB" not in glossary
    assert tables.glossary_markdown() == glossary
    assert metrics.get("accuracy.listops") is REGISTRY["accuracy"] and metrics.get("params.x") is None


def test_the_base_layer_imports_no_torch():
    code = "import sys, autoeff.metrics, autoeff.search.record, autoeff.search.pareto; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("text, value, holds", [
    ("latency_ms <= 5", 5.0, True), ("latency_ms <= 5", 5.5, False),
    ("latency_ms < 5", 5.0, False), ("latency_ms < 5", 4.9, True),
    ("accuracy >= 0.8", 0.8, True), ("accuracy >= 0.8", 0.7, False),
    ("accuracy > 0.8", 0.8, False), ("accuracy > 0.8", 0.81, True),
    ("params == 100", 100.0, True), ("params == 100", 101.0, False),
    ("latency_ms <= 5", float("nan"), False),
])
def test_a_condition_holds_exactly_when_its_violation_is_not_positive(text, value, holds):
    c = parse_condition(text, key="k")
    name = text.split()[0]
    assert c.holds({name: value}) is holds
    assert (c.violation({name: value}) <= 0) is holds
    assert not c.holds({})  # a missing figure never satisfies a condition


def test_violation_amount_and_relative_bounds():
    c = parse_condition("latency_ms <= 0.5 * reference", key="constraints[0]", metrics=metrics.objective_metrics())
    assert c.factor == 0.5 and not c.resolved and c.label == "latency_ms <= 0.5 * reference"
    with pytest.raises(RuntimeError):
        c.violation({"latency_ms": 1.0})
    c.resolve({"latency_ms": 8.0})
    assert c.bound == pytest.approx(4.0) and c.label == "latency_ms <= 0.5 * reference (= 4)"
    assert c.violation({"latency_ms": 6.0}) == pytest.approx(2.0)
    assert parse_condition("accuracy >= 0.8", key="k").violation({"accuracy": 0.5}) == pytest.approx(0.3)
    assert parse_condition("params == 10", key="k").violation({"params": 7}) == pytest.approx(3.0)
    assert parse_condition("cache_mb < reference", key="k").factor == 1.0
    assert math.isinf(parse_condition("size_mb <= 1", key="k").violation({"size_mb": float("nan")}))


@pytest.mark.parametrize("text, words", [
    ("latency_ms about 5", ["constraints[3]", "latency_ms about 5", "<=", "=="]),
    ("latency_ms <= 2 * 3", ["constraints[3]", "2 * 3"]),
    ("latency_ms <= fast", ["constraints[3]", "fast", "not a number"]),
    ("speed <= 5", ["constraints[3]", "speed", "unknown metric", "decode_ms"]),
    ("accuracy >= 0.9 * reference", ["constraints[3]", "accuracy", "latency_ms", "tokens_per_s"]),
    ("bpb <= reference", ["constraints[3]", "bpb", "deployment figure"]),
    ("latency_ms <= 0 * reference", ["constraints[3]", "> 0"]),
    ("latency_ms <= x * reference", ["constraints[3]", "factor"]),
])
def test_one_error_for_bad_conditions_names_key_value_allowed(text, words):
    with pytest.raises(ConfigError) as e:
        parse_condition(text, key="constraints[3]", file="space.yaml", metrics=metrics.objective_metrics())
    msg = str(e.value)
    assert msg.startswith("space.yaml: key 'constraints[3]'")
    for w in words:
        assert w in msg, (w, msg)


def test_a_searchs_glossary_lists_only_the_metrics_its_runs_hold():
    """The MLflow parent run's description has room for 8,000 characters: its glossary lists what
    this search's runs record (per-task names by their metric), not the whole registry."""
    from autoeff import metrics

    g = metrics.glossary_markdown({"bpb.lm_text", "accuracy.mqar", "decode_ms", "rung_accuracy.0"})
    names = [line.split("|")[1].strip() for line in g.splitlines()[2:]]
    assert sorted(names) == sorted(["`accuracy` / `accuracy.<task>`", "`bpb` / `bpb.<task>`", "`rung_accuracy.<i>`",
                                    "`decode_ms`"])
    assert "ort_threads" not in g and "latency_ms" not in g
    assert len(g) < len(metrics.glossary_markdown()) / 3
