"""Toy-world image → depth pairs, with depth scaled to [-1, 1] for the flow."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from tasks.toyworld.pairs import RenderedSplit


def normalize_depth(depth: Tensor, depth_min: float, depth_max: float) -> Tensor:
    """Metric depth → ``[-1, 1]`` (linear; ``depth_min`` ↦ −1, ``depth_max`` ↦ +1)."""
    return 2.0 * (depth - depth_min) / (depth_max - depth_min) - 1.0


def denormalize_depth(z: Tensor, depth_min: float, depth_max: float) -> Tensor:
    """Inverse of :func:`normalize_depth`, clamping ``z`` to ``[-1, 1]`` first."""
    return (z.clamp(-1.0, 1.0) + 1.0) * 0.5 * (depth_max - depth_min) + depth_min


class ImageDepthPairs(Dataset):
    """Batches of ``source`` ``(B, 3, H, W)`` images in [-1, 1] and ``target`` ``(B, 1, H, W)`` scaled depth.

    ``__getitems__`` gathers a whole batch at once.
    """

    def __init__(self, split: RenderedSplit, depth_min: float, depth_max: float) -> None:
        self.split = split
        self.targets = normalize_depth(split.depths, depth_min, depth_max)

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices)
        return {"source": self.split.images_float(idx), "target": self.targets[idx]}

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}
