"""A small folder of generated images with captions, including one corrupt and one missing file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from helpers.tiny_models import WORDS


def make_image_folder(root: Path, n: int = 10, *, seed: int = 0) -> tuple[Path, Path, list[dict]]:
    """``n`` small JPEG/PNG images of varied sizes + ``pairs.jsonl``; record 3 is corrupt, record 6 missing.

    Returns:
        ``(jsonl path, image root, records)``; every record has ``img_path`` and ``prompt``.
    """
    rng = np.random.default_rng(seed)
    images = root / "imgs"
    images.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        name = f"img_{i:03d}.{'png' if i % 2 else 'jpg'}"
        prompt = " ".join(rng.choice(WORDS[3:], size=int(rng.integers(2, 6))))
        records.append({"img_path": name, "prompt": f"a photo of {prompt}"})
        if i == 3:
            (images / name).write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
        elif i != 6:
            h, w = int(rng.integers(36, 80)), int(rng.integers(36, 80))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / name)
    jsonl = root / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return jsonl, images, records
