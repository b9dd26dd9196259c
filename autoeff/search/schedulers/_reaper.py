"""Cleans up after a local Ray instance whose driver died, however it died.

``ray.init`` ties the processes it starts to the driver (they die with it), but not all of them:
after a SIGKILL of the driver, Ray's dashboard and runtime-env agents live on. So the Ray
backend starts this small process next to a local instance::

    python .../schedulers/_reaper.py SESSION_DIR DRIVER_PID    (stdin: a pipe from the driver)

It waits for end-of-file on stdin, which comes when the driver exits for any reason (the kernel
closes the pipe), then ends every process that still holds a file in the instance's session
folder (its logs), the driver itself excepted: SIGTERM, then SIGKILL after a grace period.
Processes of other Ray instances (another session folder) are never touched. Linux only (it reads ``/proc``); elsewhere it exits.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import List, Sequence


def processes_using(folder: str, spare: Sequence[int] = ()) -> List[int]:
    """Pids of the processes (other than this one and ``spare``) with an open file under ``folder``."""
    folder = os.path.realpath(folder).rstrip("/") + "/"
    out = []
    skip = {os.getpid(), *spare}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        if pid in skip:
            continue
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith(folder):
                    out.append(pid)
                    break
        except OSError:
            continue
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is already dead
    except OSError:
        return False


def end_processes_using(folder: str, grace_s: float = 3.0, spare: Sequence[int] = ()) -> List[int]:
    """SIGTERM, then SIGKILL after ``grace_s``, every process holding a file under ``folder``
    (but this one and ``spare``); returns the pids it signalled."""
    pids = processes_using(folder, spare)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    return pids


def main() -> int:
    if len(sys.argv) != 3 or not os.path.isdir("/proc"):
        return 0
    folder, driver = sys.argv[1], int(sys.argv[2])
    try:
        while sys.stdin.buffer.read(4096):  # nothing is ever written: wait for end-of-file
            pass
    except (OSError, KeyboardInterrupt):
        pass
    time.sleep(1.0)  # a clean ray.shutdown() is already under way: let it finish first
    end_processes_using(folder, spare=[driver])  # a driver that closed the pipe itself is still shutting down
    return 0


if __name__ == "__main__":
    sys.exit(main())
