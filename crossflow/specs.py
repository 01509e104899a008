"""What a source or a target *is*, as data: a token sequence or an image-shaped tensor.

A task adapter describes its source and its target latent with these specs; the model builders read
them (a token VE needs the token width and length, an image VE the image shape, every velocity net
the target latent shape). Nothing here knows a modality: "image" means "(C, H, W) tensor", which
covers pixels, depth maps, SD-VAE latents and text latents alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union


@dataclass(frozen=True)
class TokenSpec:
    """A padded sequence of token embeddings: ``(max_tokens, dim)`` per sample, with a ``(max_tokens,)`` mask."""

    max_tokens: int
    dim: int
    kind: Literal["tokens"] = "tokens"

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.dim < 1:
            raise ValueError(f"TokenSpec needs max_tokens >= 1 and dim >= 1, got {self.max_tokens} and {self.dim}")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.max_tokens, self.dim)


@dataclass(frozen=True)
class ImageSpec:
    """An image-shaped tensor ``(channels, height, width)`` per sample (pixels, a depth map or any latent)."""

    channels: int
    height: int
    width: int
    kind: Literal["image"] = "image"

    def __post_init__(self) -> None:
        if min(self.channels, self.height, self.width) < 1:
            raise ValueError(f"ImageSpec sizes must be >= 1, got {self.shape}")

    @classmethod
    def of(cls, shape: tuple[int, int, int]) -> "ImageSpec":
        """``ImageSpec.of((C, H, W))``."""
        c, h, w = shape
        return cls(int(c), int(h), int(w))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


#: A source is either; a target latent is always an :class:`ImageSpec`.
Spec = Union[TokenSpec, ImageSpec]

__all__ = ["ImageSpec", "Spec", "TokenSpec"]
