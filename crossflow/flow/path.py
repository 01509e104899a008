"""The CrossFlow probability path and time samplers.

Convention: t=0 is the source latent ``z0``, t=1 the target latent ``z1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PathSample:
    """One draw from the path.

    Attributes:
        x_t: ``(B, ...)`` point on the path.
        velocity: ``(B, ...)`` target velocity ``d x_t / d t``.
        t: ``(B,)`` times.
    """

    x_t: Tensor
    velocity: Tensor
    t: Tensor


class LinearPath:
    """``x_t = (1 − (1 − σ_min)·t)·z0 + t·z1`` with constant velocity ``z1 − (1 − σ_min)·z0``.

    Args:
        sigma_min: the small weight of ``z0`` kept at t=1 (official 1e-5).
    """

    def __init__(self, sigma_min: float = 1e-5) -> None:
        self.sigma_min = sigma_min

    def sample(self, z0: Tensor, z1: Tensor, t: Tensor) -> PathSample:
        """Point and target velocity at times ``t`` of shape ``(B,)``."""
        tb = t.view(-1, *([1] * (z0.dim() - 1))).to(z0.dtype)
        x_t = (1 - (1 - self.sigma_min) * tb) * z0 + tb * z1
        return PathSample(x_t=x_t, velocity=z1 - (1 - self.sigma_min) * z0, t=t)


def sample_time(batch: int, *, kind: str = "logit_normal", mean: float = 0.0, std: float = 1.0,
                device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> Tensor:
    """Draw training times ``(B,)`` in (0, 1).

    Args:
        kind: ``"logit_normal"`` (``sigmoid(N(mean, std²))``, SD3 / official) or ``"uniform"``.
    """
    if kind == "logit_normal":
        return torch.sigmoid(mean + std * torch.randn(batch, generator=generator, device=device))
    if kind == "uniform":
        return torch.rand(batch, generator=generator, device=device)
    raise ValueError(f"unknown time sampler {kind!r}; valid: 'logit_normal', 'uniform'")
