"""Pathfinder (Linsley et al. 2018), as used in Long Range Arena (Tay et al. 2020).

A binary image read as a sequence of pixel tokens (32x32 = 1024 positions by default; larger
with ``image_size``). It holds ``n_paths`` dashed curves and two square markers (3x3 pixels)
at curve ends. Label 1: both markers sit on the two ends of the same curve; label 0: they sit
on one end each of two different curves. The rest of the curves are distractors, and both
classes have the same number of curves and markers, so only tracing a curve from marker to
marker tells the classes apart.

Curves advance one pixel per step (consecutive pixels are 8-neighbours) and turn smoothly:
the turn per step drifts slowly and stays within ``max_turn`` radians, giving arcs and
S-bends. They are ``path_len`` pixels long (default half the image side), drawn as dashes of
``dash`` pixels separated by ``gap`` blank pixels. Guarantees, which make the label a pure
connectivity question (the tests re-derive it by flood fill):

* pixels of one curve link up when pixels within Chebyshev distance ``gap + 1`` count as
  neighbours (``link_distance``);
* different curves (and a curve and another curve's marker) never come that close: centre
  lines keep at least ``gap + 3`` pixels apart, and a curve never approaches itself;
* negative pairs of markers lie at distances drawn from the end-to-end distances of unmarked
  random curves, so marker distance is no shortcut; both classes draw the same ink.

Larger images (``image_size: 64``, 128, ...) get longer curves; raise ``n_paths`` with them
(about 8 at 64, 12 at 128) to keep the clutter. Generation is a Python loop (curves are
grown step by step and restarted when they run into each other): about 1 ms per 32x32
image, 5 ms at 64x64 with 8 curves and 25 ms at 128x128 with 12 on a busy 2-core machine,
once per configuration thanks to the cache.

Labels are exactly balanced within each split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import Split, Task, TaskSpec, check_positive
from .features import PIXEL_VOCAB, pixels_to_tokens

MARKER = 1  # marker half-width: markers are (2 * MARKER + 1) squares
DRIFT = 0.5  # largest change of the turn per step, as a fraction of max_turn
PERSIST = 0.9  # the turn decays towards straight by this factor per step (no spirals)
Pixel = Tuple[int, int]


@dataclass
class PathfinderOptions:
    n_train: int = 4000
    n_val: int = 1000
    n_test: int = 1000
    image_size: int = 32
    n_paths: int = 4  # curves per image, the one or two marked curves included
    path_len: int = 0  # pixels per curve; 0 = image_size // 2
    dash: int = 3  # drawn pixels per dash
    gap: int = 1  # blank pixels between dashes
    max_turn: float = 0.25  # largest change of heading per step, radians (curvature)
    seed: int = 0


def link_distance(gap: int) -> int:
    """Chebyshev distance that bridges the gaps of one dashed curve."""
    return gap + 1


def separation(gap: int) -> int:
    """Minimum Chebyshev distance between centre lines of different curves."""
    return link_distance(gap) + 2


def _path_len(o: PathfinderOptions) -> int:
    return o.path_len or o.image_size // 2


class _Canvas:
    """Keeps curves apart: ``blocked`` marks cells within ``sep - 1`` of committed curve pixels."""

    def __init__(self, size: int, sep: int):
        self.size, self.r = size, sep - 1
        self.blocked = np.zeros((size, size), bool)

    def free(self, p: Pixel, own: Optional[np.ndarray] = None) -> bool:
        y, x = p
        if not (MARKER <= y < self.size - MARKER and MARKER <= x < self.size - MARKER):
            return False
        return not self.blocked[y, x] and (own is None or not own[y, x])

    def block(self, grid: np.ndarray, p: Pixel) -> None:
        y, x = p
        grid[max(0, y - self.r): y + self.r + 1, max(0, x - self.r): x + self.r + 1] = True


def _extend(canvas: _Canvas, rng: np.random.Generator, pts: List[Pixel], own: np.ndarray, theta: float,
            length: int, max_turn: float, lag: int) -> None:
    """Walk on from ``pts[-1]`` with heading ``theta`` until ``length`` pixels or stuck (in place).

    The turn per step (the curvature) decays by ``PERSIST`` and drifts by up to
    ``max_turn * DRIFT`` per step, within +-``max_turn``: curves bend in smooth arcs and
    S-shapes rather than spirals.
    """
    fy, fx = float(pts[-1][0]), float(pts[-1][1])
    kappa = rng.uniform(-max_turn, max_turn)
    drifts = ((rng.random(4 * length) * 2 - 1) * (max_turn * DRIFT)).tolist()
    blocked, lo, hi = canvas.blocked, MARKER, canvas.size - MARKER
    stuck = 0
    for drift in drifts:
        if len(pts) >= length:
            return
        k = min(max(PERSIST * kappa + drift * (1 + stuck), -max_turn), max_turn)  # re-steers turn harder
        th = theta + k
        ny, nx = fy + math.sin(th), fx + math.cos(th)
        y, x = int(math.floor(ny + 0.5)), int(math.floor(nx + 0.5))
        same = (y, x) == pts[-1]
        if not same and not (lo <= y < hi and lo <= x < hi and not blocked[y, x] and not own[y, x]):
            stuck += 1
            if stuck == 6:  # a few re-steers before giving up
                return
            continue
        stuck = 0
        kappa, theta, fy, fx = k, th, ny, nx
        if not same:
            pts.append((y, x))
            if len(pts) > lag:
                canvas.block(own, pts[-lag - 1])


def _grow(canvas: _Canvas, rng: np.random.Generator, start: Pixel, length: int, max_turn: float,
          both_ways: bool = True) -> Optional[List[Pixel]]:
    """A curve of ``length`` 8-connected pixels from ``start`` (through it, grown both ways, when
    it gets stuck and ``both_ways``), or None if it ran into something."""
    if not canvas.free(start):
        return None
    theta = rng.uniform(0, 2 * math.pi)
    own = np.zeros_like(canvas.blocked)  # cells too close to this curve's older pixels
    lag = canvas.r + 3  # pixels this far back along the curve block its head
    pts = [start]
    _extend(canvas, rng, pts, own, theta, length, max_turn, lag)
    if len(pts) < length and both_ways:  # stuck: grow the other way from the start
        pts.reverse()
        own[:] = False
        for p in pts[: len(pts) - lag]:
            canvas.block(own, p)
        _extend(canvas, rng, pts, own, theta + math.pi, length, max_turn, lag)
    return pts if len(pts) == length else None


def _free_cell(canvas: _Canvas, rng: np.random.Generator) -> Pixel:
    """A random free cell (a curve's end keeps MARKER pixels from the border)."""
    m = MARKER
    ys, xs = np.nonzero(~canvas.blocked[m: canvas.size - m, m: canvas.size - m])
    if len(ys) == 0:
        return (-1, -1)
    i = int(rng.integers(0, len(ys)))
    return (int(ys[i]) + m, int(xs[i]) + m)


def _chord(rng: np.random.Generator, length: int, max_turn: float) -> float:
    """End-to-end distance of an unconstrained curve of ``length`` unit steps (as :func:`_extend`)."""
    kappa, theta, y, x = rng.uniform(-max_turn, max_turn), 0.0, 0.0, 0.0
    for drift in ((rng.random(length - 1) * 2 - 1) * (max_turn * DRIFT)).tolist():
        kappa = min(max(PERSIST * kappa + drift, -max_turn), max_turn)
        theta += kappa
        y, x = y + math.sin(theta), x + math.cos(theta)
    return math.hypot(y, x)


def make_image(o: PathfinderOptions, label: int, rng: np.random.Generator) -> Tuple[np.ndarray, List[Pixel]]:
    """One binary image (S, S) float32 and its two marker centres."""
    s, length = o.image_size, _path_len(o)
    sep = separation(o.gap)
    for _ in range(1000):
        canvas = _Canvas(s, sep)
        paths: List[List[Pixel]] = []

        def add(path):
            paths.append(path)
            for p in path:
                canvas.block(canvas.blocked, p)

        a = _grow(canvas, rng, _free_cell(canvas, rng), length, o.max_turn)
        if a is None:
            continue
        add(a)
        if label == 1:
            markers = [a[0], a[-1]]
        else:
            b = None
            m = MARKER
            ys, xs = np.nonzero(~canvas.blocked[m: s - m, m: s - m])
            ys, xs = ys + m, xs + m
            dist = np.hypot(ys - a[0][0], xs - a[0][1])
            far = np.maximum(np.abs(ys - a[0][0]), np.abs(xs - a[0][1])) >= link_distance(o.gap) + 2 * MARKER + 1
            for _ in range(20):  # the second marked curve starts at a "positive-like" distance
                near = np.nonzero(far & (np.abs(dist - _chord(rng, length, o.max_turn)) <= 0.75))[0]
                if len(near) == 0:
                    continue
                i = near[int(rng.integers(0, len(near)))]
                b = _grow(canvas, rng, (int(ys[i]), int(xs[i])), length, o.max_turn, both_ways=False)
                if b is not None:
                    break
            if b is None:
                continue
            add(b)
            markers = [a[0], b[0]]
        for _ in range(50 * o.n_paths):
            if len(paths) == o.n_paths:
                break
            c = _grow(canvas, rng, _free_cell(canvas, rng), length, o.max_turn)
            if c is not None:
                add(c)
        if len(paths) < o.n_paths:
            continue
        img = np.zeros((s, s), np.float32)
        period = o.dash + o.gap
        for path in paths:
            phase = int(rng.integers(0, period))
            for i, (y, x) in enumerate(path):
                if (i + phase) % period < o.dash:
                    img[y, x] = 1.0
        for y, x in markers:
            img[y - MARKER: y + MARKER + 1, x - MARKER: x + MARKER + 1] = 1.0
        return img, markers
    raise RuntimeError(f"pathfinder: could not fit {o.n_paths} curves of {length} pixels in a {s}x{s} image; "
                       "lower n_paths or path_len, or raise image_size")


def generate(o: PathfinderOptions, n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Images (n, S, S) float32 in {0, 1} and labels (n,) with exactly balanced classes."""
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    images = np.zeros((n, o.image_size, o.image_size), np.float32)
    for i, y in enumerate(labels):
        images[i] = make_image(o, int(y), rng)[0]
    return images, labels


@register_task("pathfinder")
class Pathfinder(Task):
    options = PathfinderOptions
    version = 1

    @classmethod
    def spec(cls, o: PathfinderOptions) -> TaskSpec:
        return TaskSpec(input_kind="tokens", seq_len=o.image_size ** 2, num_classes=2, vocab_size=PIXEL_VOCAB)

    @classmethod
    def check_options(cls, o: PathfinderOptions, key: str) -> None:
        check_positive(o, key, "n_train", "n_val", "n_test", "dash", "gap", "max_turn")
        if o.image_size < 16:
            raise ConfigError("must be >= 16", key=f"{key}.image_size", value=o.image_size, has_value=True)
        if o.n_paths < 2:
            raise ConfigError("must be >= 2 (negatives mark two different curves)", key=f"{key}.n_paths",
                              value=o.n_paths, has_value=True)
        if o.path_len and not 2 * (o.dash + o.gap) <= o.path_len <= 2 * o.image_size:
            raise ConfigError(f"must be 0 (auto) or between {2 * (o.dash + o.gap)} and {2 * o.image_size}",
                              key=f"{key}.path_len", value=o.path_len, has_value=True)
        if o.max_turn > 1.0:
            raise ConfigError("must be <= 1.0 radian (sharper turns break the dashes' spacing)",
                              key=f"{key}.max_turn", value=o.max_turn, has_value=True)
        # a rough area budget: each curve keeps a band of width 2 * separation free
        band = _path_len(o) * (2 * separation(o.gap) - 1)
        if o.n_paths * band > 1.2 * (o.image_size - 2) ** 2:
            raise ConfigError(f"too many curves for a {o.image_size}x{o.image_size} image "
                              f"(each needs about {band} pixels of room)", key=f"{key}.n_paths",
                              value=o.n_paths, has_value=True)

    @classmethod
    def build(cls, o: PathfinderOptions) -> Dict[str, Split]:
        rng = np.random.default_rng(o.seed)
        out = {}
        for split, n in (("train", o.n_train), ("val", o.n_val), ("test", o.n_test)):
            images, labels = generate(o, n, rng)
            x, mask = pixels_to_tokens(torch.from_numpy(images))
            out[split] = Split(x, mask, torch.from_numpy(labels).long())
        return out
