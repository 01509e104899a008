"""ImageNet super-resolution data (SR3's protocol): high-res crops and their 8-bit low-res versions.

Each image is read from the usual ImageNet folder layout (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``) or a
flat folder of images. Preprocessing, as in SR3 / the CrossFlow paper's 64 → 256 setting:

* images whose shorter side is below ``hr_size`` are dropped (found from the file header, without decoding, when the
  list is built) and counted;
* the high-res image (HR) is the largest central square crop, resized to ``hr_size`` with antialiasing (PIL
  BICUBIC, whose kernel widens when it shrinks);
* the low-res image (LR) is the HR image downsampled by ``scale`` with antialiased bicubic resampling and rounded to
  8 bits, as a saved low-res image would be (:func:`tasks.super_resolution.data.downsample`);
* CrossFlow's source is the LR image upsampled back to ``hr_size`` with plain bicubic interpolation
  (:func:`tasks.image_source.upsample_bicubic`).

Unreadable files are skipped and counted; once more than ``max_skipped_fraction`` of the listed images were
skipped, a ValueError names the key ``task.imagenet.max_skipped_fraction`` and the last bad file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from crossflow.utils.images import load_image
from tasks.image_source import upsample_bicubic
from tasks.super_resolution.data import downsample

log = logging.getLogger(__name__)

#: File name endings taken as images (compared lower-cased; ImageNet's own files end in ``.JPEG``).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpeg", ".jpg", ".png")
_BUDGET_KEY = "task.imagenet.max_skipped_fraction"


def _is_image(path: Path) -> bool:
    # hidden files are skipped: partial writes (``.name.tmp``) and macOS ``._`` resource forks
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The images of ``folder``, sorted by their path relative to it.

    Both layouts are read: images directly in ``folder`` (flat) and images in its immediate subfolders
    (``<wnid>/*.JPEG``). Suffixes ``.JPEG``/``.jpg``/``.png`` in any case; hidden files are ignored.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root} (expected <wnid>/*.JPEG subfolders or a flat folder "
                                "of .JPEG/.jpg/.png files)")
    found = [p for p in root.iterdir() if _is_image(p)]
    for sub in root.iterdir():
        if sub.is_dir() and not sub.name.startswith("."):
            found.extend(p for p in sub.iterdir() if _is_image(p))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def sr_crop(image: np.ndarray | Image.Image, hr_size: int) -> np.ndarray | None:
    """The high-res image: the largest central square, resized to ``hr_size`` with antialiasing.

    Args:
        image: ``(H, W, 3)`` uint8 array or a PIL image (converted to RGB).
        hr_size: side of the result in pixels.

    Returns:
        ``(hr_size, hr_size, 3)`` uint8, or None when the shorter side is below ``hr_size``. A square whose side
        already is ``hr_size`` (after the crop) comes back unchanged.
    """
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"images must be (H, W, 3) uint8 arrays, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    side = min(h, w)
    if side < hr_size:
        return None
    top, left = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(image[top:top + side, left:left + side])
    if side == hr_size:
        return square
    return np.array(Image.fromarray(square).resize((hr_size, hr_size), resample=Image.BICUBIC))


def lr_from_hr(hr: Tensor, scale: int) -> Tensor:
    """``(B, 3, H, W)`` uint8 → ``(B, 3, H/scale, W/scale)`` uint8: antialiased bicubic, rounded to 8 bits."""
    if hr.dtype != torch.uint8:
        raise ValueError(f"lr_from_hr takes uint8 high-res images, got {hr.dtype}")
    return downsample(hr, scale)


def _header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header (PIL opens lazily: no pixels are decoded)."""
    with Image.open(path) as im:
        return im.size


