"""Token-sequence variational encoder: LM token embeddings → Gaussian latent of the target's shape."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from crossflow.encoders.gaussian import DiagonalGaussian
from crossflow.nn import Mlp, SelfAttention


class EncoderBlock(nn.Module):
    """Pre-LN transformer block with a key-padding mask."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout=dropout, approximate="none")

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.attn(self.norm1(x), key_padding_mask=mask)
        return x + self.mlp(self.norm2(x))


class ConvLatentHead(nn.Module):
    """Readout vector → ``2·C`` maps of ``H×W`` through a small convolutional decoder.

    ``Linear`` to ``channels`` maps at ``H/4 × W/4``, then two stages of (nearest ×2 upsampling, 3×3 conv,
    GELU), then a 3×3 conv to the mean and log-variance channels. The spatial inductive bias lets the VE draw
    latents that already look like the target (shapes, positions) far sooner than one linear map does.
    """

    def __init__(self, in_dim: int, latent_shape: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        c, h, w = latent_shape
        if h % 4 or w % 4:
            raise ValueError(f"conv_head_channels needs a latent size divisible by 4, got {h}x{w}")
        self.base = (channels, h // 4, w // 4)
        self.proj = nn.Linear(in_dim, channels * (h // 4) * (w // 4))
        self.up = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(2))
        self.out = nn.Conv2d(channels, 2 * c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj(x).view(x.shape[0], *self.base)
        for conv in self.up:
            y = nn.functional.gelu(conv(nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")))
        return self.out(y)


class TokenSequenceVE(nn.Module):
    """Variational encoder over a padded token sequence (the CrossFlow Text VE, generic form).

    Token embeddings are projected to ``width``, get a learned position embedding, and are joined
    by ``num_queries`` learned readout tokens. Transformer blocks attend only to real tokens (key-
    padding mask) and the readout tokens. The readout tokens' outputs are flattened and mapped
    by one linear head to ``2·C·H·W`` numbers: the mean and log-variance of a Gaussian with exactly
    the target latent's shape.

    Args:
        input_dim: LM hidden size (384 for MiniLM, 768 for CLIP-L, 4096 for T5-XXL).
        latent_shape: target latent shape ``(C, H, W)``.
        max_tokens: longest sequence accepted (position table size).
        width, depth, num_heads, mlp_ratio, dropout: transformer size.
        num_queries: readout tokens.
        logvar_init: initial bias of the log-variance head (negative = start with a narrow posterior).
        head_init_scale: scale of the head's initial weights; small values start z0 near zero instead of
            at a prompt-specific random pattern that the flow would first have to undo.
        tile: 0 for a full linear head (one output per latent element, as the official Text VE). ``k > 0``
            makes the head emit one ``C×k×k`` code (mean and log-variance) that is tiled over the latent grid,
            plus a learned positional bias. With ``k`` equal to the velocity net's patch size every patch
            token sees the whole source code through the shared patch embedding, which small models learn
            to decode far faster than a code spread differently over every patch.
        conv_head_channels: 0 for the linear head; ``c > 0`` replaces it by a :class:`ConvLatentHead` of
            width ``c`` (exclusive with ``tile``).
    """

    def __init__(self, input_dim: int, latent_shape: tuple[int, int, int], *, max_tokens: int = 77,
                 width: int = 256, depth: int = 4, num_heads: int = 4, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, num_queries: int = 8, logvar_init: float = 0.0,
                 head_init_scale: float = 1.0, tile: int = 0, conv_head_channels: int = 0) -> None:
        super().__init__()
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.max_tokens = max_tokens
        self.latent_numel = math.prod(self.latent_shape)
        channels, lat_h, lat_w = self.latent_shape
        if tile and (lat_h % tile or lat_w % tile):
            raise ValueError(f"tile={tile} does not divide the latent size {lat_h}x{lat_w}")
        if tile and conv_head_channels:
            raise ValueError("tile and conv_head_channels are exclusive (set one of them to 0)")
        self.tile = tile
        self.code_numel = channels * tile * tile if tile else self.latent_numel
        self.input_proj = nn.Linear(input_dim, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_tokens, width))
        self.queries = nn.Parameter(torch.zeros(1, num_queries, width))
        self.blocks = nn.ModuleList(EncoderBlock(width, num_heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.conv_head = conv_head_channels > 0
        if self.conv_head:
            self.head: nn.Module = ConvLatentHead(num_queries * width, self.latent_shape, conv_head_channels)
        else:
            self.head = nn.Linear(num_queries * width, 2 * self.code_numel)
        self.grid_bias = nn.Parameter(torch.zeros(1, 2 * channels, lat_h, lat_w)) if tile else None
        self._init_weights(logvar_init, head_init_scale)

    def _init_weights(self, logvar_init: float, head_init_scale: float) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.queries, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if self.conv_head:  # the scale and log-variance bias act on the last convolution
            for m in self.head.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.zeros_(m.bias)
            last = self.head.out
            with torch.no_grad():
                last.weight.mul_(head_init_scale)
            nn.init.constant_(last.bias[self.latent_shape[0]:], logvar_init)
            return
        with torch.no_grad():
            self.head.weight.mul_(head_init_scale)
        nn.init.constant_(self.head.bias[self.code_numel:], logvar_init)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> DiagonalGaussian:
        """Encode.

        Args:
            tokens: ``(B, L, input_dim)`` LM token embeddings, ``L <= max_tokens``.
            mask: ``(B, L)`` bool, True on real tokens. None means all real.

        Returns:
            A :class:`DiagonalGaussian` with mean and logvar of shape ``(B, C, H, W)``.
        """
        b, length, _ = tokens.shape
        if length > self.max_tokens:
            raise ValueError(f"token sequence of length {length} exceeds the encoder's max_tokens={self.max_tokens}")
        x = self.input_proj(tokens) + self.pos_embed[:, :length]
        x = torch.cat([x, self.queries.expand(b, -1, -1).to(x.dtype)], dim=1)
        if mask is not None:
            mask = torch.cat([mask.to(torch.bool), mask.new_ones(b, self.queries.shape[1], dtype=torch.bool)], dim=1)
        for block in self.blocks:
            x = block(x, mask)
        readout = self.norm(x[:, length:]).flatten(1)
        out = self.head(readout).float()
        if self.conv_head:
            mean, logvar = out.chunk(2, dim=1)
        elif self.tile:
            c, h, w = self.latent_shape
            code = out.view(b, 2 * c, self.tile, self.tile)
            out = code.repeat(1, 1, h // self.tile, w // self.tile) + self.grid_bias.float()
            mean, logvar = out.chunk(2, dim=1)
        else:
            mean, logvar = out.chunk(2, dim=-1)
        return DiagonalGaussian(mean.reshape(b, *self.latent_shape), logvar.reshape(b, *self.latent_shape))
