"""Measured where it will run: the deployed model as an ONNX graph in an ONNX Runtime session
(``deploy.runtime: onnxruntime``).

The graph is the one ``autoeff export --onnx`` writes, built by :mod:`autoeff.measure.onnx_graph`:
the serving contract ``ServingModel(model, task)(x, mask) -> logits`` traced by ``torch.export``
with the families' traceable formulations (Longformer, Reformer: ``attention/_traceable.py``) and
the graph rewrites (gated_deltanet's triangular solve), then ``torch.onnx.export(dynamo=True)`` at
opset 18, static shapes (``deploy.batch_size`` x the task's sequence length). Before it is
measured, onnxruntime must reproduce the eager model (its fast kernels) within the exporter's
tolerance (:func:`check_graph`). A quantized model is exported with the weights it computes with
(dequantized to fp32), then:

* 8 bits: onnxruntime's dynamic quantization (``quantize_dynamic``: per-channel int8 weights of
  every MatMul/Gemm with a constant 2-D weight, 7-bit ``reduce_range``, activations quantized at
  run time: ``DynamicQuantizeLinear`` + ``MatMulInteger``), the same call as the exporter's int8
  file. Its speed depends on the CPU's integer dot-product instructions: ``avx512_vnni`` or
  ``avx_vnni`` (VPDPBUSD, u8 x s8 in one instruction); with ``avx2`` only, the u8 x s8 products
  go through VPMADDUBSW, which saturates at 16 bits (hence ``reduce_range``) and is often no faster
  than fp32 at small widths (:func:`int8_instructions` reads them from /proc/cpuinfo).
* 4 bits: ``MatMulNBits`` (onnxruntime's weight-only block quantization,
  ``MatMulNBitsQuantizer``, its default round-to-nearest, symmetric, blocks of 32 along the input
  dimension, ``accuracy_level`` unset): the kernel dequantizes the 4-bit blocks and computes in
  fp32, so 4 bits cut the weights' bytes, not the arithmetic. Only MatMuls with a constant 2-D
  weight are converted.
* 16 bits: refused (the CPU provider has no bf16 kernels and few fp16 ones; the graph would be
  cast back to fp32, which is not what was asked).

Session settings (recorded with every measurement, stated in the metrics glossary):
``intra_op_num_threads`` = ``deploy.threads`` (or torch's thread count when 0),
``inter_op_num_threads`` = 1, execution mode ``ORT_SEQUENTIAL``, graph optimizations
``ORT_ENABLE_ALL``, ``enable_cpu_mem_arena`` = ``deploy.ort_mem_arena``, CPU execution provider.

Memory: the deployed footprint is the graph's initializers at their stored size (``onnx_size_mb``)
plus the peak of one inference pass: the first ``run`` of a fresh session (its arena, if on,
starts empty), tracked by memray like the PyTorch runtime's pass (:mod:`autoeff.measure.memory`).
onnxruntime's CPU allocator takes its buffers with ``posix_memalign`` (64-byte alignment), on the
calling thread or the intra-op pool's threads, so memray sees them all. With the arena on, what is
counted is what the arena reserves during the pass (it rounds its extensions up and keeps them:
what the process holds); with the arena off, the live tensor buffers themselves.

A family that cannot be exported or run raises :class:`OrtUnsupported`: ``"family X cannot run in
onnxruntime: ..."`` (a trial records it as its failure reason and the search goes on).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import onnx_graph
from .onnx_graph import FP32_TOLERANCE, cause as _cause, fp32_matches
from ..model.serving import ServingModel

EXECUTION_MODE = "ORT_SEQUENTIAL"
GRAPH_OPTIMIZATION = "ORT_ENABLE_ALL"
INTER_OP_THREADS = 1
#: CPU flags that decide int8 GEMM speed, best first
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512bw", "avx2")


class OrtUnsupported(RuntimeError):
    """The model cannot be measured in onnxruntime; the message says why."""


@dataclass(frozen=True)
class OrtSettings:
    """The session's settings: what a measurement under onnxruntime depends on."""

    threads: int
    mem_arena: bool = True
    execution_mode: str = EXECUTION_MODE
    inter_op_threads: int = INTER_OP_THREADS
    graph_optimization: str = GRAPH_OPTIMIZATION

    def as_metrics(self) -> Dict[str, float]:
        return {"ort_threads": float(self.threads), "ort_mem_arena": float(self.mem_arena)}


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def int8_instructions() -> Dict[str, bool]:
    """Which of :data:`INT8_FLAGS` this CPU has (the flags line of /proc/cpuinfo, read by
    :func:`autoeff.measure.host.cpu_flags`)."""
    from .host import cpu_flags

    flags = cpu_flags()
    return {f: f in flags for f in INT8_FLAGS}


