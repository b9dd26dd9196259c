"""Pareto logic and hypervolume on hand-made fronts."""
import numpy as np
import pytest

from autoeff.search.pareto import dominates, hypervolume, pareto_front, pareto_mask, parse_rule, select

D2 = ["maximize", "minimize"]


def test_front_on_a_hand_made_set():
    pts = [[0.50, 10.0], [0.60, 20.0], [0.40, 5.0], [0.50, 12.0], [0.30, 6.0], [0.60, 25.0]]
    assert pareto_mask(pts, D2).tolist() == [True, True, True, False, False, False]
    assert pareto_front(pts, D2) == [1, 0, 2]  # best accuracy first


def test_three_objectives_and_duplicates():
    d = ["maximize", "minimize", "minimize"]
    pts = [[0.5, 1, 9], [0.5, 9, 1], [0.4, 5, 5], [0.4, 9, 9], [0.5, 1, 9]]
    assert pareto_mask(pts, d).tolist() == [True, True, True, False, True]
    assert dominates([0.5, 1, 1], [0.5, 1, 2], d) and not dominates([0.5, 1, 2], [0.5, 1, 2], d)


def test_hypervolume_known_values():
    # 2D: rectangles [0.5 x (30-10)] + [0.1 x (30-20)] = 11
    assert hypervolume([[0.5, 10], [0.6, 20]], D2, [0.0, 30.0]) == pytest.approx(11.0)
    # dominated and out-of-reference points add nothing
    assert hypervolume([[0.5, 10], [0.6, 20], [0.4, 15], [0.9, 40]], D2, [0.0, 30.0]) == pytest.approx(11.0)
    # 3D unit cubes: two boxes [0,1]^3 and a shifted one, union volume by inclusion-exclusion
    d3 = ["minimize"] * 3
    assert hypervolume([[0, 0, 0]], d3, [1, 1, 1]) == pytest.approx(1.0)
    v = hypervolume([[0, 0.5, 0], [0.5, 0, 0]], d3, [1, 1, 1])
    assert v == pytest.approx(0.5 + 0.5 - 0.25)


def test_hypervolume_matches_monte_carlo():
    rng = np.random.default_rng(0)
    pts = rng.random((7, 3))
    d3 = ["minimize"] * 3
    exact = hypervolume(pts, d3, [1, 1, 1])
    samples = rng.random((200_000, 3))
    dominated = np.zeros(len(samples), dtype=bool)
    for p in pts:
        dominated |= np.all(samples >= p, axis=1)
    assert exact == pytest.approx(dominated.mean(), abs=0.01)


def test_selection_rules():
    rows = [{"accuracy": 0.5, "latency_ms": 10}, {"accuracy": 0.7, "latency_ms": 30}, {"accuracy": 0.6, "latency_ms": 18}]
    assert select(rows, "highest accuracy with latency_ms <= 20") == 2
    assert select(rows, "highest accuracy") == 1
    assert select(rows, "lowest latency_ms with accuracy >= 0.55") == 2
    assert select(rows, "highest accuracy with latency_ms <= 1") is None
    assert [(c.metric, c.op, c.bound) for c in parse_rule("max accuracy where latency_ms < 5 and peak_memory_mb <= 2")[2]] \
        == [("latency_ms", "<", 5.0), ("peak_memory_mb", "<=", 2.0)]
    with pytest.raises(ValueError):
        parse_rule("the best one please")


def test_rules_speak_the_constraint_language_every_operator_and_the_reference():
    """Export rules and constraints share one parser (autoeff.metrics.parse_condition): every
    operator, and a bound relative to the study's reference model."""
    from autoeff.errors import ConfigError

    rows = [{"accuracy": 0.5, "latency_ms": 10, "params": 100}, {"accuracy": 0.7, "latency_ms": 30, "params": 200},
            {"accuracy": 0.6, "latency_ms": 18, "params": 200}]
    assert select(rows, "highest accuracy with params == 100") == 0
    assert select(rows, "lowest latency_ms with params == 200") == 2
    assert select(rows, "highest accuracy with latency_ms > 18") == 1
    assert select(rows, "highest accuracy with latency_ms < 18") == 0  # strict: 18 is not < 18
    ref = {"latency_ms": 40.0}
    assert select(rows, "highest accuracy with latency_ms <= 0.5 * reference", ref) == 2
    assert select(rows, "highest accuracy with latency_ms <= reference", ref) == 1
    with pytest.raises(ConfigError, match="reference model"):  # no reference measured
        select(rows, "highest accuracy with latency_ms <= 0.5 * reference")
    with pytest.raises(ConfigError, match="only a deployment figure"):
        parse_rule("lowest latency_ms with accuracy >= 0.9 * reference", {"accuracy": 1.0})
    with pytest.raises(ConfigError, match="--rule"):
        parse_rule("highest accuracy with latency_ms about 5")
