"""Build the velocity network that ``model.velocity_net`` describes (its class is picked by ``arch``)."""

from __future__ import annotations

from typing import Any, Optional

from torch import nn

from crossflow.config import ConfigError
from crossflow.models.dimr import DiMR
from crossflow.models.dit import DiT
from crossflow.schema import DiMRConfig, DiTConfig, VelocityNetConfig
from crossflow.specs import ImageSpec, Spec

KEY = "model.velocity_net"


def _config_error(exc: ValueError) -> ConfigError:
    msg = str(exc)  # DiMR names a stage as "stages[i]: ...", which is a sub-key of the section
    return ConfigError(f"{KEY}.{msg}" if msg.startswith("stages[") else f"{KEY}: {msg}")


def build_dit(cfg: DiTConfig, target: ImageSpec, **extra: Any) -> DiT:
    """A :class:`DiT` of ``cfg``'s sizes and options on the ``target`` latent.

    Args:
        cfg: the ``model.velocity_net`` section (``arch: dit``).
        target: the target latent (the shape of ``x_t`` and of the velocity).
        extra: further :class:`DiT` arguments that come from elsewhere than ``cfg``
            (``cond_channels``; ``context_dim``, ``null_tokens``, ``indicator`` of the cross-attention baseline).

    Raises:
        ConfigError: naming ``model.velocity_net`` when the sizes do not fit the target.
    """
    try:
        return DiT(target.shape, patch_size=cfg.patch_size, hidden_size=cfg.hidden_size, depth=cfg.depth,
                   num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, gradient_checkpointing=cfg.gradient_checkpointing,
                   indicator_init_std=cfg.indicator_init_std, pos_embed_order=cfg.pos_embed_order,
                   store_pos_embed=cfg.store_pos_embed, time_scale=cfg.time_scale,
                   conv_head_channels=cfg.conv_head_channels, **extra)
    except ValueError as exc:
        raise _config_error(exc) from exc


def concat_channels(cfg: DiTConfig, target: ImageSpec, source: Optional[Spec]) -> int:
    """Channels of the source concatenated to ``x_t`` (``concat_source``), checked against the target; else 0."""
    if not cfg.concat_source:
        return 0
    if not isinstance(source, ImageSpec) or source.shape[1:] != target.shape[1:]:
        got = "no source" if source is None else f"a source of shape {source.shape}"
        raise ConfigError(f"{KEY}.concat_source: needs an image-shaped source with the target's height and width "
                          f"{target.shape[1:]}; got {got}")
    return source.channels


def build_velocity_net(cfg: VelocityNetConfig, target: ImageSpec, *, source: Optional[Spec] = None) -> nn.Module:
    """``net(x_t, t, null_indicator)``: a :class:`DiT` (one velocity) or a :class:`DiMR` (one per resolution).

    Args:
        cfg: the ``model.velocity_net`` section: :class:`DiTConfig` or :class:`DiMRConfig`.
        target: the target latent (the shape of ``x_t`` and of the velocity).
        source: the task's source; needed by ``concat_source`` (a DiT then also takes ``cond=source``).

    Raises:
        ConfigError: naming ``model.velocity_net.*`` on sizes that do not fit the target, or a
            ``concat_source`` whose source is not an image of the target's height and width.
    """
    if isinstance(cfg, DiTConfig):
        return build_dit(cfg, target, cond_channels=concat_channels(cfg, target, source))
    if isinstance(cfg, DiMRConfig):
        try:
            return DiMR(target.shape, cfg.stages, gradient_checkpointing=cfg.gradient_checkpointing,
                        loss_weights=cfg.loss_weights)
        except ValueError as exc:
            raise _config_error(exc) from exc
    raise ConfigError(f"{KEY}: {type(cfg).__name__} is not a velocity network config; valid: DiTConfig, DiMRConfig")