def int8_verdict() -> str:
    """One sentence on what onnxruntime's int8 MatMul can use on this CPU."""
    have = int8_instructions()
    if have.get("amx_int8") or have.get("avx512_vnni") or have.get("avx_vnni"):
        which = ", ".join(f for f in ("amx_int8", "avx512_vnni", "avx_vnni") if have.get(f))
        return f"this CPU has {which}: int8 dot products in one instruction (VPDPBUSD), int8 can beat fp32"
    if have.get("avx2"):
        return ("this CPU has avx2 but no VNNI (avx512_vnni / avx_vnni): int8 products go through VPMADDUBSW + "
                "VPMADDWD (saturating 16-bit sums, hence reduce_range), often no faster than fp32 at small widths")
    return "this CPU has neither VNNI nor avx2: onnxruntime's int8 kernels fall back to slow generic code"


# ------------------------------------------------------------------------------------------
# graph
# ------------------------------------------------------------------------------------------


def weight_bits(model: nn.Module) -> int:
    """The bits the deployed model stores its quantized weights at: 8 or 4 (compress's weight-only
    parametrizations), 16 (half-precision parameters), else 32."""
    bits = {getattr(p, "bits", None) for mod in model.modules() if parametrize.is_parametrized(mod)
            for plist in mod.parametrizations.values() for p in plist}
    bits.discard(None)
    if bits:
        return int(min(bits))
    if any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters()):
        return 16
    return 32


def families(model: nn.Module) -> str:
    """The attention families of a model, e.g. ``full`` or ``linformer/longformer``."""
    names = set()
    for mod in model.modules():
        name = getattr(type(mod), "name", None)
        if isinstance(name, str) and hasattr(type(mod), "supports_causal"):
            names.add(name)
    return "/".join(sorted(names)) or type(model).__name__


def _refusal(family: str, e: onnx_graph.GraphError, bits: Optional[int] = None) -> OrtUnsupported:
    at = f" at {bits} bits" if bits is not None else ""
    on = f" on torch {torch.__version__}" if e.what == onnx_graph.TRACE else ""
    return OrtUnsupported(f"family {family} cannot run in onnxruntime{at}: {e.what}{on} ({e.cause})")


def export_graph(model: nn.Module, task: str, x: torch.Tensor, mask: torch.Tensor) -> bytes:
    """The fp32 ONNX graph (serialized) of ``model``'s task ``task`` at the shapes of ``x`` and
    ``mask``: the exporter's graph (:func:`autoeff.measure.onnx_graph.serving_graph`). Raises
    :class:`OrtUnsupported` naming the family when it cannot be exported."""
    try:
        return onnx_graph.serving_graph(model, task, x, mask)
    except onnx_graph.GraphError as e:
        raise _refusal(families(model), e) from None


def quantize_graph(fp32: bytes, bits: int, family: str = "model") -> bytes:
    """The graph at ``bits``: 8 = onnxruntime's dynamic int8 quantization, 4 = ``MatMulNBits``
    (:func:`autoeff.measure.onnx_graph.quantize`). Raises :class:`OrtUnsupported` when the
    quantizer fails."""
    if bits not in (32, 8, 4):
        raise OrtUnsupported(f"family {family} cannot run in onnxruntime at {bits} bits: only fp32, int8 "
                             "(dynamic quantization) and 4-bit weights (MatMulNBits) are measured")
    try:
        return onnx_graph.quantize(fp32, bits)
    except onnx_graph.GraphError as e:
        raise _refusal(family, e, bits) from None


