"""Configuration of the super-resolution task adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from crossflow.schema import _f
from tasks.toyworld.config import ToyWorldSplitConfig


@dataclass
class SuperResolutionConfig:
    name: str = _f("super_resolution", "task adapter")
    toyworld: ToyWorldSplitConfig = field(default_factory=ToyWorldSplitConfig)
    scale: int = _f(4, "upscaling factor: low-res side = toyworld.resolution / scale (toy 32 → 8; paper 64 → 256)")
    picture_items: int = _f(16, "held-out examples in the evaluation picture (low-res | bicubic | prediction | truth)")
    preview_items: int = _f(8, "held-out examples in the periodic preview picture")

    def __post_init__(self) -> None:
        if self.scale < 2 or self.toyworld.resolution % self.scale:
            raise ValueError(f"scale must be >= 2 and divide toyworld.resolution={self.toyworld.resolution}, "
                             f"got {self.scale}")
