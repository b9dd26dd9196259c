"""Several workers, one study: two `autoeff search` processes against one storage finish exactly
``n_trials`` trials (none lost or duplicated), write one MLflow parent run, and time their
models while the other worker's training waits (the measurement gate, checked across the two
processes; its locking is tested in tests/test_isolation.py, its effect on latencies measured by
experiments/backends/isolation.py)."""
import subprocess
import textwrap

import pytest

pytestmark = pytest.mark.slow

# one fixed architecture (only the learning rate is searched), so every trial times the same model;
# training uses every core (threads: 0), so a measurement that overlapped it would read slow
SPACE = textwrap.dedent("""\
    name: workers
    tasks:
      - {kind: listops, seq_len: 128, min_len: 32, max_depth: 4, n_train: 256, n_val: 64, n_test: 64}
    model: {depth: 2, width: 64, heads: 4, dropout: 0.0}
    attention: {kind: full}
    train: {max_steps: 10, batch_size: 8, warmup_steps: 2, threads: 0}
    deploy: {batch_size: 1, warmup: 5, repeats: 31, threads: 1}
    space:
      train.lr: {type: float, low: 1.0e-3, high: 4.0e-3, log: true}
    objectives: {accuracy: max, latency_ms: min, peak_memory_mb: min}
    search: {sampler: random, n_trials: 8, seed: 0, remeasure_front: false}
""")


def test_two_workers_finish_exactly_n_trials_with_isolated_timings(tmp_path, autoeff_cmd):
    space = tmp_path / "workers.yaml"
    space.write_text(SPACE)
    cmd = autoeff_cmd + ["search", "--space", str(space)]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]

    import optuna

    study = optuna.load_study(study_name="workers", storage=f"sqlite:///{tmp_path / 'autoeff.db'}")
    finished = [t for t in study.trials if t.state.is_finished()
                and t.user_attrs["autoeff.record"]["status"] != "duplicate"]
    assert len(finished) == 8 and all(t.state.name == "COMPLETE" for t in finished)
    assert not [t for t in study.trials if not t.state.is_finished()]
    workers = {t.system_attrs["autoeff.worker"] for t in finished}
    assert len(workers) == 2  # both processes ran trials

    from autoeff.tracking import read_search

    store = read_search(f"sqlite:///{tmp_path / 'mlflow.db'}", "workers")
    assert len(store["parents"]) == 1 and store["parents"][0].info.status == "FINISHED"
    assert sorted(int(r.data.tags["autoeff.trial"]) for r in store["trials"]) == sorted(t.number for t in finished)

    # timings: at least one measurement had to wait for the other worker's step (so the two
    # processes did overlap and the gate held one back); with AUTOEFF_MEASURE_GATE=0 this fails.
    # The latency figures themselves are not compared here: in this short test a measurement
    # seldom overlaps the other worker's training (without the gate the median read 5-6% off on
    # a quiet machine), while a busy CI host moved it by 26% with the gate on. The comparison
    # with the gate on and off is experiments/backends/isolation.py.
    recs = [t.user_attrs["autoeff.record"]["metrics"] for t in finished]
    assert sum(m["measure_contended"] for m in recs) >= 1
    assert all(m["measure_wait_s"] >= 0 and "measure_gate_timeout" not in m for m in recs)
