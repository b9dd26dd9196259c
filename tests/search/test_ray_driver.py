"""The Ray driver's own checks, without a Ray cluster: an address where no cluster answers fails
at once with one line (not minutes of Ray's connection retries), and search.timeout_s stops the
searcher from starting new trials (running ones finish)."""
import socket
import subprocess

import pytest

pytest.importorskip("ray.tune")


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_cluster_at_the_address_fails_at_once_with_one_line(tmp_path, repo, autoeff_cmd):
    port = _closed_port()
    cmd = autoeff_cmd + ["search", "--space", str(repo / "search_spaces" / "smoke.yaml"),
                         "--ray-address", f"127.0.0.1:{port}", "--quiet"]
    # Ray's own retries take minutes; the probe answers in well under the limit of this call
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert f"no Ray cluster answers at 127.0.0.1:{port}" in lines[0] and "ray start --head" in lines[0]
    assert "search.ray.address" in lines[0]
    assert not list(tmp_path.glob("mlartifacts/smoke/trial-*"))


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_ray_searcher_starts_no_trial_after_timeout(tmp_path, repo, monkeypatch):
    import autoeff.search.schedulers.base as base
    import autoeff.search.schedulers.ray_tune as rb
    from autoeff.search.presenters import Presenter, Presenters
    from autoeff.search.schedulers import make_scheduler
    from autoeff.search.space import load_space
    from ray.tune.search import Searcher

    clock = _Clock()
    monkeypatch.setattr(rb.time, "monotonic", clock)  # one time module: the schedulers' clock is this one
    assert base.time.monotonic is clock
    space = load_space(repo / "search_spaces" / "smoke.yaml",
                       ["search.backend=ray", "search.n_trials=10", "search.timeout_s=60",
                        f"search.storage=sqlite:///{tmp_path}/study.db", f"search.artifacts={tmp_path}/art"])
    scheduler = make_scheduler(space)
    assert isinstance(scheduler, rb.RayScheduler)
    said = []
    started = []

    class Said(Presenter):
        def on_message(self, msg):
            said.append(msg)

        def on_trial_start(self, number, params, *, done=0, what=""):
            started.append((number, done))

    searcher = rb._searcher_class()(scheduler, Presenters([Said()]))
    first = searcher.suggest("a")
    assert isinstance(first, dict) and first["number"] == 0  # inside the budget: a trial starts
    clock.t += 59.0
    assert isinstance(searcher.suggest("b"), dict)
    clock.t += 1.0  # search.timeout_s reached
    assert searcher.suggest("c") == Searcher.FINISHED
    assert searcher.suggest("d") == Searcher.FINISHED
    assert len(searcher.pending) == 2  # the running trials still finish (on_trial_complete tells them)
    assert sum("search.timeout_s = 60 s reached" in m for m in said) == 1
    assert started == [(0, 0), (1, 0)]  # the presenters were told, with the study's finished count
