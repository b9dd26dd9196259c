"""Pruning: structured (FFN neurons, attention heads) so the model really shrinks and speeds up,
and unstructured magnitude pruning for comparison.

* ``structured``: in every block, the ``sparsity`` fraction of FFN hidden neurons with the
  smallest importance ``|W1[j, :]| * |W2[:, j]|`` (L2 norms of the neuron's input row and output
  column) is removed: both linear layers are rebuilt smaller, so the model has fewer parameters
  and less work. Attention heads are removed the same way (importance: the norms of the head's
  query/key/value rows and output columns) in the families whose layer computes with however
  many heads it holds (:data:`HEAD_PRUNERS`: ``full``, ``synthesizer``). The other families
  (Linformer, Longformer, Reformer, linear) slice their fused projection by the model width, so
  their heads are kept and only their FFN is pruned; the report says so (``pruned_heads`` = 0).
  Parameter names are unchanged; shapes shrink.
* ``magnitude``: in every linear layer of the encoder, the ``sparsity`` fraction of the weights
  with the smallest magnitude is set to zero (layer by layer). The zeros are stored densely and
  run through dense kernels: size and latency do not change. During the fine-tune that follows,
  a mask (a parametrization) keeps them at zero; :func:`bake` makes them permanent.

How many heads / neurons a layer keeps depends only on its size and the sparsity, never on the
weights, so pruning a freshly built model gives the structure of a pruned checkpoint (what
``autoeff.build_model`` does for a config with structured pruning).
"""
from __future__ import annotations

from typing import Callable, Dict, List

import torch
from torch import nn
from torch.nn.utils import parametrize


def kept(n: int, sparsity: float) -> int:
    """How many of ``n`` units a layer keeps at ``sparsity`` (at least one)."""
    return max(1, n - int(round(sparsity * n)))


