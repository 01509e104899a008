"""Config section of the toy-world data shared by the image-source tasks (depth, super-resolution, captioning)."""

from __future__ import annotations

from dataclasses import dataclass

from crossflow.schema import _f


@dataclass
class ToyWorldSplitConfig:
    """Toy-world scenes (one coloured shape on a plain background) split into train and held-out sets."""

    num_train: int = _f(20000, "training scenes")
    num_test: int = _f(200, "held-out scenes for evaluation (balanced over all attribute combinations)")
    seed: int = _f(0, "seed of the scene split")
    resolution: int = _f(32, "image side in pixels")

    def __post_init__(self) -> None:
        if self.num_train < 1 or self.num_test < 1:
            raise ValueError(f"num_train and num_test must be >= 1, got {self.num_train} and {self.num_test}")
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {self.resolution}")
