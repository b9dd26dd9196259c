"""The ONNX graph of a deployed model: built once here, for both its users (``autoeff export --onnx``
writes it to disk, ``deploy.runtime: onnxruntime`` measures it, :mod:`autoeff.measure.onnxrt`).

* The exported module is the serving contract (``model/serving.py``): ``ServingModel(model,
  task)(x, mask) -> logits``, inputs named ``x`` and ``mask``, output ``logits``; a decoder's graph
  is its prefill pass (logits (B, N, vocab)).
* The weights are those the model computes with, in fp32 and plain parameters
  (:func:`fp32_module`: a quantized model's weights dequantized from their stored integers, a
  bf16/fp16 model's widened to fp32).
* The exporter is ``torch.export`` then ``torch.onnx.export(dynamo=True)`` at opset 18, at the
  shapes of the example inputs (static shapes: Linformer and Synthesizer are built for one
  length). It traces inside ``export_mode`` (``attention/_traceable.py``): Longformer's and
  Reformer's fast window kernel (worker threads, blocking decided from values,
  ``int(hash_seed)``) is replaced by a traceable formulation of the same attention. Before the
  ONNX translation the traced graph is rewritten (:data:`DECOMPOSITIONS`) where an operator has
  no translation: gated_deltanet's ``linalg_solve_triangular`` becomes fixed-step forward
  substitution (:func:`solve_triangular`), an ``amax`` over every dim lists its dims.
* Quantized graphs (:func:`quantize`): 8 bits = onnxruntime's dynamic quantization
  (``quantize_dynamic``: per-channel int8 weights of every MatMul/Gemm with a constant 2-D
  weight, 7-bit ``reduce_range`` so that u8 x s8 products do not saturate on CPUs without VNNI,
  activations quantized at run time: ``MatMulInteger``); 4 bits = ``MatMulNBits``
  (``MatMulNBitsQuantizer``, round-to-nearest, symmetric, blocks of :data:`NBITS_BLOCK` along the
  input dimension).

A step that fails raises :class:`GraphError` saying which step and why (``what``, ``cause``); each
caller words it for its own command (:class:`autoeff.export.onnx.ExportError`,
:class:`autoeff.measure.onnxrt.OrtUnsupported`).
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
import warnings
from typing import List

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..attention._traceable import export_mode
from ..model.serving import ServingModel

OPSET = 18
#: an fp32 graph reproduces the eager model when |y_ort - y_torch| <= FP32_ATOL + FP32_RTOL * |y_torch|
FP32_ATOL, FP32_RTOL = 1e-4, 1e-3
FP32_TOLERANCE = f"|d| <= {FP32_ATOL:g} + {FP32_RTOL:g} |y|"
#: MatMulNBits: weights quantized in blocks of this many along the input dimension
NBITS_BLOCK = 32

#: what failed: torch.export, the ONNX translation, the quantizer
TRACE = "torch.export could not trace it"
TRANSLATE = "an operator of its graph has no ONNX translation"
QUANTIZE = "onnxruntime's quantizer failed"


class GraphError(RuntimeError):
    """A step of building the graph failed: ``what`` (one of :data:`TRACE`, :data:`TRANSLATE`,
    :data:`QUANTIZE`) and ``cause`` (the underlying error, one line)."""

    def __init__(self, what: str, cause: str):
        super().__init__(f"{what} ({cause})")
        self.what, self.cause = what, cause


@contextlib.contextmanager
def quiet():
    """The exporter and the quantizer log progress and hints; keep the caller's output clean."""
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


def cause(e: BaseException) -> str:
    """The root of an exception chain, one line: ``Type: first line``."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def fp32_module(model: nn.Module) -> nn.Module:
    """A copy of the deployed model with its weights as it computes with them, in fp32 and plain
    parameters (quantized weights dequantized, half precision widened); the model itself is left
    alone."""
    m = copy.deepcopy(model)
    for mod in list(m.modules()):
        if parametrize.is_parametrized(mod):
            # not parametrize.remove_parametrizations: the copy shares its parametrized class with
            # the model, and removing would delete the property from that class, the model's too
            with torch.no_grad():
                values = {name: getattr(mod, name).detach().clone() for name in mod.parametrizations}
            del mod._modules["parametrizations"]
            mod.__class__ = mod.__class__.__bases__[0]  # the module's own class, before parametrization
            for name, v in values.items():
                mod.register_parameter(name, nn.Parameter(v, requires_grad=False))
    return m.float().eval()


def fp32_matches(got: torch.Tensor, ref: torch.Tensor) -> bool:
    """Whether an fp32 graph's outputs ``got`` reproduce the eager model's ``ref`` (same shape,
    within :data:`FP32_ATOL` + :data:`FP32_RTOL` x |ref| everywhere)."""
    return got.shape == ref.shape and bool(((got - ref).abs() <= FP32_ATOL + FP32_RTOL * ref.abs()).all())


# ------------------------------------------------------------------------------------------
# rewrites of the traced graph (operators without an ONNX translation)
# ------------------------------------------------------------------------------------------


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
    form, Yang et al. 2024, solves a unit lower-triangular C x C system per chunk) is what the
    graph computes."""
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
DECOMPOSITIONS = {torch.ops.aten.amax.default: _amax,
                  torch.ops.aten.linalg_solve_triangular.default: _solve_triangular}


