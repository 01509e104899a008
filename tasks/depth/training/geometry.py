"""Crops, evaluation masks and resizing of ``(H, W)`` / ``(H, W, C)`` arrays.

Crop fractions and fixed windows as in BTS (``pytorch/bts_main.py``) and Marigold (``src/dataset/*``).
"""

from __future__ import annotations

import cv2
import numpy as np

KB_CROP_SIZE: tuple[int, int] = (352, 1216)  # KITTI benchmark crop (H, W): bottom rows, centred columns
NYU_EIGEN_WINDOW: tuple[slice, slice] = (slice(45, 471), slice(41, 601))  # on the 480×640 NYUv2 maps
NYU_SIZE: tuple[int, int] = (480, 640)
# Row and column fractions of the KITTI evaluation crops, applied to the GT map's own size.
KITTI_CROP_FRACTIONS: dict[str, tuple[float, float, float, float]] = {
    "garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),  # Garg et al. ECCV16
    "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229),  # Eigen et al. NIPS14
}


def kb_crop(array: np.ndarray) -> np.ndarray:
    """KITTI benchmark crop to 352×1216 of an ``(H, W, ...)`` array: top = H − 352, left = (W − 1216) // 2."""
    height, width = array.shape[:2]
    crop_h, crop_w = KB_CROP_SIZE
    if height < crop_h or width < crop_w:
        raise ValueError(f"KB crop needs at least {crop_h}×{crop_w} pixels, got {height}×{width}")
    top, left = height - crop_h, (width - crop_w) // 2
    return array[top:top + crop_h, left:left + crop_w]


def crop_mask(shape: tuple[int, int], kind: str) -> np.ndarray:
    """``(H, W)`` bool window of an evaluation crop: ``"garg"``/``"eigen"`` (KITTI fractions of the map's own
    size) or ``"nyu_eigen"`` (rows 45:471, cols 41:601; needs a 480×640 map)."""
    height, width = shape
    mask = np.zeros((height, width), dtype=bool)
    if kind == "nyu_eigen":
        if (height, width) != NYU_SIZE:
            raise ValueError(f"the NYUv2 Eigen crop is defined on 480×640 maps, got {height}×{width}")
        mask[NYU_EIGEN_WINDOW] = True
    elif kind in KITTI_CROP_FRACTIONS:
        top, bottom, left, right = KITTI_CROP_FRACTIONS[kind]
        mask[int(top * height):int(bottom * height), int(left * width):int(right * width)] = True
    else:
        raise ValueError(f"unknown crop {kind!r}; valid: 'garg', 'eigen', 'nyu_eigen' or None")
    return mask


def nearest_exact_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source index of each output pixel when resampling by pixel centres: ``floor((i + 0.5)·in/out)``.

    This is torchvision's ``NEAREST_EXACT`` (Marigold's resize for training), also PIL's ``NEAREST``.
    """
    return np.minimum(((np.arange(size_out) + 0.5) * (size_in / size_out)).astype(np.int64), size_in - 1)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-exact resize of an ``(H, W, ...)`` array (depth, masks: no value is ever invented)."""
    rows = nearest_exact_indices(array.shape[0], size[0])
    cols = nearest_exact_indices(array.shape[1], size[1])
    return array[rows[:, None], cols[None, :]]


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 → ``(h, w, 3)`` uint8: area averaging when shrinking (no aliasing), bilinear otherwise."""
    if image.shape[:2] == tuple(size):
        return image
    shrink = size[0] <= image.shape[0] and size[1] <= image.shape[1]
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def center_crop_window(shape: tuple[int, int], aspect: float) -> tuple[slice, slice]:
    """Largest centred window of ``shape`` with width/height ratio ``aspect``."""
    height, width = shape
    if width / height > aspect:
        new_w = max(1, round(height * aspect))
        left = (width - new_w) // 2
        return slice(0, height), slice(left, left + new_w)
    new_h = max(1, round(width / aspect))
    top = (height - new_h) // 2
    return slice(top, top + new_h), slice(0, width)
