"""Configuration of the super-resolution task adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from crossflow.schema import _f
from tasks.toyworld.config import ToyWorldSplitConfig


@dataclass
class ImageNetSRConfig:
    """ImageNet in its usual folder layout (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``, or a flat folder)."""

    root: Optional[str] = _f(None, "ImageNet root holding train_dir and eval_dir")
    train_dir: str = _f("train", "training images under root: <wnid>/*.JPEG folders or a flat folder")
    eval_dir: str = _f("val", "evaluation images under root (the paper: the 50,000 validation images)")
    hr_size: int = _f(256, "high-res side: largest central square crop, antialiased resize (low-res = hr_size / "
                           "task.scale, e.g. 256 / 4 = 64)")
    max_skipped_fraction: float = _f(0.01, "unreadable images are skipped and counted; training or evaluation stops "
                                           "past this fraction")
    num_eval: Optional[int] = _f(None, "evaluation images (N evenly spaced over the sorted list, so every class is "
                                       "represented; null: all; `crossflow eval --num` overrides)")


@dataclass
class SRMetricsConfig:
    """FID and Inception Score of `crossflow eval` (computed when the Inception weights file is given)."""

    inception_weights: Optional[str] = _f(None, "local path of pt_inception-2015-12-05-6726825d.pth (the standard "
                                                "FID Inception); null skips FID and IS with the reason")
    fid_reference: Optional[str] = _f(None, "reference statistics .npz (mu, sigma) of the HR evaluation images; null: "
                                            "computed from them with the same Inception and cached next to the run")
    is_splits: int = _f(10, "Inception Score splits (consecutive, no shuffling, as OpenAI's evaluator)")
    batch_size: int = _f(50, "images per Inception forward")


@dataclass
class SuperResolutionConfig:
    name: str = _f("super_resolution", "task adapter")
    dataset: Literal["toyworld", "imagenet"] = _f("toyworld", "toyworld (built in) or imagenet (task.imagenet: "
                                                              "folder layout, SR3's preprocessing)")
    toyworld: ToyWorldSplitConfig = field(default_factory=ToyWorldSplitConfig)
    imagenet: ImageNetSRConfig = field(default_factory=ImageNetSRConfig)
    metrics: SRMetricsConfig = field(default_factory=SRMetricsConfig)
    scale: int = _f(4, "upscaling factor: low-res side = high-res side / scale, the high-res side being "
                       "toyworld.resolution or imagenet.hr_size (toy 32 → 8; paper 256 → 64)")
    picture_items: int = _f(16, "held-out examples in the evaluation picture (low-res | bicubic | prediction | truth)")
    preview_items: int = _f(8, "held-out examples in the periodic preview picture")

    @property
    def hr_size(self) -> int:
        """High-res side of the selected dataset (``toyworld.resolution`` or ``imagenet.hr_size``)."""
        return self.imagenet.hr_size if self.dataset == "imagenet" else self.toyworld.resolution

    def __post_init__(self) -> None:
        if self.scale < 2:
            raise ValueError(f"scale must be >= 2 (the upscaling factor), got {self.scale}")
        key = "imagenet.hr_size" if self.dataset == "imagenet" else "toyworld.resolution"
        if self.hr_size % self.scale:
            raise ValueError(f"scale={self.scale} must divide {key}={self.hr_size} (dataset={self.dataset}); "
                             f"valid scales: the divisors >= 2 of {self.hr_size}")
