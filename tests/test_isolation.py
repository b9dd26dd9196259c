"""The measurement gate across processes: a measurement waits for units of work in flight and
no unit of work starts while a measurement runs (order of events, never durations)."""
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from autoeff.isolation import MeasureGate

fcntl = pytest.importorskip("fcntl")  # the gate uses flock (Linux, macOS)


def _hold_work(lock_dir, log, started, release):
    g = MeasureGate(Path(lock_dir))
    with g.work():
        started.set()
        release.wait(30)
        with open(log, "a") as f:
            f.write("work-end\n")


def _measure(lock_dir, log, started, done):
    g = MeasureGate(Path(lock_dir))
    with g.measure() as stats:  # blocks while a unit of work is in flight
        started.set()
        with open(log, "a") as f:
            f.write(f"measure-start {int(stats.contended)}\n")
        done.wait(30)
        with open(log, "a") as f:
            f.write("measure-end\n")


def _work_once(lock_dir, log, asked):
    g = MeasureGate(Path(lock_dir))
    asked.set()
    with g.work():
        with open(log, "a") as f:
            f.write("work-start\n")


def _gate_closed(d) -> bool:
    """True once a measurement holds the gate (a shared lock on it is then refused)."""
    fd = os.open(str(Path(d) / "gate"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_measurement_waits_for_work_in_flight(tmp_path):
    ctx = mp.get_context("spawn")
    log = tmp_path / "log"
    started, release, m_started, m_done = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Event()
    worker = ctx.Process(target=_hold_work, args=(str(tmp_path), log, started, release))
    worker.start()
    assert started.wait(60)
    meas = ctx.Process(target=_measure, args=(str(tmp_path), log, m_started, m_done))
    meas.start()
    deadline = time.time() + 60
    while time.time() < deadline and not _gate_closed(tmp_path):  # the measurement has asked for the machine
        time.sleep(0.05)
    time.sleep(0.3)  # it is now waiting for the unit of work in flight (and must keep waiting)
    assert not m_started.is_set()
    release.set()
    assert m_started.wait(60)
    m_done.set()
    worker.join(60)
    meas.join(60)
    assert log.read_text().split("\n")[:3] == ["work-end", "measure-start 1", "measure-end"]


def test_work_waits_while_a_measurement_runs(tmp_path):
    ctx = mp.get_context("spawn")
    log = tmp_path / "log"
    m_started, m_done, asked = ctx.Event(), ctx.Event(), ctx.Event()
    meas = ctx.Process(target=_measure, args=(str(tmp_path), log, m_started, m_done))
    meas.start()
    assert m_started.wait(60)
    worker = ctx.Process(target=_work_once, args=(str(tmp_path), log, asked))
    worker.start()
    assert asked.wait(60)
    time.sleep(0.5)
    m_done.set()
    meas.join(60)
    worker.join(60)
    assert log.read_text().split("\n")[:3] == ["measure-start 0", "measure-end", "work-start"]


def test_measuring_inside_own_work_does_not_deadlock(tmp_path):
    g = MeasureGate(tmp_path)
    with g.work():
        with g.measure() as stats:  # lets go of its own unit of work for the measurement
            assert not stats.contended
        with g.work():  # re-entrant
            pass
    assert os.path.exists(tmp_path / "gate") and os.path.exists(tmp_path / "work")


def test_a_measurement_gives_up_waiting_after_the_timeout(tmp_path):
    ctx = mp.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    worker = ctx.Process(target=_hold_work, args=(str(tmp_path), tmp_path / "log", started, release))
    worker.start()
    try:
        assert started.wait(60)
        with MeasureGate(tmp_path, timeout_s=0.2).measure() as stats:
            assert stats.contended and stats.timed_out  # a unit of work never ended: measured anyway
    finally:
        release.set()
        worker.join(60)
    with MeasureGate(tmp_path, timeout_s=0.2).measure() as stats:
        assert not stats.timed_out  # the machine is free again
