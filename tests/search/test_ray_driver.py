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
    import autoeff.search.backends.optuna_backend as ob
    import autoeff.search.backends.ray_backend as rb
    from autoeff.search.runner import Progress
    from autoeff.search.space import load_space
    from ray.tune.search import Searcher

    clock = _Clock()
    monkeypatch.setattr(rb.time, "monotonic", clock)  # one time module: the backends' clock is this one
    assert ob.time.monotonic is clock
    space = load_space(repo / "search_spaces" / "smoke.yaml",
                       ["search.backend=ray", "search.n_trials=10", "search.timeout_s=60",
                        f"search.storage=sqlite:///{tmp_path}/study.db", f"search.artifacts={tmp_path}/art"])
    backend = rb.RayBackend(space)
    said = []
    progress = Progress(10, quiet=True)
    progress.__class__ = type("Said", (Progress,), {"__call__": lambda self, msg: said.append(msg)})
    searcher = rb._searcher_class()(backend, [], progress)
    first = searcher.suggest("a")
    assert isinstance(first, dict) and first["number"] == 0  # inside the budget: a trial starts
    clock.t += 59.0
    assert isinstance(searcher.suggest("b"), dict)
    clock.t += 1.0  # search.timeout_s reached
    assert searcher.suggest("c") == Searcher.FINISHED
    assert searcher.suggest("d") == Searcher.FINISHED
    assert len(searcher.pending) == 2  # the running trials still finish (on_trial_complete tells them)
    assert sum("search.timeout_s = 60 s reached" in m for m in said) == 1
