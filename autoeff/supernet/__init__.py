"""A weight-sharing supernet over a whole search space, across attention families.

One-shot architecture search in the manner of HAT (Wang et al. 2020), AutoFormer (Chen et al.
2021) and Once-for-All (Cai et al. 2020), which share weights across depth, width and heads,
extended here to share them across attention *families* and their knobs, per layer.

The supernet holds one set of tensors at the space's largest size. A subnet is any candidate of
the space, given as a :class:`~autoeff.config.RunConfig`; it uses

* the first ``depth`` blocks and the final norm;
* the first ``width`` channels of every tensor of width ``D`` (embeddings, positions, norms,
  FFN, heads), the first ``ffn`` hidden units of each FFN (weight entanglement); heads split
  the first ``width`` channels, so a subnet's heads are always the matching slices;
* per layer, the shared query / key / value / output projections (a ``width x width`` block of
  each), whatever its family: every family declares how its projection modules are laid out in
  those blocks (:attr:`AttentionBase.projections`; Reformer's shared QK uses the query block for
  keys);
* the parameters and buffers that only its family has (Linformer's E and F at the largest
  rank, sliced to the sampled rank; Synthesizer's matrices; FAVOR+'s features; Reformer's hash
  seed), one set per family and layer, sliced to the leading entries.

**Exactness by construction.** A subnet's forward pass is the forward pass of the standalone
model of its config (:class:`~autoeff.model.AutoEffModel`, built once per config on the meta
device, with no memory) called with :func:`torch.func.functional_call` on tensors that are
slices of the supernet's. :meth:`SuperNet.extract` builds the real standalone model and copies
the same slices in, so the extracted model computes exactly what the supernet computed for
that subnet, and gradients of a subnet reach only its slices.
"""
from __future__ import annotations

import json
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.func import functional_call

from ..attention import get_attention
from ..config import RunConfig, TaskSpec
from ..model import AutoEffModel

__all__ = ["SuperNet", "subnet_key"]

_BLOCK_ATTN = re.compile(r"^encoder\.blocks\.(\d+)\.attn\.(.+)$")
_SHARED = "shared"  # canonical names of the shared projections: encoder.blocks.<i>.attn.shared.<q|k|v|out>.<weight|bias>


def subnet_key(cfg: RunConfig) -> str:
    """What identifies a subnet: its model and attention sections (the rest is shared)."""
    d = cfg.to_dict()
    return json.dumps({"model": d["model"], "attention": d["attention"]}, sort_keys=True)


def _safe(name: str) -> str:
    return name.replace(".", "__")


class _Slice:
    """How one tensor of a standalone model is read from the supernet.

    ``blocks`` (projections and pair heads): the tensor is the concatenation along dim 0 (or
    dim 1 for pair heads) of leading slices of several supernet tensors; otherwise it is the
    leading slice of one supernet tensor."""

    __slots__ = ("name", "shape", "sources", "dim")

    def __init__(self, name: str, shape: Tuple[int, ...], sources: List[str], dim: int = 0):
        self.name, self.shape, self.sources, self.dim = name, tuple(shape), sources, dim


