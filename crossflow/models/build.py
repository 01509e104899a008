"""Build the velocity network named by ``model.velocity_net.arch``."""

from __future__ import annotations

from torch import nn

from crossflow.config import ConfigError
from crossflow.models.dimr import DiMR
from crossflow.models.dit import DiT
from crossflow.schema import VelocityNetConfig


def build_velocity_net(cfg: VelocityNetConfig, latent_shape: tuple[int, int, int]) -> nn.Module:
    """``net(x_t, t, null_indicator)``: a :class:`DiT` (one velocity) or a :class:`DiMR` (one per resolution).

    Args:
        cfg: the ``model.velocity_net`` section.
        latent_shape: ``(C, H, W)`` of the target latent.
    """
    if cfg.arch == "dit":
        return DiT(latent_shape, patch_size=cfg.patch_size, hidden_size=cfg.hidden_size, depth=cfg.depth,
                   num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, gradient_checkpointing=cfg.gradient_checkpointing,
                   indicator_init_std=cfg.indicator_init_std, cond_channels=cfg.cond_channels,
                   pos_embed_order=cfg.pos_embed_order, store_pos_embed=cfg.store_pos_embed,
                   time_scale=cfg.time_scale, conv_head_channels=cfg.conv_head_channels)
    if cfg.arch == "dimr":
        if cfg.cond_channels:
            raise ConfigError("model.velocity_net.cond_channels: not supported by arch 'dimr' (set it to 0)")
        try:
            return DiMR(latent_shape, cfg.dimr.stages, gradient_checkpointing=cfg.gradient_checkpointing,
                        loss_weights=cfg.dimr.loss_weights)
        except ValueError as exc:
            raise ConfigError(f"model.velocity_net.dimr: {exc}") from exc
    raise ConfigError(f"model.velocity_net.arch: unknown {cfg.arch!r}; valid: 'dit', 'dimr'")
