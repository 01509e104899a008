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

from crossflow.encoders import ConvFeatureEncoder, DiagonalGaussian, TokenSequenceVE
from crossflow.flow.guidance import GuidedVelocity
from crossflow.flow.indicator import draw_null_indicator, roll_null_targets
from crossflow.flow.loss import flow_matching_loss, info_nce
from crossflow.flow.path import LinearPath, sample_time
from crossflow.flow.solvers import solve
from crossflow.models.dit import DiT
from crossflow.schema import FlowConfig, ModelConfig, SampleConfig


@dataclass
class LossOutput:
    """Loss of one batch: ``loss`` is what backward runs on; the rest is for logging."""

    loss: Tensor
    fm: Tensor
    kl: Tensor
    contrastive: Tensor
    null_fraction: float

    def scalars(self) -> dict[str, float]:
        return {"loss": float(self.loss.detach()), "loss_fm": float(self.fm), "loss_kl": float(self.kl),
                "loss_clip": float(self.contrastive), "null_fraction": self.null_fraction}


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
            batch: ``source`` ``(B, L, D)``, optional ``source_mask`` ``(B, L)`` bool, ``target`` — the
                target latent z1 ``(B, C, H, W)`` — and optional ``contrastive_target`` (input of the
                target tower; defaults to ``target``).
            generator: optional RNG for time, indicator and reparameterisation draws.
        """
        z1 = batch["target"]
        b, device = z1.shape[0], z1.device
        posterior = self.encode_source(batch["source"], batch.get("source_mask"))
        z0 = posterior.sample(generator=generator).to(z1.dtype)
        kl = posterior.kl().mean()

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
        pred = self.velocity_net(point.x_t, t, null)
        fm = flow_matching_loss(pred, point.velocity).mean()
        total = fm + self.flow.kl_weight * kl + self.contrastive_weight * contrastive
        return LossOutput(loss=total, fm=fm.detach(), kl=kl.detach(), contrastive=contrastive.detach(),
                          null_fraction=float(null.float().mean()))

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
                  steps: int = 50, callback: Optional[Callable] = None, **solver_options) -> Tensor:
        """Run the ODE from z0 (t=0) to the target latent (t=1)."""
        velocity = GuidedVelocity(self.velocity_net, scale=guidance, mode=mode)
        return solve(velocity, z0, method=solver, steps=steps, t0=0.0, t1=1.0, callback=callback, **solver_options)

    @torch.no_grad()
    def generate(self, source: Tensor, source_mask: Optional[Tensor] = None, *,
                 sample: Optional[SampleConfig] = None, mode: str = "guided",
                 generator: Optional[torch.Generator] = None, **overrides) -> Tensor:
        """Source → z0 → ODE with guidance → target latent ``(B, C, H, W)``.

        ``sample`` gives solver/steps/guidance/z0/temperature; keyword ``overrides`` replace single fields.
        """
        s = sample or SampleConfig()
        opts = {"solver": s.solver, "steps": s.steps, "guidance": s.guidance, "z0": s.z0,
                "temperature": s.temperature} | overrides
        z0 = self.initial_latent(source, source_mask, z0=opts["z0"], temperature=opts["temperature"],
                                 generator=generator)
        return self.integrate(z0, guidance=opts["guidance"], mode=mode, solver=opts["solver"], steps=opts["steps"])


def build_crossflow(model: ModelConfig, flow: FlowConfig, *, source_dim: int, max_tokens: int,
                    latent_shape: tuple[int, int, int], contrastive_channels: Optional[int] = None) -> CrossFlow:
    """Build a CrossFlow model from configs.

    Args:
        source_dim: width of the source token embeddings.
        max_tokens: longest source sequence.
        latent_shape: ``(C, H, W)`` of the target latent (and of z0).
        contrastive_channels: channels of the contrastive target (defaults to ``C``).
    """
    ve_cfg, net_cfg, con = model.source_encoder, model.velocity_net, model.contrastive
    source_encoder = TokenSequenceVE(source_dim, latent_shape, max_tokens=max_tokens, width=ve_cfg.width,
                                     depth=ve_cfg.depth, num_heads=ve_cfg.num_heads, mlp_ratio=ve_cfg.mlp_ratio,
                                     dropout=ve_cfg.dropout, num_queries=ve_cfg.num_queries,
                                     logvar_init=ve_cfg.logvar_init, head_init_scale=ve_cfg.head_init_scale,
                                     tile=ve_cfg.tile)
    net = DiT(latent_shape, patch_size=net_cfg.patch_size, hidden_size=net_cfg.hidden_size, depth=net_cfg.depth,
              num_heads=net_cfg.num_heads, mlp_ratio=net_cfg.mlp_ratio,
              gradient_checkpointing=net_cfg.gradient_checkpointing, indicator_init_std=net_cfg.indicator_init_std)
    target_encoder = None
    if con.enabled:
        target_encoder = ConvFeatureEncoder(contrastive_channels or latent_shape[0], math.prod(latent_shape),
                                            widths=tuple(con.widths), hidden_dim=con.hidden_dim)
    return CrossFlow(source_encoder, net, flow, target_encoder=target_encoder, contrastive_weight=con.weight,
                     init_temperature=con.init_temperature, learn_temperature=con.learn_temperature)
