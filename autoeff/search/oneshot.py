"""One-shot search (``search.strategy: oneshot``): one supernet, proxy trials, real finalists.

1. **Supernet.** The space's supernet (:mod:`autoeff.supernet`) is trained once with the
   sandwich rule on the space's tasks for the ``oneshot:`` budget, and cached by the space's
   fingerprint under ``search.artifacts/<study>/supernet-<fingerprint>.pt``: a resumed or
   repeated search loads it instead of training again.
2. **Proxy trials.** Every candidate the sampler proposes (NSGA-II by default) is extracted as
   a standalone model with the supernet's weights. Its latency and deployed memory are measured
   on that extracted model, as for any trial (a candidate that breaks a hard constraint is
   ``infeasible``); its accuracy is the validation accuracy of the inherited weights on
   ``oneshot.eval_batches`` batches per task, logged as ``proxy_accuracy`` (never as
   ``accuracy``). The record's status is ``proxy``: it never enters the front.
3. **Finalists.** The top ``oneshot.finalists`` of the proxy front (spread along it, the best
   proxy accuracy always among them) are trained as ordinary standalone trials, fine-tuned from
   their inherited weights or from scratch (``oneshot.finalist_init``). The front, the
   ``pareto`` tags and `autoeff export` use their real accuracy; each keeps its
   ``proxy_accuracy`` beside it, and the search reports the Kendall tau between the two.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..config import RunConfig, aggregate, task_spec
from ..errors import ConfigError
from .pareto import pareto_mask
from .record import TrialRecord
from .space import Dimension, Space, _candidate
from .strategy_base import Log, Strategy, kendall_tau

_NUMERIC = (int, float)


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, _NUMERIC) and not isinstance(v, bool) for v in values)


def _values(d: Dimension) -> List[Any]:
    """Every value of a dimension (the two ends of a float range)."""
    if d.type == "categorical":
        return list(d.choices)
    if d.type == "int":
        step = int(d.step or 1) if not d.log else 1
        return list(range(int(d.low), int(d.high) + 1, step))
    return [float(d.low), float(d.high)]


class RandomSuggest:
    """Uniform sampling of a dimension from a seeded generator (the supernet's random subnets)."""

    def __init__(self, rng: random.Random):
        self.r = rng

    def categorical(self, name, choices):
        return self.r.choice(list(choices))

    def int(self, name, low, high, *, log, step):
        if log:
            return int(min(high, max(low, round(math.exp(self.r.uniform(math.log(low), math.log(high)))))))
        return self.r.randrange(low, high + 1, step or 1)

    def float(self, name, low, high, *, log, step):
        if log:
            return math.exp(self.r.uniform(math.log(low), math.log(high)))
        v = self.r.uniform(low, high)
        return low + round((v - low) / step) * step if step else v


class _Layout:
    """The space seen by the supernet: model dimensions, families and their knobs (named as for
    one layer), and how to write a choice back as the space's parameters (per layer or not)."""

    def __init__(self, space: Space):
        self.space = space
        self.model = {d.name: d for d in space.dims if d.name.startswith("model.")}
        att = [d for d in space.dims if d.name.startswith("attention.")]
        if space.per_layer:  # layer 0's dimensions, named as for one layer
            att = [dataclasses.replace(d, name="attention." + d.name[len("attention.layers.0."):])
                   for d in att if d.name.startswith("attention.layers.0.")]
        kind_dim = next((d for d in att if d.name == "attention.kind"), None)
        base_kind = (space.base.get("attention") or {}).get("kind", "full")
        self.kinds: List[str] = list(kind_dim.choices) if kind_dim else [base_kind]
        self.knobs: Dict[str, List[Dimension]] = {k: [] for k in self.kinds}
        for d in att:
            parts = d.name.split(".")
            if len(parts) >= 3 and parts[1] in self.knobs:
                self.knobs[parts[1]].append(d)
        self.depth_values = _values(self.model["model.depth"]) if "model.depth" in self.model else [None]

    def extreme(self, name: str, which: str, rng: Optional[random.Random] = None) -> Any:
        d = self.model.get(name)
        if d is None:
            return None
        vals = _values(d)
        if not _numeric(vals):
            return vals[0] if rng is None else rng.choice(vals)
        return max(vals) if which == "largest" else min(vals)

    def knob_choices(self, kind: str, which: str, rng: Optional[random.Random]) -> Dict[str, Any]:
        out = {}
        for d in self.knobs.get(kind, []):
            vals = _values(d)
            if _numeric(vals):
                out[d.name] = max(vals) if which in ("largest", "corner") else min(vals)
            else:
                out[d.name] = rng.choice(vals) if rng is not None else vals[0]
        return out

    def params(self, model: Mapping[str, Any], layers: Sequence[Tuple[str, Mapping[str, Any]]]) -> Dict[str, Any]:
        """The space's parameters for a model choice and one (kind, knobs) per layer (knobs named
        ``attention.<family>.<knob>``); inactive dimensions are left out."""
        p: Dict[str, Any] = {k: v for k, v in model.items() if v is not None and k in self.model}
        if self.space.per_layer:
            for i, (kind, knobs) in enumerate(layers):
                p[f"attention.layers.{i}.kind"] = kind
                for k, v in knobs.items():
                    p[f"attention.layers.{i}." + k[len("attention."):]] = v
        else:
            kind, knobs = layers[0]
            p["attention.kind"] = kind
            p.update(knobs)
        dims = {d.name: d for d in self.space.dims}
        keep: Dict[str, Any] = {}
        for d in self.space.dims:  # in order, parents first: drop what is not active
            if d.name in p and d.active({**_fixed(self.space), **keep}):
                keep[d.name] = p[d.name]
        return {k: v for k, v in keep.items() if k in dims}


def _fixed(space: Space) -> Dict[str, Any]:
    from .space import flatten

    return flatten(space.base)


class OneShot(Strategy):
    name = "oneshot"
    front_accuracy = ("real: the proxy front's best trained as standalone trials (finalists); proxy trials carry "
                      "proxy_accuracy (inherited supernet weights) and never enter the front")

    def __init__(self, space: Space):
        super().__init__(space)
        if space.oneshot is None:
            raise ConfigError("a one-shot search needs its settings", key="oneshot", file=space.file)
        self.os = space.oneshot
        self.layout = _Layout(space)
        self.base = space.materialize(_candidate(space, {}))
        self.specs = [task_spec(t) for t in self.base.tasks]
        self.supernet = None
        self.data = None
        self._largest: Optional[RunConfig] = None

    # ---- the space's subnets ----------------------------------------------------------
    def _config(self, model: Mapping[str, Any], layers: Sequence[Tuple[str, Mapping[str, Any]]]) -> RunConfig:
        return self.space.materialize(self.layout.params(model, layers))

    def _depth(self, which: str) -> int:
        v = self.layout.extreme("model.depth", which)
        return v if v is not None else self.base.model.depth

    def corners(self) -> List[RunConfig]:
        """Configs that together reach every extreme shape of the space: the largest depth and
        FFN, the largest widths with every heads count, every family with its largest numeric
        knobs and every value of its other knobs."""
        L = self.layout
        depth = self._depth("largest")
        widths = sorted(_values(L.model["model.width"]))[-4:] if "model.width" in L.model else [None]
        heads = _values(L.model["model.heads"]) if "model.heads" in L.model else [None]
        out, seen = [], set()
        for kind in L.kinds:
            numeric = {d.name: max(_values(d)) for d in L.knobs[kind] if _numeric(_values(d))}
            other = [d for d in L.knobs[kind] if not _numeric(_values(d))]
            combos = [dict()]
            for d in other:
                combos = [{**c, d.name: v} for c in combos for v in _values(d)]
            for w in widths:
                for h in heads:
                    for c in combos:
                        model = {"model.depth": depth, "model.width": w, "model.heads": h,
                                 "model.ffn_mult": L.extreme("model.ffn_mult", "largest")}
                        try:
                            cfg = self._config(model, [(kind, {**numeric, **c})] * depth)
                        except ConfigError:
                            continue  # e.g. heads that do not divide this width
                        key = json.dumps(cfg.to_dict(), sort_keys=True)
                        if key not in seen:
                            seen.add(key)
                            out.append(cfg)
        if not out:
            raise ConfigError("no valid largest candidate in the space", file=self.space.file, key="space")
        return out

    def sample(self, which: str, rng: random.Random) -> RunConfig:
        """The subnet a sandwich entry means: ``largest`` (every dimension at its largest, the first
        family listed in ``attention.kind`` with its largest knobs: the teacher of in-place
        distillation, so list first a family that is strong and affordable at the space's lengths),
        ``smallest`` (every dimension at its smallest, a random family per layer with its smallest
        knobs) or ``random`` (the space sampled uniformly)."""
        L = self.layout
        if which == "largest":
            if self._largest is None:
                kind = L.kinds[0]
                depth = self._depth("largest")
                width = L.extreme("model.width", "largest")
                heads = self._valid_heads(width, "largest")
                model = {"model.depth": depth, "model.width": width, "model.heads": heads,
                         "model.ffn_mult": L.extreme("model.ffn_mult", "largest")}
                self._largest = self._config(model, [(kind, L.knob_choices(kind, "largest", None))] * depth)
            return self._largest
        for _ in range(100):
            try:
                if which == "smallest":
                    depth = self._depth("smallest")
                    width = L.extreme("model.width", "smallest")
                    model = {"model.depth": depth, "model.width": width, "model.heads": self._valid_heads(width, "smallest"),
                             "model.ffn_mult": L.extreme("model.ffn_mult", "smallest")}
                    per_layer = self.space.per_layer
                    kinds = [rng.choice(L.kinds) for _ in range(depth if per_layer else 1)] * (1 if per_layer else depth)
                    return self._config(model, [(k, L.knob_choices(k, "smallest", rng)) for k in kinds])
                return self.space.materialize(self.space.sample(RandomSuggest(rng)))
            except ConfigError:
                continue  # an impossible combination: draw again
        raise ConfigError(f"could not draw a valid {which} subnet in 100 tries", file=self.space.file, key="space")

    def _valid_heads(self, width, which: str):
        d = self.layout.model.get("model.heads")
        if d is None:
            return None
        vals = sorted(_values(d), reverse=which == "largest")
        w = width if width is not None else self.base.model.width
        return next((h for h in vals if w % h == 0), vals[0])

    # ---- the supernet -------------------------------------------------------------------
    def fingerprint(self) -> str:
        """What the trained supernet depends on: the space, the fixed training settings and the
        supernet-training settings (not the proxy evaluation or the finalists)."""
        train_keys = ("steps", "max_time_s", "batch_size", "lr", "warmup_steps", "sandwich", "distill",
                      "distill_weight", "seed")
        blob = json.dumps({"space": self.space.fingerprint(),
                           "oneshot": {k: getattr(self.os, k) for k in train_keys},
                           "train": dataclasses.asdict(self.base.train), "tasks": [t.to_dict() for t in self.base.tasks]},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def prepare(self, log: Log, artifacts_dir: str) -> Dict[str, float]:
        import torch

        from ..isolation import gate
        from ..supernet import SuperNet
        from ..supernet.train import train_supernet
        from ..tasks import load_task

        path = Path(artifacts_dir) / f"supernet-{self.fingerprint()}.pt"
        corners = self.corners()
        self.supernet = SuperNet(corners, self.specs, seed=self.os.seed)
        self.data = [load_task(t, self.base.data_dir, log) for t in self.base.tasks]
        n_params = sum(p.numel() for p in self.supernet.parameters())
        if path.exists():
            blob = torch.load(path, weights_only=True)
            self.supernet.load_state_dict(blob["state"])
            stats = dict(blob.get("stats", {}))
            log(f"supernet: loaded from {path} ({int(stats.get('supernet_steps', 0))} steps, trained in "
                f"{stats.get('supernet_train_s', float('nan')):.0f} s); not trained again")
            stats["supernet_cached"] = 1.0
        else:
            log(f"supernet: {n_params:,} parameters over {len(corners)} extreme subnets, families "
                f"{', '.join(self.layout.kinds)}; training {self.os.steps} steps, sandwich "
                f"{'+'.join(self.os.sandwich)}{', in-place distillation' if self.os.distill else ''}")

            def progress(step, steps, loss, per_family):
                fams = " ".join(f"{k}:{v}" for k, v in sorted(per_family.items()))
                log(f"    supernet step {step}/{steps} loss {loss:.3f}  subnets trained per family {fams}")

            stats = train_supernet(self.supernet, self.data, self.sample, self.os, self.base.train,
                                   weights=[t.weight for t in self.base.tasks], progress=progress,
                                   step_guard=gate().work)
            self.supernet.cpu()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({"state": self.supernet.state_dict(), "stats": stats, "fingerprint": self.fingerprint()}, tmp)
            os.replace(tmp, path)  # atomic: a killed search never leaves half a cache
            log(f"supernet: trained {int(stats['supernet_steps'])} steps in {stats['supernet_train_s']:.0f} s, "
                f"cached at {path}")
            stats["supernet_cached"] = 0.0
        stats["supernet_params"] = float(n_params)
        self.supernet.eval()
        return stats

    # ---- proxy trials ---------------------------------------------------------------------
    def run_trial(self, params, number, *, artifacts_dir, log, progress=None) -> TrialRecord:
        from ..isolation import gate
        from .objective import measure_architecture, record_failure

        t0 = time.perf_counter()
        rec = TrialRecord(number=number, status="running", params=dict(params))
        try:
            cfg = self.space.materialize(params)
            rec.config = cfg.to_dict()
            model = self.supernet.extract(cfg).eval()
            if cfg.compress.active:  # the proxy is the inherited model as deployed: pruned (no fine-tune), quantized
                from ..compress import apply

                apply(model, cfg.compress)
            if measure_architecture(self.space, cfg, model, self.specs, rec):
                with gate().work():  # an evaluation is work: no measurement on the machine meanwhile
                    rec.metrics.update(self.proxy_accuracy(cfg, model))
                rec.status = "proxy"
            self._score(rec)
        except Exception as e:  # recorded with its reason; the search goes on
            record_failure(rec, e)
        rec.duration_s = time.perf_counter() - t0
        return rec

    def proxy_accuracy(self, cfg: RunConfig, model=None) -> Dict[str, float]:
        """``proxy_accuracy`` (and per task with several tasks) of a subnet: the validation accuracy
        of its inherited weights on ``oneshot.eval_batches`` batches per task."""
        from ..training import evaluate

        model = model if model is not None else self.supernet.extract(cfg).eval()
        acc = evaluate(model, self.data, "val", batch_size=self.os.eval_batch_size, max_batches=self.os.eval_batches)
        out = {"proxy_accuracy": aggregate(acc, cfg.train.aggregate, {t.name: t.weight for t in cfg.tasks})}
        if len(acc) > 1:
            out.update({f"proxy_accuracy.{k}": v for k, v in acc.items()})
        return out

    def _score(self, rec: TrialRecord) -> None:
        """A proxy's objective values: its proxy accuracy in the accuracy objective's place."""
        stand_in = {"accuracy": rec.metrics["proxy_accuracy"]} if rec.status == "proxy" else None
        rec.score(self.space.objectives, self.space.constraints, stand_in)

    # ---- finalists --------------------------------------------------------------------------
    def finalists(self, records: Sequence[TrialRecord]) -> List[Tuple[TrialRecord, str]]:
        """The finalists (:meth:`top_of_proxy_front`), then ``oneshot.rank_check`` candidates
        for the rank check (:meth:`rank_check_sample`)."""
        top = self.top_of_proxy_front(records)
        return [(r, "finalist") for r in top] + [(r, "rank_check") for r in self.rank_check_sample(records, top)]

    def rank_check_sample(self, records: Sequence[TrialRecord], skip: Sequence[TrialRecord]) -> List[TrialRecord]:
        """``oneshot.rank_check`` feasible proxy candidates that span the families (each family, or
        ``hybrid``, gets its share, round robin) and, within a family, the proxy accuracies (evenly
        spaced by rank); the finalists are left out."""
        n = self.os.rank_check
        taken = {r.number for r in skip}
        groups: Dict[str, List[TrialRecord]] = {}
        for r in records:
            if r.status == "proxy" and r.number not in taken and r.constraints_met:
                kind = (r.config or {}).get("attention", {}).get("kind", "?")
                groups.setdefault(kind, []).append(r)
        for g in groups.values():
            g.sort(key=lambda r: r.metrics["proxy_accuracy"])
        share = {k: 0 for k in groups}
        left = n
        while left > 0 and any(share[k] < len(g) for k, g in groups.items()):
            for k in sorted(groups):
                if left and share[k] < len(groups[k]):
                    share[k] += 1
                    left -= 1
        out = []
        for k, g in sorted(groups.items()):
            if share[k]:
                idx = sorted({int(round(i)) for i in np.linspace(0, len(g) - 1, share[k])})
                out += [g[i] for i in idx]
        return out

    def top_of_proxy_front(self, records: Sequence[TrialRecord]) -> List[TrialRecord]:
        """The top ``oneshot.finalists`` of the feasible proxy trials: the non-dominated front
        first (spread along its first cost objective, the best proxy accuracy always in), then
        the next fronts."""
        k = self.os.finalists
        cands = [r for r in records if r.status == "proxy" and r.values is not None
                 and r.constraints_met]
        chosen: List[TrialRecord] = []
        dirs = self.space.directions
        acc_i = next((i for i, o in enumerate(self.space.objectives) if o.name == "accuracy"), 0)
        cost_i = next((i for i, d in enumerate(dirs) if d == "minimize"), acc_i)
        while cands and len(chosen) < k:
            mask = pareto_mask([r.values for r in cands], dirs)
            front = [r for r, m in zip(cands, mask) if m]
            cands = [r for r, m in zip(cands, mask) if not m]
            room = k - len(chosen)
            if len(front) <= room:
                chosen += sorted(front, key=lambda r: -r.values[acc_i])
                continue
            front.sort(key=lambda r: r.values[cost_i])
            picks = {int(round(i)) for i in np.linspace(0, len(front) - 1, room)}
            best = max(range(len(front)), key=lambda i: front[i].values[acc_i] * (1 if dirs[acc_i] == "maximize" else -1))
            if best not in picks:
                picks.discard(min(picks, key=lambda i: abs(i - best)))
                picks.add(best)
            chosen += [front[i] for i in sorted(picks)]
        return chosen

    def run_finalist(self, of: TrialRecord, role: str, number: int, *, artifacts_dir: str, log: Log,
                     progress=None) -> TrialRecord:
        """A finalist (fine-tuned or from scratch, for ``oneshot.finalist_steps`` at
        ``oneshot.finalist_lr``), or a rank-check
        candidate (from scratch, for ``train.max_steps``: standalone-trained accuracy)."""
        from .objective import run_trial

        finalist = role == "finalist"
        train: Dict[str, Any] = {}
        if finalist and self.os.finalist_steps:
            train["max_steps"] = self.os.finalist_steps
        if finalist and self.os.finalist_lr > 0:
            train["lr"] = self.os.finalist_lr
        overrides = {"train": train} if train else None
        init = None
        if finalist and self.os.finalist_init == "finetune":
            init = self.supernet.extract(self.space.materialize(of.params)).state_dict()
        rec = run_trial(self.space, of.params, number, artifacts_dir=artifacts_dir, log=log, progress=progress,
                        overrides=overrides, init_state=init)
        rec.metrics["proxy_accuracy"] = of.metrics.get("proxy_accuracy", float("nan"))
        rec.metrics.update({k: v for k, v in of.metrics.items() if k.startswith("proxy_accuracy.")})
        rec.metrics["finalist_of" if finalist else "rank_check_of"] = float(of.number)
        return rec

    def summary(self, records: Sequence[TrialRecord]) -> Dict[str, float]:
        """Counts, and the Kendall tau between proxy and real accuracy: over the rank-check
        candidates (trained from scratch) when there are any, and over the finalists."""
        def real(key):
            return [r for r in records if r.status == "complete" and key in r.metrics
                    and "accuracy" in r.metrics and "proxy_accuracy" in r.metrics]

        fin, check = real("finalist_of"), real("rank_check_of")
        out: Dict[str, float] = {"n_proxy": float(sum(r.status == "proxy" for r in records)),
                                 "n_finalists": float(len(fin)), "n_rank_check": float(len(check))}
        for name, group in (("proxy_kendall_tau_finalists", fin), ("proxy_kendall_tau", check)):
            tau = kendall_tau([r.metrics["proxy_accuracy"] for r in group], [r.metrics["accuracy"] for r in group])
            if tau is not None:
                out[name] = tau
        return out
