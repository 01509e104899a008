"""The two training recipes of the paper's depth experiments, assembled from readers."""

from __future__ import annotations

from typing import Any, Optional

from torch.utils.data import Dataset

from tasks.depth.training.mixture import MARIGOLD_PROBABILITIES, MixtureDataset
from tasks.depth.training.pairs import DepthTrainingPairs
from tasks.depth.training.targets import IN_DOMAIN_MAPPINGS, MetricDepthMapping, QuantileNormalizer, TrainingTransform


def zero_shot_pairs(hypersim: Dataset, vkitti: Dataset, size: tuple[int, int], *, seed: int = 0,
                    length: Optional[int] = None, fit: str = "stretch", **kwargs: Any) -> DepthTrainingPairs:
    """Marigold's zero-shot recipe: Hypersim + Virtual KITTI 2 mixed 9:1, depth normalised per image by its
    2 %/98 % quantiles to [-1, 1], invalid pixels masked. ``kwargs`` go to :class:`DepthTrainingPairs`."""
    mixture = MixtureDataset([hypersim, vkitti], MARIGOLD_PROBABILITIES, length=length, seed=seed)
    return DepthTrainingPairs(mixture, TrainingTransform(tuple(size), QuantileNormalizer(), fit=fit), **kwargs)


def in_domain_pairs(reader: Dataset, size: tuple[int, int], mapping: str | MetricDepthMapping, *,
                    fit: str = "stretch", **kwargs: Any) -> DepthTrainingPairs:
    """In-domain metric recipe (KITTI Eigen, NYUv2): a fixed depth mapping, no per-image normalisation.

    Args:
        reader: e.g. :class:`KittiEigenTrain`, :class:`NyuSyncTrain`, :class:`NyuLabeledMat`.
        size: working ``(H, W)``.
        mapping: a key of ``IN_DOMAIN_MAPPINGS`` (``"kitti"``, ``"nyu"``) or a :class:`MetricDepthMapping`.
    """
    if isinstance(mapping, str):
        if mapping not in IN_DOMAIN_MAPPINGS:
            raise ValueError(f"unknown in-domain mapping {mapping!r}; valid: {sorted(IN_DOMAIN_MAPPINGS)}")
        mapping = IN_DOMAIN_MAPPINGS[mapping]
    return DepthTrainingPairs(reader, TrainingTransform(tuple(size), mapping, fit=fit), **kwargs)
