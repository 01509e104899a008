"""Build the source encoder that ``model.source_encoder`` describes (its class is picked by ``arch``)."""

from __future__ import annotations

from torch import nn

from crossflow.config import ConfigError
from crossflow.encoders.image_ve import ImageVE, NoiseSource
from crossflow.encoders.reduction_ve import ReductionTextVE
from crossflow.encoders.token_ve import TokenSequenceVE
from crossflow.schema import (ImageVEConfig, NoiseSourceConfig, ReductionVEConfig, SourceEncoderConfig,
                              TokenVEConfig)
from crossflow.specs import ImageSpec, Spec, TokenSpec

KEY = "model.source_encoder"


def describe_spec(spec: Spec) -> str:
    """``"tokens (77, 768)"`` or ``"an image (3, 32, 32)"``, for error messages."""
    return f"tokens {spec.shape}" if isinstance(spec, TokenSpec) else f"an image {spec.shape}"


def _needs(cfg: SourceEncoderConfig, kind: type, source: Spec) -> None:
    if not isinstance(source, kind):
        what = "a token sequence" if kind is TokenSpec else "image-shaped (C, H, W)"
        valid = "'image' or 'noise'" if isinstance(source, ImageSpec) else "'tokens', 'reduction' or 'noise'"
        raise ConfigError(f"{KEY}.arch: {cfg.arch!r} needs a source that is {what}; this task's source is "
                          f"{describe_spec(source)} (use {valid})")


def build_source_encoder(cfg: SourceEncoderConfig, *, source: Spec, target: ImageSpec) -> nn.Module:
    """The source VE: ``module(source, source_mask) -> DiagonalGaussian`` over z0 of ``target.shape``.

    Args:
        cfg: the ``model.source_encoder`` section: :class:`TokenVEConfig` (readout token VE),
            :class:`ReductionVEConfig` (the official Text VE), :class:`ImageVEConfig` (:class:`ImageVE`) or
            :class:`NoiseSourceConfig` (:class:`NoiseSource`, for noise-to-target baselines).
        source: what the task's source is (token VEs need a :class:`TokenSpec`, the image VE an :class:`ImageSpec`).
        target: the target latent, whose shape z0 takes.

    Raises:
        ConfigError: naming ``model.source_encoder.*`` when the encoder does not fit the source or its sizes
            are inconsistent.
    """
    latent = target.shape
    try:
        if isinstance(cfg, TokenVEConfig):
            _needs(cfg, TokenSpec, source)
            return TokenSequenceVE(source.dim, latent, max_tokens=source.max_tokens, width=cfg.width, depth=cfg.depth,
                                   num_heads=cfg.num_heads, num_queries=cfg.num_queries,
                                   head_init_scale=cfg.head_init_scale, tile=cfg.tile,
                                   conv_head_channels=cfg.conv_head_channels)
        if isinstance(cfg, ReductionVEConfig):
            _needs(cfg, TokenSpec, source)
            return ReductionTextVE(source.dim, latent, num_tokens=source.max_tokens, width=cfg.width, depth=cfg.depth,
                                   reduction_layers=cfg.reduction_layers, num_heads=cfg.num_heads,
                                   ffn_dim=cfg.ffn_dim, dropout=cfg.dropout, head=cfg.head)
        if isinstance(cfg, ImageVEConfig):
            _needs(cfg, ImageSpec, source)
            return ImageVE(source.shape, latent, widths=tuple(cfg.widths), blocks=cfg.blocks,
                           input_skip=cfg.input_skip, logvar_init=cfg.logvar_init,
                           head_init_scale=cfg.head_init_scale)
    except ConfigError:
        raise
    except ValueError as exc:  # inconsistent sizes, found by the module itself
        raise ConfigError(f"{KEY}: {exc}") from exc
    if isinstance(cfg, NoiseSourceConfig):
        return NoiseSource(latent)
    raise ConfigError(f"{KEY}: {type(cfg).__name__} is not a source encoder config; valid: TokenVEConfig, "
                      "ReductionVEConfig, ImageVEConfig, NoiseSourceConfig")
