"""Training batches for the CrossFlow depth model from any reader (or mixture of readers)."""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset

from tasks.depth.training.io import SampleError, SkipBudget
from tasks.depth.training.targets import TrainingTransform

log = logging.getLogger(__name__)


class DepthTrainingPairs(Dataset):
    """``{"source": (B, 3, H, W) in [-1, 1], "target": (B, 1, H, W) in [-1, 1], "target_mask": (B, 1, H, W) bool}``.

    A sample that can't be used (:class:`SampleError`: unreadable/corrupt file, no valid pixel, flat map) is
    skipped for the next index (``i + 1``, wrapping), logged and counted in ``skipped``; past ``max_skipped``
    distinct bad files (per process) a ValueError names the last bad file.

    ``__getitems__`` returns the collated batch; ``prepare`` (called by the trainer on each batch) moves it to the
    device and flips each pair left-right with ``hflip_probability`` (Marigold and BTS train with 0.5), drawing
    from ``generator`` or torch's global RNG, whose state the trainer checkpoints.

    Args:
        dataset: a reader or :class:`MixtureDataset` yielding ``rgb``/``depth``/``valid`` items.
        transform: the working resolution and target encoding.
        max_skipped: skip budget.
        hflip_probability: chance of a left-right flip per pair.
    """

    def __init__(self, dataset: Dataset, transform: TrainingTransform, *, max_skipped: int = 100,
                 hflip_probability: float = 0.5) -> None:
        if not 0.0 <= hflip_probability <= 1.0:
            raise ValueError(f"hflip_probability must lie in [0, 1], got {hflip_probability}")
        if len(dataset) == 0:
            raise ValueError(f"{type(dataset).__name__} holds no samples")
        self.dataset, self.transform = dataset, transform
        self.budget = SkipBudget(max_skipped)
        self.hflip_probability = hflip_probability

    @property
    def skipped(self) -> dict[str, str]:
        """``{file: reason}`` of every sample skipped so far in this process."""
        return self.budget.skipped

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        n = len(self.dataset)
        for attempt in range(n):
            try:
                return self.transform(self.dataset[(index + attempt) % n])
            except SampleError as err:
                if err.path not in self.budget.skipped:
                    log.warning("skipping training sample %s", err)
                self.budget.record(err)  # raises past the budget
        raise ValueError(f"no usable sample in {type(self.dataset).__name__} ({n} items, all skipped)")

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        items = [self[i] for i in indices]
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}

    def prepare(self, batch: dict[str, Any], device: torch.device,
                generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        """Moves the batch to ``device`` and applies the random left-right flip (same flip for all three maps)."""
        out = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, Tensor)}
        if self.hflip_probability > 0:
            b = out["source"].shape[0]
            flip = (torch.rand(b, generator=generator) < self.hflip_probability).to(device).view(b, 1, 1, 1)
            out = {k: torch.where(flip, v.flip(-1), v) for k, v in out.items()}
        return out
