"""Learning-rate schedules as LambdaLR multipliers."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int, schedule: str = "constant",
                  min_ratio: float = 0.0) -> float:
    """LR / peak LR at optimizer step ``step`` (0-based): linear warm-up, then constant or cosine."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr_schedule {schedule!r}; valid: 'constant', 'cosine'")


def build_scheduler(optimizer: Optimizer, *, warmup_steps: int, total_steps: int, schedule: str,
                    min_ratio: float = 0.0) -> LambdaLR:
    return LambdaLR(optimizer, lambda s: lr_multiplier(s, warmup_steps=warmup_steps, total_steps=total_steps,
                                                       schedule=schedule, min_ratio=min_ratio))
