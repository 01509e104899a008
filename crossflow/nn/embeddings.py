"""Time and position embeddings."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal features of a scalar per sample.

    Args:
        t: ``(B,)`` times (any real values; CrossFlow feeds raw ``t`` in [0, 1], not ×1000).
        dim: output width (even).
        max_period: the longest wavelength.

    Returns:
        ``(B, dim)`` float32: ``[cos(t·f_i), sin(t·f_i)]`` with geometrically spaced ``f_i``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features followed by a two-layer SiLU MLP: ``(B,) -> (B, hidden)``."""

    def __init__(self, hidden: int, frequency_dim: int = 256, max_period: float = 10000.0) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: Tensor) -> Tensor:
        """Embed ``t`` of shape ``(B,)``."""
        freq = sinusoidal_embedding(t, self.frequency_dim, self.max_period)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


def sincos_2d_position_embedding(dim: int, height: int, width: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding, row-major over the grid.

    Half of the channels encode the row, half the column, each with 1-D sin-cos features.

    Returns:
        ``(height*width, dim)`` float32.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                                torch.arange(width, dtype=torch.float64), indexing="ij")

    def encode(pos: Tensor) -> Tensor:
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()
