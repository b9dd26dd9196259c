"""Plots of a search: every trial, the front highlighted, one panel per cost objective."""
from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..search.record import TrialRecord  # noqa: E402
from ..search.space import Space  # noqa: E402

MARKERS = "osD^v<>pPX*h"


def front_figure(space: Space, records: Sequence[TrialRecord], front: Sequence[TrialRecord]):
    """Accuracy against each cost objective (latency, memory, ...), colored by attention family."""
    quality = "accuracy" if "accuracy" in space.objective_names else space.objective_names[0]
    costs = [o.name for o in space.objectives if o.name != quality] or [quality]
    fig, axes = plt.subplots(1, len(costs), figsize=(5.2 * len(costs), 4.2), squeeze=False)
    kinds = sorted({(r.config or {}).get("attention", {}).get("kind", "?") for r in records if r.config})
    cmap = plt.get_cmap("tab10")
    front_ids = {r.number for r in front}
    for ax, cost in zip(axes[0], costs):
        for i, kind in enumerate(kinds):
            pts = [r for r in records if r.status == "complete" and r.config
                   and r.config.get("attention", {}).get("kind") == kind and cost in r.metrics]
            feas = [r for r in pts if r.feasible]
            infe = [r for r in pts if not r.feasible]
            if feas:
                ax.scatter([r.metrics[cost] for r in feas], [r.metrics[quality] for r in feas], s=28, alpha=0.55,
                           color=cmap(i % 10), marker=MARKERS[i % len(MARKERS)], label=kind)
            if infe:
                ax.scatter([r.metrics[cost] for r in infe], [r.metrics[quality] for r in infe], s=28,
                           color=cmap(i % 10), marker="x", alpha=0.6)
        fr = sorted((r for r in front if cost in r.metrics), key=lambda r: r.metrics[cost])
        if fr:
            ax.scatter([r.metrics[cost] for r in fr], [r.metrics[quality] for r in fr], s=110,
                       facecolors="none", edgecolors="black", linewidths=1.4, label="Pareto front")
            for r in fr:
                ax.annotate(str(r.number), (r.metrics[cost], r.metrics[quality]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
        ax.set_xlabel(cost)
        ax.set_ylabel(quality)
        if cost in ("latency_ms", "peak_memory_mb", "params", "size_mb"):
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.set_title(f"{quality} vs {cost}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, fontsize=8, loc="lower right")
    n_front = len(front_ids)
    fig.suptitle(f"{space.name}: {len(records)} trials, {n_front} on the front (x = breaks a constraint)", fontsize=10)
    fig.tight_layout()
    return fig
