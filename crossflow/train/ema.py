"""Exponential moving average of model weights (the weights used for sampling)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of a model whose parameters track the live ones.

    ``ema ← decay·ema + (1 − decay)·live`` after every optimizer step; buffers are copied.
    With ``warmup`` the decay is ``min(decay, (1 + n)/(10 + n))`` after ``n`` updates, so that
    short runs (toy configs) still get a useful average.

    Args:
        model: the live model (unwrapped).
        decay: target decay (official 0.9999).
        warmup: use the warm-up rule above.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step toward ``model``'s current weights."""
        decay = self.current_decay()
        ema_params = list(self.model.parameters())
        live_params = list(model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach().to(e.dtype) for p, e in zip(live_params, ema_params)], 1 - decay)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        self.model.load_state_dict(state)
        self.num_updates = num_updates
