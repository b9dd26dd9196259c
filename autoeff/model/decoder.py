"""The decoder language model (docs/decoders.md section 3): token embedding, the block stack of
the encoder (model/encoder.py) with every layer causal, rotary positions (Su et al. 2021,
"RoFormer") set on each attention module, a final norm and an LM head tied to the embedding
(Press & Wolf 2017, "Using the Output Embedding to Improve Language Models") unless
``model.tie_embeddings: false``. Incremental decoding goes through each family's
``init_cache`` / ``forward_cached`` (docs/decoders.md section 1)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig, TaskSpec, model_max_len

__all__ = ["DecoderLM", "DecoderCache"]


@dataclass
class DecoderCache:
    """One ``LayerCache`` per layer; ``length`` = tokens seen, ``tensors()`` = everything held."""

    layers: List = field(default_factory=list)

    @property
    def length(self) -> int:
        return int(self.layers[0].length) if self.layers else 0

    def tensors(self) -> List[torch.Tensor]:
        return [t for lc in self.layers for t in lc.tensors()]


def _rotary(head_dim: int, base: float) -> nn.Module:
    from ..attention.rotary import Rotary  # autoeff/attention/rotary.py (docs/decoders.md section 1)

    return Rotary(head_dim, base)


class DecoderLM(nn.Module):
    """A causal LM over one or several token-target tasks sharing one trunk.

    Tasks with the same ``vocab_size`` share the token embedding (and head); a task whose
    vocabulary differs gets its own. ``forward(x, mask=None, task=None)`` -> logits (B, N, V).
    """

    def __init__(self, cfg: RunConfig, specs: Sequence[TaskSpec]):
        super().__init__()
        from .encoder import Encoder  # the same blocks as encoders, called with causal=True

        m = cfg.model
        bad = [s.name for s in specs if s.target != "token"]
        if bad:
            raise ValueError(f"a decoder needs token-target tasks; {bad} predict classes")
        self.specs: Dict[str, TaskSpec] = {s.name: s for s in specs}
        self.task_names: List[str] = [s.name for s in specs]
        self.vocab_key: Dict[str, str] = {s.name: f"v{s.vocab_size}" for s in specs}
        vocabs = dict.fromkeys(s.vocab_size for s in specs)  # first-seen order
        self.embed = nn.ModuleDict({f"v{v}": nn.Embedding(v, m.width) for v in vocabs})
        for e in self.embed.values():
            nn.init.normal_(e.weight, std=0.02)
        self.tied = m.tie_embeddings
        self.lm_head = None if self.tied else nn.ModuleDict(
            {f"v{v}": nn.Linear(m.width, v, bias=False) for v in vocabs})
        self.drop = nn.Dropout(m.dropout)
        layers = [cfg.attention.layer(i) for i in range(m.depth)]
        self.encoder = Encoder(  # named like the encoder's trunk so compress/ (pruning) treats both alike
            depth=m.depth, width=m.width, heads=m.heads, ffn_mult=m.ffn_mult, dropout=m.dropout,
            attention=[(a.kind, a.options_for()) for a in layers], max_len=model_max_len(cfg),
        )
        rot = _rotary(m.width // m.heads, m.rope_base)
        for blk in self.encoder.blocks:
            blk.attn.rotary = rot
        #: the longest sequence the model can process (None: any), from fixed-length families
        self.max_context: Optional[int] = (self.encoder.max_len if any(
            getattr(b.attn, "needs_fixed_length", False) for b in self.encoder.blocks) else None)

    # ---- pieces ---------------------------------------------------------------------
    def _task(self, task: Optional[str]) -> str:
        return task or self.task_names[0]

    def _embed(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.drop(self.embed[self.vocab_key[task]](x))  # (B, N, D)

    def _head(self, h: torch.Tensor, task: str) -> torch.Tensor:
        key = self.vocab_key[task]
        if self.tied:
            return F.linear(h, self.embed[key].weight)  # (B, N, V)
        return self.lm_head[key](h)  # (B, N, V)

    # ---- the API of docs/decoders.md section 3 ----------------------------------------
    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None, task: Optional[str] = None) -> torch.Tensor:
        """One causal pass: x (B, N) token ids, mask (B, N) True at real tokens -> logits (B, N, V)."""
        task = self._task(task)
        if mask is not None and not torch.compiler.is_compiling() and bool(mask.all()):
            mask = None  # no padding: the families' unmasked causal path (a traced graph keeps the mask)
        h = self._embed(x, task)  # (B, N, D)
        h = self.encoder(h, mask, causal=True)  # (B, N, D), final norm included
        return self._head(h, task)  # (B, N, V)

    def init_cache(self, batch: int, device=None, dtype=None) -> DecoderCache:
        """An empty cache (one LayerCache per layer) for ``batch`` sequences."""
        p = next(self.parameters())
        device = p.device if device is None else device
        dtype = p.dtype if dtype is None else dtype
        return DecoderCache([blk.attn.init_cache(batch, device, dtype) for blk in self.encoder.blocks])

    def forward_cached(self, x: torch.Tensor, cache: DecoderCache, task: Optional[str] = None) -> torch.Tensor:
        """x (B, T) new token ids continuing ``cache`` -> logits (B, T, V); advances the cache by T."""
        task = self._task(task)
        if self.max_context is not None and cache.length + x.shape[1] > self.max_context:
            raise ValueError(f"this decoder's fixed-length layers hold {self.max_context} tokens; "
                             f"got {cache.length + x.shape[1]}")
        h = self._embed(x, task)  # (B, T, D)
        for blk, lc in zip(self.encoder.blocks, cache.layers):
            h = blk.forward_cached(h, lc)  # (B, T, D)
        return self._head(self.encoder.norm(h), task)  # (B, T, V)

    def cache_bytes(self, batch: int, context: int, bytes_per_value: int) -> int:
        """Analytic size of the cache after ``context`` tokens: the sum over layers."""
        return sum(int(blk.attn.cache_bytes(batch, context, bytes_per_value)) for blk in self.encoder.blocks)

    @torch.no_grad()
    def generate(self, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0, top_k: int = 0,
                 seed: int = 0, task: Optional[str] = None) -> torch.Tensor:
        """Continue ``prompt_ids`` (B, P) or (P,) by ``max_new_tokens`` tokens with the cache: greedy at
        ``temperature`` 0, else sampling from softmax(logits / temperature), restricted to the ``top_k``
        most likely tokens when ``top_k`` > 0, from a generator seeded with ``seed``. Returns the new
        ids only, (B, max_new_tokens) (or (max_new_tokens,) for a 1-D prompt)."""
        if temperature < 0 or top_k < 0 or max_new_tokens < 0:
            raise ValueError("temperature, top_k and max_new_tokens must be >= 0")
        one = prompt_ids.dim() == 1
        ids = prompt_ids[None] if one else prompt_ids  # (B, P)
        if ids.shape[1] < 1:
            raise ValueError("the prompt needs at least one token")
        total = ids.shape[1] + max_new_tokens - 1  # the last new token is never fed back
        if self.max_context is not None and total > self.max_context:
            raise ValueError(f"prompt ({ids.shape[1]} tokens) + {max_new_tokens} new tokens exceed the "
                             f"{self.max_context} tokens this decoder's fixed-length layers hold")
        was_training = self.training
        self.eval()
        dev = ids.device
        g = torch.Generator(device=dev).manual_seed(int(seed))
        out = []
        try:
            cache = self.init_cache(ids.shape[0], device=dev)
            logits = self.forward_cached(ids, cache, task)[:, -1]  # (B, V) prefill
            for i in range(max_new_tokens):
                nxt = _pick(logits.float(), temperature, top_k, g)  # (B,)
                out.append(nxt)
                if i + 1 < max_new_tokens:
                    logits = self.forward_cached(nxt[:, None], cache, task)[:, -1]  # (B, V)
        finally:
            self.train(was_training)
        new = torch.stack(out, 1) if out else ids.new_zeros(ids.shape[0], 0)  # (B, T)
        return new[0] if one else new


def _pick(logits: torch.Tensor, temperature: float, top_k: int, g: torch.Generator) -> torch.Tensor:
    """One token per row of logits (B, V): argmax at temperature 0, else a seeded sample."""
    if temperature == 0:
        return logits.argmax(-1)  # (B,)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)  # (B, V)
    return torch.multinomial(probs, 1, generator=g)[:, 0]  # (B,)
