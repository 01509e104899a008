"""The CFG indicator training rule.

Each sample is null with probability ``p``. A null sample keeps its own source latent ``z0`` but
flows to *another* sample's target: the targets of the null subset are rolled by one among
themselves. With at most one null sample in a batch there is nothing to roll with, so the whole
batch is treated as conditional (as the official code does).
"""

from __future__ import annotations

import torch
from torch import Tensor


def draw_null_indicator(batch: int, probability: float, *, device: torch.device | str = "cpu",
                        generator: torch.Generator | None = None) -> Tensor:
    """``(B,)`` bool, True for null samples; all False when fewer than two are drawn.

    Tensor operations only: no host–device synchronisation.
    """
    null = torch.rand(batch, generator=generator, device=device) < probability
    return null & (null.sum() > 1)


def roll_null_targets(target: Tensor, null: Tensor) -> Tensor:
    """Replace each null sample's target by the next null sample's target (cyclically).

    Null row ``i`` of rank ``r`` among the null rows (in batch order) takes the target of the null row of
    rank ``(r + 1) mod n``; conditional rows keep theirs. Computed with sorting and gathers only, so it
    never waits for the device (no ``nonzero``).

    Args:
        target: ``(B, ...)`` target latents.
        null: ``(B,)`` bool indicator.

    Returns:
        A new tensor; conditional rows are unchanged.
    """
    b = null.shape[0]
    null_rows = torch.argsort((~null).to(torch.int8), stable=True)  # null rows first, in batch order
    count = null.sum().clamp(min=1)
    rank = torch.cumsum(null.long(), 0) - 1  # rank of each null row among the null rows
    source = null_rows[torch.remainder(rank + 1, count).clamp(min=0)]
    source = torch.where(null, source, torch.arange(b, device=null.device))
    return target[source]
