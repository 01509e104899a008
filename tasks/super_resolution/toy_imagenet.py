"""Toy-world scenes written in ImageNet's folder layout, so the ImageNet super-resolution path runs on a CPU.

``crossflow toy-data imagenet OUT`` writes JPEGs (quality 95, no chroma subsampling) as ImageNet stores them:

* ``OUT/train/<wnid>/<wnid>_<i>.JPEG`` and ``OUT/val/<wnid>/ILSVRC2012_val_<i:08d>.JPEG`` (``i`` counts from 1
  within the split, as ImageNet's validation file names do);
* one wnid per toy class, a shape and colour pair (``n00000000`` … ``n00000017``, shapes × colours in the order of
  :mod:`tasks.toyworld.scenes`), listed with its name in ``OUT/LOC_synset_mapping.txt`` as Kaggle's ImageNet has.

Most images are ``resolution`` px squares. To exercise the preprocessing, each split of at least
``MIN_SPLIT_FOR_ODD`` images also holds a few deliberately odd ones (``ODD_FRACTION`` of the split each, at least
one): squares of half the resolution (too small: dropped by :class:`~tasks.super_resolution.imagenet.ImageNetSR`),
and landscape and portrait images whose central square is the scene rendered at ``5/4 · resolution`` (cropped,
then resized down). Every file is written under a hidden temporary name first and renamed, so no partial JPEG is
ever listed.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.toyworld.scenes import (
    BACKGROUND,
    PALETTE,
    SHAPES,
    Scene,
    render,
    sample_scenes,
)

JPEG_QUALITY = 95
VAL_FRACTION = 0.1  # of num, when num_val is not given
ODD_FRACTION = 0.02  # per odd kind (too small, landscape, portrait) and split
MIN_SPLIT_FOR_ODD = 4  # smaller splits hold only regular squares
ODD_KINDS = ("small", "landscape", "portrait")


def toy_wnid(scene: Scene) -> str:
    """The wnid of a scene's class (its shape and colour): ``n`` and eight digits, as ImageNet's."""
    return f"n{SHAPES.index(scene.shape) * len(PALETTE) + list(PALETTE).index(scene.color):08d}"


def _side(resolution: int | tuple[int, ...]) -> int:
    if isinstance(resolution, (tuple, list)):
        if len(resolution) != 2 or resolution[0] != resolution[1]:
            raise ValueError(f"toy-data imagenet: resolution must be one side (square scenes), got {resolution}")
        resolution = resolution[0]
    if int(resolution) < 8:
        raise ValueError(f"toy-data imagenet: resolution must be at least 8 pixels, got {resolution}")
    return int(resolution)


def _odd_kinds(n: int, rng: np.random.Generator) -> list[str]:
    """Per image of a split of ``n``: ``"square"`` or one of :data:`ODD_KINDS`, at random positions."""
    kinds = ["square"] * n
    if n < MIN_SPLIT_FOR_ODD:
        return kinds
    k = max(1, round(ODD_FRACTION * n))
    chosen = rng.choice(n, size=min(n, k * len(ODD_KINDS)), replace=False)
    for j, i in enumerate(chosen):
        kinds[int(i)] = ODD_KINDS[j // k]
    return kinds


def toy_picture(scene: Scene, side: int, kind: str) -> np.ndarray:
    """The scene as an ``(H, W, 3)`` uint8 picture of ``kind``: ``square`` (``side`` px), ``small`` (``side/2``),
    ``landscape`` / ``portrait`` (the scene at ``5/4 · side`` padded with background to a 3:2 / 2:3 frame)."""
    if kind == "square":
        return render(scene, side)
    if kind == "small":
        return render(scene, max(4, side // 2))
    big = side + side // 4
    extra = big // 2
    pad = ((0, 0), (extra // 2, extra - extra // 2), (0, 0))
    if kind == "portrait":
        pad = (pad[1], pad[0], pad[2])
    frame = np.empty((big + sum(pad[0]), big + sum(pad[1]), 3), np.uint8)
    frame[:] = BACKGROUND
    frame[pad[0][0]:pad[0][0] + big, pad[1][0]:pad[1][0] + big] = render(scene, big)
    return frame


def _write_jpeg(picture: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:  # 4:4:4 chroma: at toy sizes 4:2:0 subsampling would smear the shape's colour over its edges
        Image.fromarray(picture).save(tmp, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_toy_imagenet(out: str | os.PathLike, *, num: int = 2000, seed: int = 0,
                       resolution: int | tuple[int, int] = 64, num_val: int | None = None) -> dict:
    """Write ``num`` toy scenes as JPEGs in ImageNet's ``train/<wnid>/``, ``val/<wnid>/`` layout under ``out``.

    Args:
        out: output directory (created; existing files of the same names are replaced).
        num: images in both splits.
        seed: seed of the scenes and of which images are odd (too small, landscape, portrait).
        resolution: side of the regular square images in pixels (the high-res size of the toy protocol).
        num_val: images in ``val`` (default ``VAL_FRACTION`` of ``num``).

    Returns:
        ``root``, ``train_dir``, ``val_dir`` (paths as strings), ``resolution``, ``classes`` (wnids used) and per
        split its image count (``train``, ``val``), its too-small images (``train_small``, ``val_small``) and its
        non-square ones (``train_non_square``, ``val_non_square``).
    """
    side = _side(resolution)
    num = int(num)
    val = round(VAL_FRACTION * num) if num_val is None else int(num_val)
    if num < 1 or not 0 <= val <= num:
        raise ValueError(f"toy-data imagenet: num must be at least 1 and num_val within [0, num], got num={num}, "
                         f"num_val={val}")
    root = Path(out)
    rng = np.random.default_rng(seed)
    scenes = sample_scenes(num, rng)
    counts = {"train": num - val, "val": val}
    summary: dict = {"root": str(root), "train_dir": str(root / "train"), "val_dir": str(root / "val"),
                     "resolution": side}
    wnids: set[str] = set()
    start = 0
    for split, n in counts.items():
        (root / split).mkdir(parents=True, exist_ok=True)  # also when empty: the layout is complete
        kinds = _odd_kinds(n, rng)
        for i, (scene, kind) in enumerate(zip(scenes[start:start + n], kinds), start=1):
            wnid = toy_wnid(scene)
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{i:08d}.JPEG"
            _write_jpeg(toy_picture(scene, side, kind), folder / name)
            wnids.add(wnid)
        start += n
        summary[split] = n
        summary[f"{split}_small"] = kinds.count("small")
        summary[f"{split}_non_square"] = kinds.count("landscape") + kinds.count("portrait")
    names = [f"n{k:08d} {color} {shape}" for k, (shape, color) in
             enumerate((s, c) for s in SHAPES for c in PALETTE)]
    _write_text("\n".join(names) + "\n", root / "LOC_synset_mapping.txt")
    summary["classes"] = len(wnids)
    return summary
