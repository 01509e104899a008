"""Classifier-free guidance through the indicator, in one batched forward."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

VelocityNet = Callable[[Tensor, Tensor, Tensor], Tensor]


class GuidedVelocity:
    """Wrap ``net(x, t, null_indicator)`` into a solver-ready ``velocity(x, t)``.

    ``v = v_null + s·(v_cond − v_null)``. For ``s != 1`` the conditional and null passes run as
    one forward of a doubled batch; ``s == 1`` needs only the conditional pass. ``mode="null"``
    runs the null branch alone (useful to check that the indicator was learned).

    Args:
        net: velocity network. If it returns a list (multi-resolution nets), the last entry is used.
        scale: guidance scale ``s``.
        mode: ``"guided"`` (default) or ``"null"``.
    """

    def __init__(self, net: VelocityNet, scale: float = 1.0, mode: str = "guided") -> None:
        if mode not in ("guided", "null"):
            raise ValueError(f"unknown guidance mode {mode!r}; valid: 'guided', 'null'")
        self.net = net
        self.scale = float(scale)
        self.mode = mode
        self.evaluations = 0

    def _call(self, x: Tensor, t: Tensor, null: Tensor) -> Tensor:
        out = self.net(x, t, null)
        self.evaluations += 1
        return out[-1] if isinstance(out, (list, tuple)) else out

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        if self.mode == "null" or self.scale == 1.0:
            null = torch.full((b,), self.mode == "null", dtype=torch.bool, device=x.device)
            return self._call(x, t, null)
        null = torch.cat([torch.zeros(b, dtype=torch.bool, device=x.device),
                          torch.ones(b, dtype=torch.bool, device=x.device)])
        v_cond, v_null = self._call(torch.cat([x, x]), torch.cat([t, t]), null).chunk(2)
        return v_null + self.scale * (v_cond - v_null)
