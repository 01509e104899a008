"""Bind a per-sample conditioning image to a velocity network for the ODE solver."""

from __future__ import annotations

from typing import Callable

from torch import Tensor


class BoundCondition:
    """``net(x, t, null)`` → ``net(x, t, null, cond=cond)``, for concatenation-conditioned networks.

    Guidance runs the conditional and null passes as one doubled batch, so ``cond`` is tiled to the
    batch it is called with (a whole multiple of its own).

    Args:
        net: a velocity network that accepts ``cond``.
        cond: ``(B, C_cond, H, W)`` conditioning image of the samples being generated.
    """

    def __init__(self, net: Callable, cond: Tensor) -> None:
        self.net, self.cond = net, cond

    def __call__(self, x: Tensor, t: Tensor, null_indicator: Tensor | None = None):
        reps, rem = divmod(x.shape[0], self.cond.shape[0])
        if rem or reps < 1:
            raise ValueError(f"batch of {x.shape[0]} is not a multiple of the {self.cond.shape[0]} conditioning images")
        cond = self.cond if reps == 1 else self.cond.repeat(reps, *([1] * (self.cond.dim() - 1)))
        return self.net(x, t, null_indicator, cond=cond)
