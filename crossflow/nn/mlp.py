"""Feed-forward blocks."""

from __future__ import annotations

from torch import Tensor, nn


class Mlp(nn.Module):
    """``Linear → activation → dropout → Linear`` (tanh-approximate GELU by default, as DiT uses).

    Args:
        dim: input and output width.
        hidden_dim: inner width.
        dropout: dropout after the activation.
        approximate: GELU approximation (``"tanh"`` or ``"none"``).
        activation: ``"gelu"`` or ``"relu"`` (the official Text VE's feed-forward uses ReLU).
    """

    def __init__(self, dim: int, hidden_dim: int, *, dropout: float = 0.0, approximate: str = "tanh",
                 activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ValueError(f"unknown activation {activation!r}; valid: 'gelu', 'relu'")
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate=approximate) if activation == "gelu" else nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., dim) -> (..., dim)``."""
        return self.fc2(self.drop(self.act(self.fc1(x))))


class GatedMlp(nn.Module):
    """Gated GELU feed-forward ``down(GELU(gate(x)) ⊙ up(x))`` (exact GELU), as DiMR uses.

    Args:
        dim: input and output width.
        hidden_dim: inner width.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden_dim)
        self.up = nn.Linear(dim, hidden_dim)
        self.down = nn.Linear(hidden_dim, dim)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """``(..., dim) -> (..., dim)``."""
        return self.down(self.act(self.gate(x)) * self.up(x))
