"""Parameter count and bytes of a model as stored (after any quantization)."""
from __future__ import annotations

import math
from typing import Dict, Set

import torch
from torch import nn
from torch.nn.utils import parametrize


def _parametrized(model: nn.Module):
    """(logical element count, ids of the stored tensors) of every parametrized weight (e.g. a
    quantized one: stored as integers and scales, read back as a float tensor)."""
    logical: Dict[tuple, int] = {}
    stored: Set[int] = set()
    for mod in model.modules():
        if not parametrize.is_parametrized(mod):
            continue
        for name, plist in mod.parametrizations.items():
            ts = [plist.original] if plist.is_tensor else [getattr(plist, f"original{i}") for i in range(plist.ntensors)]
            stored.update(id(t) for t in ts)
            key = (ts[0].data_ptr(), ts[0].numel(), ts[0].dtype)  # a tensor shared by several modules counts once
            if key not in logical:
                shape = getattr(plist[0], "shape", None) if len(plist) else None
                logical[key] = math.prod(shape) if shape is not None else getattr(mod, name).numel()
    return sum(logical.values()), stored


def model_size(model: nn.Module) -> Dict[str, int]:
    """Unique parameters and buffers, counted once even when shared across layers.

    ``params`` counts weights as the model uses them (a quantized weight counts its float
    elements); ``size_bytes`` counts what is stored (a 4-bit weight: half a byte per element
    plus its scales)."""
    n_logical, stored = _parametrized(model)
    seen = set()
    n_params = n_logical
    n_bytes = 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        if id(t) not in stored and (isinstance(t, nn.Parameter) or t.requires_grad):
            n_params += t.numel()
        n_bytes += t.numel() * t.element_size()
    return {"params": int(n_params), "size_bytes": int(n_bytes)}
