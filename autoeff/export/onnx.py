"""`autoeff export --onnx`: the chosen trial's deployed model as ONNX, checked with onnxruntime.

Two files per task (a multi-task model gives one pair per task, ``<stem>.<task>.onnx``):

* ``<stem>.onnx``: fp32. The trial's deployed model (pruned structure included) with every
  weight as the model computes with it: a quantized model's weights dequantized from their
  stored integers, a bf16/fp16 model's weights widened to fp32. onnxruntime must reproduce the
  PyTorch model within ``|y_ort - y_torch| <= FP32_ATOL + FP32_RTOL * |y_torch|`` on
  validation examples.
* ``<stem>.int8.onnx``: int8, where onnxruntime's quantizer supports it: dynamic quantization
  of every MatMul/Gemm weight (``onnxruntime.quantization.quantize_dynamic``, per-channel int8
  weights in 7 bits (``reduce_range``: u8 x s8 products must not saturate on CPUs without VNNI),
  activations quantized at run time: ``MatMulInteger``). Compared with the same PyTorch
  model on the class probabilities (softmax of the logits, which ignores a shift of all logits):
  ``max |p_int8 - p| <= INT8_PROB``; the share of examples with the same predicted class is
  reported beside it.

The exported module is the serving contract (``model/serving.py``): ``ServingModel(model,
task)(x, mask) -> logits``, inputs named ``x`` and ``mask``, output ``logits``; a decoder's graph
is its prefill pass (logits (B, N, vocab)).

The graph is built by :mod:`autoeff.measure.onnx_graph`, the same graph ``deploy.runtime:
onnxruntime`` measures: ``torch.onnx.export(dynamo=True)`` (torch.export) at opset 18, at the
deployment batch size and each task's sequence length (static shapes: Linformer and Synthesizer
are built for one length), traced inside ``export_mode`` (``attention/_traceable.py``:
Longformer's and Reformer's traceable formulations; the reference outputs onnxruntime is compared
with come from the fast kernels), with the traced graph's operators that have no ONNX translation
rewritten (gated_deltanet's triangular solve as fixed-step forward substitution, ``amax`` over
every dim); the int8 file is that module's dynamic quantization. A family that torch.export
cannot trace or whose graph still has an untranslatable operator says so (:class:`ExportError`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import torch

from ..compress import build_deployed
from ..config import RunConfig, task_spec
from ..measure import onnx_graph
from ..measure.onnx_graph import FP32_ATOL, FP32_RTOL, FP32_TOLERANCE, fp32_matches  # noqa: F401 - its tolerance
from ..model.serving import ServingModel

INT8_PROB = 0.05
OPSET = onnx_graph.OPSET


class ExportError(RuntimeError):
    """The model cannot be exported or does not match PyTorch; the message says why."""


@dataclass
class OnnxFile:
    path: str
    precision: str  # fp32 | int8
    size_bytes: int
    max_abs_diff: float
    agreement: float  # fraction of examples with the same predicted class
    tolerance: str
    ok: bool


@dataclass
class OnnxReport:
    files: List[OnnxFile] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def _examples(cfg: RunConfig, task_index: int, n: int):
    from ..tasks import load_task

    t = cfg.tasks[task_index]
    val = load_task(t, cfg.data_dir).splits["val"]
    k = min(n, len(val))
    return val.x[:k], val.mask[:k]


def _run_ort(path: Path, x: torch.Tensor, mask: torch.Tensor, batch: int):
    import numpy as np
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = []
    for i in range(0, x.shape[0] - batch + 1, batch):
        outs.append(sess.run(None, {"x": x[i:i + batch].numpy(), "mask": mask[i:i + batch].numpy()})[0])
    return torch.from_numpy(np.concatenate(outs))


def _export(module, x: torch.Tensor, mask: torch.Tensor, path: Path, family: str) -> None:
    """Write the fp32 graph of ``module`` (``ServingModel`` of the fp32 model) to ``path``."""
    try:
        graph = onnx_graph.to_onnx(onnx_graph.trace(module, x, mask), x, mask)
    except onnx_graph.GraphError as e:
        raise ExportError(f"attention family '{family}' cannot be exported to ONNX on torch {torch.__version__}: "
                          f"{e.what} ({e.cause})") from None
    path.write_bytes(graph)


def export_onnx(cfg: RunConfig, checkpoint: str, out: str, *, int8: bool = True, examples: int = 64) -> OnnxReport:
    """Export the deployed model of ``cfg`` with the weights of ``checkpoint`` to ONNX (fp32, and
    int8 where supported), next to ``out``; check each file against PyTorch with onnxruntime.
    Raises :class:`ExportError` when the family cannot be exported."""
    model = build_deployed(cfg)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    model = onnx_graph.fp32_module(model)  # the weights it computes with, fp32 plain parameters
    report = OnnxReport()
    if cfg.compress.bits != 32:
        report.notes.append(f"the trial's model is stored at {cfg.compress.bits} bits; the fp32 file holds the weights "
                            "it computes with (dequantized / widened to fp32)")
    out_p = Path(out)
    batch = cfg.deploy.batch_size
    for i, t in enumerate(cfg.tasks):
        stem = out_p.with_suffix("") if len(cfg.tasks) == 1 else out_p.with_suffix("").with_name(f"{out_p.stem}.{t.name}")
        spec = task_spec(t)
        wrapped = ServingModel(model, spec.name).eval()  # the serving contract: (x, mask) -> logits
        x, mask = _examples(cfg, i, max(examples, batch))
        x, mask = x[: (x.shape[0] // batch) * batch], mask[: (x.shape[0] // batch) * batch]
        fp32_path = stem.with_suffix(".onnx")
        _export(wrapped, x[:batch], mask[:batch], fp32_path, "/".join(sorted(set(cfg.attention.kinds))))
        with torch.inference_mode():
            ref = torch.cat([wrapped(x[j:j + batch], mask[j:j + batch]) for j in range(0, x.shape[0], batch)])
        got = _run_ort(fp32_path, x, mask, batch)
        report.files.append(OnnxFile(str(fp32_path), "fp32", fp32_path.stat().st_size, float((got - ref).abs().max()),
                                     float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
                                     FP32_TOLERANCE, fp32_matches(got, ref)))
        if not int8:
            continue
        q_path = stem.with_suffix(".int8.onnx")
        try:  # the weights of linear layers (MatMul / Gemm with a constant 2-D weight)
            q_path.write_bytes(onnx_graph.quantize(fp32_path.read_bytes(), 8))
            got8 = _run_ort(q_path, x, mask, batch)
        except Exception as e:  # the quantizer or the runtime does not support this graph
            why = e.cause if isinstance(e, onnx_graph.GraphError) else onnx_graph.cause(e)
            report.notes.append(f"{t.name}: no int8 ONNX: onnxruntime's dynamic quantization failed ({why})")
            q_path.unlink(missing_ok=True)
            continue
        d8 = float((got8 - ref).abs().max())
        dp = float((got8.softmax(-1) - ref.softmax(-1)).abs().max())
        agree = float((got8.argmax(-1) == ref.argmax(-1)).float().mean())
        report.files.append(OnnxFile(str(q_path), "int8", q_path.stat().st_size, d8, agree,
                                     f"class probabilities within {INT8_PROB:g} (now {dp:.3g})", dp <= INT8_PROB))
    return report


def describe(report: OnnxReport) -> List[str]:
    lines = []
    for f in report.files:
        verdict = "matches PyTorch" if f.ok else "DOES NOT match PyTorch"
        lines.append(f"onnx: {f.path} ({f.precision}, {f.size_bytes / 2**20:.3f} MB): onnxruntime {verdict}: "
                     f"max |d| = {f.max_abs_diff:.3g}, same class on {f.agreement:.0%} (tolerance {f.tolerance})")
    lines.extend(f"onnx: note: {n}" for n in report.notes)
    return lines
