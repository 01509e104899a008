"""Image–text pair lists (official ``img_text_pair.jsonl``, COCO caption annotations) and image loading.

A record is one (image, prompt) pair with its position in the input; unreadable input lines and
unreadable images are never fatal: they are returned as ``(position, reason)`` so the caller can
count and list them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


@dataclass
class ImageTextRecord:
    """One image–prompt pair.

    Attributes:
        index: position in the input (0-based record number; it fixes the shard the pair lands in).
        img_path: image path relative to the image root.
        prompt: caption.
        extra: other fields kept with the pair (e.g. ``image_id``, ``caption_index`` for COCO).
    """

    index: int
    img_path: str
    prompt: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "img_path": self.img_path, "prompt": self.prompt, **self.extra}


def read_image_text_jsonl(path: str | Path, *, image_key: str = "img_path",
                          prompt_key: str = "prompt") -> tuple[list[ImageTextRecord], list[dict[str, Any]]]:
    """Read a JSON-lines file of ``{"img_path": ..., "prompt": ...}`` objects.

    Blank lines are ignored. Every non-blank line takes one record index, so a bad line never shifts
    the records after it (shards stay stable when such a file is fixed and extraction resumed).

    Returns:
        ``(records, bad)``: valid records, and ``{"index", "line", "reason"}`` for lines that are not
        JSON objects with a non-empty string prompt and image path.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image-text list {path} does not exist")
    records, bad = [], []
    index = 0
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                img, prompt = obj.get(image_key), obj.get(prompt_key)
                if not isinstance(img, str) or not img:
                    raise ValueError(f"missing or empty {image_key!r}")
                if not isinstance(prompt, str) or not prompt.strip():
                    raise ValueError(f"missing or empty {prompt_key!r}")
                extra = {k: v for k, v in obj.items() if k not in (image_key, prompt_key, "index")}
                records.append(ImageTextRecord(index, img, prompt, extra))
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                bad.append({"index": index, "line": line_no, "reason": f"bad record: {e}"})
            index += 1
    return records, bad


def read_coco_captions(annotation_file: str | Path) -> list[ImageTextRecord]:
    """Every caption of a COCO ``captions_*.json`` as a record, images sorted by id (as the official script).

    Each record's ``extra`` holds ``image_id``, ``image_index`` (rank of the image id) and
    ``caption_index`` (k-th caption of that image, in annotation order).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it lacks ``images`` / ``annotations``.
    """
    path = Path(annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"COCO caption annotations {path} do not exist")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path}: expected a COCO captions file with 'images' and 'annotations'")
    files = {int(im["id"]): im["file_name"] for im in data["images"]}
    captions: dict[int, list[str]] = {i: [] for i in files}
    for ann in data["annotations"]:
        captions.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]).strip())
    records: list[ImageTextRecord] = []
    for rank, image_id in enumerate(sorted(files)):
        for k, caption in enumerate(captions[image_id]):
            records.append(ImageTextRecord(len(records), files[image_id], caption,
                                           {"image_id": image_id, "image_index": rank, "caption_index": k}))
    return records


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image fully (decode errors surface here, not later) and convert it to RGB."""
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


class CroppedImages(Dataset):
    """Records → center-cropped uint8 images, or the reason an image could not be used.

    Items are ``(position, array (size, size, 3) uint8 or None, reason or None)``; ``reason`` is
    ``"missing: ..."`` for absent files and ``"corrupt: ..."`` for files that do not decode.
    """

    def __init__(self, records: list[ImageTextRecord], root: str | Path, size: int,
                 crop: Callable[[Image.Image, int], np.ndarray]) -> None:
        self.records, self.root, self.size, self.crop = records, Path(root), size, crop

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, Optional[np.ndarray], Optional[str]]:
        path = self.root / self.records[i].img_path
        if not os.path.isfile(path):
            return i, None, f"missing: {path}"
        try:
            return i, self.crop(load_rgb(path), self.size), None
        except Exception as e:  # noqa: BLE001 - any decoding failure means "skip and report"
            return i, None, f"corrupt: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def collate_list(items: list) -> list:
    """Keep a batch as a plain list (images may be ``None``)."""
    return items
