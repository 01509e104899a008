"""Build the model that the ``model`` config section describes, for a task's source and target.

``model.kind`` picks the class (:class:`CrossFlowModelConfig` → :class:`~crossflow.model.CrossFlow`,
:class:`XAttnBaselineConfig` → :class:`~crossflow.baseline.CrossAttentionFlow`,
:class:`RegressionModelConfig` → :class:`~crossflow.regression.DirectRegression`); the specs say what the
source and the target latent are, so nothing here knows a modality. Every mismatch between the config
and the specs is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import math

from torch import nn

from crossflow.baseline import CrossAttentionFlow
from crossflow.config import ConfigError
from crossflow.encoders import ConvFeatureEncoder
from crossflow.encoders.build import build_source_encoder, describe_spec
from crossflow.model import CrossFlow
from crossflow.models.build import build_dit, build_velocity_net
from crossflow.regression import DirectRegression
from crossflow.schema import (CrossFlowModelConfig, DiTConfig, FlowConfig, ModelConfig, NoiseSourceConfig,
                              RegressionModelConfig, XAttnBaselineConfig)
from crossflow.specs import ImageSpec, Spec, TokenSpec


def build_model(model: ModelConfig, flow: FlowConfig, *, source: Spec, target: ImageSpec) -> nn.Module:
    """The model of ``model`` (CrossFlow, the cross-attention or the regression baseline), freshly initialised.

    Args:
        model: the ``model`` section.
        flow: the ``flow`` section (path, time sampler, indicator, loss weights).
        source: what the task's source is (:class:`TokenSpec` or :class:`ImageSpec`).
        target: the target latent; z0 and the velocity have its shape.

    Raises:
        ConfigError: naming the key when the config does not fit the source or the target.
    """
    if isinstance(model, CrossFlowModelConfig):
        return _build_crossflow(model, flow, source, target)
    if isinstance(model, XAttnBaselineConfig):
        return _build_xattn_baseline(model, flow, source, target)
    if isinstance(model, RegressionModelConfig):
        return _build_regression(model, source, target)
    raise ConfigError(f"model: {type(model).__name__} is not a model config; valid: CrossFlowModelConfig, "
                      "XAttnBaselineConfig, RegressionModelConfig")


def _build_crossflow(cfg: CrossFlowModelConfig, flow: FlowConfig, source: Spec, target: ImageSpec) -> CrossFlow:
    con = cfg.contrastive
    if isinstance(cfg.source_encoder, NoiseSourceConfig) and con.enabled:
        raise ConfigError("model.contrastive.enabled: must be false with model.source_encoder.arch=noise "
                          "(z0 is pure noise and carries nothing to contrast)")
    source_encoder = build_source_encoder(cfg.source_encoder, source=source, target=target)
    net = build_velocity_net(cfg.velocity_net, target, source=source)
    target_encoder = None
    if con.enabled:
        target_encoder = ConvFeatureEncoder(target.channels, math.prod(target.shape), widths=tuple(con.widths),
                                            hidden_dim=con.hidden_dim)
    concat = isinstance(cfg.velocity_net, DiTConfig) and cfg.velocity_net.concat_source
    return CrossFlow(source_encoder, net, flow, target_encoder=target_encoder, contrastive_weight=con.weight,
                     init_temperature=con.init_temperature, learn_temperature=con.learn_temperature,
                     concat_source=concat)


def _plain_dit(net_cfg: object, kind: str, why_no_concat: str) -> DiTConfig:
    """The ``velocity_net`` of a baseline ``kind``: a DiT without ``concat_source`` (else a ConfigError naming it)."""
    if not isinstance(net_cfg, DiTConfig):
        raise ConfigError(f"model.velocity_net.arch: {getattr(net_cfg, 'arch', type(net_cfg).__name__)!r} is not "
                          f"supported by model.kind={kind}; use 'dit'")
    if net_cfg.concat_source:
        raise ConfigError(f"model.velocity_net.concat_source: not supported by model.kind={kind.split(' ')[0]} "
                          f"({why_no_concat})")
    return net_cfg


def _build_xattn_baseline(cfg: XAttnBaselineConfig, flow: FlowConfig, source: Spec,
                          target: ImageSpec) -> CrossAttentionFlow:
    if not isinstance(source, TokenSpec):
        raise ConfigError(f"model.kind: 'xattn_baseline' cross-attends to a token sequence; this task's source is "
                          f"{describe_spec(source)} (use kind 'crossflow')")
    net_cfg = _plain_dit(cfg.velocity_net, "xattn_baseline (a DiT with cross-attention)",
                         "its source is a token sequence, reached through cross-attention")
    default_std = DiTConfig().indicator_init_std
    if net_cfg.indicator_init_std != default_std:
        raise ConfigError(f"model.velocity_net.indicator_init_std={net_cfg.indicator_init_std!r}: model.kind="
                          "xattn_baseline has no indicator embedding (its null branch is the learned null token "
                          f"sequence); leave it at {default_std!r}")
    net = build_dit(net_cfg, target, context_dim=source.dim, null_tokens=cfg.null_tokens, indicator=False)
    return CrossAttentionFlow(net, flow, cond_drop_probability=cfg.cond_drop_probability)


def _build_regression(cfg: RegressionModelConfig, source: Spec, target: ImageSpec) -> DirectRegression:
    if not isinstance(source, ImageSpec) or source.shape != target.shape:
        raise ConfigError(f"model.kind: 'regression' maps an image-shaped source of the target's shape "
                          f"{target.shape}; this task's source is {describe_spec(source)} (use kind 'crossflow')")
    net_cfg = _plain_dit(cfg.velocity_net, "regression", "the source is the network's input already")
    return DirectRegression(build_dit(net_cfg, target, indicator=False), residual=cfg.residual)
