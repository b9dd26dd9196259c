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

The exporter is ``torch.onnx.export(dynamo=True)`` (torch.export) at opset 18, at the
deployment batch size and each task's sequence length (static shapes: Linformer and
Synthesizer are built for one length). It traces inside ``export_mode`` (``attention/_traceable.py``):
Longformer's and Reformer's fast window kernel (worker threads, blocking decided from values,
``int(hash_seed)``) is replaced by a traceable formulation of the same attention; the reference
outputs onnxruntime is compared with come from the fast kernels. Before the ONNX translation the
traced graph is rewritten (``_DECOMPOSITIONS``) where an operator has no translation:
gated_deltanet's ``linalg_solve_triangular`` becomes fixed-step forward substitution
(:func:`solve_triangular`), an ``amax`` over every dim lists its dims. A family that torch.export
cannot trace or whose graph still has an untranslatable operator says so (:class:`ExportError`).
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..attention._traceable import export_mode
from ..compress import build_deployed
from ..config import RunConfig, task_spec
from ..model.serving import ServingModel

FP32_ATOL, FP32_RTOL = 1e-4, 1e-3
INT8_PROB = 0.05
OPSET = 18


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


def fp32_copy(model: nn.Module) -> nn.Module:
    """The deployed model with its weights as it computes with them, in fp32 and plain parameters."""
    for mod in list(model.modules()):
        if parametrize.is_parametrized(mod):
            for name in list(mod.parametrizations):
                parametrize.remove_parametrizations(mod, name, leave_parametrized=True)
    return model.float().eval()


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


@contextlib.contextmanager
def _quiet():
    """The exporter and the quantizer log progress and hints; keep the command's output clean."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "torch._dynamo",
                                              "torch.fx", "torch.fx.experimental.symbolic_shapes", "")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _amax(x: torch.Tensor, dim=(), keepdim: bool = False) -> torch.Tensor:
    """aten.amax as max over one dim at a time: its ONNX translation needs the dims listed, and a
    ``t.amax()`` (every dim) has none."""
    dims = sorted({d % max(1, x.dim()) for d in dim} if len(dim) else range(x.dim()), reverse=True)
    for d in dims:
        x = torch.ops.aten.max.dim(x, d, keepdim)[0]
    return x


def solve_triangular(A: torch.Tensor, B: torch.Tensor, *, upper: bool, left: bool = True,
                     unitriangular: bool = False) -> torch.Tensor:
    """``torch.linalg.solve_triangular`` as forward substitution with a fixed number of steps
    (the matrix size, static in an exported graph): row i of X = (B_i - A_i,<i X_<i) / A_ii.
    aten.linalg_solve_triangular has no ONNX translation; this (gated_deltanet's chunkwise WY
    form solves a unit lower-triangular C x C system per chunk) is what the graph computes."""
    if not left:  # X A = B  <=>  A^T X^T = B^T
        return solve_triangular(A.transpose(-1, -2), B.transpose(-1, -2), upper=not upper,
                                unitriangular=unitriangular).transpose(-1, -2)
    if upper:  # reverse the order of the unknowns: an upper system becomes a lower one
        return solve_triangular(A.flip(-1, -2), B.flip(-2), upper=False, unitriangular=unitriangular).flip(-2)
    n = A.shape[-1]
    rows = []  # (..., 1, K) each
    for i in range(n):
        r = B[..., i:i + 1, :]
        if i:
            r = r - torch.matmul(A[..., i:i + 1, :i], torch.cat(rows, -2))  # (..., 1, K)
        if not unitriangular:
            r = r / A[..., i:i + 1, i:i + 1]
        rows.append(r)
    return torch.cat(rows, -2)  # (..., N, K)


def _solve_triangular(A, B, upper, left=True, unitriangular=False):
    return solve_triangular(A, B, upper=upper, left=left, unitriangular=unitriangular)


#: rewrites applied to the traced graph before the ONNX translation
_DECOMPOSITIONS = {torch.ops.aten.amax.default: _amax,
                   torch.ops.aten.linalg_solve_triangular.default: _solve_triangular}


def _export(module: nn.Module, x: torch.Tensor, mask: torch.Tensor, path: Path, family: str) -> None:
    try:
        with _quiet(), export_mode(module):  # the families' traceable formulations
            program = torch.export.export(module, (x, mask), strict=False)
            program = program.run_decompositions(_DECOMPOSITIONS)
    except Exception as e:  # torch.export could not trace the family
        raise ExportError(f"attention family '{family}' cannot be exported to ONNX on torch {torch.__version__}: "
                          f"torch.export could not trace it ({_cause(e)})") from None
    try:
        with _quiet():
            torch.onnx.export(program, (x, mask), str(path), input_names=["x", "mask"], output_names=["logits"],
                              dynamo=True, opset_version=OPSET, verbose=False, external_data=False)
    except Exception as e:  # traced, but an operator has no ONNX translation
        path.unlink(missing_ok=True)
        raise ExportError(f"attention family '{family}' cannot be exported to ONNX on torch {torch.__version__}: "
                          f"an operator of its graph has no ONNX translation ({_cause(e)})") from None


def _not_2d_weight(path: Path) -> List[str]:
    """MatMul nodes whose constant operand is not a 2-D matrix (e.g. a batched product with a
    constant tensor): onnxruntime's per-channel int8 MatMul does not take them; they stay fp32."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    dims = {t.name: len(t.dims) for t in g.initializer}
    return [n.name for n in g.node if n.op_type == "MatMul" and len(n.input) > 1 and dims.get(n.input[1], 2) != 2]


def _cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def export_onnx(cfg: RunConfig, checkpoint: str, out: str, *, int8: bool = True, examples: int = 64) -> OnnxReport:
    """Export the deployed model of ``cfg`` with the weights of ``checkpoint`` to ONNX (fp32, and
    int8 where supported), next to ``out``; check each file against PyTorch with onnxruntime.
    Raises :class:`ExportError` when the family cannot be exported."""
    model = build_deployed(cfg)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    model = fp32_copy(model)
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
        diff = (got - ref).abs()
        ok = bool((diff <= FP32_ATOL + FP32_RTOL * ref.abs()).all())
        report.files.append(OnnxFile(str(fp32_path), "fp32", fp32_path.stat().st_size, float(diff.max()),
                                     float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
                                     f"|d| <= {FP32_ATOL:g} + {FP32_RTOL:g} |y|", ok))
        if not int8:
            continue
        q_path = stem.with_suffix(".int8.onnx")
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with _quiet():  # the weights of linear layers (MatMul / Gemm with a constant 2-D weight)
                quantize_dynamic(str(fp32_path), str(q_path), weight_type=QuantType.QInt8, per_channel=True,
                                 reduce_range=True, op_types_to_quantize=["MatMul", "Gemm"],
                                 nodes_to_exclude=_not_2d_weight(fp32_path), extra_options={"MatMulConstBOnly": True})
            got8 = _run_ort(q_path, x, mask, batch)
        except Exception as e:  # the quantizer or the runtime does not support this graph
            report.notes.append(f"{t.name}: no int8 ONNX: onnxruntime's dynamic quantization failed ({_cause(e)})")
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
