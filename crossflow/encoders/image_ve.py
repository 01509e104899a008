"""Image variational encoder: an image-shaped source → Gaussian latent of the target's shape.

The source may be pixels or latents of any channel count and resolution; the latent may have any
channel count and resolution too (a depth map of the same size, a text latent of 4×4, a high-res
image). A small convolutional encoder–decoder (U-Net without attention) carries the source to the
latent resolution; a 3×3 head gives the mean and log-variance.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossflow.encoders.gaussian import DiagonalGaussian


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize ``(B, C, H, W)`` to ``size``: area averaging when shrinking, bilinear when growing."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ResBlock(nn.Module):
    """``x + conv(act(norm(conv(act(norm(x))))))`` at constant width and resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  _group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ImageVE(nn.Module):
    """Variational encoder of an image-shaped source.

    Encoder: a stem conv, then one level per entry of ``widths`` (``blocks`` residual blocks each), with a
    stride-2 convolution between levels. Decoder: from the deepest level, nearest ×2 upsampling + conv,
    adding the encoder feature of the same resolution, until the latent resolution is reached. A latent
    coarser than the deepest level is reached by area pooling, a latent finer than the input by bilinear
    upsampling of the input first.

    Args:
        source_shape: ``(C_in, H_in, W_in)`` of the source.
        latent_shape: ``(C, H, W)`` of the latent (the target latent of the flow).
        widths: channels per level; ``len(widths) - 1`` stride-2 downsamplings.
        blocks: residual blocks per level (encoder and decoder).
        input_skip: the mean is the source resized to ``(H, W)`` plus the head's output (needs
            ``C_in == C``); with ``head_init_scale=0`` z0 starts as the source itself.
        logvar_init: initial bias of the log-variance channels.
        head_init_scale: scale of the head's initial weights (0: the head starts at zero).
    """

    def __init__(self, source_shape: Sequence[int], latent_shape: Sequence[int], *,
                 widths: Sequence[int] = (32, 64, 128), blocks: int = 1, input_skip: bool = False,
                 logvar_init: float = 0.0, head_init_scale: float = 1.0) -> None:
        super().__init__()
        if len(source_shape) != 3 or len(latent_shape) != 3:
            raise ValueError(f"ImageVE needs (C, H, W) shapes, got source {tuple(source_shape)}, "
                             f"latent {tuple(latent_shape)}")
        if not widths:
            raise ValueError("ImageVE needs at least one width")
        self.source_shape = tuple(int(s) for s in source_shape)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        c_in, h_in, w_in = self.source_shape
        channels, height, width = self.latent_shape
        if input_skip and c_in != channels:
            raise ValueError(f"input_skip needs source channels == latent channels, got {c_in} and {channels}")
        self.input_skip = input_skip
        # A latent finer than the source: upsample the source first, then encode at the latent size.
        self.work_size = (max(h_in, height), max(w_in, width))
        sizes = [self.work_size]
        for _ in widths[1:]:
            sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
        self.sizes = sizes
        self.stem = nn.Conv2d(c_in, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        for i, w in enumerate(widths):
            self.down.append(nn.Identity() if i == 0 else nn.Conv2d(widths[i - 1], w, 3, stride=2, padding=1))
            self.enc.append(nn.Sequential(*[ResBlock(w) for _ in range(blocks)]))
        # Decoder levels: climb back while the next finer level is still no finer than the latent.
        self.up_levels = [i for i in range(len(widths) - 2, -1, -1) if sizes[i + 1][0] < height]
        self.up = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1) for i in self.up_levels)
        self.dec = nn.ModuleList(nn.Sequential(*[ResBlock(widths[i]) for _ in range(blocks)]) for i in self.up_levels)
        out_width = widths[self.up_levels[-1]] if self.up_levels else widths[-1]
        self.head = nn.Sequential(_group_norm(out_width), nn.SiLU(), nn.Conv2d(out_width, 2 * channels, 3, padding=1))
        self._init_weights(logvar_init, head_init_scale)

    def _init_weights(self, logvar_init: float, head_init_scale: float) -> None:
        conv = self.head[-1]
        with torch.no_grad():
            conv.weight.mul_(head_init_scale)
            conv.bias.zero_()
            conv.bias[self.latent_shape[0]:] = logvar_init

    def forward(self, source: Tensor, mask: Tensor | None = None) -> DiagonalGaussian:
        """Encode.

        Args:
            source: ``(B, C_in, H_in, W_in)`` image or latent.
            mask: ignored (the token VE's interface; image sources have no padding).

        Returns:
            A :class:`DiagonalGaussian` with mean and logvar of shape ``(B, C, H, W)``.
        """
        if source.dim() != 4 or tuple(source.shape[1:]) != self.source_shape:
            raise ValueError(f"ImageVE expects a source of shape (B, {', '.join(map(str, self.source_shape))}), "
                             f"got {tuple(source.shape)}")
        x = resize_to(source, self.work_size)
        x = self.stem(x)
        skips = []
        for down, enc in zip(self.down, self.enc):
            x = enc(down(x))
            skips.append(x)
        for level, up, dec in zip(self.up_levels, self.up, self.dec):
            x = up(F.interpolate(x, size=self.sizes[level], mode="nearest")) + skips[level]
            x = dec(x)
        x = resize_to(x, self.latent_shape[1:])
        mean, logvar = self.head(x).float().chunk(2, dim=1)
        if self.input_skip:
            mean = mean + resize_to(source.float(), self.latent_shape[1:])
        return DiagonalGaussian(mean, logvar)


class NoiseSource(nn.Module):
    """The standard-normal "source" of noise-to-target flow baselines: ``N(0, I)`` of the latent's shape.

    It ignores the source except for its batch size and device; its KL to ``N(0, I)`` is exactly zero.
    Generation must start from a sample (``sample.z0=sample``): the mean is all zeros.

    Args:
        latent_shape: ``(C, H, W)`` of the latent.
    """

    def __init__(self, latent_shape: Sequence[int]) -> None:
        super().__init__()
        self.latent_shape = tuple(int(s) for s in latent_shape)

    def forward(self, source: Tensor, mask: Tensor | None = None) -> DiagonalGaussian:
        """``(B, ...) -> N(0, I)`` with mean/logvar ``(B, C, H, W)`` on the source's device."""
        zeros = torch.zeros(source.shape[0], *self.latent_shape, device=source.device)
        return DiagonalGaussian(zeros, zeros.clone())