def _rows(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """A new Linear keeping output features ``idx``."""
    new = nn.Linear(lin.in_features, len(idx), bias=lin.bias is not None).to(lin.weight.device, lin.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(lin.weight[idx])
        if lin.bias is not None:
            new.bias.copy_(lin.bias[idx])
    return new


def _cols(lin: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    """A new Linear keeping input features ``idx``."""
    new = nn.Linear(len(idx), lin.out_features, bias=lin.bias is not None).to(lin.weight.device, lin.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(lin.weight[:, idx])
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in their original order."""
    return scores.topk(k).indices.sort().values


def prune_ffn(ffn: nn.Module, sparsity: float) -> int:
    """Remove the least important hidden neurons of an encoder FeedForward; returns how many."""
    up, down = ffn.net[0], ffn.net[3]  # Linear(D, H), Linear(H, D)
    h = up.out_features
    k = kept(h, sparsity)
    if k == h:
        return 0
    with torch.no_grad():
        score = up.weight.float().norm(dim=1) * down.weight.float().norm(dim=0)  # (H,)
    idx = _top(score, k)
    ffn.net[0] = _rows(up, idx)
    ffn.net[3] = _cols(down, idx)
    return h - k


def _head_rows(head_idx: torch.Tensor, dh: int, blocks: int, dim: int) -> torch.Tensor:
    """Rows of a fused projection [block 0 heads; block 1 heads; ...] for the kept heads."""
    per = (head_idx[:, None] * dh + torch.arange(dh)[None, :]).reshape(-1)  # (H' Dh,)
    return torch.cat([per + b * dim for b in range(blocks)])


def _prune_full(attn: nn.Module, sparsity: float) -> int:
    """Head pruning of the dot-product families (full, sliding_window). With grouped-query heads
    (``kv_heads`` < ``heads``) whole groups go: a key/value head and the query heads that share it."""
    h, dh, d = attn.heads, attn.head_dim, attn.heads * attn.head_dim
    g = attn.kv_heads
    r = h // g  # query heads per key/value head (1 without GQA)
    kg = kept(g, sparsity)
    if kg == g:
        return 0
    with torch.no_grad():
        out_score = attn.out.weight.float().view(-1, h, dh).norm(dim=(0, 2))  # (H,)
        if g == h:
            w = attn.qkv.weight.float().view(3, h, dh, -1)
            score = w.norm(dim=(2, 3)).prod(0) * out_score  # (H,)
        else:
            q = attn.q.weight.float().view(g, r, dh, -1).norm(dim=(2, 3)).prod(1)  # (G,)
            kv = attn.kv.weight.float().view(2, g, dh, -1).norm(dim=(2, 3)).prod(0)  # (G,)
            score = q * kv * out_score.view(g, r).prod(1)  # (G,)
    keep_groups = _top(score, kg)
    keep = (keep_groups[:, None] * r + torch.arange(r)[None, :]).reshape(-1)  # kept query heads
    if g == h:
        attn.qkv = _rows(attn.qkv, _head_rows(keep, dh, 3, d))
    else:
        attn.q = _rows(attn.q, _head_rows(keep, dh, 1, d))
        attn.kv = _rows(attn.kv, _head_rows(keep_groups, dh, 2, g * dh))
    attn.out = _cols(attn.out, _head_rows(keep, dh, 1, d))
    attn.heads = kg * r
    attn.kv_heads = kg
    attn.kv_dim = kg * dh
    return h - kg * r


def _prune_synthesizer(attn: nn.Module, sparsity: float) -> int:
    h, dh, d = attn.heads, attn.head_dim, attn.heads * attn.head_dim
    k = kept(h, sparsity)
    if k == h:
        return 0
    with torch.no_grad():
        score = attn.v.weight.float().view(h, dh, -1).norm(dim=(1, 2)) * \
            attn.out.weight.float().view(-1, h, dh).norm(dim=(0, 2))  # (H,)
    keep = _top(score, k)
    attn.v = _rows(attn.v, _head_rows(keep, dh, 1, d))
    attn.out = _cols(attn.out, _head_rows(keep, dh, 1, d))
    if attn.qk is not None:
        attn.qk = _rows(attn.qk, _head_rows(keep, dh, 2, d))
    mode = attn.opts.mode
    if mode == "dense":
        attn.dense1 = _rows(attn.dense1, _head_rows(keep, dh, 1, d))
    elif mode == "random":
        attn.random = nn.Parameter(attn.random.detach()[keep].clone())
    else:
        attn.r1 = nn.Parameter(attn.r1.detach()[keep].clone())
        attn.r2 = nn.Parameter(attn.r2.detach()[keep].clone())
    attn.heads = k
    return h - k


#: families whose layer works with however many heads it holds: how to remove some
HEAD_PRUNERS: Dict[str, Callable[[nn.Module, float], int]] = {"full": _prune_full, "sliding_window": _prune_full, "synthesizer": _prune_synthesizer}


def prune_structured(model: nn.Module, sparsity: float) -> Dict[str, float]:
    """Remove ``sparsity`` of the FFN neurons, and of the heads where the family allows it, in
    every block of ``model.encoder`` (in place)."""
    neurons = heads = 0
    for blk in model.encoder.blocks:
        neurons += prune_ffn(blk.ffn, sparsity)
        pruner = HEAD_PRUNERS.get(type(blk.attn).name)
        if pruner is not None:
            heads += pruner(blk.attn, sparsity)
    return {"pruned_neurons": float(neurons), "pruned_heads": float(heads)}


class Mask(nn.Module):
    """Parametrization keeping pruned weights at zero during a fine-tune."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def encoder_linears(model: nn.Module) -> List[nn.Linear]:
    return [m for m in model.encoder.modules() if isinstance(m, nn.Linear)]


def prune_magnitude(model: nn.Module, sparsity: float) -> Dict[str, float]:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights of every encoder linear layer
    (in place); a mask keeps them at zero until :func:`bake`."""
    zeroed = 0
    for lin in encoder_linears(model):
        w = lin.weight
        n = int(round(sparsity * w.numel()))
        if n == 0:
            continue
        with torch.no_grad():
            thresh = w.abs().flatten().kthvalue(n).values
            mask = (w.abs() > thresh).to(w.dtype)
            w.mul_(mask)
        zeroed += int((mask == 0).sum())
        parametrize.register_parametrization(lin, "weight", Mask(mask))
    return {"pruned_weights": float(zeroed)}


def bake(model: nn.Module) -> None:
    """Make magnitude pruning permanent: drop the masks, keep the zeros."""
    for lin in encoder_linears(model):
        if parametrize.is_parametrized(lin, "weight") and any(isinstance(p, Mask) for p in lin.parametrizations.weight):
            parametrize.remove_parametrizations(lin, "weight", leave_parametrized=True)


def prune(model: nn.Module, method: str, sparsity: float) -> Dict[str, float]:
    """Prune ``model`` in place by ``method`` (``structured`` | ``magnitude`` | ``none``)."""
    if method == "none" or sparsity <= 0:
        return {}
    if method == "structured":
        return prune_structured(model, sparsity)
    if method == "magnitude":
        return prune_magnitude(model, sparsity)
    raise ValueError(f"unknown pruning method {method!r}")
