"""The built-in ``pathfinder`` task: labels re-derived by flood fill through the drawn pixels."""
from collections import deque

import numpy as np
import pytest
import torch

from autoeff.config import parse_tasks
from autoeff.errors import ConfigError
from autoeff.tasks import get_task, task_spec

SMALL = {"kind": "pathfinder", "n_train": 40, "n_val": 20, "n_test": 20}


def cfg(**kw):
    return parse_tasks([{**SMALL, **kw}])[0]


def build(**kw):
    return get_task("pathfinder").build(cfg(**kw).options_typed())


def images(split, size):
    return (split.x.reshape(-1, size, size) > 1).numpy()  # token 1 = black, 256 = white


def markers(on: np.ndarray):
    """Marker squares: groups of 3x3 fully drawn blocks (curves are one pixel wide)."""
    h, w = on.shape
    full = np.zeros_like(on)
    full[1:-1, 1:-1] = np.all([on[1 + dy: h - 1 + dy, 1 + dx: w - 1 + dx]
                               for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    groups = []
    for y, x in zip(*np.nonzero(full)):
        for g in groups:
            if any(max(abs(y - gy), abs(x - gx)) <= 1 for gy, gx in g):
                g.append((y, x))
                break
        else:
            groups.append([(y, x)])
    return [g[0] for g in groups]


def reachable(on: np.ndarray, start, link: int) -> np.ndarray:
    """Flood fill over drawn pixels; pixels within Chebyshev distance ``link`` are neighbours."""
    h, w = on.shape
    seen = np.zeros_like(on)
    seen[start] = True
    queue = deque([start])
    while queue:
        y, x = queue.popleft()
        for ny in range(max(0, y - link), min(h, y + link + 1)):
            for nx in range(max(0, x - link), min(w, x + link + 1)):
                if on[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
    return seen


def check_split(split, size, gap):
    link = gap + 1  # dashes of one curve are gap + 1 apart at most
    dists = {0: [], 1: []}
    for img, y in zip(images(split, size), split.y.tolist()):
        m = markers(img)
        assert len(m) == 2
        assert reachable(img, m[0], link)[m[1]] == bool(y)
        dists[y].append(np.hypot(m[0][0] - m[1][0], m[0][1] - m[1][1]))
    return dists


@pytest.mark.parametrize("opts", [{}, {"image_size": 48, "n_paths": 6, "gap": 2, "dash": 2, "seed": 4}])
def test_label_is_connectivity_of_the_markers(opts):
    size = opts.get("image_size", 32)
    for split in build(**opts).values():
        check_split(split, size, opts.get("gap", 1))


def test_no_shortcut_in_marker_distance_or_ink():
    split = build(n_train=160)["train"]
    dists = check_split(split, 32, 1)
    pos, neg = np.array(dists[1]), np.array(dists[0])
    assert abs(pos.mean() - neg.mean()) < 0.25 * pos.std() + 1.0
    ink = images(split, 32).sum((1, 2))
    y = split.y.numpy()
    assert abs(ink[y == 1].mean() - ink[y == 0].mean()) < 0.5 * ink.std()


def test_spec_shapes_and_balance():
    spec = task_spec(cfg(image_size=64))
    assert (spec.input_kind, spec.seq_len, spec.num_classes, spec.vocab_size) == ("tokens", 4096, 2, 257)
    for name, split in build().items():
        n = SMALL[f"n_{name}"]
        assert split.x.shape == (n, 1024) and split.x.dtype == torch.long
        assert split.mask.shape == (n, 1024) and split.mask.dtype == torch.bool and split.mask.all()
        assert set(split.x.unique().tolist()) == {1, 256}
        assert torch.bincount(split.y).tolist() == [n // 2, n // 2]


@pytest.mark.parametrize("bad, key", [
    ({"n_test": -1}, "n_test"), ({"image_size": 8}, "image_size"), ({"n_paths": 1}, "n_paths"),
    ({"n_paths": 12}, "n_paths"), ({"path_len": 3}, "path_len"), ({"path_len": 100}, "path_len"),
    ({"gap": 0}, "gap"), ({"dash": 0}, "dash"), ({"max_turn": 2.0}, "max_turn"),
])
def test_check_options_rejects(bad, key):
    with pytest.raises(ConfigError) as e:
        cfg(**bad)
    assert f"tasks[0].{key}" in str(e.value)
