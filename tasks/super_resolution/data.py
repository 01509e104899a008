"""Low-/high-resolution pairs: antialiased bicubic downsampling, bicubic upsampling.

Downsampling is ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)`` (PyTorch's
antialiased bicubic resampling: the cubic kernel, a = −0.5, stretched by the scale factor so that it
low-pass filters, as PIL's ``Image.resize(BICUBIC)`` does), followed by rounding to 8-bit values as a
saved low-res image would be. Upsampling back to the high-res grid is plain bicubic interpolation
(:func:`tasks.image_source.upsample_bicubic`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from tasks.image_source import upsample_bicubic
from tasks.toyworld.pairs import RenderedSplit


def downsample(images: Tensor, factor: int) -> Tensor:
    """``(B, C, H, W)`` uint8 → ``(B, C, H/factor, W/factor)`` uint8, antialiased bicubic."""
    h, w = images.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} is not divisible by the scale factor {factor}")
    small = F.interpolate(images.float(), size=(h // factor, w // factor), mode="bicubic", antialias=True,
                          align_corners=False)
    return small.round().clamp(0, 255).to(torch.uint8)


class SuperResolutionPairs(Dataset):
    """Batches of ``source`` (bicubic-upsampled low-res, ``(B, 3, H, W)`` in [-1, 1]) and ``target`` (the high-res
    image, same shape). A concatenation-conditioned baseline gets the same ``source`` as its conditioning image.
    """

    def __init__(self, split: RenderedSplit, factor: int) -> None:
        self.split = split
        self.low_res = downsample(split.images, factor)
        self.size = tuple(split.images.shape[-2:])

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices)
        return {"source": upsample_bicubic(self.low_res[idx], self.size), "target": self.split.images_float(idx)}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}
