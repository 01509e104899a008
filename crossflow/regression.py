"""The regression baseline: one network maps the source image straight to the target, trained with MSE.

This is the third model of the super-resolution comparison (next to CrossFlow and the noise +
concatenation flow-matching baseline): no noise, no ODE, no guidance. The network is the same DiT
as the flow models' velocity net (``model.velocity_net``), called once at the fixed time ``t = 0``
on the source image, which must have the target's shape (super-resolution: the bicubic-upsampled
low-res image). With ``residual`` (default) it predicts the correction to the source::

    prediction = source + net(source, t=0)

The DiT's output layer starts at zero, so an untrained model predicts the source itself (bicubic
upsampling) and training only has to learn the missing detail. The loss is the mean squared error
to the target, which makes the prediction the conditional mean (the blurry average of the plausible
high-res images — what the paper's comparison shows against the flow models).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from crossflow.schema import SampleConfig
from crossflow.train.protocol import TrainOutput


class DirectRegression(nn.Module):
    """``target ≈ source (+) net(source, t=0)`` trained with the mean squared error.

    Args:
        net: ``net(x, t) -> y`` with ``x`` and ``y`` of the target's shape ``(B, C, H, W)`` (a DiT built without
            the CFG indicator and without ``cond`` channels); must expose ``latent_shape``.
        residual: predict ``source + net(source)`` (True) or ``net(source)`` alone (False).
    """

    def __init__(self, net: nn.Module, *, residual: bool = True) -> None:
        super().__init__()
        self.net = net
        self.residual = residual
        self.latent_shape = tuple(net.latent_shape)

    def compile_modules(self) -> list[nn.Module]:
        """``train.compile`` compiles the network in place."""
        return [self.net]

    def predict(self, source: Tensor) -> Tensor:
        """One forward: ``(B, C, H, W)`` source → ``(B, C, H, W)`` prediction of the target.

        Raises:
            ValueError: the source does not have the target's shape ``latent_shape``.
        """
        if tuple(source.shape[1:]) != self.latent_shape:
            raise ValueError(f"the regression baseline maps a source of the target's shape {self.latent_shape}; got "
                             f"{tuple(source.shape[1:])}")
        t = torch.zeros(source.shape[0], device=source.device, dtype=source.dtype)
        out = self.net(source, t)
        return source + out if self.residual else out

    def forward(self, batch: dict[str, Tensor], generator: Optional[torch.Generator] = None) -> TrainOutput:
        """Mean squared error of the prediction.

        Args:
            batch: ``source`` ``(B, C, H, W)`` and ``target`` ``(B, C, H, W)``; optional ``target_mask`` (bool,
                broadcastable to the target: the loss averages over its True pixels only).
            generator: unused (the objective draws nothing); accepted for the :class:`Trainable` protocol.

        Returns:
            :class:`TrainOutput` with logs ``loss`` and ``loss_mse``.
        """
        target, mask = batch["target"], batch.get("target_mask")
        err = (self.predict(batch["source"]) - target).square()
        if mask is None:
            mse = err.mean()
        else:
            weight = mask.to(err.dtype).expand_as(err)
            mse = (err * weight).sum() / weight.sum().clamp(min=1.0)
        return TrainOutput(loss=mse, logs={"loss": mse.detach(), "loss_mse": mse.detach()})

    loss = forward

    @torch.no_grad()
    def generate(self, source: Tensor, source_mask: Optional[Tensor] = None, *,
                 options: Optional[SampleConfig] = None, noise: Optional[Tensor] = None, mode: str = "guided",
                 callback: Optional[Callable] = None) -> Tensor:
        """The prediction ``(B, C, H, W)``, with the signature the :class:`~crossflow.pipeline.Pipeline` calls.

        A regression is deterministic and has no ODE: ``options`` (solver, steps, guidance, z0, temperature),
        ``noise`` and ``source_mask`` do not apply, and ``mode`` ``"null"`` gives the same prediction as
        ``"guided"`` (there is no unconditional branch). ``callback`` gets ``{"step": -1, "t": 0.0, "x": source}``
        and then ``{"step": 0, "t": 1.0, "x": prediction}``.
        """
        if mode not in ("guided", "null"):
            raise ValueError(f"unknown mode {mode!r}; valid: 'guided', 'null'")
        source = source.float()
        if callback is not None:
            callback({"step": -1, "t": 0.0, "x": source, "method": "regression"})
        pred = self.predict(source)
        if callback is not None:
            callback({"step": 0, "t": 1.0, "x": pred, "method": "regression"})
        return pred
