"""Image classification as a sequence, modelled on Long Range Arena's Image task (Tay et al. 2020).

LRA Image feeds CIFAR-10 as a sequence of grayscale pixel tokens (32x32 = 1024 positions);
ViT (Dosovitskiy et al. 2021) instead feeds non-overlapping patches as vectors. Both views are
offered (``input: pixels`` gives pixel tokens, ``input: patches`` gives patch vectors through
``features.patchify``) over the same images, generated procedurally - no dataset download.

Each image holds one shape of class ``SHAPES[label]``: disk, square, triangle, bar, ring,
square frame, two dots, three dots, bullseye (ring around a dot) and a frame split in two
(like the glyph "日"). The classes differ in topology (number of parts and holes) and in
geometry (fill of the circumscribed circle, elongation), never in intensity or position.
Every image varies in position, scale (radius ``min_scale``..``max_scale`` of the image
size), rotation, contrast (at least ``min_contrast``) and polarity (light on dark or dark on
light), plus Gaussian pixel noise of standard deviation up to ``noise``; edges are
anti-aliased by 3x3 supersampling. Shapes always lie fully inside the image, with a radius
of at least ``MIN_RADIUS`` pixels. Classes are exactly balanced within each split.
Rendering costs grow with the image area: about 0.3 ms per 32x32 image, 5 ms at 128x128.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import Split, Task, TaskSpec, check_positive
from .features import PIXEL_VOCAB, patchify, pixels_to_tokens

SHAPES = ("disk", "square", "triangle", "bar", "ring", "frame", "two_dots", "three_dots", "bullseye", "eight")
SUPERSAMPLE = 3
MIN_RADIUS = 5  # pixels: every class keeps its parts and holes down to this shape radius
CHUNK_SAMPLES = 1 << 21  # supersamples rendered at once (bounds memory)


def shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of a shape in its own frame (u, v), scaled so every shape fits the unit disk."""
    r = np.hypot(u, v)
    box = np.maximum(np.abs(u), np.abs(v))
    if name == "disk":
        return r <= 0.9
    if name == "square":
        return box <= 0.65
    if name == "triangle":  # equilateral, inradius 0.475 (circumradius 0.95)
        inside = v >= -0.475
        for a in (np.pi / 6, 5 * np.pi / 6):
            inside &= u * np.cos(a) + v * np.sin(a) <= 0.475
        return inside
    if name == "bar":
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.22)
    if name == "ring":
        return (r >= 0.55) & (r <= 0.9)
    if name == "frame":
        return (box >= 0.36) & (box <= 0.68)
    if name == "two_dots":
        return (np.hypot(u - 0.55, v) <= 0.33) | (np.hypot(u + 0.55, v) <= 0.33)
    if name == "three_dots":
        out = np.zeros(u.shape, bool)
        for k in range(3):
            a = np.pi / 2 + 2 * np.pi * k / 3
            out |= np.hypot(u - 0.55 * np.cos(a), v - 0.55 * np.sin(a)) <= 0.3
        return out
    if name == "bullseye":
        return ((r >= 0.62) & (r <= 0.92)) | (r <= 0.28)
    if name == "eight":
        return ((box >= 0.45) & (box <= 0.7)) | ((np.abs(v) <= 0.14) & (np.abs(u) <= 0.7))
    raise ValueError(name)


@dataclass
class ImageOptions:
    n_train: int = 5000
    n_val: int = 1000
    n_test: int = 1000
    image_size: int = 32
    input: str = field(default="pixels", metadata={"choices": ("pixels", "patches")})
    patch: int = 4  # patch side for input: patches
    num_classes: int = 10  # the first num_classes of SHAPES
    noise: float = 0.1  # maximum standard deviation of the pixel noise (intensities in [0, 1])
    min_contrast: float = 0.3
    min_scale: float = 0.25  # shape radius as a fraction of the image size
    max_scale: float = 0.45
    seed: int = 0


