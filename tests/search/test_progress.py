"""The progress display: live block on a terminal, plain lines in CI or a pipe, nothing when quiet."""
import io

import pytest
import yaml

from autoeff.search.record import TrialRecord
from autoeff.search.progress import Progress
from autoeff.search.space import load_space


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def space(repo):
    return load_space(repo / "search_spaces" / "smoke.yaml", check=False)


def rec(n, acc, ms, mb, status="complete", dur=10.0, **params):
    cfg = {"attention": {"kind": params.get("kind", "full")}, "model": {"depth": 1, "width": 32, "heads": 2}}
    r = TrialRecord(number=n, status=status, params={"attention.kind": params.get("kind", "full")},
                    metrics={"accuracy": acc, "latency_ms": ms, "peak_memory_mb": mb}, config=cfg, duration_s=dur,
                    reason="" if status == "complete" else f"{status} because")
    if status == "complete":
        r.values, r.violations = [acc, ms, mb], [ms - 1000.0]
    return r


def test_plain_lines_in_ci_even_on_a_terminal(space, monkeypatch):
    monkeypatch.setenv("CI", "true")
    out = Tty()
    p = Progress(4, stream=out, space=space)
    assert not p.live
    p.begin(space, [rec(0, 0.3, 2.0, 0.2)])
    p.trial_start(1, 1, {"attention.kind": "full"})
    p.training(6, 12, 1.5)  # a quarter/half/three quarters only in plain mode: 12 // 2 = 6
    p.trial_end(rec(1, 0.5, 3.0, 0.3))
    p.trial_start(2, 2, {"attention.kind": "linformer"})
    p.trial_end(rec(2, 0.0, 0.0, 0.0, status="failed"))
    p.close()
    text = out.getvalue()
    assert "\x1b[" not in text  # no cursor movement in a log
    assert "step 6/12 loss 1.500" in text
    assert "3/4 done, 2 complete, 0 infeasible, 0 pruned, 1 failed, 0 running" in text
    assert "about 0:10 left" in text  # mean trial 10 s x 1 trial to go
    assert "front: trials 1, 0" in text and "-> trial 2: failed: failed because" in text


def test_every_result_line_names_its_trial(space, monkeypatch):
    """Two trials at once (Ray): the result that comes first belongs to the trial started first,
    not to the one announced just before it, and says so."""
    monkeypatch.setenv("CI", "true")
    out = io.StringIO()
    p = Progress(3, stream=out, space=space)
    p.trial_start(0, 4, {"attention.kind": "full"})
    p.trial_start(1, 5, {"attention.kind": "linformer"})
    p.trial_end(rec(4, 0.5, 3.0, 0.3))
    p.trial_end(rec(5, 0.0, 0.0, 0.0, status="infeasible"))
    results = [line for line in out.getvalue().splitlines() if "->" in line]
    assert len(results) == 2
    assert "-> trial 4: accuracy 0.500" in results[0]
    assert "-> trial 5: infeasible: infeasible because" in results[1]


def test_live_block_on_a_terminal(space, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    out = Tty()
    p = Progress(3, stream=out, space=space)
    assert p.live
    try:
        p.begin(space, [rec(0, 0.3, 2.0, 0.2), rec(1, 0.2, 1.0, 0.1, kind="linformer")])
        p.trial_start(2, 2, {"attention.kind": "full", "model.depth": 2})
        p.training(40, 100, 0.812)
        block = "\n".join(p.block())
        assert "trial 2 running" in block and "step 40/100 loss 0.812" in block
        assert "2/3 done, 2 complete, 0 infeasible, 0 pruned, 0 failed, 1 running" in block
        assert "current front (2 points" in block
        assert "t000-full-d1-w32" in block and "t001-linformer-d1-w32" in block
        p.trial_end(rec(2, 0.9, 0.5, 0.05, status="pruned"))
        block = "\n".join(p.block())
        assert "1 pruned" in block and "0 running" in block
    finally:
        p.close()
    text = out.getvalue()
    assert "\x1b[" in text  # redrawn in place
    assert "-> trial 2: pruned: pruned because" in text  # messages still scroll above the block
    assert p._ticker is None


def test_live_is_off_for_pipes_dumb_terminals_and_quiet(space, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert not Progress(2, stream=io.StringIO(), space=space).live  # a pipe or a file
    monkeypatch.setenv("TERM", "dumb")
    assert not Progress(2, stream=Tty(), space=space).live
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("CI", "false")
    assert Progress(2, stream=Tty(), space=space).live
    out = Tty()
    p = Progress(2, stream=out, space=space, quiet=True)
    p.begin(space, [])
    p.trial_start(0, 0, {})
    p.trial_end(rec(0, 0.3, 2.0, 0.2))
    p.close()
    assert out.getvalue() == ""


def test_time_left_respects_the_search_timeout(space):
    import dataclasses

    p = Progress(200, stream=io.StringIO(), space=space, live=False)
    p.begin(space, [rec(i, 0.3, 2.0, 0.2, dur=10.0) for i in range(4)])
    assert p.eta_s() == pytest.approx(196 * 10.0)  # no timeout: trials to go x mean trial
    timed = dataclasses.replace(space, search=dataclasses.replace(space.search, timeout_s=60.0))
    p.space = timed
    assert 60.0 < p.eta_s() <= 70.0 + 1e-6  # what the timeout leaves, plus the trial running then


def test_a_hybrid_trial_announces_its_placement_and_per_task_objectives(repo, monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")
    doc = yaml.safe_load((repo / "search_spaces" / "lm.yaml").read_text())  # with a per-task objective
    doc["objectives"] = {"bpb": "min", "accuracy.mqar": "max", "decode_ms": "min", "cache_mb": "min"}
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(doc))
    space = load_space(tmp_path / "lm.yaml", check=False)
    out = io.StringIO()
    p = Progress(4, stream=out, space=space)
    p.begin(space, [])
    p.trial_start(0, 3, {"attention.layers.0.kind": "full", "attention.layers.0.full.kv_heads": 2,
                         "attention.layers.1.kind": "sliding_window", "attention.layers.2.kind": "gated_deltanet",
                         "attention.layers.3.kind": "linear"})
    r = TrialRecord(number=3, status="complete", params={}, config={},
                    metrics={"accuracy": 0.2, "bpb": 3.91, "accuracy.mqar": 0.125, "decode_ms": 2.5, "cache_mb": 1.0,
                             "latency_ms": 30.0, "peak_memory_mb": 9.0})
    r.values, r.violations = [3.91, 0.125, 2.5, 1.0], [-1.0]
    p.trial_end(r)
    text = out.getvalue()
    assert "trial 3 (1/4): [F S G L] " in text
    assert "bpb 3.91  accuracy.mqar 0.125  decode ms 2.5" in text
