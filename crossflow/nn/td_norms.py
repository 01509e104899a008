"""Time-dependent parameters and the norms built on them (DiMR).

A *time-dependent parameter* (TDP) interpolates between two stored values with a learned sigmoid
of the time condition ``τ``:

    value(τ) = param1 + sigmoid((1 + nodecay_weight)·τ + nodecay_bias) · (param0 − param1)

``param0``/``param1`` start equal (so the value starts time-independent) and the sigmoid's slope and
offset start at zero. The four stored tensors keep the names of the released DiMR checkpoints; the
``nodecay_`` prefix marks the two that the official recipe trains without weight decay.

Time convention: our interface uses ``t ∈ [0, 1]`` (0 = source, 1 = target). DiMR's networks take
``log_snr = 4 − 8t`` and the TDPs use ``τ = log_snr / 4 = 1 − 2t ∈ [−1, 1]`` (:func:`time_condition`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def log_snr_from_time(t: Tensor) -> Tensor:
    """DiMR's log-SNR input ``4 − 8t`` in float32, ``(B,) -> (B,)``."""
    return 4.0 - 8.0 * t.float()


def time_condition(t: Tensor) -> Tensor:
    """TDP time condition ``τ = log_snr / 4 = 1 − 2t`` (float32), ``(B,) -> (B,)``."""
    return log_snr_from_time(t) / 4.0


class TimeDependentParameter(nn.Module):
    """A tensor of shape ``shape`` whose value depends on the time condition ``τ``.

    Args:
        shape: shape of the value.
        init: in-place initialiser applied to ``param0`` (``param1`` starts as a copy).
    """

    def __init__(self, shape: tuple[int, ...], init: Callable[[Tensor], Tensor] = nn.init.ones_) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.param0 = nn.Parameter(torch.empty(self.shape))
        self.param1 = nn.Parameter(torch.empty(self.shape))
        self.nodecay_weight = nn.Parameter(torch.empty(self.shape))
        self.nodecay_bias = nn.Parameter(torch.empty(self.shape))
        self.init = init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.param0.is_meta:
            return
        with torch.no_grad():
            self.init(self.param0)
            self.param1.copy_(self.param0)
            self.nodecay_weight.zero_()
            self.nodecay_bias.zero_()

    def forward(self, tau: Tensor) -> Tensor:
        """Evaluate at ``tau`` ``(B,)``.

        Returns:
            ``(1, *shape)`` when all entries of ``tau`` are equal (one row, broadcast by the caller),
            else ``(B, *shape)``.
        """
        if tau.dim() != 1:
            raise ValueError(f"time condition must have shape (B,), got {tuple(tau.shape)}")
        if tau.numel() > 1 and bool((tau == tau[0]).all()):
            tau = tau[:1]
        tau = tau.view(-1, *([1] * len(self.shape)))
        gate = torch.sigmoid(self.nodecay_bias + tau * (1.0 + self.nodecay_weight))
        return self.param1 + gate * (self.param0 - self.param1)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def _broadcast(value: Tensor, x: Tensor) -> Tensor:
    """``(1 or B, D)`` → shape broadcastable against channel-last ``x`` ``(B, ..., D)``."""
    return value.view(value.shape[0], *([1] * (x.dim() - 2)), value.shape[-1])


class TDRMSNorm(nn.Module):
    """RMS norm with a time-dependent scale: ``x / (‖x‖₂/√d + eps) · scale(τ)``.

    The eps is added to the RMS (outside the square root), as DiMR does.

    Args:
        dim: normalised (last) dimension.
        eps: added to the RMS.
    """

    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.scale = TimeDependentParameter((dim,), nn.init.ones_)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        """``x`` ``(B, ..., dim)`` channel-last, ``tau`` ``(B,)`` → same shape as ``x``."""
        xf = x.float()
        inv_rms = (xf.norm(2, dim=-1, keepdim=True) * self.dim ** -0.5 + self.eps).reciprocal()
        return (xf * inv_rms * _broadcast(self.scale(tau).float(), x)).to(x.dtype)


class TDLayerNorm(nn.Module):
    """LayerNorm (biased variance, eps inside the square root) with time-dependent weight and bias.

    Args:
        dim: normalised (last) dimension.
        eps: added to the variance.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = TimeDependentParameter((dim,), nn.init.ones_)
        self.bias = TimeDependentParameter((dim,), nn.init.zeros_)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        """``x`` ``(B, ..., dim)`` channel-last, ``tau`` ``(B,)`` → same shape as ``x``."""
        normed = F.layer_norm(x, (self.dim,), eps=self.eps)
        return _broadcast(self.bias(tau), x) + _broadcast(self.weight(tau), x) * normed


__all__ = ["TDLayerNorm", "TDRMSNorm", "TimeDependentParameter", "log_snr_from_time", "time_condition"]
