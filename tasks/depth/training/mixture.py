"""A seeded mixture of training sets: Hypersim + Virtual KITTI 2 at 9:1, as Marigold trains for zero-shot depth."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset

MARIGOLD_PROBABILITIES: tuple[float, float] = (0.9, 0.1)  # Hypersim, Virtual KITTI 2 (config dataset_train.yaml)


def slot_counts(probabilities: Sequence[float], length: int) -> np.ndarray:
    """Slots per source: ``p_k · length`` rounded by largest remainder so they sum to ``length``."""
    exact = np.asarray(probabilities, dtype=np.float64) * length
    counts = np.floor(exact).astype(np.int64)
    remainder = length - int(counts.sum())
    counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1
    return counts


class MixtureDataset(Dataset):
    """Map-style mixture of datasets with fixed probabilities, reproducible from ``seed``.

    **Epoch.** The mixture has ``length`` items (default: the sum of the sources' lengths, the number of samples
    in Marigold's epoch of ``MixedBatchSampler``). Source ``k`` fills ``round(p_k · length)`` slots (largest
    remainder), so the proportions are exact within every epoch; the slots are shuffled, and each source's slots
    run through successive shuffled passes over its items (each item ``⌊n⌋`` or ``⌈n⌉`` times per epoch). The
    table depends only on ``(sizes, probabilities, length, seed)``; the trainer's sampler shuffles the order per
    epoch. Marigold instead draws the source per *batch* (its sources differ in resolution); here every sample is
    resized to one working resolution, so sources mix within a batch with the same expected proportions.

    Items are the source's item dict plus ``"dataset"`` (the source's position).

    Args:
        datasets: the sources (non-empty).
        probabilities: one per source, non-negative, summing to 1 (Marigold: ``MARIGOLD_PROBABILITIES``).
        length: items per epoch (default ``sum(len(d))``).
        seed: seed of the table.
    """

    def __init__(self, datasets: Sequence[Dataset], probabilities: Sequence[float], *, length: int | None = None,
                 seed: int = 0) -> None:
        probs = np.asarray(probabilities, dtype=np.float64)
        if len(datasets) == 0 or probs.shape != (len(datasets),):
            raise ValueError(f"need one probability per dataset, got {len(probs)} for {len(datasets)} datasets")
        if (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
            raise ValueError(f"mixture probabilities must be >= 0 and sum to 1, got {list(probabilities)}")
        sizes = [len(d) for d in datasets]
        for k, (size, p) in enumerate(zip(sizes, probs)):
            if size == 0 and p > 0:
                raise ValueError(f"mixture source {k} ({type(datasets[k]).__name__}) is empty but has probability {p}")
        self.datasets = list(datasets)
        self.length = int(length) if length is not None else sum(sizes)
        if self.length < 1:
            raise ValueError(f"mixture length must be positive, got {self.length}")
        rng = np.random.default_rng(seed)
        self.counts = slot_counts(probs, self.length)
        self.source = rng.permutation(np.repeat(np.arange(len(datasets)), self.counts))
        self.item = np.empty(self.length, dtype=np.int64)
        for k, count in enumerate(self.counts):
            if count:
                passes = -(-count // sizes[k])
                order = np.concatenate([rng.permutation(sizes[k]) for _ in range(passes)])[:count]
                self.item[self.source == k] = order

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, int]:
        """``(source, item)`` behind mixture index ``index``."""
        return int(self.source[index]), int(self.item[index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        k, j = self.locate(index)
        return {**self.datasets[k][j], "dataset": k}
