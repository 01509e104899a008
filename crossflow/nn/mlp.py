"""Feed-forward blocks."""

from __future__ import annotations

from torch import Tensor, nn


class Mlp(nn.Module):
    """``Linear → GELU → Linear`` (tanh-approximate GELU, as DiT uses).

    Args:
        dim: input and output width.
        hidden_dim: inner width.
        dropout: dropout after the activation.
    """

    def __init__(self, dim: int, hidden_dim: int, *, dropout: float = 0.0, approximate: str = "tanh") -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate=approximate)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., dim) -> (..., dim)``."""
        return self.fc2(self.drop(self.act(self.fc1(x))))