class ImageNetSR(Dataset):
    """High-res crops of an image folder with their upsampled low-res sources, for training and evaluation.

    Items (``__getitems__``): ``source`` (the LR image upsampled back to ``hr_size``, bicubic) and ``target`` (the
    HR crop), both ``(B, 3, hr_size, hr_size)`` float in [-1, 1]. An image that cannot be decoded is replaced by
    the next one (wrapping) and counted in :attr:`skipped`.

    Args:
        folder: ``<wnid>/*.JPEG`` subfolders or a flat folder of images.
        hr_size: high-res side (256 in the paper).
        scale: downscaling factor; ``hr_size`` must be divisible by it (4: 256 → 64).
        max_skipped_fraction: unreadable images allowed, as a fraction of the listed ones.
        num: keep ``num`` usable images, evenly spaced over the sorted list so that every class (``<wnid>``
            folder) is represented (evaluation subsets; None: all).

    Attributes:
        paths: the usable images, sorted.
        dropped_small: images dropped because their shorter side is below ``hr_size`` (with ``num``: among those
            listed before the ``num``-th usable one).
        skipped: distinct unreadable files met so far (at listing or decoding).
    """

    def __init__(self, folder: str | os.PathLike, hr_size: int, scale: int, max_skipped_fraction: float = 0.01,
                 num: int | None = None) -> None:
        if scale < 2 or hr_size % scale:
            raise ValueError(f"task.imagenet.hr_size={hr_size} must be divisible by task.scale={scale} (>= 2)")
        self.folder, self.hr_size, self.scale = Path(folder), int(hr_size), int(scale)
        self.max_skipped_fraction = float(max_skipped_fraction)
        listed = list_images(self.folder)
        if not listed:
            raise ValueError(f"no images in {self.folder} (expected <wnid>/*.JPEG subfolders or a flat folder of "
                             ".JPEG/.jpg/.png files)")
        self.num_listed = len(listed)
        self._skipped: set[Path] = set()
        self.dropped_small = 0
        self.paths: list[Path] = []
        if num is not None and num < len(listed):  # evenly spaced over the sorted list: every class, not the first
            stride = len(listed) // num
            listed = [listed[i] for offset in range(stride) for i in range(offset, len(listed), stride)]
        for path in listed:
            try:
                width, height = _header_size(path)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                self._skip(path, exc)
                continue
            if min(width, height) < self.hr_size:
                self.dropped_small += 1
            else:
                self.paths.append(path)
            if num is not None and len(self.paths) >= num:
                break
        if not self.paths:
            raise ValueError(f"no image in {self.folder} has a shorter side of at least task.imagenet.hr_size="
                             f"{self.hr_size} ({self.dropped_small} too small, {self.skipped} unreadable)")
        log.info("%s: %d images (%d dropped: shorter side < %d; %d unreadable)", self.folder, len(self.paths),
                 self.dropped_small, self.hr_size, self.skipped)

    @property
    def skipped(self) -> int:
        """Distinct unreadable files met so far."""
        return len(self._skipped)

    def _skip(self, path: Path, reason: object) -> None:
        self._skipped.add(path)
        log.warning("skipping unreadable image %s: %s", path, reason)
        allowed = int(self.max_skipped_fraction * self.num_listed)
        if self.skipped > allowed:
            raise ValueError(f"{self.skipped} of {self.num_listed} images in {self.folder} are unreadable, more than "
                             f"{_BUDGET_KEY}={self.max_skipped_fraction} allows ({allowed}); the last: {path}: "
                             f"{reason}")

    def __len__(self) -> int:
        return len(self.paths)

    def _crop(self, index: int) -> np.ndarray:
        """HR crop of image ``index``, ``(hr_size, hr_size, 3)`` uint8; unreadable images give way to the next."""
        for step in range(len(self.paths)):
            path = self.paths[(index + step) % len(self.paths)]
            if path in self._skipped:
                continue
            try:
                crop = sr_crop(load_image(path), self.hr_size)
            except ValueError as exc:  # load_image: missing, truncated or not an image
                self._skip(path, exc)
                continue
            if crop is None:  # the header claimed a larger size than the decoded pixels
                self._skip(path, f"decoded smaller than {self.hr_size} px")
                continue
            return crop
        raise ValueError(f"no readable image left in {self.folder}")

    def hr(self, indices: Sequence[int]) -> Tensor:
        """High-res crops ``(B, 3, hr_size, hr_size)`` uint8 (evaluation truths)."""
        crops = np.stack([self._crop(int(i)) for i in indices])
        return torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()

    def lr(self, indices: Sequence[int]) -> Tensor:
        """Low-res images ``(B, 3, hr_size/scale, hr_size/scale)`` uint8 (the pipeline's inputs)."""
        return lr_from_hr(self.hr(indices), self.scale)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        hr = self.hr(indices)
        source = upsample_bicubic(lr_from_hr(hr, self.scale), (self.hr_size, self.hr_size))
        return {"source": source, "target": hr.float() / 127.5 - 1.0}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}
