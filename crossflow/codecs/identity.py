"""Identity codec: the latent *is* the signal (pixels or depth in [-1, 1])."""

from __future__ import annotations

from torch import Tensor


class IdentityCodec:
    """``encode``/``decode`` for modalities that are modelled directly in pixel space."""

    def __init__(self, clamp: tuple[float, float] | None = (-1.0, 1.0)) -> None:
        self.clamp = clamp

    def encode(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` signal → latent (the same tensor)."""
        return x

    def decode(self, z: Tensor) -> Tensor:
        """Latent → signal, clamped to the valid range."""
        return z.clamp(*self.clamp) if self.clamp is not None else z
