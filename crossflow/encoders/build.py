"""Build the source encoder named by ``model.source_encoder.arch``."""

from __future__ import annotations

from typing import Optional

from torch import nn

from crossflow.config import ConfigError
from crossflow.encoders.image_ve import ImageVE, NoiseSource
from crossflow.encoders.reduction_ve import ReductionTextVE
from crossflow.encoders.token_ve import TokenSequenceVE
from crossflow.schema import SourceEncoderConfig


def build_source_encoder(cfg: SourceEncoderConfig, *, latent_shape: tuple[int, int, int], source_dim: int,
                         max_tokens: int, source_shape: Optional[tuple[int, int, int]] = None) -> nn.Module:
    """The source VE: ``module(source, source_mask) -> DiagonalGaussian`` over z0 of ``latent_shape``.

    Args:
        cfg: the ``model.source_encoder`` section; ``arch`` picks ``tokens`` (token-sequence VE),
            ``image`` (:class:`ImageVE`) or ``noise`` (:class:`NoiseSource`, for noise-to-target baselines).
        latent_shape: ``(C, H, W)`` of the target latent.
        source_dim, max_tokens: width and length of a token source (``tokens`` only).
        source_shape: ``(C, H, W)`` of an image-shaped source (``image`` only).
    """
    if cfg.arch == "tokens" and cfg.token_layout == "reduction":
        try:
            return ReductionTextVE(source_dim, latent_shape, num_tokens=max_tokens, width=cfg.width, depth=cfg.depth,
                                   reduction_layers=cfg.reduction_layers, num_heads=cfg.num_heads,
                                   ffn_dim=cfg.ffn_dim, dropout=cfg.dropout, head=cfg.head)
        except ValueError as exc:
            raise ConfigError(f"model.source_encoder: {exc}") from exc
    if cfg.arch == "tokens":
        try:
            return TokenSequenceVE(source_dim, latent_shape, max_tokens=max_tokens, width=cfg.width,
                                   depth=cfg.depth,
                                   num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout,
                                   num_queries=cfg.num_queries, logvar_init=cfg.logvar_init,
                                   head_init_scale=cfg.head_init_scale, tile=cfg.tile,
                                   conv_head_channels=cfg.conv_head_channels)
        except ValueError as exc:
            raise ConfigError(f"model.source_encoder: {exc}") from exc
    if cfg.arch == "image":
        if source_shape is None:
            raise ConfigError("model.source_encoder.arch: 'image' needs a task whose source is image-shaped "
                              "(its adapter gives no source_shape); use 'tokens' for token sources")
        try:
            return ImageVE(source_shape, latent_shape, widths=tuple(cfg.image_widths), blocks=cfg.image_blocks,
                           input_skip=cfg.input_skip, logvar_init=cfg.logvar_init,
                           head_init_scale=cfg.head_init_scale)
        except ValueError as exc:
            raise ConfigError(f"model.source_encoder: {exc}") from exc
    if cfg.arch == "noise":
        return NoiseSource(latent_shape)
    raise ConfigError(f"model.source_encoder.arch: unknown {cfg.arch!r}; valid: 'tokens', 'image', 'noise'")
