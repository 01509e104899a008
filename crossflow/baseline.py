"""The cross-attention baseline: standard flow matching from Gaussian noise, text through cross-attention.

This is the "standard flow matching + cross-attention" row of the paper's Table 1, trained by the
same trainer with the same path, time sampler and loss as CrossFlow, so the two can be compared
at equal recipe. :class:`CrossAttentionFlow` has CrossFlow's interface (``loss(batch)``,
``forward``, ``generate(source, source_mask, sample=...)``, ``integrate``); it has no variational
encoder, so there is no ``z0`` of the text (tools that edit ``z0`` do not apply to it).

Guidance is classic classifier-free guidance: during training each sample's text is replaced by a
learned null token sequence with probability ``cond_drop_probability``; at sampling the text and
null branches run as one forward of a doubled batch, ``v = v_null + s·(v_text − v_null)``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from crossflow.config import ConfigError
from crossflow.flow.guidance import GuidedVelocity
from crossflow.flow.loss import flow_matching_loss
from crossflow.flow.path import LinearPath, sample_time
from crossflow.flow.solvers import solve
from crossflow.model import LossOutput
from crossflow.models.dit_xattn import CrossAttentionDiT
from crossflow.schema import FlowConfig, ModelConfig, SampleConfig, VelocityNetConfig


class _TextBoundNet:
    """``net(x, t, null)`` with the text bound, repeating it when the guidance doubles the batch."""

    def __init__(self, net: nn.Module, context: Tensor, context_mask: Optional[Tensor]) -> None:
        self.net, self.context, self.context_mask = net, context, context_mask

    def __call__(self, x: Tensor, t: Tensor, null: Tensor) -> Tensor:
        reps = x.shape[0] // self.context.shape[0]
        if reps * self.context.shape[0] != x.shape[0]:
            raise ValueError(f"state batch {x.shape[0]} is not a multiple of the text batch {self.context.shape[0]}")
        ctx, mask = self.context, self.context_mask
        if reps > 1:
            ctx = ctx.repeat(reps, 1, 1)
            mask = None if mask is None else mask.repeat(reps, 1)
        return self.net(x, t, null, ctx, mask)


class CrossAttentionFlow(nn.Module):
    """Flow matching from ``N(0, I)`` to the target latent with a cross-attention velocity network.

    Args:
        velocity_net: ``net(x_t, t, null_indicator, context, context_mask) -> v``; must expose
            ``latent_shape``.
        flow: path (``sigma_min``) and time sampler, shared with CrossFlow.
        cond_drop_probability: probability that a training sample's text is replaced by the null sequence.
    """

    def __init__(self, velocity_net: nn.Module, flow: FlowConfig, *, cond_drop_probability: float = 0.1) -> None:
        super().__init__()
        self.velocity_net = velocity_net
        self.flow = flow
        self.path = LinearPath(flow.sigma_min)
        self.cond_drop_probability = cond_drop_probability
        self.latent_shape = tuple(velocity_net.latent_shape)

    def loss(self, batch: dict[str, Tensor], generator: Optional[torch.Generator] = None) -> LossOutput:
        """Flow-matching loss from Gaussian noise.

        Args:
            batch: ``source`` ``(B, L, D)`` LM token states, optional ``source_mask`` ``(B, L)`` bool,
                ``target`` ``(B, C, H, W)`` target latent.
            generator: optional RNG for noise, drop and time draws.

        Returns:
            :class:`LossOutput` with ``kl`` and ``contrastive`` zero and ``null_fraction`` the dropped fraction.
        """
        z1 = batch["target"]
        b, device = z1.shape[0], z1.device
        noise = torch.randn(z1.shape, generator=generator, device=device, dtype=z1.dtype)
        drop = torch.rand(b, generator=generator, device=device) < self.cond_drop_probability
        t = sample_time(b, kind=self.flow.time_sampler, mean=self.flow.logit_mean, std=self.flow.logit_std,
                        device=device, generator=generator)
        point = self.path.sample(noise, z1, t)
        pred = self.velocity_net(point.x_t, t, drop, batch["source"], batch.get("source_mask"))
        fm = flow_matching_loss(pred, point.velocity).mean()
        zero = z1.new_zeros((), dtype=torch.float32)
        return LossOutput(loss=fm, fm=fm.detach(), kl=zero, contrastive=zero, null_fraction=float(drop.float().mean()))

    def forward(self, batch: dict[str, Tensor], generator: Optional[torch.Generator] = None) -> LossOutput:
        """Same as :meth:`loss` (``forward`` is what DDP wraps)."""
        return self.loss(batch, generator)

    @torch.no_grad()
    def initial_noise(self, batch: int, *, device: torch.device | str,
                      generator: Optional[torch.Generator] = None) -> Tensor:
        """The start of the flow: ``(B, C, H, W)`` standard normal noise."""
        return torch.randn(batch, *self.latent_shape, generator=generator, device=device)

    @torch.no_grad()
    def integrate(self, x0: Tensor, *, source: Tensor, source_mask: Optional[Tensor] = None, guidance: float = 1.0,
                  mode: str = "guided", solver: str = "euler", steps: int = 50, callback: Optional[Callable] = None,
                  **solver_options) -> Tensor:
        """Run the ODE from noise ``x0`` (t=0) to the target latent (t=1), conditioned on ``source``."""
        velocity = GuidedVelocity(_TextBoundNet(self.velocity_net, source, source_mask), scale=guidance, mode=mode)
        return solve(velocity, x0, method=solver, steps=steps, t0=0.0, t1=1.0, callback=callback, **solver_options)

    @torch.no_grad()
    def generate(self, source: Tensor, source_mask: Optional[Tensor] = None, *,
                 sample: Optional[SampleConfig] = None, mode: str = "guided",
                 generator: Optional[torch.Generator] = None, callback: Optional[Callable] = None,
                 **overrides) -> Tensor:
        """Text → noise → ODE with CFG → target latent ``(B, C, H, W)``.

        ``sample`` gives solver/steps/guidance; keyword ``overrides`` replace single fields. The
        ``z0``/``temperature`` settings of CrossFlow do not apply (the start is always ``N(0, I)``)
        and are ignored. ``callback`` gets ``{"step": -1, "t": 0.0, "x": x0}`` first, then the
        solver's per-step reports.
        """
        s = sample or SampleConfig()
        opts = {"solver": s.solver, "steps": s.steps, "guidance": s.guidance,
                "time_grid": getattr(s, "time_grid", "uniform")} | overrides
        x0 = self.initial_noise(source.shape[0], device=source.device, generator=generator)
        if callback is not None:
            callback({"step": -1, "t": 0.0, "x": x0, "method": opts["solver"]})
        grid = {} if opts["time_grid"] == "uniform" else {"grid": opts["time_grid"]}
        return self.integrate(x0, source=source, source_mask=source_mask, guidance=opts["guidance"], mode=mode,
                              solver=opts["solver"], steps=opts["steps"], callback=callback, **grid)


#: ``model.velocity_net`` keys the cross-attention DiT ignores; a non-default value is an error, not a silent no-op.
UNSUPPORTED_BY_BASELINE: tuple[str, ...] = ("arch", "conv_head_channels", "cond_channels", "time_scale",
                                            "indicator_init_std")


def build_xattn_baseline(model: ModelConfig, flow: FlowConfig, *, source_dim: int,
                         latent_shape: tuple[int, int, int]) -> CrossAttentionFlow:
    """Build the cross-attention baseline from ``model.velocity_net`` (sizes) and ``model.xattn`` (CFG drop).

    Args:
        source_dim: width of the LM token states.
        latent_shape: ``(C, H, W)`` of the target latent.
    """
    net_cfg, x_cfg = model.velocity_net, model.xattn
    defaults = VelocityNetConfig()
    for key in UNSUPPORTED_BY_BASELINE:  # options of the CrossFlow DiT that this network does not have
        if getattr(net_cfg, key) != getattr(defaults, key):
            raise ConfigError(f"model.velocity_net.{key}={getattr(net_cfg, key)!r}: not supported by "
                              f"model.kind=xattn_baseline (a DiT with cross-attention); leave it at "
                              f"{getattr(defaults, key)!r}")
    net = CrossAttentionDiT(latent_shape, source_dim, patch_size=net_cfg.patch_size, hidden_size=net_cfg.hidden_size,
                            depth=net_cfg.depth, num_heads=net_cfg.num_heads, mlp_ratio=net_cfg.mlp_ratio,
                            null_tokens=x_cfg.null_tokens, gradient_checkpointing=net_cfg.gradient_checkpointing)
    return CrossAttentionFlow(net, flow, cond_drop_probability=x_cfg.cond_drop_probability)
