"""Honest timings under concurrency: a per-machine measurement gate that trainers yield to.

Several trials may run on one machine at once (several `autoeff search` processes on one study,
or several Ray trials on one node). A latency measured while another trial trains is worthless
(on a 2-core machine, 1 ms models read 80-300 ms). The gate makes every measurement run while
no autoeff work competes for the machine's cores:

- a **trainer** wraps each unit of work (one optimizer step, one evaluation, building a model,
  generating a task) in :meth:`MeasureGate.work`, a shared lock held only for that unit;
- a **measurement** runs inside :meth:`MeasureGate.measure`, an exclusive lock: it first closes
  the gate (no new unit of work may start), then waits for the units in flight to finish, then
  measures alone; measurements are serialized with each other too.

Two lock files per machine (``$AUTOEFF_LOCK_DIR``, default ``<tmp>/autoeff-locks-<uid>``),
``gate`` and ``work``, both with ``flock``: a trainer takes ``gate`` shared for an instant, then
``work`` shared for the unit, and lets go of ``gate`` at once; a measurement takes ``gate``
exclusive (so a stream of steps cannot starve it: no new unit starts), then ``work`` exclusive. The locks are
released by the kernel when a process dies, so a killed trial never blocks the machine.

A trainer pauses for as long as a measurement lasts (well under a second for the models of a
search); measurement waits at most one unit of work. Processes on other machines never wait
for each other. A measurement waits at most ``AUTOEFF_MEASURE_GATE_TIMEOUT_S`` (600 s; e.g. a
stopped process that holds a unit of work) and then measures anyway, saying so
(``measure_gate_timeout``). ``AUTOEFF_MEASURE_GATE=0`` turns the gate off (to show what it
prevents). Without ``fcntl`` (Windows) the gate does nothing.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def lock_dir() -> Path:
    d = os.environ.get("AUTOEFF_LOCK_DIR")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    p = Path(d) if d else Path(tempfile.gettempdir()) / f"autoeff-locks-{uid}"
    p.mkdir(parents=True, exist_ok=True)
    return p


@dataclass
class GateStats:
    """What a measurement had to wait for: ``contended`` is True when another process's unit of
    work was in flight when the measurement asked for the machine (so the gate mattered)."""

    wait_s: float = 0.0
    contended: bool = False
    timed_out: bool = False  # the machine was not free within the gate's timeout: measured anyway


class MeasureGate:
    """One per process (see :func:`gate`). Re-entrant within a thread; a measurement requested
    while this process holds a unit of work lets go of that unit for its duration."""

    def __init__(self, directory: Optional[Path] = None, enabled: Optional[bool] = None,
                 timeout_s: float = 600.0):
        self.enabled = (fcntl is not None) if enabled is None else (enabled and fcntl is not None)
        self.timeout_s = timeout_s
        self._dir = directory
        self._fds: dict = {}
        self._lock = threading.RLock()
        self._work_depth = 0
        self._measure_depth = 0

    def _fd(self, name: str) -> int:
        if name not in self._fds:
            d = self._dir or lock_dir()
            self._fds[name] = os.open(str(Path(d) / name), os.O_RDWR | os.O_CREAT, 0o666)
        return self._fds[name]

    @contextlib.contextmanager
    def work(self) -> Iterator[None]:
        """A unit of compute-heavy work (a training step, an evaluation): waits while a
        measurement runs anywhere on this machine."""
        if not self.enabled:
            yield
            return
        with self._lock:
            outer = self._work_depth == 0 and self._measure_depth == 0
            if outer:
                self._acquire_work()
            self._work_depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._work_depth -= 1
                if outer:
                    fcntl.flock(self._fd("work"), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def measure(self) -> Iterator[GateStats]:
        """Exclusive use of the machine's autoeff work: no other trial's unit of work runs
        until the block ends."""
        stats = GateStats()
        if not self.enabled:
            yield stats
            return
        with self._lock:
            if self._measure_depth:
                self._measure_depth += 1
                try:
                    yield stats
                finally:
                    self._measure_depth -= 1
                return
            held_work = self._work_depth > 0
            if held_work:  # never wait for ourselves
                fcntl.flock(self._fd("work"), fcntl.LOCK_UN)
            t0 = time.perf_counter()
            deadline = time.monotonic() + self.timeout_s
            got_gate = _lock_exclusive(self._fd("gate"), deadline)
            got_work = False
            if got_gate:
                try:
                    fcntl.flock(self._fd("work"), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    got_work = True
                except BlockingIOError:
                    stats.contended = True
                    got_work = _lock_exclusive(self._fd("work"), deadline)
            stats.timed_out = not (got_gate and got_work)  # measure anyway; the record says so
            stats.wait_s = time.perf_counter() - t0
            self._measure_depth = 1
            try:
                yield stats
            finally:
                self._measure_depth = 0
                if got_work:
                    fcntl.flock(self._fd("work"), fcntl.LOCK_UN)
                if got_gate:
                    fcntl.flock(self._fd("gate"), fcntl.LOCK_UN)
                if held_work:
                    self._acquire_work()

    def _acquire_work(self) -> None:
        fcntl.flock(self._fd("gate"), fcntl.LOCK_SH)  # waits while a measurement holds the gate
        try:
            fcntl.flock(self._fd("work"), fcntl.LOCK_SH)
        finally:
            fcntl.flock(self._fd("gate"), fcntl.LOCK_UN)


def _lock_exclusive(fd: int, deadline: float) -> bool:
    """An exclusive flock, retried until ``deadline`` (monotonic); False if it never came."""
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.01)


_GATE: Optional[MeasureGate] = None
_GATE_PID = -1


def gate() -> MeasureGate:
    """This process's gate (a fresh one after a fork: lock files are per open file)."""
    global _GATE, _GATE_PID
    if _GATE is None or _GATE_PID != os.getpid():
        _GATE = MeasureGate(enabled=os.environ.get("AUTOEFF_MEASURE_GATE", "1") != "0",
                            timeout_s=float(os.environ.get("AUTOEFF_MEASURE_GATE_TIMEOUT_S", "600")))
        _GATE_PID = os.getpid()
    return _GATE
