"""Tasks: built-in long-sequence generators and loaders for users' own data, by kind.

Add a task: one file with an options dataclass and a ``Task`` subclass decorated with
``@register_task("kind")``, plus its import line at the bottom of this file.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Callable, List, Optional, Type

import torch

from ..config import task_spec  # noqa: F401  (re-exported: the spec of a configured task)
from ..registry import TASKS
from .base import SPLITS, Split, Task, TaskData, TaskSpec, cache_dir, content_hash

log = logging.getLogger(__name__)
_REGISTRY = TASKS


def register_task(kind: str):
    """Class decorator: register a Task subclass under ``kind``."""

    def deco(cls: Type[Task]) -> Type[Task]:
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise TypeError(f"{cls!r} must subclass Task")
        return _REGISTRY.register(kind)(cls)

    return deco


def get_task(kind: str) -> Type[Task]:
    return _REGISTRY.get(kind)


def list_tasks() -> List[str]:
    """Kinds of the registered tasks (built-in generators and loaders)."""
    return _REGISTRY.names()


def load_task(task_cfg, data_dir: str = "", say: Optional[Callable[[str], None]] = None) -> TaskData:
    """Build (or load from the on-disk cache) the splits of a configured task. Generating a
    long task can take minutes on first use: ``say`` (e.g. a search's progress) hears when it
    starts and how long it took."""
    cls = get_task(task_cfg.kind)
    opts = task_cfg.options_typed()
    spec = task_spec(task_cfg)
    if not cls.cacheable:
        return TaskData(spec, cls.build(opts), cls.info(opts))
    key = content_hash(cls.fingerprint(opts))
    path = cache_dir(data_dir) / "tasks" / f"{cls.kind}-{key}.pt"
    if path.exists():
        try:
            blob = torch.load(path, weights_only=True)
            return TaskData(spec, {s: Split(*blob[s]) for s in SPLITS}, blob.get("info", {}))
        except Exception as e:  # a corrupt cache file is rebuilt, never trusted
            log.warning("ignoring unreadable task cache %s (%s)", path, e)
    t0 = time.perf_counter()
    if say is not None:
        say(f"generating task {spec.name} ({cls.kind}, {spec.seq_len} positions): first use on this machine, "
            f"cached afterwards at {path.parent}")
    splits = cls.build(opts)
    info = cls.info(opts)
    if say is not None:
        say(f"    task {spec.name} generated in {time.perf_counter() - t0:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save({**{s: (sp.x, sp.mask, sp.y) for s, sp in splits.items()}, "info": info}, tmp)
    os.replace(tmp, path)  # atomic: concurrent trials never read half a file
    return TaskData(spec, splits, info)


# one import line per task -----------------------------------------------------------
from . import listops  # noqa: E402,F401
from . import text  # noqa: E402,F401
from . import text_table  # noqa: E402,F401
from . import image_folder  # noqa: E402,F401
from . import audio_folder  # noqa: E402,F401
from . import arrays  # noqa: E402,F401
from . import hf_dataset  # noqa: E402,F401
from . import image  # noqa: E402,F401
from . import pathfinder  # noqa: E402,F401
from . import speech  # noqa: E402,F401
from . import retrieval  # noqa: E402,F401
from . import lm_text  # noqa: E402,F401
from . import mqar  # noqa: E402,F401
