"""The measurement gate across processes: a measurement waits for units of work in flight and
no unit of work starts while a measurement runs (order of events, never durations)."""
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from autoeff.isolation import MeasureGate

fcntl = pytest.importorskip("fcntl")  # the gate uses flock (Linux, macOS)


def _hold_work(lock_dir, log, started, release, ended):
    g = MeasureGate(Path(lock_dir))
    with g.work():
        started.set()
        release.wait(30)
        with open(log, "a") as f:
            f.write("work-end\n")
        ended.set()  # still inside the unit of work


def _measure(lock_dir, log, started, done, work_ended, ended):
    g = MeasureGate(Path(lock_dir))
    with g.measure() as stats:  # blocks while a unit of work is in flight
        started.set()
        with open(log, "a") as f:  # contended: it found work in flight; and whether that work had ended
            f.write(f"measure-start {int(stats.contended)} after-work-end={int(work_ended.is_set())}\n")
        done.wait(30)
        with open(log, "a") as f:
            f.write("measure-end\n")
        ended.set()  # still inside the measurement


def _work_once(lock_dir, log, asked, measure_ended, began):
    g = MeasureGate(Path(lock_dir))
    asked.set()
    with g.work():
        began.set()
        with open(log, "a") as f:
            f.write(f"work-start after-measure-end={int(measure_ended.is_set())}\n")


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
    started, release, w_ended = ctx.Event(), ctx.Event(), ctx.Event()
    m_started, m_done, m_ended = ctx.Event(), ctx.Event(), ctx.Event()
    worker = ctx.Process(target=_hold_work, args=(str(tmp_path), log, started, release, w_ended))
    worker.start()
    assert started.wait(60)
    meas = ctx.Process(target=_measure, args=(str(tmp_path), log, m_started, m_done, w_ended, m_ended))
    meas.start()
    deadline = time.time() + 60
    while time.time() < deadline and not _gate_closed(tmp_path):  # the measurement has asked for the machine
        time.sleep(0.05)  # polling for a state, not waiting for an order of events
    assert _gate_closed(tmp_path)
    assert not m_started.is_set()  # the unit of work has not been released: it cannot have started
    release.set()
    assert m_started.wait(60)
    m_done.set()
    worker.join(60)
    meas.join(60)
    # the events, not durations, prove the order: the measurement found the work in flight
    # (contended) and started only after that work had ended
    assert log.read_text().split("\n")[:3] == ["work-end", "measure-start 1 after-work-end=1", "measure-end"]


def test_work_waits_while_a_measurement_runs(tmp_path):
    ctx = mp.get_context("spawn")
    log = tmp_path / "log"
    m_started, m_done, m_ended, asked, no_work, began = (ctx.Event() for _ in range(6))
    no_work.set()  # no unit of work is in flight when this measurement starts
    meas = ctx.Process(target=_measure, args=(str(tmp_path), log, m_started, m_done, no_work, m_ended))
    meas.start()
    assert m_started.wait(60)
    worker = ctx.Process(target=_work_once, args=(str(tmp_path), log, asked, m_ended, began))
    worker.start()
    assert asked.wait(60)
    # it must now be waiting: this can only catch a broken gate (a correct one never lets it in
    # here, so the pass does not depend on the 1 s); the order itself is checked by events below
    assert not began.wait(1.0)
    m_done.set()
    meas.join(60)
    worker.join(60)
    # the unit of work asked during the measurement and started only once it had ended
    assert log.read_text().split("\n")[:3] == ["measure-start 0 after-work-end=1", "measure-end",
                                                "work-start after-measure-end=1"]


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
    started, release, ended = ctx.Event(), ctx.Event(), ctx.Event()
    worker = ctx.Process(target=_hold_work, args=(str(tmp_path), tmp_path / "log", started, release, ended))
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
