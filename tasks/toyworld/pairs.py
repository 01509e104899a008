"""Rendered toy-world images with their depth maps, as tensors, for the image-source tasks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tasks.toyworld.config import ToyWorldSplitConfig
from tasks.toyworld.dataset import Example, make_split, render_batch


@dataclass
class RenderedSplit:
    """One split rendered once.

    Attributes:
        examples: the scenes with their captions.
        images: ``(N, 3, H, W)`` uint8.
        depths: ``(N, 1, H, W)`` float32, scene depth (> 0).
    """

    examples: list[Example]
    images: Tensor
    depths: Tensor

    def __len__(self) -> int:
        return len(self.examples)

    def images_float(self, idx: Tensor | slice = slice(None)) -> Tensor:
        """Images at ``idx`` as float ``(B, 3, H, W)`` in [-1, 1]."""
        return self.images[idx].float() / 127.5 - 1.0


def render_split(examples: list[Example], resolution: int) -> RenderedSplit:
    images, depths = render_batch(examples, resolution)
    return RenderedSplit(list(examples), torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                         torch.from_numpy(depths).unsqueeze(1).contiguous())


def rendered_splits(cfg: ToyWorldSplitConfig) -> tuple[RenderedSplit, RenderedSplit]:
    """``(train, test)`` of ``make_split(cfg.num_train, cfg.num_test, cfg.seed)``, rendered at ``cfg.resolution``."""
    train, test = make_split(cfg.num_train, cfg.num_test, cfg.seed)
    return render_split(train, cfg.resolution), render_split(test, cfg.resolution)
