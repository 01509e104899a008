"""The official Text VE layout: post-LN layers over every token, width-halving reduction layers, a flat head.

Token states (optionally compressed to ``width`` by an MLP, e.g. T5-XXL's 4096 → 1024) go through
``depth`` post-LN transformer layers and ``reduction_layers`` more layers that each end in a per-token
``Linear(d, d/2)``. All ``L`` tokens (padded ones included: only keys are masked) are flattened to
``L·width/2^k`` numbers and mapped to the ``2·C·H·W`` mean and log-variance either by one linear
layer or by an MLP + CNN "adaptor" that works on the latent grid. ``mean, logvar`` are the two halves
of the flat output; both are reshaped C-major to ``(C, H, W)``.

This is the structure of the released CrossFlow checkpoints (sizes free): a 256 px model uses the
linear head, a 512 px model the adaptor.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from crossflow.encoders.gaussian import DiagonalGaussian
from crossflow.nn import Mlp, SelfAttention
from crossflow.nn.norms import StdLayerNorm


class PostNormLayer(nn.Module):
    """``t = LN(x + drop(attn(x)))``, ``y = LN(t + drop(ffn(t)))``, optionally followed by ``Linear(d, d/2)``.

    Args:
        dim: token width.
        num_heads: attention heads (attention-probability dropout = ``dropout``).
        ffn_dim: feed-forward inner width (ReLU).
        dropout: dropout of the attention probabilities, the FFN activation and both residual branches.
        reduce: append the width-halving projection.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, reduce: bool = False) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, num_heads, qkv_bias=True, dropout=dropout)
        self.norm1 = StdLayerNorm(dim)
        self.mlp = Mlp(dim, ffn_dim, dropout=dropout, activation="relu")
        self.norm2 = StdLayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.reduction = nn.Linear(dim, dim // 2) if reduce else None

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        x = self.norm1(x + self.drop(self.attn(x, key_padding_mask=mask)))
        x = self.norm2(x + self.drop(self.mlp(x)))
        return self.reduction(x) if self.reduction is not None else x


class Compressor(nn.Module):
    """``fc2(ReLU(LayerNorm(fc1(x))))``: token states to the encoder width."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


class GridAdaptor(nn.Module):
    """MLP to one ``H×W`` map, then three 3×3 convolutions to ``out_channels`` maps; flattened C-major.

    ``fc1 → LN → ReLU → fc2 → LN → ReLU`` (width ``H·W``), view ``(B, 1, H, W)``, then
    ``conv → LN([c, H, W]) → ReLU`` twice and a last conv. The official 512 px head is ``H = W = 64``,
    ``out_channels = 8`` (mean channels 0–3, log-variance 4–7).

    Args:
        in_dim: flat input width.
        grid: ``(H, W)``.
        out_channels: output maps.
        conv_channels: channels of the two hidden convolutions (official 32, 64).
    """

    def __init__(self, in_dim: int, grid: tuple[int, int], out_channels: int,
                 conv_channels: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        self.grid = tuple(grid)
        h, w = self.grid
        c1, c2 = conv_channels
        self.fc1 = nn.Linear(in_dim, h * w)
        self.ln_fc1 = nn.LayerNorm(h * w)
        self.fc2 = nn.Linear(h * w, h * w)
        self.ln_fc2 = nn.LayerNorm(h * w)
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.ln_conv1 = nn.LayerNorm([c1, h, w])
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.ln_conv2 = nn.LayerNorm([c2, h, w])
        self.conv3 = nn.Conv2d(c2, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_dim) -> (B, out_channels·H·W)``."""
        x = torch.relu(self.ln_fc1(self.fc1(x)))
        x = torch.relu(self.ln_fc2(self.fc2(x)))
        x = x.view(x.shape[0], 1, *self.grid)
        x = torch.relu(self.ln_conv1(self.conv1(x)))
        x = torch.relu(self.ln_conv2(self.conv2(x)))
        return self.conv3(x).flatten(1)


def official_head(latent_shape: tuple[int, int, int]) -> str:
    """The official choice of head: linear when ``2·C·H·W ∈ {4096, 8192}`` (256 px), else the adaptor."""
    return "linear" if 2 * math.prod(latent_shape) in (4096, 8192) else "adaptor"


class ReductionTextVE(nn.Module):
    """Variational encoder of the released CrossFlow models (see the module docstring).

    Args:
        input_dim: LM hidden size (768 CLIP-L, 4096 T5-XXL).
        latent_shape: ``(C, H, W)`` of z0.
        num_tokens: the fixed sequence length (official 77); every token is flattened into the head.
        width: encoder width; a compressor MLP maps ``input_dim`` to it when they differ.
        depth: full-width post-LN layers (official 11).
        reduction_layers: width-halving layers after them (official 3).
        num_heads: attention heads (official 8).
        ffn_dim: feed-forward width of every layer (official 1024).
        dropout: dropout (official 0.1).
        head: ``"linear"``, ``"adaptor"`` or ``"auto"`` (:func:`official_head`).
    """

    def __init__(self, input_dim: int, latent_shape: tuple[int, int, int], *, num_tokens: int = 77,
                 width: int = 768, depth: int = 11, reduction_layers: int = 3, num_heads: int = 8,
                 ffn_dim: int = 1024, dropout: float = 0.1, head: str = "auto") -> None:
        super().__init__()
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.num_tokens = num_tokens
        if width % (2 ** reduction_layers):
            raise ValueError(f"source_encoder.width={width} cannot be halved {reduction_layers} times")
        for k in range(max(1, reduction_layers)):  # attention runs at widths width/2^k, k < reduction_layers
            if (width // 2 ** k) % num_heads:
                raise ValueError(f"source_encoder.num_heads={num_heads} does not divide the width {width // 2 ** k} "
                                 f"of reduction layer {k}")
        self.compressor = Compressor(input_dim, width) if input_dim != width else None
        self.layers = nn.ModuleList(PostNormLayer(width, num_heads, ffn_dim, dropout) for _ in range(depth))
        self.reduction_layers = nn.ModuleList(
            PostNormLayer(width // 2 ** k, num_heads, ffn_dim, dropout, reduce=True) for k in range(reduction_layers))
        flat = num_tokens * (width // 2 ** reduction_layers)
        numel = math.prod(self.latent_shape)
        head = official_head(self.latent_shape) if head == "auto" else head
        if head == "linear":
            self.head: nn.Module = nn.Linear(flat, 2 * numel)
        elif head == "adaptor":
            c, h, w = self.latent_shape
            self.head = GridAdaptor(flat, (h, w), 2 * c)
        else:
            raise ValueError(f"unknown head {head!r}; valid: 'auto', 'linear', 'adaptor'")
        self.head_kind = head

    def forward(self, tokens: Tensor, mask: Optional[Tensor] = None) -> DiagonalGaussian:
        """Encode.

        Args:
            tokens: ``(B, num_tokens, input_dim)`` LM token states.
            mask: ``(B, num_tokens)`` bool/int, nonzero on real tokens (keys only are masked). None = all real.

        Returns:
            :class:`DiagonalGaussian` with mean and logvar ``(B, C, H, W)``.
        """
        b, length, _ = tokens.shape
        if length != self.num_tokens:
            raise ValueError(f"this Text VE flattens exactly {self.num_tokens} tokens, got a sequence of {length} "
                             f"(pad/truncate the prompts to {self.num_tokens})")
        mask = None if mask is None else mask.to(torch.bool)
        x = self.compressor(tokens) if self.compressor is not None else tokens
        for layer in self.layers:
            x = layer(x, mask)
        for layer in self.reduction_layers:
            x = layer(x, mask)
        out = self.head(x.reshape(b, -1)).float()
        mean, logvar = out.chunk(2, dim=-1)
        return DiagonalGaussian(mean.reshape(b, *self.latent_shape), logvar.reshape(b, *self.latent_shape))
