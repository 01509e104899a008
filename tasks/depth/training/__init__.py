"""Depth training data: readers of the real formats, the 9:1 zero-shot mixture, targets in [-1, 1] and batches.

Reader items: ``rgb`` uint8 ``(3, H, W)``, ``depth`` float32 metres ``(1, H, W)``, ``valid`` bool ``(1, H, W)``,
``name``. Training batches: ``source`` ``(B, 3, H, W)``, ``target`` ``(B, 1, H, W)``, ``target_mask`` ``(B, 1, H, W)``.
"""

from tasks.depth.training.geometry import crop_mask, kb_crop, resize_nearest, resize_rgb
from tasks.depth.training.io import FileSource, SampleError, SkipBudget, decode_depth_png, decode_rgb, read_list
from tasks.depth.training.mixture import MARIGOLD_PROBABILITIES, MixtureDataset
from tasks.depth.training.nyu_mat import NyuLabeledMat, read_nyu_splits
from tasks.depth.training.pairs import DepthTrainingPairs
from tasks.depth.training.readers import (HypersimDepth, KittiEigenTrain, ListDepthDataset, NyuSyncTrain,
                                          VirtualKittiDepth)
from tasks.depth.training.recipes import in_domain_pairs, zero_shot_pairs
from tasks.depth.training.targets import (IN_DOMAIN_MAPPINGS, MetricDepthMapping, QuantileNormalizer,
                                          TrainingTransform)

__all__ = [
    "DepthTrainingPairs", "FileSource", "HypersimDepth", "IN_DOMAIN_MAPPINGS", "KittiEigenTrain", "ListDepthDataset",
    "MARIGOLD_PROBABILITIES", "MetricDepthMapping", "MixtureDataset", "NyuLabeledMat", "NyuSyncTrain",
    "QuantileNormalizer", "SampleError", "SkipBudget", "TrainingTransform", "VirtualKittiDepth", "crop_mask",
    "decode_depth_png", "decode_rgb", "in_domain_pairs", "kb_crop", "read_list", "read_nyu_splits", "resize_nearest",
    "resize_rgb", "zero_shot_pairs",
]
