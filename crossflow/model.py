"""CrossFlow = source variational encoder + velocity network (+ contrastive target tower).

``loss(batch)`` is one training step's objective; ``generate(...)`` runs the ODE from the
encoded source to the target latent. Nothing here knows which modalities it is carrying.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from crossflow.config import ConfigError
from crossflow.encoders import ConvFeatureEncoder, DiagonalGaussian
from crossflow.encoders.build import build_source_encoder
from crossflow.flow.guidance import GuidedVelocity
from crossflow.flow.indicator import draw_null_indicator, roll_null_targets
from crossflow.flow.loss import flow_matching_loss, info_nce
from crossflow.flow.multiscale import multiscale_flow_matching_loss
from crossflow.flow.path import LinearPath, sample_time
from crossflow.flow.solvers import solve
from crossflow.models.conditioning import BoundCondition
from crossflow.models.build import build_velocity_net
from crossflow.schema import FlowConfig, ModelConfig, SampleConfig


@dataclass
class LossOutput:
    """Loss of one batch: ``loss`` is what backward runs on; the rest is for logging."""

    loss: Tensor
    fm: Tensor
    kl: Tensor
    contrastive: Tensor
    null_fraction: float
    recon: Optional[Tensor] = None  # MSE(VE mean, target) when flow.source_recon_weight > 0

    def scalars(self) -> dict[str, float]:
        out = {"loss": float(self.loss.detach()), "loss_fm": float(self.fm), "loss_kl": float(self.kl),
               "loss_clip": float(self.contrastive), "null_fraction": self.null_fraction}
        if self.recon is not None:
            out["loss_recon"] = float(self.recon)
        return out


class CrossFlow(nn.Module):
    """The CrossFlow model.

    Args:
        source_encoder: maps ``(source, source_mask)`` to a :class:`DiagonalGaussian` over z0 of the
            target latent's shape.
        velocity_net: ``net(x_t, t, null_indicator) -> v``.
        flow: path, time sampler, indicator probability and KL weight.
        target_encoder: optional tower mapping the contrastive target to a ``C·H·W`` feature.
        contrastive_weight: weight of InfoNCE(z0, target feature).
        init_temperature: initial InfoNCE temperature.
        learn_temperature: whether the temperature is a trained parameter.
    """

    def __init__(self, source_encoder: nn.Module, velocity_net: nn.Module, flow: FlowConfig, *,
                 target_encoder: Optional[nn.Module] = None, contrastive_weight: float = 1.0,
                 init_temperature: float = 0.07, learn_temperature: bool = True) -> None:
        super().__init__()
        self.source_encoder = source_encoder
        self.velocity_net = velocity_net
        self.target_encoder = target_encoder
        self.flow = flow
        self.path = LinearPath(flow.sigma_min)
        self.contrastive_weight = contrastive_weight
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)),
                                        requires_grad=learn_temperature)

    def encode_source(self, source: Tensor, source_mask: Optional[Tensor] = None) -> DiagonalGaussian:
        """Posterior over z0: mean/logvar ``(B, C, H, W)``."""
        return self.source_encoder(source, source_mask)

    def loss(self, batch: dict[str, Tensor], generator: Optional[torch.Generator] = None) -> LossOutput:
        """CrossFlow objective ``L_FM + w_c·L_InfoNCE + w_kl·KL``.

        Args:
            batch: ``source`` ``(B, L, D)`` tokens or ``(B, C, H, W)`` image, optional ``source_mask``
                ``(B, L)`` bool, ``target`` — the target latent z1 ``(B, C, H, W)`` —, optional
                ``contrastive_target`` (input of the target tower; defaults to ``target``) and optional
                ``cond`` (conditioning image of a concatenation-conditioned velocity net).
            generator: optional RNG for time, indicator and reparameterisation draws.
        """
        z1 = batch["target"]
        b, device = z1.shape[0], z1.device
        posterior = self.encode_source(batch["source"], batch.get("source_mask"))
        z0 = posterior.sample(generator=generator).to(z1.dtype)
        kl = posterior.kl().mean()

        recon = None
        if self.flow.source_recon_weight > 0:  # pull the VE mean toward the target itself (before null rolling)
            recon = flow_matching_loss(posterior.mean, z1).mean()
        contrastive = z1.new_zeros(())
        if self.target_encoder is not None and self.contrastive_weight > 0:
            features = self.target_encoder(batch.get("contrastive_target", z1))
            contrastive = info_nce(z0.flatten(1), features, self.logit_scale.clamp(max=math.log(100.0)))

        null = draw_null_indicator(b, self.flow.null_probability, device=device, generator=generator)
        z1 = roll_null_targets(z1, null)
        k = self.flow.fm_grad_to_source
        if k != 1.0:  # same value, FM gradient into the VE scaled by k
            z0 = z0.detach() + k * (z0 - z0.detach())
        t = sample_time(b, kind=self.flow.time_sampler, mean=self.flow.logit_mean, std=self.flow.logit_std,
                        device=device, generator=generator)
        point = self.path.sample(z0, z1, t)
        cond = batch.get("cond")
        if cond is None:
            pred = self.velocity_net(point.x_t, t, null)
        else:
            pred = self.velocity_net(point.x_t, t, null, cond=cond)
        if isinstance(pred, (list, tuple)):  # multi-resolution net (DiMR): lowest resolution first
            fm = multiscale_flow_matching_loss(pred, point.velocity, self.velocity_net.loss_weights).mean()
        else:
            fm = flow_matching_loss(pred, point.velocity).mean()
        total = fm + self.flow.kl_weight * kl + self.contrastive_weight * contrastive
        if recon is not None:
            total = total + self.flow.source_recon_weight * recon
        return LossOutput(loss=total, fm=fm.detach(), kl=kl.detach(), contrastive=contrastive.detach(),
                          null_fraction=float(null.float().mean()),
                          recon=None if recon is None else recon.detach())

    def forward(self, batch: dict[str, Tensor], generator: Optional[torch.Generator] = None) -> LossOutput:
        """Same as :meth:`loss` (``forward`` is what DDP wraps)."""
        return self.loss(batch, generator)

    @torch.no_grad()
    def initial_latent(self, source: Tensor, source_mask: Optional[Tensor] = None, *, z0: str = "mean",
                       temperature: float = 1.0, generator: Optional[torch.Generator] = None) -> Tensor:
        """z0 for generation: the VE mean, or a posterior sample with noise scaled by ``temperature``."""
        posterior = self.encode_source(source, source_mask)
        if z0 == "mean":
            return posterior.mean
        if z0 == "sample":
            return posterior.sample(temperature=temperature, generator=generator)
        raise ValueError(f"unknown z0 mode {z0!r}; valid: 'mean', 'sample'")

    @torch.no_grad()
    def integrate(self, z0: Tensor, *, guidance: float = 1.0, mode: str = "guided", solver: str = "euler",
                  steps: int = 50, callback: Optional[Callable] = None, cond: Optional[Tensor] = None,
                  **solver_options) -> Tensor:
        """Run the ODE from z0 (t=0) to the target latent (t=1); ``cond`` feeds a concatenation-conditioned net."""
        net = self.velocity_net if cond is None else BoundCondition(self.velocity_net, cond)
        velocity = GuidedVelocity(net, scale=guidance, mode=mode)  # a multi-resolution net: its last output
        return solve(velocity, z0, method=solver, steps=steps, t0=0.0, t1=1.0, callback=callback, **solver_options)

    @torch.no_grad()
    def generate(self, source: Tensor, source_mask: Optional[Tensor] = None, *,
                 sample: Optional[SampleConfig] = None, mode: str = "guided",
                 generator: Optional[torch.Generator] = None, callback: Optional[Callable] = None,
                 cond: Optional[Tensor] = None, **overrides) -> Tensor:
        """Source → z0 → ODE with guidance → target latent ``(B, C, H, W)``.

        ``sample`` gives solver/steps/guidance/z0/temperature; keyword ``overrides`` replace single fields.
        ``callback`` gets ``{"step": -1, "t": 0.0, "x": z0}`` first, then the solver's per-step reports.
        ``cond`` is the conditioning image of a concatenation-conditioned velocity net.
        """
        s = sample or SampleConfig()
        opts = {"solver": s.solver, "steps": s.steps, "guidance": s.guidance, "z0": s.z0,
                "temperature": s.temperature, "time_grid": s.time_grid} | overrides
        z0 = self.initial_latent(source, source_mask, z0=opts["z0"], temperature=opts["temperature"],
                                 generator=generator)
        if callback is not None:
            callback({"step": -1, "t": 0.0, "x": z0, "method": opts["solver"]})
        grid = {} if opts["time_grid"] == "uniform" else {"grid": opts["time_grid"]}
        return self.integrate(z0, guidance=opts["guidance"], mode=mode, solver=opts["solver"], steps=opts["steps"],
                              callback=callback, cond=cond, **grid)


def build_crossflow(model: ModelConfig, flow: FlowConfig, *, source_dim: int, max_tokens: int,
                    latent_shape: tuple[int, int, int], contrastive_channels: Optional[int] = None,
                    source_shape: Optional[tuple[int, int, int]] = None) -> CrossFlow:
    """Build a CrossFlow model from configs.

    Args:
        source_dim: width of the source token embeddings.
        max_tokens: longest source sequence.
        latent_shape: ``(C, H, W)`` of the target latent (and of z0).
        contrastive_channels: channels of the contrastive target (defaults to ``C``).
        source_shape: ``(C, H, W)`` of an image-shaped source (``model.source_encoder.arch=image``).
    """
    ve_cfg, net_cfg, con = model.source_encoder, model.velocity_net, model.contrastive
    if ve_cfg.arch == "noise" and con.enabled:
        raise ConfigError("model.contrastive.enabled: must be false with model.source_encoder.arch=noise "
                          "(z0 is pure noise and carries nothing to contrast)")
    source_encoder = build_source_encoder(ve_cfg, latent_shape=latent_shape, source_dim=source_dim,
                                          max_tokens=max_tokens, source_shape=source_shape)
    net = build_velocity_net(net_cfg, latent_shape)
    target_encoder = None
    if con.enabled:
        target_encoder = ConvFeatureEncoder(contrastive_channels or latent_shape[0], math.prod(latent_shape),
                                            widths=tuple(con.widths), hidden_dim=con.hidden_dim)
    return CrossFlow(source_encoder, net, flow, target_encoder=target_encoder, contrastive_weight=con.weight,
                     init_temperature=con.init_temperature, learn_temperature=con.learn_temperature)
