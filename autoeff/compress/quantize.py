"""Quantization of a trained model to 16, 8 or 4 bits, stored at that width.

* 16 bits: the whole model (parameters and buffers) in bf16, or fp16 (``compress.half``).
* 8 bits: every floating-point weight of two or more dimensions with at least
  :data:`MIN_NUMEL` elements (every ``nn.Linear`` weight, the attention projections included,
  the token embeddings, the learned positions, Linformer's E and F, Synthesizer's synthetic
  matrices) is stored as int8 with one fp32 scale per row (symmetric, round to nearest).
* 4 bits: the same weights stored as 4-bit integers packed two per byte (uint8), with one fp16
  scale per group of ``compress.group_size`` consecutive weights of a row (symmetric; groups of
  64 by default: 4.25 bits per weight. llama.cpp's "Q4_0" is this layout at groups of 32, 4.5 bits).

Biases, LayerNorm parameters, the CLS vector and tensors below :data:`MIN_NUMEL` elements stay in
fp32 (:func:`quantize` reports them: ``float_params``), as do buffers (FAVOR+ random features,
Reformer's hash seed).

How the low-bit weights are used (weight-only quantization): each quantized tensor becomes a
``torch.nn.utils.parametrize`` parametrization of the module that owns it. The module keeps its
parameter names (``qkv.weight``, ``proj_k``, ...), and reading the attribute (``self.qkv.weight``,
``self.proj_k``) returns the tensor dequantized to fp32 from its stored integers, at every access
and never cached: the model holds the integers, each forward pass makes a transient fp32 copy of
the weight it is using (counted in the activation peak). So every attention family runs quantized
without a change to its code, its fused slices (``qkv.weight[d:2 * d]``) included, and its fp32
path is untouched. The compute is the fp32 kernel the family already uses; on the AVX2 CPUs
these were measured on, dequantize + fp32 GEMM was as fast as fbgemm's dynamic int8 GEMM at
widths up to 128 and faster than ATen's weight-only int8/int4 kernels (``_weight_int8pack_mm``,
``_weight_int4pack_mm_for_cpu``), which ran 2-30x slower than fp32 there (see
experiments/compression).

A quantized model's ``state_dict`` holds the stored integers and scales under
``<module>.parametrizations.<name>.original0`` / ``original1``: :func:`quantize` applied to a
freshly built model (any weights) gives the same structure, so a checkpoint of a quantized model
loads into ``autoeff.build_model(cfg)`` of its config.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Tuple

import torch
from torch import nn
from torch.nn.utils import parametrize

#: tensors with fewer elements stay in float (their scales would cost more than they save)
MIN_NUMEL = 256
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
_FP16_TINY = torch.finfo(torch.float16).tiny


def _layout(shape: Tuple[int, ...], bits: int, group_size: int) -> Tuple[int, int, int, int]:
    """(rows, cols, group, padded cols): the tensor as rows x cols (last dimension = cols),
    cut into groups of ``group`` consecutive weights of a row (8 bits: one group per row)."""
    cols = shape[-1]
    rows = 1
    for s in shape[:-1]:
        rows *= s
    if bits == 8:
        return rows, cols, cols, cols
    g = min(group_size, cols + cols % 2)
    g += g % 2  # two weights per byte: groups of an even size
    padded = -(-cols // g) * g
    return rows, cols, g, padded


def quantize_values(w: torch.Tensor, bits: int, group_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Symmetric round-to-nearest quantization of ``w`` (any shape, last dim = rows' length).

    Returns integer values (rows, padded cols) as int8 in [-127, 127] (8 bits) or [-8, 7]
    (4 bits), and scales (rows, groups) in their stored dtype (fp32 for 8 bits, fp16 for 4).
    """
    rows, cols, g, padded = _layout(tuple(w.shape), bits, group_size)
    w2 = w.detach().reshape(rows, cols).float()
    if padded != cols:
        w2 = torch.nn.functional.pad(w2, (0, padded - cols))
    wg = w2.view(rows, padded // g, g)  # (R, G, g)
    qmax = 127 if bits == 8 else 7
    amax = wg.abs().amax(-1)  # (R, G)
    if bits == 8:
        scale = (amax / qmax).clamp_min(torch.finfo(torch.float32).tiny)
        used = scale
    else:
        scale = (amax / qmax).clamp_min(_FP16_TINY).to(torch.float16)
        used = scale.float()  # quantize with the scale as stored, so dequantization matches
    q = torch.round(wg / used[..., None]).clamp_(-qmax - (0 if bits == 8 else 1), qmax)
    return q.to(torch.int8).view(rows, padded), scale


def dequantize_values(q: torch.Tensor, scale: torch.Tensor, shape: Tuple[int, ...], dtype=torch.float32) -> torch.Tensor:
    """Inverse of :func:`quantize_values`: int8 values (R, padded) and scales (R, G) -> float ``shape``."""
    rows, groups = scale.shape
    cols = shape[-1]
    padded = q.shape[-1]
    w = torch.mul(q.view(rows, groups, padded // groups), scale.to(dtype)[..., None])  # (R, G, g)
    w = w.view(rows, padded)
    if padded != cols:
        w = w[:, :cols]
    return w.reshape(shape)


def pack4(q: torch.Tensor) -> torch.Tensor:
    """int8 values in [-8, 7], (R, C) with C even -> uint8 (R, C / 2), two per byte (low nibble first)."""
    u = (q + 8).to(torch.uint8)
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack4(p: torch.Tensor) -> torch.Tensor:
    """uint8 (R, C / 2) -> int8 values in [-8, 7], (R, C)."""
    lo = p & 15
    hi = p >> 4
    return torch.stack((lo, hi), dim=-1).view(p.shape[0], -1).to(torch.int8).sub_(8)


class WeightOnly(nn.Module):
    """Parametrization: a weight stored as int8 (8 bits) or packed 4-bit integers plus scales,
    read back as a float tensor of its original shape (see the module docstring)."""

    def __init__(self, shape: Tuple[int, ...], bits: int, group_size: int, dtype=torch.float32):
        super().__init__()
        if bits not in (8, 4):
            raise ValueError(f"weight-only quantization stores 8 or 4 bits, got {bits}")
        self.shape = tuple(shape)
        self.bits = bits
        self.group_size = group_size
        self.dtype = dtype
        self._stored = None  # (q, scale) handed to right_inverse, so shared tensors are quantized once

    def right_inverse(self, w: torch.Tensor):
        if self._stored is not None:
            q, scale = self._stored
            self._stored = None
            return q, scale
        q, scale = quantize_values(w, self.bits, self.group_size)
        return (q if self.bits == 8 else pack4(q)), scale

    def forward(self, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        vals = q if self.bits == 8 else unpack4(q)
        return dequantize_values(vals, scale, self.shape, self.dtype)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, shape={self.shape}" + (f", group_size={self.group_size}" if self.bits == 4 else "")


class FakeQuant(nn.Module):
    """Parametrization for quantization-aware fine-tuning: the forward pass sees the weight as it
    will be stored (quantized and dequantized, exactly as :class:`WeightOnly` will give it back),
    the gradient reaches the fp32 weight unchanged (straight-through estimator)."""

    def __init__(self, bits: int, group_size: int):
        super().__init__()
        self.bits, self.group_size = bits, group_size

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q, scale = quantize_values(w, self.bits, self.group_size)
        wq = dequantize_values(q, scale, tuple(w.shape), w.dtype)
        return w + (wq - w).detach()


def quantizable(model: nn.Module) -> Dict[int, List[Tuple[str, nn.Module, str]]]:
    """The weights :func:`quantize` stores in 8 or 4 bits, grouped by tensor (a tensor shared by
    several modules or names, such as Linformer's E with ``share_kv`` or ``share_layers``, is one
    group): ``{id(tensor): [(qualified name, module, attribute), ...]}``."""
    groups: Dict[int, List[Tuple[str, nn.Module, str]]] = {}
    for mname, mod in model.named_modules(remove_duplicate=False):
        for pname, p in list(mod._parameters.items()):
            if p is None or not p.is_floating_point() or p.dim() < 2 or p.numel() < MIN_NUMEL:
                continue
            groups.setdefault(id(p), []).append((f"{mname}.{pname}" if mname else pname, mod, pname))
    # named_modules(remove_duplicate=False) lists a module reached by two paths twice: keep one
    for k, regs in groups.items():
        seen, uniq = set(), []
        for full, mod, pname in regs:
            if (id(mod), pname) not in seen:
                seen.add((id(mod), pname))
                uniq.append((full, mod, pname))
        groups[k] = uniq
    return groups


def _float_params(model: nn.Module) -> Tuple[int, List[str]]:
    """Parameters that are still stored in floating point: (element count, names)."""
    seen, n, names = set(), 0, []
    for name, p in model.named_parameters(remove_duplicate=False):
        if not p.is_floating_point() or id(p) in seen:
            continue
        seen.add(id(p))
        if ".parametrizations." in name and name.endswith(".original1"):
            continue  # scales of a quantized weight
        n += p.numel()
        names.append(name)
    return n, names


def quantize(model: nn.Module, bits: int, *, half: str = "bf16", group_size: int = 32) -> Dict[str, float]:
    """Quantize ``model`` in place to ``bits`` (32: nothing to do). Returns a report:
    ``quantized_params`` (elements stored at ``bits``), ``float_params`` (elements still in fp32:
    biases, norms, small tensors)."""
    if bits == 32:
        return {"quantized_params": 0.0, "float_params": float(_float_params(model)[0])}
    if bits == 16:
        model.to(HALF[half])
        n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values() if p.is_floating_point())
        return {"quantized_params": float(n), "float_params": 0.0}
    if bits not in (8, 4):
        raise ValueError(f"bits must be one of 32, 16, 8, 4; got {bits}")
    n_q = 0
    for regs in quantizable(model).values():
        _, mod0, name0 = regs[0]
        w = getattr(mod0, name0)
        w.requires_grad_(False)  # stored as integers from now on: no gradient
        q, scale = quantize_values(w, bits, group_size)
        stored = (q if bits == 8 else pack4(q), scale)
        for _, mod, pname in regs:
            p = WeightOnly(tuple(w.shape), bits, group_size, w.dtype)
            p._stored = stored
            parametrize.register_parametrization(mod, pname, p, unsafe=True)
        n_q += w.numel()
    n_f, _ = _float_params(model)
    return {"quantized_params": float(n_q), "float_params": float(n_f)}


@contextlib.contextmanager
def fake_quantized(model: nn.Module, bits: int, group_size: int = 32) -> Iterator[None]:
    """Quantization-aware fine-tuning: inside the block, every weight that :func:`quantize` will
    store in ``bits`` is seen quantized by the forward pass (straight-through gradient); on exit
    the fp32 weights are back, ready for the real quantization."""
    regs = [r for group in quantizable(model).values() for r in group]
    for _, mod, pname in regs:
        parametrize.register_parametrization(mod, pname, FakeQuant(bits, group_size))
    try:
        yield
    finally:
        for _, mod, pname in regs:
            if parametrize.is_parametrized(mod, pname):
                parametrize.remove_parametrizations(mod, pname, leave_parametrized=False)


def stored_bits(model: nn.Module) -> Dict[str, int]:
    """Bits each quantized weight is stored at, by its qualified name (for checks and reports)."""
    out: Dict[str, int] = {}
    for mname, mod in model.named_modules():
        plists = getattr(mod, "parametrizations", None)
        if plists is None:
            continue
        for pname, plist in plists.items():
            for p in plist:
                if isinstance(p, WeightOnly):
                    out[f"{mname}.{pname}" if mname else pname] = p.bits
    return out