def initializer_bytes(graph: bytes) -> int:
    """Bytes of the graph's constant tensors (its weights) at their stored type."""
    import onnx
    from onnx import helper

    g = onnx.load_from_string(graph).graph
    total = 0
    for t in g.initializer:
        n = 1
        for d in t.dims:
            n *= d
        np_dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
        total += n * np_dtype.itemsize
    return int(total)


def count_ops(graph: bytes) -> Dict[str, int]:
    """Node count by operator type (e.g. how many ``MatMulInteger`` an int8 graph holds)."""
    import onnx

    out: Dict[str, int] = collections.Counter(n.op_type for n in onnx.load_from_string(graph).graph.node)
    return dict(out)


def session(graph: bytes, settings: OrtSettings):
    """An ``InferenceSession`` on the CPU provider with ``settings``."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = max(1, settings.threads)
    opts.inter_op_num_threads = settings.inter_op_threads
    opts.execution_mode = getattr(ort.ExecutionMode, settings.execution_mode)
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, settings.graph_optimization)
    opts.enable_cpu_mem_arena = bool(settings.mem_arena)
    try:
        return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise OrtUnsupported(f"onnxruntime could not load the graph ({_cause(e)})") from None


def feeds(sess, x: torch.Tensor, mask: torch.Tensor) -> Dict[str, object]:
    """The session's inputs from ``x`` and ``mask`` (an input the exporter dropped is skipped)."""
    have = {"x": x.detach().cpu().numpy(), "mask": mask.detach().cpu().numpy()}
    return {i.name: have[i.name] for i in sess.get_inputs()}


# ------------------------------------------------------------------------------------------
# the graphs of a model, cached by its weights (two readings per measurement, one export)
# ------------------------------------------------------------------------------------------

#: fingerprint -> (fp32 graph or its refusal, {bits: graph or its refusal})
_CACHE: "collections.OrderedDict[str, tuple]" = collections.OrderedDict()
#: at most this many entries and bytes of graphs are kept (the newest entry always)
_CACHE_SIZE = 8
_CACHE_BYTES = 256 * 2**20


_PLAIN = (bool, int, float, str)


