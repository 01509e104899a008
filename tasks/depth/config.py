"""Configuration of the depth task adapter: the toy world, Marigold's zero-shot data, KITTI / NYUv2 in-domain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from crossflow.schema import _f
from tasks.toyworld.config import ToyWorldSplitConfig


@dataclass
class DepthDataConfig:
    """Where the real training data is (``task.dataset`` other than ``toyworld``). Roots are directories or
    ``.tar`` files in the layout the field distributes; lists are the usual filename lists."""

    hypersim_root: Optional[str] = _f(None, "zero_shot: Marigold-preprocessed Hypersim (rgb_*.png + depth_plane_*.png "
                                            "in mm)")
    hypersim_list: Optional[str] = _f(None, "zero_shot: Hypersim filename list (`rgb depth` per line; Marigold's "
                                            "filename_list_train_filtered.txt)")
    vkitti_root: Optional[str] = _f(None, "zero_shot: Virtual KITTI 2 (depth PNG in cm); null trains on Hypersim alone")
    vkitti_list: Optional[str] = _f(None, "zero_shot: Virtual KITTI 2 filename list (Marigold's vkitti_train.txt)")
    kitti_root: Optional[str] = _f(None, "kitti: raw KITTI images (date/drive_sync/image_02/data/*.png)")
    kitti_depth_root: Optional[str] = _f(None, "kitti: annotated depth (drive_sync/proj_depth/groundtruth/...); null: "
                                               "kitti_root")
    kitti_list: Optional[str] = _f(None, "kitti: BTS/Marigold `image depth focal` list (eigen_train_files_with_gt.txt)")
    nyu_mat: Optional[str] = _f(None, "nyu: nyu_depth_v2_labeled.mat (read with h5py); used with nyu_splits")
    nyu_splits: Optional[str] = _f(None, "nyu: the official splits.mat (1-based trainNdxs/testNdxs)")
    nyu_root: Optional[str] = _f(None, "nyu: folder of the synchronised frames (BTS layout), instead of nyu_mat")
    nyu_list: Optional[str] = _f(None, "nyu: BTS list of synchronised frames (nyudepthv2_train_files_with_gt.txt)")
    epoch_length: Optional[int] = _f(None, "zero_shot: samples per epoch of the 9:1 mixture (null: both sets' total)")
    max_skipped: int = _f(100, "unreadable training samples skipped (and counted) before training stops")
    hflip_probability: float = _f(0.5, "left-right flip of training pairs (Marigold and BTS: 0.5)")


@dataclass
class DepthConfig:
    name: str = _f("depth", "task adapter")
    dataset: Literal["toyworld", "zero_shot", "kitti", "nyu"] = _f(
        "toyworld", "training data: toyworld (built in, metric depth); zero_shot (Hypersim + Virtual KITTI 2 mixed "
                    "9:1, per-image quantile-normalised, affine-invariant output as Marigold); kitti / nyu (in-domain "
                    "metric depth, log-mapped onto [-1, 1])")
    toyworld: ToyWorldSplitConfig = field(default_factory=ToyWorldSplitConfig)
    data: DepthDataConfig = field(default_factory=DepthDataConfig)
    resolution: list[int] = _f([96, 128], "working (H, W) of real data: images are resized to it (stretched) for "
                                          "training and inference; predictions are resized back to the ground truth")
    depth_min: float = _f(0.5, "toyworld: depth mapped to -1 (the toy world's depths lie in [0.8, 4.0])")
    depth_max: float = _f(4.5, "toyworld: depth mapped to +1; generated values are clamped to [depth_min, depth_max]")
    ensemble: int = _f(1, "benchmark evaluation: predictions per image from posterior samples of z0, combined by "
                          "Marigold-style ensembling (affine-aligned, median); 1: one prediction from the VE mean")
    picture_items: int = _f(24, "held-out examples in the evaluation picture (input | prediction | truth)")
    preview_items: int = _f(8, "held-out examples in the periodic preview picture")

    def __post_init__(self) -> None:
        if not 0 < self.depth_min < self.depth_max:
            raise ValueError(f"need 0 < depth_min < depth_max, got {self.depth_min} and {self.depth_max}")
        if len(self.resolution) != 2 or min(self.resolution) < 8:
            raise ValueError(f"resolution must be [H, W] with sides >= 8, got {self.resolution}")
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {self.ensemble}")
