"""Models built from a RunConfig: one shared encoder, a per-task input adapter and head; or, with
``model.arch: decoder``, a causal language model (model/decoder.py, docs/decoders.md)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..config import RunConfig, TaskSpec, task_spec
from .adapters import ClassifierHead, InputAdapter
from .decoder import DecoderLM
from .encoder import Encoder

__all__ = ["AutoEffModel", "DecoderLM", "build_model", "example_inputs"]


class AutoEffModel(nn.Module):
    """Shared encoder (the searched architecture) + per-task adapters and heads.

    ``forward(x, mask, task=name)`` returns logits (B, C) for that task; with a single task
    ``task`` may be omitted.
    """

    def __init__(self, cfg: RunConfig, specs: Sequence[TaskSpec]):
        super().__init__()
        m = cfg.model
        cls_token = m.pool == "cls"
        self.specs: Dict[str, TaskSpec] = {s.name: s for s in specs}
        self.task_names: List[str] = [s.name for s in specs]
        max_len = max(s.seq_len for s in specs) + (1 if cls_token else 0)
        layers = [cfg.attention.layer(i) for i in range(m.depth)]
        self.encoder = Encoder(
            depth=m.depth, width=m.width, heads=m.heads, ffn_mult=m.ffn_mult, dropout=m.dropout,
            attention=[(a.kind, a.options_for()) for a in layers], max_len=max_len,
        )
        self.adapters = nn.ModuleDict({s.name: InputAdapter(s, m.width, m.dropout, cls_token) for s in specs})
        self.heads = nn.ModuleDict({s.name: ClassifierHead(s, m.width, m.pool) for s in specs})

    def encode(self, x: torch.Tensor, mask: torch.Tensor, task: str) -> torch.Tensor:
        h, mask = self.adapters[task](x, mask)  # (B, N', D), (B, N')
        h = self.encoder(h, mask)  # (B, N', D)
        return self.heads[task].pooled(h, mask)  # (B, D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, task: Optional[str] = None) -> torch.Tensor:
        task = task or self.task_names[0]
        if self.specs[task].pair:
            # x: (B, 2, L[, F]); both documents go through the encoder as one batch
            b = x.shape[0]
            flat_x = x.reshape(2 * b, *x.shape[2:])
            flat_m = mask.reshape(2 * b, mask.shape[-1])
            z = self.encode(flat_x, flat_m, task).view(b, 2, -1)  # (B, 2, D)
            return self.heads[task](z[:, 0], z[:, 1])  # (B, C)
        return self.heads[task](self.encode(x, mask, task))  # (B, C)


def build_model(cfg: RunConfig, specs: Optional[Sequence[TaskSpec]] = None) -> Union[AutoEffModel, "DecoderLM"]:
    """Build the model a RunConfig describes (untrained): an :class:`AutoEffModel` (encoder) or, for
    ``model.arch: decoder``, a :class:`DecoderLM`. ``specs`` default to the config's tasks."""
    if specs is None:
        specs = [task_spec(t) for t in cfg.tasks]
    torch.manual_seed(cfg.train.seed)
    if cfg.model.arch == "decoder":
        return DecoderLM(cfg, specs)
    return AutoEffModel(cfg, specs)


def example_inputs(spec: TaskSpec, batch: int, device="cpu", seed: int = 0):
    """Random full-length inputs of a task's shape (for latency and memory measurement); token
    ids are in [1, vocab_size) for class- and token-target tasks alike."""
    g = torch.Generator().manual_seed(seed)
    lead = (batch, 2) if spec.pair else (batch,)
    if spec.input_kind == "tokens":
        x = torch.randint(1, max(2, spec.vocab_size), (*lead, spec.seq_len), generator=g)
    else:
        x = torch.randn(*lead, spec.seq_len, spec.feature_dim, generator=g)
    mask = torch.ones(*lead, spec.seq_len, dtype=torch.bool)
    return x.to(device), mask.to(device)
