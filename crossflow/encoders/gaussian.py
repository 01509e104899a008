"""Diagonal Gaussian posteriors: reparameterised samples and KL divergence to N(0, I)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class DiagonalGaussian:
    """``N(mean, diag(exp(logvar)))`` with one distribution per batch row.

    Attributes:
        mean: ``(B, *shape)``.
        logvar: ``(B, *shape)``, log-variance.
    """

    mean: Tensor
    logvar: Tensor

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def sample(self, temperature: float = 1.0, generator: torch.Generator | None = None,
               noise: Tensor | None = None) -> Tensor:
        """Reparameterised draw ``mean + temperature·std·ε`` (differentiable in mean and logvar).

        ``ε`` is ``noise`` when given (same shape as ``mean``), else drawn with ``generator``.
        """
        if temperature == 0.0:
            return self.mean
        if noise is None:
            noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        elif noise.shape != self.mean.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, expected {tuple(self.mean.shape)}")
        return self.mean + temperature * self.std * noise.to(self.mean.device, self.mean.dtype)

    def kl(self) -> Tensor:
        """Closed-form ``KL(q || N(0, I))`` summed over all non-batch dims: ``(B,)``.

        ``KL = ½ Σ (μ² + σ² − 1 − log σ²)`` (the paper's KL term, App. A.1).
        """
        per_elem = 0.5 * (self.mean.float().pow(2) + self.logvar.float().exp() - 1.0 - self.logvar.float())
        return per_elem.flatten(1).sum(dim=1)
