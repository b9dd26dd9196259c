"""The built-in ``image`` task: classes re-derived from the raw pixels by topology and geometry."""
from collections import deque

import numpy as np
import pytest
import torch

from autoeff.config import parse_tasks
from autoeff.errors import ConfigError
from autoeff.tasks import get_task, task_spec
from autoeff.tasks.features import patchify
from autoeff.tasks.image import SHAPES

SMALL = {"kind": "image", "n_train": 40, "n_val": 20, "n_test": 20}


def cfg(**kw):
    return parse_tasks([{**SMALL, **kw}])[0]


def build(**kw):
    return get_task("image").build(cfg(**kw).options_typed())


def components(mask: np.ndarray, diagonal: bool):
    """Connected components of a boolean image (flood fill); 8-neighbours when ``diagonal``."""
    h, w = mask.shape
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)] + ([(-1, -1), (-1, 1), (1, -1), (1, 1)] if diagonal else [])
    seen = np.zeros_like(mask)
    out = []
    for sy, sx in zip(*np.nonzero(mask)):
        if seen[sy, sx]:
            continue
        comp, queue = [], deque([(sy, sx)])
        seen[sy, sx] = True
        while queue:
            y, x = queue.popleft()
            comp.append((y, x))
            for dy, dx in steps:
                ny, nx = y + dy, x + dx
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        out.append(comp)
    return out


def classify(img: np.ndarray) -> str:
    """Name the shape in a noise-free image from topology (parts, holes) and geometry alone."""
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    diff = np.abs(img - np.median(border))
    fg = diff > 0.5 * diff.max()
    parts = len(components(fg, diagonal=True))
    holes = [c for c in components(~fg, diagonal=False)
             if not any(y in (0, img.shape[0] - 1) or x in (0, img.shape[1] - 1) for y, x in c)]
    filled = fg.copy()
    for c in holes:
        for y, x in c:
            filled[y, x] = True
    ys, xs = np.nonzero(filled)
    cy, cx = ys.mean(), xs.mean()
    r_max = np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2).max() + 0.5
    fill = len(ys) / (np.pi * r_max ** 2)  # of the circumscribed circle: disk 1, square .64, triangle .41
    ev = np.linalg.eigvalsh(np.cov(np.stack([ys, xs])))
    elongation = ev[1] / ev[0]
    key = (parts, len(holes))
    if key == (1, 0):
        if elongation > 4:
            return "bar"
        return "disk" if fill > 0.8 else "square" if fill > 0.53 else "triangle"
    if key == (1, 1):
        return "ring" if fill > 0.8 else "frame"
    return {(2, 0): "two_dots", (3, 0): "three_dots", (2, 1): "bullseye", (1, 2): "eight"}.get(key, f"?{key}")


def pixels(split, size):
    return ((split.x.float() - 1) / 255).reshape(-1, size, size).numpy()


@pytest.mark.parametrize("opts", [{}, {"image_size": 48, "min_scale": 0.2, "seed": 3}])
def test_class_is_the_shape_in_the_image(opts):
    size = opts.get("image_size", 32)
    for split in build(noise=0.0, **opts).values():
        names = [classify(img) for img in pixels(split, size)]
        assert names == [SHAPES[int(y)] for y in split.y]


def test_images_vary_in_position_scale_contrast_and_noise():
    split = build(n_train=100)["train"]
    imgs = pixels(split, 32)
    same = imgs[(split.y == 0).numpy()]  # all disks
    centroids = []
    for img in same:
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        fg = np.abs(img - np.median(border)) > 0.15
        ys, xs = np.nonzero(fg)
        centroids.append((ys.mean(), xs.mean(), len(ys)))
    c = np.array(centroids)
    assert c[:, 0].std() > 2 and c[:, 1].std() > 2  # position
    assert c[:, 2].max() > 1.5 * c[:, 2].min()  # scale
    background = np.array([np.median(np.concatenate([i[0], i[-1]])) for i in imgs])
    assert background.std() > 0.15  # contrast and polarity
    assert np.abs(np.diff(imgs[:, 0, :], axis=1)).mean() > 0.01  # noise in the (flat) top row
    quiet = pixels(build(noise=0.0)["train"], 32)
    assert np.abs(np.diff(quiet[:, 0, :], axis=1)).mean() < 1e-3


def test_patches_view_the_same_images():
    pix, pat = build(), build(input="patches", patch=8)
    spec = task_spec(cfg(input="patches", patch=8))
    assert (spec.input_kind, spec.seq_len, spec.feature_dim) == ("features", 16, 64)
    for s in pix:
        assert torch.equal(pix[s].y, pat[s].y)
        expect, _ = patchify(torch.from_numpy(pixels(pix[s], 32)), 8)
        assert pat[s].x.shape == (len(pat[s]), 16, 64) and pat[s].x.dtype == torch.float32
        assert (pat[s].x - expect).abs().max() <= 0.5 / 255 + 1e-6
        assert pat[s].mask.shape == (len(pat[s]), 16) and pat[s].mask.all()


def test_spec_shapes_and_balance():
    spec = task_spec(cfg(num_classes=4))
    assert (spec.input_kind, spec.seq_len, spec.num_classes, spec.vocab_size) == ("tokens", 1024, 4, 257)
    for name, split in build(num_classes=4).items():
        n = SMALL[f"n_{name}"]
        assert split.x.shape == (n, 1024) and split.x.dtype == torch.long
        assert split.mask.shape == (n, 1024) and split.mask.dtype == torch.bool and split.mask.all()
        assert 1 <= int(split.x.min()) and int(split.x.max()) < 257
        assert torch.bincount(split.y, minlength=4).tolist() == [n // 4 + (k < n % 4) for k in range(4)]


@pytest.mark.parametrize("bad, key", [
    ({"n_val": 0}, "n_val"), ({"image_size": 16}, "min_scale"), ({"image_size": 0}, "min_scale"),
    ({"input": "patches", "patch": 5}, "patch"),
    ({"input": "voxels"}, "input"), ({"num_classes": 11}, "num_classes"), ({"num_classes": 1}, "num_classes"),
    ({"noise": -0.1}, "noise"), ({"min_contrast": 0}, "min_contrast"), ({"min_contrast": 1.5}, "min_contrast"),
    ({"max_scale": 0.6}, "max_scale"), ({"min_scale": 0.4, "max_scale": 0.3}, "max_scale"),
])
def test_check_options_rejects(bad, key):
    with pytest.raises(ConfigError) as e:
        cfg(**bad)
    assert f"tasks[0].{key}" in str(e.value)
