"""Parameter count and bytes of a model as stored (after any quantization)."""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn


def model_size(model: nn.Module) -> Dict[str, int]:
    """Unique parameters and buffers, counted once even when shared across layers."""
    seen = set()
    n_params = 0
    n_bytes = 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        if isinstance(t, nn.Parameter) or t.requires_grad:
            n_params += t.numel()
        n_bytes += t.numel() * t.element_size()
    return {"params": int(n_params), "size_bytes": int(n_bytes)}
