"""A batch sampler whose position can be saved and restored exactly."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


def check_batch_fits(num_items: int, batch_size: int, num_processes: int = 1, grad_accum_steps: int = 1) -> None:
    """Raise if the data cannot fill one micro-batch per process of the global ``train.batch_size``.

    Each optimizer step takes ``grad_accum_steps`` micro-batches of ``batch_size / (num_processes ·
    grad_accum_steps)`` on every process; the sampler needs at least one micro-batch per process.

    Raises:
        ValueError: naming ``train.batch_size`` as set, its split, the dataset size and the largest batch
            that fits.
    """
    micro = batch_size // (num_processes * grad_accum_steps)
    if num_items >= micro * num_processes:
        return
    fits = (num_items // num_processes) * num_processes * grad_accum_steps
    fix = f"set train.batch_size to at most {fits}, or train on more data" if fits else "train on more data"
    raise ValueError(f"train.batch_size={batch_size} is split over {num_processes} process(es) × "
                     f"train.grad_accum_steps={grad_accum_steps} into micro-batches of {micro}, but the training data "
                     f"has only {num_items} samples (fewer than one micro-batch per process): {fix}")


class ResumableBatchSampler(Sampler[list[int]]):
    """Shuffled batches, a fresh permutation per epoch, sharded over processes, resumable.

    The permutation of epoch ``e`` depends only on ``(seed, e)``; each global batch of
    ``batch_size·world_size`` indices is split into ``world_size`` contiguous shards and rank ``r``
    takes shard ``r``. The incomplete last batch is dropped. ``position`` = ``(epoch, batch)`` of the
    next batch; :meth:`set_position` resumes from there.

    Args:
        num_items: dataset length.
        batch_size: per-process batch size.
        seed: shuffling seed.
        rank, world_size: this process and the number of processes.
    """

    def __init__(self, num_items: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if num_items < batch_size * world_size:
            raise ValueError(f"the dataset has {num_items} items, fewer than one batch of {batch_size} per process "
                             f"× {world_size} process(es)")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.batch = 0, 0

    def __len__(self) -> int:
        return self.num_items // (self.batch_size * self.world_size)

    def set_position(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.batch

    def _permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.num_items, generator=gen)

    def __iter__(self) -> Iterator[list[int]]:
        """Yield batches from the current position to the end of the current epoch."""
        perm = self._permutation(self.epoch)
        global_batch = self.batch_size * self.world_size
        start_batch = self.batch
        for b in range(start_batch, len(self)):
            lo = b * global_batch + self.rank * self.batch_size
            yield perm[lo:lo + self.batch_size].tolist()

    def advance(self) -> None:
        """Record that one batch was consumed (the trainer calls this, so prefetching can't skew it)."""
        self.batch += 1
        if self.batch >= len(self):
            self.epoch, self.batch = self.epoch + 1, 0
