"""Image preprocessing of the official CrossFlow feature extraction (PIL only, no torchvision).

Two square center crops:

- :func:`center_crop_adm` (training data, ADM style): halve with a BOX filter while the short side is
  at least twice the target, resize with BICUBIC so the short side equals the target, then cut the
  centre square.
- :func:`center_crop_lanczos` (COCO val2014 evaluation features): cut the largest centre square of
  the original, then resize it with LANCZOS.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def center_crop_adm(image: Image.Image, size: int) -> np.ndarray:
    """ADM-style center crop of an RGB PIL image to ``(size, size, 3)`` uint8."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return np.ascontiguousarray(arr[top:top + size, left:left + size])


def center_crop_lanczos(image: Image.Image, size: int) -> np.ndarray:
    """Largest centre square of an RGB PIL image, LANCZOS-resized to ``(size, size, 3)`` uint8."""
    arr = np.asarray(image)
    side = min(arr.shape[:2])
    top, left = (arr.shape[0] - side) // 2, (arr.shape[1] - side) // 2
    square = Image.fromarray(np.ascontiguousarray(arr[top:top + side, left:left + side]))
    return np.asarray(square.resize((size, size), resample=Image.LANCZOS))


#: Crop functions by name (``extract --crop``).
CROPS: dict[str, Callable[[Image.Image, int], np.ndarray]] = {"adm": center_crop_adm, "lanczos": center_crop_lanczos}


def to_model_input(arrays: np.ndarray) -> Tensor:
    """uint8 ``(B, H, W, 3)`` → float32 ``(B, 3, H, W)`` in [-1, 1] (``x/127.5 − 1``)."""
    return torch.from_numpy(np.ascontiguousarray(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
