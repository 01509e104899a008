"""CrossFlow = source variational encoder + velocity network (+ contrastive target tower).

``loss(batch)`` is one training step's objective; ``generate(...)`` runs the ODE from the
encoded source to the target latent. Nothing here knows which modalities it is carrying.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from crossflow.encoders import DiagonalGaussian
from crossflow.flow.guidance import GuidedVelocity
from crossflow.flow.indicator import draw_null_indicator, roll_null_targets
from crossflow.flow.loss import flow_matching_loss, info_nce
from crossflow.flow.multiscale import multiscale_flow_matching_loss
from crossflow.flow.path import LinearPath, sample_time
from crossflow.flow.solvers import solve
from crossflow.models.conditioning import BoundCondition
from crossflow.schema import FlowConfig, SampleConfig
from crossflow.train.protocol import TrainOutput


class CrossFlow(nn.Module):
    """The CrossFlow model.

    Args:
        source_encoder: maps ``(source, source_mask)`` to a :class:`DiagonalGaussian` over z0 of the
            target latent's shape.
        velocity_net: ``net(x_t, t, null_indicator) -> v`` (``cond=`` too when ``concat_source``).
        flow: path, time sampler, indicator probability and KL weight.
        target_encoder: optional tower mapping the contrastive target to a ``C·H·W`` feature.
        contrastive_weight: weight of InfoNCE(z0, target feature).
        init_temperature: initial InfoNCE temperature.
        learn_temperature: whether the temperature is a trained parameter.
        concat_source: feed the (image-shaped) source to the velocity net as ``cond``, concatenated to
            ``x_t`` (SR3-style conditioned baselines).
    """

    def __init__(self, source_encoder: nn.Module, velocity_net: nn.Module, flow: FlowConfig, *,
                 target_encoder: Optional[nn.Module] = None, contrastive_weight: float = 1.0,
                 init_temperature: float = 0.07, learn_temperature: bool = True, concat_source: bool = False) -> None:
        super().__init__()
        self.source_encoder = source_encoder
        self.velocity_net = velocity_net
        self.target_encoder = target_encoder
        self.flow = flow
        self.path = LinearPath(flow.sigma_min)
        self.contrastive_weight = contrastive_weight
        self.concat_source = concat_source
        # One element rather than 0-d: FSDP shards no 0-d parameter. 0-d values (exports written before,
        # the official checkpoints' converted value) are reshaped when loaded.
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1.0 / init_temperature)),
                                        requires_grad=learn_temperature)
        self._register_load_state_dict_pre_hook(_one_element_logit_scale)

    def compile_modules(self) -> list[nn.Module]:
        """``train.compile`` compiles the velocity network (the bulk of the compute) in place."""
        return [self.velocity_net]

    def encode_source(self, source: Tensor, source_mask: Optional[Tensor] = None) -> DiagonalGaussian:
        """Posterior over z0: mean/logvar ``(B, C, H, W)``."""
        return self.source_encoder(source, source_mask)

    def _velocity(self, x: Tensor, t: Tensor, null: Tensor, source: Optional[Tensor]):
        if not self.concat_source:
            return self.velocity_net(x, t, null)
        return self.velocity_net(x, t, null, cond=source)

    def forward(self, batch: dict[str, Tensor], generator: Optional[torch.Generator] = None) -> TrainOutput:
        """CrossFlow objective ``L_FM + w_c·L_InfoNCE + w_kl·KL (+ w_r·recon)`` of one batch.

        Args:
            batch: ``source`` ``(B, L, D)`` tokens or ``(B, C, H, W)`` image, optional ``source_mask``
                ``(B, L)`` bool, ``target`` — the target latent z1 ``(B, C, H, W)`` —, optional ``target_mask``
                (bool, broadcastable to the target, e.g. ``(B, 1, H, W)``: the valid pixels of a depth map; the
                flow-matching and reconstruction losses average over them only) and optional
                ``contrastive_target`` (input of the target tower; defaults to ``target``).
            generator: optional RNG for time, indicator and reparameterisation draws.

        Returns:
            :class:`TrainOutput` with logs ``loss``, ``loss_fm``, ``loss_kl``, ``loss_clip``,
            ``null_fraction`` (and ``loss_recon`` when ``flow.source_recon_weight > 0``), all on the device.
        """
        z1, target_mask = batch["target"], batch.get("target_mask")
        b, device = z1.shape[0], z1.device
        posterior = self.encode_source(batch["source"], batch.get("source_mask"))
        z0 = posterior.sample(generator=generator).to(z1.dtype)
        kl = posterior.kl().mean()

        recon = None
        if self.flow.source_recon_weight > 0:  # pull the VE mean toward the target itself (before null rolling)
            recon = flow_matching_loss(posterior.mean, z1, target_mask).mean()
        contrastive = z1.new_zeros((), dtype=torch.float32)
        if self.target_encoder is not None and self.contrastive_weight > 0:
            features = self.target_encoder(batch.get("contrastive_target", z1))
            contrastive = info_nce(z0.flatten(1), features, self.logit_scale.clamp(max=math.log(100.0)))

        null = draw_null_indicator(b, self.flow.null_probability, device=device, generator=generator)
        z1 = roll_null_targets(z1, null)
        if target_mask is not None:  # a null sample's target (and its valid pixels) come from another sample
            target_mask = roll_null_targets(target_mask, null)
        k = self.flow.fm_grad_to_source
        if k != 1.0:  # same value, FM gradient into the VE scaled by k
            z0 = z0.detach() + k * (z0 - z0.detach())
        t = sample_time(b, kind=self.flow.time_sampler, mean=self.flow.logit_mean, std=self.flow.logit_std,
                        device=device, generator=generator)
        point = self.path.sample(z0, z1, t)
        pred = self._velocity(point.x_t, t, null, batch["source"])
        if isinstance(pred, (list, tuple)):  # multi-resolution net (DiMR): lowest resolution first
            if target_mask is not None:
                raise ValueError("batch['target_mask'] is not supported with a multi-resolution velocity net (DiMR)")
            fm = multiscale_flow_matching_loss(pred, point.velocity, self.velocity_net.loss_weights).mean()
        else:
            fm = flow_matching_loss(pred, point.velocity, target_mask).mean()
        total = fm + self.flow.kl_weight * kl + self.contrastive_weight * contrastive
        logs = {"loss": total.detach(), "loss_fm": fm.detach(), "loss_kl": kl.detach(),
                "loss_clip": contrastive.detach(), "null_fraction": null.float().mean()}
        if recon is not None:
            total = total + self.flow.source_recon_weight * recon
            logs |= {"loss": total.detach(), "loss_recon": recon.detach()}
        return TrainOutput(loss=total, logs=logs)

    loss = forward  # the objective by its name, for code that reads better with it

    @torch.no_grad()
    def initial_latent(self, source: Tensor, source_mask: Optional[Tensor] = None, *, z0: str = "mean",
                       temperature: float = 1.0, noise: Optional[Tensor] = None) -> Tensor:
        """z0 for generation: the VE mean, or the posterior sample ``mean + temperature·std·noise``.

        Args:
            source, source_mask: as in :meth:`forward`.
            z0: ``"mean"`` or ``"sample"``.
            temperature: scale of the posterior noise (``"sample"`` only).
            noise: ``(B, C, H, W)`` standard-normal draws for ``"sample"`` (default: from the global RNG).
        """
        posterior = self.encode_source(source, source_mask)
        if z0 == "mean":
            return posterior.mean
        if z0 == "sample":
            return posterior.sample(temperature=temperature, noise=noise)
        raise ValueError(f"unknown z0 mode {z0!r}; valid: 'mean', 'sample'")

    @torch.no_grad()
    def integrate(self, z0: Tensor, options: Optional[SampleConfig] = None, *, source: Optional[Tensor] = None,
                  mode: str = "guided", callback: Optional[Callable] = None) -> Tensor:
        """Run the ODE from z0 (t=0) to the target latent (t=1) with ``options`` (solver, steps, time grid,
        guidance); ``source`` is needed only by a ``concat_source`` net."""
        s = options or SampleConfig()
        velocity = self._guided_velocity(s, source, mode, "integrate")
        grid = {} if s.time_grid == "uniform" else {"grid": s.time_grid}
        return solve(velocity, z0, method=s.solver, steps=s.steps, t0=0.0, t1=1.0, callback=callback, **grid)

    @torch.no_grad()
    def invert(self, z1: Tensor, options: Optional[SampleConfig] = None, *, source: Optional[Tensor] = None,
               mode: str = "guided", callback: Optional[Callable] = None) -> Tensor:
        """Run the same ODE backwards: the target latent z1 ``(B, C, H, W)`` (t=1) → its source latent z0 (t=0).

        The velocity is the one :meth:`integrate` follows (same guidance and mode), on the uniform grid from 1 to 0
        with ``options.solver`` and ``options.steps``; ``integrate(invert(z1))`` returns z1 up to the solver error.
        CrossFlow-T2I captioning inverts a text-to-image model this way (paper Sec. 5.3).

        Raises:
            ValueError: ``options.time_grid`` is not ``"uniform"`` (the official grid runs from 0 to 1 only).
        """
        s = options or SampleConfig()
        if s.time_grid != "uniform":
            raise ValueError(f"invert() integrates on the uniform grid from t=1 to t=0; got time_grid="
                             f"{s.time_grid!r} (the official grid runs from 0 to 1 only): use time_grid='uniform'")
        velocity = self._guided_velocity(s, source, mode, "invert")
        return solve(velocity, z1, method=s.solver, steps=s.steps, t0=1.0, t1=0.0, callback=callback)

    def _guided_velocity(self, s: SampleConfig, source: Optional[Tensor], mode: str, caller: str) -> GuidedVelocity:
        """``velocity(x, t)`` of the guided ODE (a multi-resolution net: its last output)."""
        if self.concat_source:
            if source is None:
                raise ValueError(f"this model concatenates the source to x_t: {caller}() needs source=")
            net = BoundCondition(self.velocity_net, source)
        else:
            net = self.velocity_net
        return GuidedVelocity(net, scale=s.guidance, mode=mode)

    @torch.no_grad()
    def generate(self, source: Tensor, source_mask: Optional[Tensor] = None, *,
                 options: Optional[SampleConfig] = None, noise: Optional[Tensor] = None, mode: str = "guided",
                 callback: Optional[Callable] = None) -> Tensor:
        """Source → z0 → ODE with guidance → target latent ``(B, C, H, W)``.

        Args:
            source, source_mask: as in :meth:`forward`.
            options: solver, steps, time grid, guidance, z0 start and temperature (default: ``SampleConfig()``).
            noise: ``(B, C, H, W)`` standard-normal draws used when ``options.z0 == "sample"``.
            mode: ``"guided"`` or ``"null"`` (the null branch alone).
            callback: gets ``{"step": -1, "t": 0.0, "x": z0}`` first, then the solver's per-step reports.
        """
        s = options or SampleConfig()
        z0 = self.initial_latent(source, source_mask, z0=s.z0, temperature=s.temperature, noise=noise)
        if callback is not None:
            callback({"step": -1, "t": 0.0, "x": z0, "method": s.solver})
        return self.integrate(z0, s, source=source, mode=mode, callback=callback)


def _one_element_logit_scale(state_dict: dict, prefix: str, *args) -> None:
    key = prefix + "logit_scale"
    if key in state_dict and state_dict[key].dim() == 0:
        state_dict[key] = state_dict[key].reshape(1)