class SuperNet(nn.Module):
    """The weight-sharing supernet of a space.

    ``corners``: candidate configs that together reach every extreme of the space (the largest
    depth, width, FFN, every family at its largest knobs with every heads count); the supernet's
    tensors take the elementwise largest shape any of them needs. Every corner must share the
    tasks, pooling and dropout (what a one-shot search keeps fixed).
    """

    def __init__(self, corners: Sequence[RunConfig], specs: Sequence[TaskSpec], *, seed: int = 0,
                 template_cache: int = 64):
        super().__init__()
        if not corners:
            raise ValueError("a supernet needs at least one corner config")
        self.specs = list(specs)
        self.base = corners[0]
        for c in corners[1:]:
            if (c.model.pool, c.model.dropout) != (self.base.model.pool, self.base.model.dropout):
                raise ValueError("the corners of a supernet must share model.pool and model.dropout")
        self.max_width = max(c.model.width for c in corners)
        self.max_depth = max(c.model.depth for c in corners)
        self._templates: "OrderedDict[str, Tuple[AutoEffModel, List[_Slice]]]" = OrderedDict()
        self._cache_size = template_cache

        # the largest shape of every canonical tensor over the corners, and initial values
        shapes: Dict[str, List[int]] = {}
        is_buffer: Dict[str, bool] = {}
        for cfg in corners:
            tmpl = self._build(cfg, meta=True)
            for plan in self._plan(cfg, tmpl):
                for src in plan.sources[:1]:
                    if src.startswith("@shared:"):
                        continue
                    src = src[len("@pair:"):] if src.startswith("@pair:") else src
                    want = list(plan.shape)
                    have = shapes.setdefault(src, want)
                    if len(have) != len(want):
                        raise ValueError(f"{src}: rank differs between subnets ({have} vs {want})")
                    shapes[src] = [max(a, b) for a, b in zip(have, want)]
            for name, _ in tmpl.named_buffers():
                is_buffer[self._canonical(cfg, name)] = True
        values = self._initial_values(corners, shapes, seed)
        self.params = nn.ParameterDict()
        for src, shape in shapes.items():
            t = values[src]
            if is_buffer.get(src):
                self.register_buffer(_safe(src), t.clone())
            else:
                self.params[_safe(src)] = nn.Parameter(t.clone())
        # the shared projections of every layer: (D, D) query, key, value and output blocks
        d = self.max_width
        gen = torch.Generator().manual_seed(seed + 1)
        for i in range(self.max_depth):
            for p in ("q", "k", "v", "out"):
                bound = d ** -0.5  # nn.Linear's default init, as a standalone layer gets it
                w = torch.empty(d, d).uniform_(-bound, bound, generator=gen)
                b = torch.empty(d).uniform_(-bound, bound, generator=gen)
                self.params[_safe(f"encoder.blocks.{i}.attn.{_SHARED}.{p}.weight")] = nn.Parameter(w)
                self.params[_safe(f"encoder.blocks.{i}.attn.{_SHARED}.{p}.bias")] = nn.Parameter(b)

    # ---- naming and slicing --------------------------------------------------------------
    def _build(self, cfg: RunConfig, *, meta: bool) -> AutoEffModel:
        if meta:
            with torch.device("meta"):
                return AutoEffModel(cfg, self.specs)
        with torch.random.fork_rng(devices=[]):  # building must not move the caller's RNG
            return AutoEffModel(cfg, self.specs)

    @staticmethod
    def _canonical(cfg: RunConfig, name: str) -> str:
        """Supernet name of a standalone tensor that is not a shared projection."""
        m = _BLOCK_ATTN.match(name)
        if m is None:
            return name
        i, rest = int(m.group(1)), m.group(2)
        return f"encoder.blocks.{i}.attn.{cfg.attention.layer(i).kind}.{rest}"

    def _plan(self, cfg: RunConfig, tmpl: AutoEffModel) -> List[_Slice]:
        """How every parameter and buffer of the standalone model of ``cfg`` is read (a tensor
        tied under several names, e.g. Linformer's shared E = F, once)."""
        out: List[_Slice] = []
        named = list(tmpl.named_parameters()) + list(tmpl.named_buffers())
        pair_heads = {f"heads.{s.name}.mlp.0.weight" for s in self.specs if s.pair}
        for name, t in named:
            m = _BLOCK_ATTN.match(name)
            if m is not None:
                i, rest = int(m.group(1)), m.group(2)
                fam = get_attention(cfg.attention.layer(i).kind)
                module, _, leaf = rest.rpartition(".")
                blocks = fam.projections.get(module)
                if blocks is not None and leaf in ("weight", "bias"):
                    srcs = [f"@shared:encoder.blocks.{i}.attn.{_SHARED}.{b}.{leaf}" for b in blocks]
                    out.append(_Slice(name, t.shape, srcs, 0))
                    continue
            if name in pair_heads:  # columns [u | v | u*v | u-v], each of the model's width
                out.append(_Slice(name, t.shape, [f"@pair:{name}"] * 4, 1))
                continue
            out.append(_Slice(name, t.shape, [self._canonical(cfg, name)]))
        return out

    def _initial_values(self, corners: Sequence[RunConfig], shapes: Mapping[str, List[int]],
                        seed: int) -> Dict[str, torch.Tensor]:
        """Start every supernet tensor from a standalone model's initialization: the corner
        whose tensor has the full shape (else the corners' leading slices laid over zeros)."""
        values: Dict[str, torch.Tensor] = {}
        partial: Dict[str, torch.Tensor] = {}
        for k, cfg in enumerate(sorted(corners, key=lambda c: (c.model.width, c.model.depth))):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + k)
                model = AutoEffModel(cfg, self.specs)
            state = dict(model.named_parameters())
            state.update(dict(model.named_buffers()))
            for plan in self._plan(cfg, model):
                src = plan.sources[0]
                if src.startswith("@shared:"):
                    continue
                if src.startswith("@pair:"):
                    src = src[len("@pair:"):]
                t = state[plan.name].detach()
                full = shapes[src]
                if list(t.shape) == list(full):
                    values[src] = t.clone()
                elif src not in values:
                    buf = partial.setdefault(src, torch.zeros(full, dtype=t.dtype))
                    buf[tuple(slice(0, s) for s in t.shape)] = t
        for src, buf in partial.items():
            values.setdefault(src, buf)
        return values

    def _tensor(self, src: str) -> torch.Tensor:
        key = _safe(src)
        if key in self.params:
            return self.params[key]
        return getattr(self, key)

    def _read(self, plan: _Slice) -> torch.Tensor:
        shape = plan.shape
        first = plan.sources[0]
        if first.startswith("@shared:"):  # rows: len(sources) blocks of (w, w) / (w,)
            w = shape[0] // len(plan.sources)
            parts = []
            for src in plan.sources:
                t = self._tensor(src[len("@shared:"):])
                parts.append(t[:w, :shape[1]] if t.dim() == 2 else t[:w])
            return parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        if first.startswith("@pair:"):  # columns: 4 blocks of the model's width
            t = self._tensor(first[len("@pair:"):])
            w, big = shape[1] // 4, t.shape[1] // 4
            return torch.cat([t[:shape[0], j * big:j * big + w] for j in range(4)], 1)
        t = self._tensor(first)
        return t[tuple(slice(0, s) for s in shape)]

    # ---- subnets ----------------------------------------------------------------------
    def _template(self, cfg: RunConfig) -> Tuple[AutoEffModel, List[_Slice]]:
        key = subnet_key(cfg)
        hit = self._templates.get(key)
        if hit is not None:
            self._templates.move_to_end(key)
            return hit
        if cfg.model.depth > self.max_depth or cfg.model.width > self.max_width:
            raise ValueError(f"subnet {key} is larger than the supernet (depth {self.max_depth}, width {self.max_width})")
        tmpl = self._build(cfg, meta=True)
        plan = self._plan(cfg, tmpl)
        for p in plan:
            for src in p.sources:
                kind, _, name = src.partition(":") if src.startswith("@") else ("", "", src)
                if _safe(name) not in self.params and not hasattr(self, _safe(name)):
                    raise ValueError(f"subnet {key} needs {name}, which this supernet does not have "
                                     "(its family or knob is outside the space the supernet was built for)")
                have = tuple(self._tensor(name).shape)
                need = (p.shape[0] // len(p.sources), *p.shape[1:]) if kind == "@shared" else \
                    (p.shape[0], p.shape[1] // 4) if kind == "@pair" else p.shape
                if kind == "@pair":
                    have = (have[0], have[1] // 4)
                if len(have) != len(need) or any(n > h for n, h in zip(need, have)):
                    raise ValueError(f"subnet {key} needs {name} of shape {tuple(need)}, larger than the "
                                     f"supernet's {have} (outside the space the supernet was built for)")
        self._templates[key] = (tmpl, plan)
        if len(self._templates) > self._cache_size:
            self._templates.popitem(last=False)
        return tmpl, plan

    def subnet_tensors(self, cfg: RunConfig) -> Dict[str, torch.Tensor]:
        """The standalone model's parameters and buffers (by name) as views of the supernet's."""
        _, plan = self._template(cfg)
        return {p.name: self._read(p) for p in plan}

    def forward(self, cfg: RunConfig, x: torch.Tensor, mask: torch.Tensor, task: Optional[str] = None) -> torch.Tensor:
        """Logits of the subnet ``cfg`` (B, C): exactly the standalone model's forward pass."""
        tmpl, _ = self._template(cfg)
        tmpl.train(self.training)
        return functional_call(tmpl, self.subnet_tensors(cfg), (x, mask, task), tie_weights=True, strict=True)

    @torch.no_grad()
    def extract(self, cfg: RunConfig) -> AutoEffModel:
        """The standalone model of ``cfg`` with the supernet's weights copied in."""
        model = self._build(cfg, meta=False)
        tensors = self.subnet_tensors(cfg)
        own = dict(model.named_parameters())
        own.update(dict(model.named_buffers()))
        if set(own) != set(tensors):
            raise RuntimeError(f"extraction mismatch: {sorted(set(own) ^ set(tensors))[:5]}")
        for name, t in own.items():
            t.copy_(tensors[name].detach())
        return model

    def owner_slices(self, cfg: RunConfig) -> Dict[str, torch.Tensor]:
        """For each supernet parameter, a boolean mask of the entries ``cfg`` reads (for tests
        and diagnostics): a subnet must never read, nor get gradients for, anything else."""
        masks = {k: torch.zeros_like(p, dtype=torch.bool) for k, p in self.params.items()}
        _, plan = self._template(cfg)
        for p in plan:
            for j, src in enumerate(p.sources):
                kind, _, name = src.partition(":") if src.startswith("@") else ("", "", src)
                key = _safe(name)
                if key not in masks:
                    continue
                t = masks[key]
                if kind == "@shared":
                    w = p.shape[0] // len(p.sources)
                    if t.dim() == 2:
                        t[:w, :p.shape[1]] = True
                    else:
                        t[:w] = True
                elif kind == "@pair":
                    w, big = p.shape[1] // 4, t.shape[1] // 4
                    t[:p.shape[0], j * big:j * big + w] = True
                else:
                    t[tuple(slice(0, s) for s in p.shape)] = True
        return masks

    def named_canonical_parameters(self) -> Iterable[Tuple[str, nn.Parameter]]:
        """Parameters under their dotted supernet names (for optimizer groups and reports)."""
        for k, p in self.params.items():
            yield k.replace("__", "."), p
