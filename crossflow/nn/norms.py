"""Normalisation layers that are not in ``torch.nn``."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class StdLayerNorm(nn.Module):
    """LayerNorm with the eps added to the *unbiased standard deviation*, as the official Text VE uses.

    ``y = (x − mean) / (std_unbiased + eps) · weight + bias`` over the last dimension (``torch.nn.LayerNorm``
    instead divides by ``sqrt(var_biased + eps)``).

    Args:
        dim: normalised (last) dimension.
        eps: added to the standard deviation.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        """``(..., dim) -> (..., dim)``."""
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return (x - mean) / (std + self.eps) * self.weight + self.bias
