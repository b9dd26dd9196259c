"""Where a model was measured: host name, CPU model, GPU model (recorded with every trial, so
that fronts measured on a cluster of different machines can be checked for like with like)."""
from __future__ import annotations

import functools
import os
import platform
import socket
from typing import Dict, FrozenSet, Optional


def _cpuinfo_field(name: str) -> Optional[str]:
    """The value of the first ``name`` line of /proc/cpuinfo (Linux), None elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() == name:
                    return value.strip()
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name: the first ``model name`` line of /proc/cpuinfo (Linux), else what
    :mod:`platform` knows, else ``"unknown"``. The one parser used by the trial record, the
    MLflow machine tags and the benchmarks."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> FrozenSet[str]:
    """The CPU's instruction-set flags (the ``flags`` line of /proc/cpuinfo, e.g. ``avx2``,
    ``avx512_vnni``, ``avx_vnni``); empty where /proc/cpuinfo does not exist."""
    return frozenset((_cpuinfo_field("flags") or "").split())


def machine_info(device: str = "cpu") -> Dict[str, str]:
    """``{"host", "cpu", "cpus", "gpu"}``; ``gpu`` is the CUDA device's name when measuring on
    CUDA, else empty."""
    gpu = ""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(torch.device(device))
    return {"host": socket.gethostname(), "cpu": cpu_model(), "cpus": str(os.cpu_count() or 0), "gpu": gpu}
