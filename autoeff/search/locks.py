"""A lock around the short moments when a worker claims the study's next trial.

Several workers (several `autoeff search` processes, or several drivers) may share one study.
Each claims a trial by counting the finished and claimed trials, asking the sampler and checking
the proposal against earlier candidates; done by two workers at once, both would see room for
"one more" and the search would overshoot ``n_trials`` (two workers with ``n_trials=8`` used to
finish 15). The claim is therefore serialized across workers, by a lock the storage's users all
see:

- ``sqlite:///FILE``: ``flock`` on a lock file for that database (one machine: sqlite is not
  shared between machines safely anyway);
- ``postgresql://``: a session advisory lock (``pg_advisory_lock``) keyed by the study;
- ``mysql://``: ``GET_LOCK`` named after the study;
- anything else: a lock within this process only.

The lock is held for milliseconds (no training or measuring inside it) and the kernel or the
database releases it when its holder dies.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import zlib
from pathlib import Path
from typing import Iterator

from ..isolation import lock_dir
from .stores import sqlite_path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_LOCAL = threading.RLock()
_ENGINES: dict = {}


@contextlib.contextmanager
def study_lock(storage: str, study_name: str) -> Iterator[None]:
    """Hold the claim lock of ``study_name`` in ``storage`` (a storage URL)."""
    path = sqlite_path(storage)
    with _LOCAL:
        if path is not None and fcntl is not None:
            key = hashlib.sha1(f"{Path(path).expanduser().resolve()}::{study_name}".encode()).hexdigest()[:16]
            fd = os.open(str(lock_dir() / f"study-{key}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock
        elif storage.startswith(("postgresql", "mysql")):
            with _db_lock(storage, study_name):
                yield
        else:
            yield


@contextlib.contextmanager
def _db_lock(storage: str, study_name: str) -> Iterator[None]:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = _ENGINES.get(storage)
    if engine is None:
        engine = _ENGINES[storage] = sqlalchemy.create_engine(storage, poolclass=NullPool)
    name = f"autoeff:{study_name}"
    with engine.connect() as conn:
        if storage.startswith("postgresql"):
            key = zlib.crc32(name.encode())  # fits pg_advisory_lock's bigint
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        else:
            name = name[:64]  # MySQL's limit on lock names
            conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, -1)"), {"n": name})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