# ------------------------------------------------------------------------------------------
# the graphs
# ------------------------------------------------------------------------------------------


def trace(module: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> "torch.export.ExportedProgram":
    """``module(x, mask)`` traced by torch.export with the families' traceable formulations
    (``export_mode``) and :data:`DECOMPOSITIONS` applied. Raises :class:`GraphError` (:data:`TRACE`)."""
    try:
        with quiet(), export_mode(module):
            program = torch.export.export(module, (x, mask), strict=False)
            return program.run_decompositions(DECOMPOSITIONS)
    except Exception as e:  # torch.export could not trace the family
        raise GraphError(TRACE, cause(e)) from None


def to_onnx(program, x: torch.Tensor, mask: torch.Tensor) -> bytes:
    """The traced program as a serialized ONNX model (opset :data:`OPSET`, inputs ``x``, ``mask``,
    output ``logits``). Raises :class:`GraphError` (:data:`TRANSLATE`)."""
    with tempfile.TemporaryDirectory(prefix="autoeff-onnx-") as tmp:
        path = os.path.join(tmp, "model.onnx")
        try:
            with quiet():
                torch.onnx.export(program, (x, mask), path, input_names=["x", "mask"], output_names=["logits"],
                                  dynamo=True, opset_version=OPSET, verbose=False, external_data=False)
        except Exception as e:  # traced, but an operator has no ONNX translation
            raise GraphError(TRANSLATE, cause(e)) from None
        with open(path, "rb") as f:
            return f.read()


def serving_graph(model: nn.Module, task: str, x: torch.Tensor, mask: torch.Tensor) -> bytes:
    """The fp32 ONNX graph (serialized) of ``ServingModel(fp32_module(model), task)`` at the
    shapes of ``x`` and ``mask``; ``model`` is left alone. Raises :class:`GraphError`."""
    wrapped = ServingModel(fp32_module(model), task).eval()  # the serving contract: (x, mask) -> logits
    return to_onnx(trace(wrapped, x, mask), x, mask)


def not_2d_weight(graph) -> List[str]:
    """MatMul nodes of an ``onnx`` GraphProto whose constant operand is not a 2-D matrix (e.g. a
    batched product with a constant tensor): onnxruntime's per-channel int8 MatMul and MatMulNBits
    do not take them; they stay fp32."""
    dims = {t.name: len(t.dims) for t in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and len(n.input) > 1 and dims.get(n.input[1], 2) != 2]


def quantize(fp32: bytes, bits: int) -> bytes:
    """The fp32 graph at ``bits``: 8 = ``quantize_dynamic`` (int8 MatMulInteger), 4 =
    ``MatMulNBits`` (see the module docstring), 32 = itself. Raises :class:`GraphError`
    (:data:`QUANTIZE`); ``ValueError`` for any other ``bits``."""
    import onnx

    if bits == 32:
        return fp32
    if bits not in (8, 4):
        raise ValueError(f"bits must be 32, 8 or 4, not {bits}")
    try:
        with tempfile.TemporaryDirectory(prefix="autoeff-onnx-") as tmp, quiet():
            src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, f"q{bits}.onnx")
            with open(src, "wb") as f:
                f.write(fp32)
            model = onnx.load(src)
            if bits == 8:
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                                 op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=not_2d_weight(model.graph),
                                 extra_options={"MatMulConstBOnly": True})
            else:
                from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

                q = MatMulNBitsQuantizer(model, bits=4, block_size=NBITS_BLOCK, is_symmetric=True,
                                         nodes_to_exclude=not_2d_weight(model.graph))
                q.process()
                q.model.save_model_to_file(dst, use_external_data_format=False)
            with open(dst, "rb") as f:
                return f.read()
    except Exception as e:
        raise GraphError(QUANTIZE, cause(e)) from None
