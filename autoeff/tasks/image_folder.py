"""The user's own images from a folder-per-class tree (PNG, JPEG and other formats Pillow reads).

Layout: ``path/<class name>/<image file>``; each sub-folder is a class named after the folder
(hidden files and folders are skipped, as are files without an image extension; sub-folders
of class folders are not searched). Every image is converted to grayscale (``grayscale:
true``) or RGB, resized to ``size`` x ``size`` (bilinear; the aspect ratio is not kept) and
scaled to [0, 1], then turned into a sequence the same way as the built-in image tasks:

* ``input: pixels``: one token per pixel (intensity + 1), ``size**2`` tokens, as LRA Image;
  needs ``grayscale: true``.
* ``input: patches``: non-overlapping ``patch`` x ``patch`` patches as feature vectors
  (``(size/patch)**2`` positions of ``channels * patch**2`` values), as ViT.

Space-file entry::

    tasks:
      - kind: image_folder
        path: data/leaves            # data/leaves/healthy/*.png, data/leaves/rust/*.jpg, ...
        size: 64
        input: patches
        patch: 8
        grayscale: false

Needs Pillow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from ..errors import ConfigError
from . import register_task
from .base import Split, TaskSpec
from .features import PIXEL_VOCAB, patchify, pixels_to_tokens
from .userdata import (ClassName, UserDataTask, check_fractions, check_positive, flatten, index_labels, listing,
                       plan_splits, source_key, sources)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class ImageFolderOptions:
    path: str = ""  # root folder with one sub-folder per class, split into train/val/test
    train_path: str = ""  # or one such tree per split (val/test optional: carved from train)
    val_path: str = ""
    test_path: str = ""
    classes: List[ClassName] = field(default_factory=list)  # empty = the sorted folder names
    size: int = 32  # images are resized to size x size
    input: str = field(default="pixels", metadata={"choices": ("pixels", "patches")})
    patch: int = 4  # patch side for input: patches (must divide size)
    grayscale: bool = True
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0


def _pil():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        raise ConfigError("the image_folder task needs Pillow: pip install pillow", key="tasks.kind",
                          value="image_folder") from None
    return Image, UnidentifiedImageError


@dataclass
class FolderScan:
    classes: List[str]
    files: Dict[str, List[Path]]  # per source
    y: Dict[str, np.ndarray]
    plan: Dict[str, Tuple[str, np.ndarray]]


@register_task("image_folder")
class ImageFolder(UserDataTask):
    """Image classification from the user's folder-per-class tree(s)."""

    options = ImageFolderOptions
    version = 1

    @classmethod
    def data_files(cls, o: ImageFolderOptions) -> List[Path]:
        files, _ = flatten(listing(o, f"task {cls.kind}", IMAGE_EXTENSIONS, "image"))
        return [f for fs in files.values() for f in fs]

    @classmethod
    def check_numbers(cls, o: ImageFolderOptions, key: str) -> None:
        check_positive(o, key, "size", "patch")
        if o.input == "patches" and o.size % o.patch:
            raise ConfigError(f"must divide size ({o.size})", key=f"{key}.patch", value=o.patch, has_value=True)
        if o.input == "pixels" and not o.grayscale:
            raise ConfigError("pixel tokens are grayscale intensities (as in LRA Image); set grayscale: true "
                              "or use input: patches for colour", key=f"{key}.grayscale", value=o.grayscale,
                              has_value=True)
        check_fractions(o, key, sources(o, key))

    @classmethod
    def _scan(cls, o: ImageFolderOptions, key: str) -> FolderScan:
        tree = listing(o, key, IMAGE_EXTENSIONS, "image")
        files, names = flatten(tree)
        Image, Unidentified = _pil()
        for s, fs in files.items():
            for f in fs:  # headers only: Image.open does not decode the pixels
                try:
                    with Image.open(f) as im:
                        w, h = im.size
                    if w < 1 or h < 1:
                        raise OSError("zero-sized image")
                except (Unidentified, OSError, ValueError) as e:
                    raise ConfigError(f"unreadable image {f} ({e})", key=source_key(key, s), value=str(f)) from None
        where = {s: str(p) for s, p in sources(o, key).items()}
        classes, y = index_labels(names, where, o.classes, key, "path", where.get("all", where.get("train")),
                                  row="image")
        return FolderScan(classes, files, y, plan_splits(y, o, key, where))

    @classmethod
    def spec(cls, o: ImageFolderOptions) -> TaskSpec:
        n = len(cls.scan(o).classes)
        if o.input == "pixels":
            return TaskSpec(input_kind="tokens", seq_len=o.size * o.size, num_classes=n, vocab_size=PIXEL_VOCAB)
        channels = 1 if o.grayscale else 3
        return TaskSpec(input_kind="features", seq_len=(o.size // o.patch) ** 2, num_classes=n,
                        feature_dim=channels * o.patch * o.patch)

    @classmethod
    def load_images(cls, o: ImageFolderOptions, files: List[Path], key: str) -> torch.Tensor:
        """Files -> (n, H, W) grayscale or (n, 3, H, W) RGB float images in [0, 1]."""
        Image, Unidentified = _pil()
        mode = "L" if o.grayscale else "RGB"
        out = np.empty((len(files), o.size, o.size) if o.grayscale else (len(files), o.size, o.size, 3), np.uint8)
        for i, f in enumerate(files):
            try:
                with Image.open(f) as im:
                    out[i] = np.asarray(im.convert(mode).resize((o.size, o.size), Image.BILINEAR))
            except (Unidentified, OSError, ValueError) as e:
                raise ConfigError(f"unreadable image {f} ({e})", key=key, value=str(f)) from None
        x = torch.from_numpy(out).float() / 255.0
        return x if o.grayscale else x.permute(0, 3, 1, 2).contiguous()

    @classmethod
    def build(cls, o: ImageFolderOptions) -> Dict[str, Split]:
        key = f"task {cls.kind}"
        scan = cls.scan(o)
        out = {}
        for split, (src, rows) in scan.plan.items():
            images = cls.load_images(o, [scan.files[src][i] for i in rows], source_key(key, src))
            x, mask = pixels_to_tokens(images) if o.input == "pixels" else patchify(images, o.patch)
            out[split] = Split(x, mask, torch.from_numpy(scan.y[src][rows]))
        return out
