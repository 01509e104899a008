"""The cross-attention baseline: standard flow matching from Gaussian noise, text through cross-attention.

This is the "standard flow matching + cross-attention" row of the paper's Table 1, trained by the
same trainer with the same path, time sampler and loss as CrossFlow, so the two can be compared
at equal recipe. :class:`CrossAttentionFlow` has CrossFlow's interface (``loss(batch)``,
``compile_modules``, ``generate(source, source_mask, options=..., noise=...)``); it has no variational
encoder, so there is no ``z0`` of the text (tools that edit ``z0`` do not apply to it).

Guidance is classic classifier-free guidance: during training each sample's text is replaced by a
learned null token sequence with probability ``cond_drop_probability``; at sampling the text and
null branches run as one forward of a doubled batch, ``v = v_null + s·(v_text − v_null)``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from crossflow.flow.guidance import GuidedVelocity
from crossflow.flow.loss import flow_matching_loss
from crossflow.flow.path import LinearPath, sample_time
from crossflow.flow.solvers import solve
from crossflow.train.protocol import TrainOutput
from crossflow.schema import FlowConfig, SampleConfig


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
        return self.net(x, t, null, context=ctx, context_mask=mask)


class CrossAttentionFlow(nn.Module):
    """Flow matching from ``N(0, I)`` to the target latent with a cross-attention velocity network.

    Args:
        velocity_net: ``net(x_t, t, null_indicator, *, context=, context_mask=) -> v``; must expose
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

    def compile_modules(self) -> list[nn.Module]:
        """``train.compile`` compiles the cross-attention DiT in place."""
        return [self.velocity_net]

    def forward(self, batch: dict[str, Tensor], generator: Optional[torch.Generator] = None) -> TrainOutput:
        """Flow-matching loss from Gaussian noise.

        Args:
            batch: ``source`` ``(B, L, D)`` LM token states, optional ``source_mask`` ``(B, L)`` bool,
                ``target`` ``(B, C, H, W)`` target latent.
            generator: optional RNG for noise, drop and time draws.

        Returns:
            :class:`TrainOutput` with logs ``loss``, ``loss_fm`` and ``null_fraction`` (the dropped fraction).
        """
        z1 = batch["target"]
        b, device = z1.shape[0], z1.device
        noise = torch.randn(z1.shape, generator=generator, device=device, dtype=z1.dtype)
        drop = torch.rand(b, generator=generator, device=device) < self.cond_drop_probability
        t = sample_time(b, kind=self.flow.time_sampler, mean=self.flow.logit_mean, std=self.flow.logit_std,
                        device=device, generator=generator)
        point = self.path.sample(noise, z1, t)
        pred = self.velocity_net(point.x_t, t, drop, context=batch["source"], context_mask=batch.get("source_mask"))
        fm = flow_matching_loss(pred, point.velocity).mean()
        return TrainOutput(loss=fm, logs={"loss": fm.detach(), "loss_fm": fm.detach(),
                                          "null_fraction": drop.float().mean()})

    loss = forward

    @torch.no_grad()
    def generate(self, source: Tensor, source_mask: Optional[Tensor] = None, *,
                 options: Optional[SampleConfig] = None, noise: Optional[Tensor] = None, mode: str = "guided",
                 callback: Optional[Callable] = None) -> Tensor:
        """Text → noise → ODE with CFG → target latent ``(B, C, H, W)``.

        ``options`` gives solver/steps/time grid/guidance; its ``z0``/``temperature`` do not apply (the start
        is always ``N(0, I)``: ``noise`` when given, else the global RNG). ``callback`` gets
        ``{"step": -1, "t": 0.0, "x": x0}`` first, then the solver's per-step reports.
        """
        s = options or SampleConfig()
        x0 = noise if noise is not None else torch.randn(source.shape[0], *self.latent_shape)
        x0 = x0.to(source.device, torch.float32)
        if callback is not None:
            callback({"step": -1, "t": 0.0, "x": x0, "method": s.solver})
        velocity = GuidedVelocity(_TextBoundNet(self.velocity_net, source, source_mask), scale=s.guidance, mode=mode)
        grid = {} if s.time_grid == "uniform" else {"grid": s.time_grid}
        return solve(velocity, x0, method=s.solver, steps=s.steps, t0=0.0, t1=1.0, callback=callback, **grid)

