"""Toy-world scenes written as COCO captions in Karpathy's split, so the real captioning path runs on a CPU.

``crossflow toy-data coco OUT`` writes what the real data path reads:

* ``OUT/dataset_coco.json`` with the structure of Karpathy's file (``{"images": [...], "dataset": "coco"}``; per
  image ``filepath``, ``sentids``, ``filename``, ``imgid``, ``split``, ``sentences`` [``tokens``, ``raw``, ``imgid``,
  ``sentid``], ``cocoid``) plus ``toy_attributes`` (the scene's color/shape/size/position; real readers keep it as
  an extra key);
* the images as JPEG (quality 95, no chroma subsampling): split ``train`` under
  ``OUT/train2014/COCO_train2014_<cocoid:012d>.jpg``, ``restval``/``val``/``test`` under
  ``OUT/val2014/COCO_val2014_<cocoid:012d>.jpg`` (as COCO's val2014 holds Karpathy's restval, val and test).

Each image gets five captions, its scene under five distinct toy templates (random per image), like COCO's five
human captions. ``raw`` keeps the template's punctuation; ``tokens`` are lower-cased with punctuation removed, as
Karpathy's. Split proportions follow Karpathy's: val and test 10% each by default, restval ``RESTVAL_FRACTION`` of
the rest, and the splits are interleaved in file order as in the real file. Cocoids are distinct random ids (not
the running ``imgid``), so code that confuses the two fails on toy data too.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.toyworld.scenes import TEMPLATES, caption, render, sample_scenes

CAPTIONS_PER_IMAGE = 5
JPEG_QUALITY = 95
HELD_OUT_FRACTION = 0.1  # val and test each (5,000 of 123,287 in Karpathy's split; 10% keeps toy splits usable)
RESTVAL_FRACTION = 30504 / 113287  # Karpathy: restval / (train + restval), about 0.27
MAX_COCOID = 1_000_000  # cocoids are drawn below this (COCO 2014's ids reach 581,929)
_PUNCTUATION = re.compile(r"[^\w\s]")


def toy_tokens(text: str) -> list[str]:
    """Karpathy-style tokens of a toy caption: lower-cased, punctuation removed, split on whitespace."""
    return _PUNCTUATION.sub("", text.lower()).split()


def _split_counts(num: int, num_val: int | None, num_test: int | None) -> dict[str, int]:
    if num < 1:
        raise ValueError(f"toy-data coco: num must be at least 1, got {num}")
    val = round(HELD_OUT_FRACTION * num) if num_val is None else num_val
    test = round(HELD_OUT_FRACTION * num) if num_test is None else num_test
    if val < 0 or test < 0 or val + test > num:
        raise ValueError(f"toy-data coco: num_val={val} and num_test={test} must be >= 0 and add up to at most "
                         f"num={num}")
    rest = num - val - test
    restval = round(RESTVAL_FRACTION * rest)
    return {"train": rest - restval, "restval": restval, "val": val, "test": test}


def _side(resolution: int | tuple[int, ...]) -> int:
    if isinstance(resolution, (tuple, list)):
        if len(resolution) != 2 or resolution[0] != resolution[1]:
            raise ValueError(f"toy-data coco: resolution must be one side (square scenes), got {resolution}")
        resolution = resolution[0]
    if int(resolution) < 8:
        raise ValueError(f"toy-data coco: resolution must be at least 8 pixels, got {resolution}")
    return int(resolution)


def write_toy_coco(out: str | os.PathLike, *, num: int = 5000, seed: int = 0,
                   resolution: int | tuple[int, int] = 64, num_val: int | None = None,
                   num_test: int | None = None) -> dict:
    """Write ``num`` toy scenes as COCO images with Karpathy's ``dataset_coco.json`` under ``out``.

    Args:
        out: output directory (created; existing files of the same names are replaced).
        num: images in all splits.
        seed: seed of the scenes, the caption templates, the split assignment and the cocoids.
        resolution: side of the square JPEG images in pixels.
        num_val: images in split ``val`` (default 10% of ``num``).
        num_test: images in split ``test`` (default 10% of ``num``).

    Returns:
        ``dataset_json`` and ``image_root`` (paths as strings), ``images``, ``sentences`` and the image count of
        each split (``train``, ``restval``, ``val``, ``test``).
    """
    side = _side(resolution)
    counts = _split_counts(int(num), num_val, num_test)
    root = Path(out)
    rng = np.random.default_rng(seed)
    scenes = sample_scenes(num, rng)
    splits = rng.permutation(np.repeat(list(counts), list(counts.values())))
    cocoids = rng.choice(np.arange(1, max(MAX_COCOID, 2 * num)), size=num, replace=False)
    templates = [rng.choice(len(TEMPLATES), size=CAPTIONS_PER_IMAGE, replace=False) for _ in range(num)]
    for folder in ("train2014", "val2014"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    records, sentid = [], 0
    for imgid, (scene, split, cocoid, chosen) in enumerate(zip(scenes, splits, cocoids, templates)):
        folder = "train2014" if split == "train" else "val2014"
        filename = f"COCO_{folder}_{int(cocoid):012d}.jpg"
        # 4:4:4 chroma: at toy sizes 4:2:0 subsampling would smear the shape's colour over its edges
        Image.fromarray(render(scene, side)).save(root / folder / filename, quality=JPEG_QUALITY, subsampling=0)
        sentences = []
        for t in chosen:
            raw = caption(scene, int(t))
            sentences.append({"tokens": toy_tokens(raw), "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        records.append({"filepath": folder, "sentids": [s["sentid"] for s in sentences], "filename": filename,
                        "imgid": imgid, "split": str(split), "sentences": sentences, "cocoid": int(cocoid),
                        "toy_attributes": scene.attributes})
    dataset_json = root / "dataset_coco.json"
    tmp = dataset_json.with_name(f".{dataset_json.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:  # written last and atomically: a json present means every image it lists is on disk
        tmp.write_text(json.dumps({"images": records, "dataset": "coco"}), encoding="utf-8")
        os.replace(tmp, dataset_json)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"dataset_json": str(dataset_json), "image_root": str(root), "images": num,
            "sentences": num * CAPTIONS_PER_IMAGE, **counts}
