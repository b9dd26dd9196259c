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
    calls = []
    r = measure_latency(lambda: calls.append(1), warmup=2, repeats=7, threads=1)
    assert len(calls) == 9 and r.repeats == 7 and len(r.samples_ms) == 7
    assert r.threads == 1
    assert r.p10_ms <= r.median_ms <= r.p90_ms and r.spread >= 0
    assert torch.get_num_threads() >= 1  # restored


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
