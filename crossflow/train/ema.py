"""Exponential moving average of model weights (the weights used for sampling)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from crossflow.train.sharding import local


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
    def update(self, model: nn.Module, skip: torch.Tensor | None = None) -> None:
        """Move the average one step toward ``model``'s current weights.

        ``skip`` is an optional 0-dim bool tensor on the device: where it is True the average stays as it is
        (a step whose loss was not finite), decided on the device without waiting for it.
        """
        decay = self.current_decay()
        # shard by shard under FSDP (the live model and this copy are sharded alike)
        ema_params = [local(p) for p in self.model.parameters()]
        live = [local(p.detach()).to(e.dtype) for p, e in zip(model.parameters(), ema_params)]
        if skip is None:
            torch._foreach_lerp_(ema_params, live, 1 - decay)
        else:
            weight = (1 - decay) * (~skip).to(ema_params[0].dtype if ema_params else torch.float32)
            torch._foreach_lerp_(ema_params, live, weight)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        self.model.load_state_dict(state)
        self.num_updates = num_updates
