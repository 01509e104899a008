"""Configuration of the depth task adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from crossflow.schema import _f
from tasks.toyworld.config import ToyWorldSplitConfig


@dataclass
class DepthConfig:
    name: str = _f("depth", "task adapter")
    toyworld: ToyWorldSplitConfig = field(default_factory=ToyWorldSplitConfig)
    depth_min: float = _f(0.5, "depth mapped to -1 (the toy world's depths lie in [0.8, 4.0])")
    depth_max: float = _f(4.5, "depth mapped to +1; generated values are clamped to [depth_min, depth_max]")
    picture_items: int = _f(24, "held-out examples in the evaluation picture (input | prediction | truth)")
    preview_items: int = _f(8, "held-out examples in the periodic preview picture")

    def __post_init__(self) -> None:
        if not 0 < self.depth_min < self.depth_max:
            raise ValueError(f"need 0 < depth_min < depth_max, got {self.depth_min} and {self.depth_max}")
