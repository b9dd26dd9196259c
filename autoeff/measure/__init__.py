"""Measuring the deployable model: latency, peak memory of the inference pass, size."""
from .latency import LatencyResult, measure_latency, thread_count
from .memory import MemoryResult, peak_memory
from .size import model_size

__all__ = ["LatencyResult", "measure_latency", "thread_count", "MemoryResult", "peak_memory", "model_size"]
