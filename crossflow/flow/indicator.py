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
    """``(B,)`` bool, True for null samples; all False when fewer than two are drawn."""
    null = torch.rand(batch, generator=generator, device=device) < probability
    if int(null.sum()) <= 1:
        null = torch.zeros_like(null)
    return null


def roll_null_targets(target: Tensor, null: Tensor) -> Tensor:
    """Replace each null sample's target by the next null sample's target (cyclically).

    Args:
        target: ``(B, ...)`` target latents.
        null: ``(B,)`` bool indicator.

    Returns:
        A new tensor; conditional rows are unchanged.
    """
    idx = torch.nonzero(null, as_tuple=False).flatten()
    if idx.numel() <= 1:
        return target
    out = target.clone()
    out[idx] = target[torch.roll(idx, shifts=-1)]
    return out