def render(o: ImageOptions, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Images (n, S, S) float32 in [0, 1] of the given classes."""
    n, s = len(labels), o.image_size
    radius = rng.uniform(o.min_scale, o.max_scale, n) * s
    cx = rng.uniform(radius, s - radius)
    cy = rng.uniform(radius, s - radius)
    angle = rng.uniform(0, 2 * np.pi, n)
    contrast = rng.uniform(o.min_contrast, 1.0, n)
    low = rng.uniform(0, 1 - contrast)
    dark_on_light = rng.random(n) < 0.5
    sigma = rng.uniform(0, o.noise, n)
    noise = rng.standard_normal((n, s, s), dtype=np.float32)

    g = (np.arange(s * SUPERSAMPLE, dtype=np.float32) + 0.5) / SUPERSAMPLE  # sample points, pixel units
    cover = np.empty((n, s, s), np.float32)
    chunk = max(1, CHUNK_SAMPLES // len(g) ** 2)
    for lo in range(0, n, chunk):
        sl = slice(lo, min(n, lo + chunk))
        dx = g[None, None, :] - cx[sl, None, None].astype(np.float32)  # (c, 1, S')
        dy = g[None, :, None] - cy[sl, None, None].astype(np.float32)  # (c, S', 1)
        cos = np.cos(angle[sl])[:, None, None].astype(np.float32)
        sin = np.sin(angle[sl])[:, None, None].astype(np.float32)
        rad = radius[sl, None, None].astype(np.float32)
        u = (dx * cos + dy * sin) / rad  # (c, S', S')
        v = (-dx * sin + dy * cos) / rad
        inside = np.zeros(u.shape, bool)
        for c in np.unique(labels[sl]):
            idx = np.nonzero(labels[sl] == c)[0]
            inside[idx] = shape_mask(SHAPES[c], u[idx], v[idx])
        cover[sl] = inside.reshape(-1, s, SUPERSAMPLE, s, SUPERSAMPLE).sum((2, 4), dtype=np.float32) / SUPERSAMPLE ** 2
    bg = np.where(dark_on_light, low + contrast, low).astype(np.float32)[:, None, None]
    fg = np.where(dark_on_light, low, low + contrast).astype(np.float32)[:, None, None]
    img = bg + (fg - bg) * cover + sigma.astype(np.float32)[:, None, None] * noise
    return np.clip(img, 0, 1, out=img)


@register_task("image")
class Image(Task):
    options = ImageOptions
    version = 1

    @classmethod
    def spec(cls, o: ImageOptions) -> TaskSpec:
        if o.input == "pixels":
            return TaskSpec(input_kind="tokens", seq_len=o.image_size ** 2, num_classes=o.num_classes,
                            vocab_size=PIXEL_VOCAB)
        return TaskSpec(input_kind="features", seq_len=(o.image_size // o.patch) ** 2, num_classes=o.num_classes,
                        feature_dim=o.patch ** 2)

    @classmethod
    def check_options(cls, o: ImageOptions, key: str) -> None:
        check_positive(o, key, "n_train", "n_val", "n_test", "patch", "min_contrast", "min_scale")
        if o.min_scale * o.image_size < MIN_RADIUS:
            raise ConfigError(f"min_scale * image_size ({o.image_size}) must be >= {MIN_RADIUS} pixels "
                              "(smaller shapes lose their holes)", key=f"{key}.min_scale", value=o.min_scale,
                              has_value=True)
        if o.input == "patches" and o.image_size % o.patch:
            raise ConfigError(f"must divide image_size ({o.image_size})", key=f"{key}.patch", value=o.patch,
                              has_value=True)
        if not 2 <= o.num_classes <= len(SHAPES):
            raise ConfigError(f"must be between 2 and {len(SHAPES)}", key=f"{key}.num_classes",
                              value=o.num_classes, has_value=True)
        if o.noise < 0:
            raise ConfigError("must be >= 0", key=f"{key}.noise", value=o.noise, has_value=True)
        if o.min_contrast > 1:
            raise ConfigError("must be <= 1", key=f"{key}.min_contrast", value=o.min_contrast, has_value=True)
        if not o.min_scale <= o.max_scale <= 0.5:
            raise ConfigError(f"must be between min_scale ({o.min_scale}) and 0.5", key=f"{key}.max_scale",
                              value=o.max_scale, has_value=True)

    @classmethod
    def build(cls, o: ImageOptions) -> Dict[str, Split]:
        rng = np.random.default_rng(o.seed)
        out = {}
        for split, n in (("train", o.n_train), ("val", o.n_val), ("test", o.n_test)):
            labels = np.arange(n) % o.num_classes
            rng.shuffle(labels)
            images = torch.from_numpy(render(o, labels, rng))
            x, mask = pixels_to_tokens(images) if o.input == "pixels" else patchify(images, o.patch)
            out[split] = Split(x, mask, torch.from_numpy(labels).long())
        return out
