"""The hypervolume reference point puts accuracy at the majority class (combined over the tasks
as accuracy is), so a model at chance adds no volume; without a recorded majority, at 0."""
import pytest

from autoeff import hypervolume
from autoeff.search.record import TrialRecord
from autoeff.search.front import front_of, majority_accuracy, reference_point, summarize
from autoeff.search.space import load_space


@pytest.fixture
def space(repo):
    return load_space(repo / "search_spaces" / "smoke.yaml", check=False)


def rec(n, acc, ms, mb, majority=None, aggregate="mean", weights=(1.0, 1.0)):
    cfg = {"tasks": [{"kind": "listops", "name": "a", "weight": weights[0]},
                     {"kind": "text", "name": "b", "weight": weights[1]}], "train": {"aggregate": aggregate}}
    m = {"accuracy": acc, "latency_ms": ms, "peak_memory_mb": mb}
    if majority:
        m.update({"majority.a": majority[0], "majority.b": majority[1]})
    r = TrialRecord(number=n, status="complete", params={}, config=cfg, metrics=m)
    r.values, r.violations = [acc, ms, mb], [ms - 1000.0]
    return r


def test_accuracy_reference_is_the_majority_class(space):
    recs = [rec(0, 0.3, 2.0, 0.4, majority=(0.2, 0.5)), rec(1, 0.6, 4.0, 0.5, majority=(0.2, 0.5))]
    ref = reference_point(space, recs)
    assert ref[0] == pytest.approx(0.35)
    assert ref[1:] == pytest.approx([4.4, 0.55], rel=1e-6)
    # the model at 0.3 (below the majority's 0.35) adds nothing: the volume is the other one's alone
    alone = hypervolume([recs[1].values], space.directions, ref)
    assert summarize(space, recs, front_of(space, recs))["hypervolume"] == pytest.approx(alone)
    assert alone == pytest.approx((0.6 - 0.35) * (4.4 - 4.0) * (0.55 - 0.5), rel=1e-6)


def test_majority_is_combined_like_accuracy_and_defaults_to_zero():
    assert majority_accuracy([rec(0, 0.5, 1, 1, majority=(0.2, 0.5), aggregate="weighted", weights=(3.0, 1.0))]) \
        == pytest.approx((0.2 * 3 + 0.5) / 4)
    assert majority_accuracy([rec(0, 0.5, 1, 1, majority=(0.2, 0.5), aggregate="min")]) == pytest.approx(0.2)
    assert majority_accuracy([rec(0, 0.5, 1, 1)]) == 0.0