def _fingerprint(model: nn.Module, task: str, x: torch.Tensor) -> str:
    """What decides the graph: the model object, its structure (every module's type and plain
    attributes, e.g. a window size: two families can hold the same weights), its weights (they
    change in place while training), the task and the input shape."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{id(model)}|{task}|{tuple(x.shape)}|{x.dtype}".encode())
    for name, mod in model.named_modules():
        plain = sorted((k, repr(v)) for k, v in vars(mod).items()
                       if not k.startswith("_") and (isinstance(v, _PLAIN) or dataclasses.is_dataclass(v)))
        h.update(f"{name}:{type(mod).__module__}.{type(mod).__qualname__}:{plain};".encode())
    for k, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def graphs(model: nn.Module, task: str, x: torch.Tensor, mask: torch.Tensor, bits: int) -> Tuple[bytes, bytes]:
    """``(fp32 graph, graph at bits)`` of the model's task (the same bytes twice at 32 bits),
    exported once per weights and quantized once per bits (a few entries are cached: a
    measurement reads twice). A refusal is cached too: a model that cannot be exported is not
    traced again for the second reading or another bit width."""
    key = _fingerprint(model, task, x)
    hit = _CACHE.get(key)
    if hit is None:
        try:
            fp32 = export_graph(model, task, x, mask)
            check_graph(model, task, fp32, x, mask)
            hit = (fp32, {32: fp32})
        except OrtUnsupported as e:
            hit = (e, {})
        _CACHE[key] = hit
    _CACHE.move_to_end(key)
    if isinstance(hit[0], OrtUnsupported):
        raise OrtUnsupported(str(hit[0]))
    if bits not in hit[1]:
        try:
            hit[1][bits] = quantize_graph(hit[0], bits, families(model))
        except OrtUnsupported as e:
            hit[1][bits] = e
    while len(_CACHE) > 1 and (len(_CACHE) > _CACHE_SIZE or _cache_bytes() > _CACHE_BYTES):
        _CACHE.popitem(last=False)
    g = hit[1][bits]
    if isinstance(g, OrtUnsupported):
        raise OrtUnsupported(str(g))
    return hit[0], g


def check_graph(model: nn.Module, task: str, graph: bytes, x: torch.Tensor, mask: torch.Tensor) -> float:
    """Run the fp32 graph once on ``(x, mask)`` and compare with the eager model (the exporter's
    tolerance, :func:`autoeff.measure.onnx_graph.fp32_matches`): a graph that computes something
    else is not measured. Returns the largest difference."""
    import numpy as np

    sess = session(graph, OrtSettings(threads=1, mem_arena=False))
    got = torch.from_numpy(np.asarray(sess.run(None, feeds(sess, x, mask))[0]))
    with torch.inference_mode():
        ref = ServingModel(model, task).eval()(x, mask)  # fp32, the eager kernels
    worst = float((got - ref).abs().max()) if got.shape == ref.shape else float("nan")
    if not fp32_matches(got, ref):
        raise OrtUnsupported(f"family {families(model)} cannot run in onnxruntime: the exported graph does not match "
                             f"PyTorch (max |d| = {worst:.3g}, tolerance {FP32_TOLERANCE})")
    return worst


def _cache_bytes() -> int:
    return sum(len(g) for fp32, q in _CACHE.values() for g in {id(v): v for v in (fp32, *q.values())}.values()
               if isinstance(g, bytes))


def clear_cache() -> None:
    _CACHE.clear()


# ------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------


def measure_session(graph: bytes, x: torch.Tensor, mask: torch.Tensor, settings: OrtSettings, *,
                    warmup: int, repeats: int) -> Dict[str, float]:
    """Latency (median of ``repeats`` runs after ``warmup``) and memory (first run of a fresh
    session, memray) of ``graph`` under ``settings``: ``latency_ms`` and co., ``activation_peak_mb``,
    ``onnx_size_mb``, ``peak_memory_mb`` (= the two), plus the settings (``ort_threads``,
    ``ort_mem_arena``) and ``threads``."""
    from .latency import measure_latency
    from .memory import peak_memory

    sess = session(graph, settings)
    inputs = feeds(sess, x, mask)

    def run(sess=sess, inputs=inputs):
        return sess.run(None, inputs)

    try:
        lat = measure_latency(run, warmup=warmup, repeats=repeats, device="cpu", threads=0)
    except Exception as e:
        raise OrtUnsupported(f"onnxruntime failed to run the graph ({_cause(e)})") from None
    del sess
    fresh = session(graph, settings)
    inputs = feeds(fresh, x, mask)
    mem = peak_memory(lambda: fresh.run(None, inputs), device="cpu")
    weights_mb = initializer_bytes(graph) / 2**20
    return {**lat.as_metrics(), "activation_peak_mb": mem.peak_mb, "onnx_size_mb": weights_mb,
            "peak_memory_mb": weights_mb + mem.peak_mb, "threads": float(settings.threads), **settings.as_metrics()}


def default_threads(threads: int) -> int:
    """``deploy.threads``, or torch's intra-op thread count when it is 0."""
    return threads if threads > 0 else torch.get_num_threads()


def measure_ort(model: nn.Module, task: str, x: torch.Tensor, mask: torch.Tensor, *, threads: int = 0,
                mem_arena: bool = True, warmup: int = 3, repeats: int = 15,
                bits: Optional[int] = None) -> Dict[str, float]:
    """The deployment figures of one task of ``model`` measured in onnxruntime (see the module
    docstring): the graph at the model's stored bits (``bits`` overrides, e.g. 8 for the int8
    graph of an fp32 model)."""
    if not available():
        raise OrtUnsupported("deploy.runtime is onnxruntime but the onnxruntime package is not installed")
    b = weight_bits(model) if bits is None else bits
    if b == 16:
        raise OrtUnsupported(f"family {families(model)} cannot run in onnxruntime at 16 bits: the CPU provider has "
                             "no bf16 kernels and few fp16 ones (measure compress.bits 32, 8 or 4)")
    _, g = graphs(model, task, x, mask, b)
    settings = OrtSettings(threads=default_threads(threads), mem_arena=mem_arena)
    out = measure_session(g, x, mask, settings, warmup=warmup, repeats=repeats)
    out["ort_bits"] = float(b)
    return out
