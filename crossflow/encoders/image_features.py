"""A small convolutional image encoder: the target-side tower of the contrastive loss."""

from __future__ import annotations

from torch import Tensor, nn


class ConvFeatureEncoder(nn.Module):
    """Strided convolutions → pooling to a small grid → MLP projection.

    Stands in for the official (randomly initialised, jointly trained) SigLIP tower: it maps a
    target (image or latent) to a feature vector that is compared with ``z0`` in InfoNCE.

    Args:
        in_channels: target channels.
        out_dim: feature width (``C·H·W`` of z0, so the two can be compared directly).
        widths: channels of the stride-2 convolution stages.
        hidden_dim: width of the projection MLP.
        pool_size: side of the grid the features are pooled to before flattening; keeping a
            coarse grid (not a global average) keeps *where* things are, which captions describe.
    """

    def __init__(self, in_channels: int, out_dim: int, *, widths: tuple[int, ...] = (32, 64, 128),
                 hidden_dim: int = 512, pool_size: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for width in widths:
            layers += [nn.Conv2d(prev, width, 3, stride=2, padding=1), nn.GroupNorm(8 if width % 8 == 0 else 1, width),
                       nn.SiLU()]
            prev = width
        layers.append(nn.AdaptiveAvgPool2d(pool_size))
        self.features = nn.Sequential(*layers)
        self.project = nn.Sequential(nn.Linear(prev * pool_size * pool_size, hidden_dim), nn.GELU(), nn.LayerNorm(hidden_dim),
                                     nn.Linear(hidden_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, out_dim)``."""
        return self.project(self.features(x).flatten(1))
