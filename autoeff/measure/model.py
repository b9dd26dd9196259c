"""Measure a whole model as deployed: eval mode, one task input shape at a time."""
from __future__ import annotations

from typing import Dict, Sequence

import torch

from ..config import DeployConfig, TaskSpec
from ..model import AutoEffModel, example_inputs
from .decode import measure_decoder
from .latency import measure_latency
from .memory import peak_memory
from .size import model_size


def measure_model(model: AutoEffModel, specs: Sequence[TaskSpec], deploy: DeployConfig) -> Dict[str, Dict[str, float]]:
    """Per task: latency (median and spread of repeated passes) and memory of one inference pass
    at the deployment batch size and the task's sequence length. Returns
    ``{task: {"latency_ms", "latency_p10_ms", "latency_p90_ms", "latency_spread",
    "peak_memory_mb", "activation_peak_mb", "threads"}}`` plus ``{"_model": {"params", "size_mb"}}``.

    ``peak_memory_mb`` is the deployed footprint: the parameters and buffers at their stored
    size (what serving the model holds) plus ``activation_peak_mb``, the peak of the inference
    pass above that idle baseline, seen on every thread (see :mod:`autoeff.measure.memory`).
    With ``deploy.runtime: onnxruntime`` the same figures come from the exported graph in an ONNX
    Runtime session (:func:`measure_model_ort`).
    """
    if deploy.runtime == "onnxruntime":
        return measure_model_ort(model, specs, deploy)
    device = deploy.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("deploy.device is cuda but no CUDA device is available")
    was_training = model.training
    model.eval().to(device)
    size = model_size(model)
    weights_mb = size["size_bytes"] / 2**20
    out: Dict[str, Dict[str, float]] = {}
    try:
        for spec in specs:
            x, mask = example_inputs(spec, deploy.batch_size, device=device)

            def run(x=x, mask=mask, name=spec.name):
                return model(x, mask, name)

            lat = measure_latency(run, warmup=deploy.warmup, repeats=deploy.repeats, device=device, threads=deploy.threads)
            old = torch.get_num_threads()
            if deploy.threads > 0:
                torch.set_num_threads(deploy.threads)
            try:
                mem = peak_memory(run, device=device)
            finally:
                torch.set_num_threads(old)
            out[spec.name] = {**lat.as_metrics(), "peak_memory_mb": weights_mb + mem.peak_mb,
                              "activation_peak_mb": mem.peak_mb, "threads": float(lat.threads)}
    finally:
        model.train(was_training)
    out["_model"] = {"params": float(size["params"]), "size_mb": weights_mb}
    if hasattr(model, "forward_cached"):  # a decoder: the figures of generation (docs/decoders.md section 4)
        out["_model"].update(decoder_figures(model, specs, deploy))
    return out


#: model-level figures of a measurement under onnxruntime (the settings and the graph)
ORT_MODEL_FIGURES = ("onnx_size_mb", "ort_threads", "ort_mem_arena", "ort_bits")


def measure_model_ort(model: AutoEffModel, specs: Sequence[TaskSpec], deploy: DeployConfig) -> Dict[str, Dict[str, float]]:
    """:func:`measure_model` under ``deploy.runtime: onnxruntime``: the same figures, each task's
    pass run as the exported ONNX graph in an ONNX Runtime CPU session (see
    :mod:`autoeff.measure.onnxrt`): ``peak_memory_mb`` = the graph's weights at their stored size
    (``onnx_size_mb``) + ``activation_peak_mb`` (the first run of a fresh session, memray).
    ``_model`` adds the session's settings (``ort_threads``, ``ort_mem_arena``), the graph's
    bits (``ort_bits``) and the largest task graph's ``onnx_size_mb``. Raises
    :class:`~autoeff.measure.onnxrt.OrtUnsupported` ("family X cannot run in onnxruntime: ...")
    for a model that cannot be exported or run; a decoder is refused (config.check_runtime)."""
    from .onnxrt import OrtUnsupported, measure_ort

    if hasattr(model, "forward_cached"):
        raise OrtUnsupported("deploy.runtime onnxruntime measures encoders only: measure decoders with runtime torch")
    was_training = model.training
    model.eval().to("cpu")
    size = model_size(model)
    out: Dict[str, Dict[str, float]] = {}
    extra: Dict[str, float] = {}
    try:
        for spec in specs:
            x, mask = example_inputs(spec, deploy.batch_size, device="cpu")
            r = measure_ort(model, spec.name, x, mask, threads=deploy.threads, mem_arena=deploy.ort_mem_arena,
                            warmup=deploy.warmup, repeats=deploy.repeats)
            for k in ORT_MODEL_FIGURES:
                v = r.pop(k)
                extra[k] = max(extra.get(k, v), v)
            out[spec.name] = r
    finally:
        model.train(was_training)
    out["_model"] = {"params": float(size["params"]), "size_mb": size["size_bytes"] / 2**20, **extra}
    return out


#: timed decode steps at the least (docs/architecture.md, measurement protocol: decoders)
MIN_DECODE_STEPS = 16


def decoder_figures(model, specs: Sequence[TaskSpec], deploy: DeployConfig) -> Dict[str, float]:
    """``prefill_ms``, ``decode_ms``, ``tokens_per_s``, ``cache_mb`` (and their spreads) of a
    decoder at ``deploy.prompt_len`` / ``deploy.context_len``, and ``peak_memory_mb`` as the
    deployed footprint while decoding at that context. The caller holds the measurement gate."""
    prompt_len, context_len = deploy.decode_lengths(max(s.seq_len for s in specs))
    res = measure_decoder(model, batch_size=deploy.batch_size, prompt_len=prompt_len, context_len=context_len,
                          warmup=deploy.warmup, repeats=max(deploy.repeats, MIN_DECODE_STEPS),
                          threads=deploy.threads, device=deploy.device, gated=False)
    m = res.as_metrics()
    for k in ("threads", "measure_wait_s", "measure_contended", "measure_gate_timeout", "size_mb"):
        m.pop(k, None)  # the encoder-side measurement of the same pass records these
    return m
