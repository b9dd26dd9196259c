"""Measuring the deployable model: latency, peak memory of the inference pass, size."""
from .latency import LatencyResult, measure_latency
from .memory import MemoryResult, peak_memory
from .size import model_size


def measure_model(*a, **k):
    """See :func:`autoeff.measure.model.measure_model`."""
    from .model import measure_model as _m

    return _m(*a, **k)

__all__ = ["LatencyResult", "measure_latency", "MemoryResult", "peak_memory", "model_size", "measure_model"]
