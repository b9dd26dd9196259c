"""Measurement: latency statistics, allocator-level peak memory, parameter size."""
import torch
from torch import nn

from autoeff.measure import measure_latency, model_size, peak_memory


def test_peak_memory_sees_tensor_allocations_above_baseline():
    big = torch.ones(1024, 1024)  # 4 MiB that already exists: the baseline, not counted

    def two_buffers():
        a = torch.empty(1024, 1024)  # 4 MiB
        b = torch.empty(2048, 1024)  # 8 MiB, both alive together
        return a.sum() + b.sum() + big[0, 0]

    r = peak_memory(two_buffers)
    assert 12 * 2**20 <= r.peak_bytes < 13 * 2**20, r

    def sequential():
        for _ in range(3):
            a = torch.empty(1024, 1024)  # 4 MiB freed each time
            del a

    assert 4 * 2**20 <= peak_memory(sequential).peak_bytes < 5 * 2**20


def test_peak_memory_grows_with_the_work():
    lin = nn.Linear(256, 256)
    small = peak_memory(lambda: lin(torch.randn(8, 256))).peak_bytes
    large = peak_memory(lambda: lin(torch.randn(512, 256))).peak_bytes
    assert large > 30 * small


def test_latency_statistics_and_thread_count():
    original = torch.get_num_threads()
    torch.set_num_threads(3)  # a count the measurement must change and then restore
    try:
        calls = []
        r = measure_latency(lambda: calls.append(torch.get_num_threads()), warmup=2, repeats=7, threads=1)
        assert len(calls) == 9 and r.repeats == 7 and len(r.samples_ms) == 7
        assert calls == [1] * 9 and r.threads == 1  # every pass ran at the requested count
        assert r.p10_ms <= r.median_ms <= r.p90_ms and r.spread >= 0
        assert torch.get_num_threads() == 3  # restored to what it was before the measurement
    finally:
        torch.set_num_threads(original)


def test_one_cpu_model_parser_serves_record_tags_and_bench(monkeypatch):
    """The trial record, the MLflow machine tags and the benchmark name the CPU from one parser."""
    from autoeff.bench.attention import _device_name
    from autoeff.measure import host
    from autoeff.tracking.mlflow_tracker import machine_tags

    assert host.cpu_model() and host.cpu_model() != "model name"
    monkeypatch.setattr(host, "cpu_model", lambda: "Test CPU 9000")
    assert host.machine_info()["cpu"] == "Test CPU 9000"
    assert machine_tags()["machine.cpu"] == "Test CPU 9000"
    assert _device_name("cpu").startswith("Test CPU 9000 (")


def test_model_size_counts_shared_parameters_once():
    a = nn.Linear(10, 10)
    m = nn.Sequential(a, a)
    s = model_size(m)
    assert s["params"] == 110 and s["size_bytes"] == 440


def test_peak_memory_sees_allocations_on_worker_threads():
    """A 10 MiB tensor made on another thread during the pass counts like one made here (the
    profiler's memory events saw only the calling thread and read 0.0 MiB)."""
    import queue
    import threading

    jobs, done = queue.SimpleQueue(), queue.SimpleQueue()

    def worker():  # started before the measurement, like a thread pool
        while (job := jobs.get()) is not None:
            done.put(job())

    t = threading.Thread(target=worker, daemon=True)
    t.start()

    def on_worker():
        a = torch.empty(10 * 2**20 // 4)  # 10 MiB, allocated and freed on the worker
        a.fill_(1.0)
        return float(a[0])

    def fn():
        jobs.put(on_worker)
        return done.get()

    try:
        r = peak_memory(fn)
    finally:
        jobs.put(None)
        t.join()
    assert 10 * 2**20 <= r.peak_bytes < 11 * 2**20, r
    assert "every thread" in r.method
