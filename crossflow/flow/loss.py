"""Losses of CrossFlow: flow matching, contrastive (InfoNCE) and KL weighting."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def flow_matching_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-sample mean squared error over all non-batch dims: ``(B, ...) -> (B,)``.

    With ``mask`` (broadcastable to ``pred``, e.g. ``(B, 1, H, W)`` of valid depth pixels) the mean runs over
    the valid elements only; a sample without any valid element contributes 0.
    """
    err = (pred.float() - target.float()).pow(2)
    if mask is None:
        return err.flatten(1).mean(dim=1)
    weights = mask.to(err.dtype).expand_as(err).flatten(1)
    return (err.flatten(1) * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def info_nce(a: Tensor, b: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE (CLIP loss) between paired rows of ``a`` and ``b``.

    Both are L2-normalised; logits are ``exp(logit_scale)·a·bᵀ`` (temperature ``τ = exp(−logit_scale)``);
    the loss is the mean of the row-wise and column-wise cross-entropies against the diagonal.

    Args:
        a: ``(B, D)`` features (e.g. flattened ``z0``).
        b: ``(B, D)`` features of the paired targets.
        logit_scale: scalar tensor, log of the inverse temperature (learnable).

    Returns:
        Scalar loss. With B=1 the loss is 0 (there are no negatives).
    """
    a = F.normalize(a.float().flatten(1), dim=-1)
    b = F.normalize(b.float().flatten(1), dim=-1)
    logits = logit_scale.float().exp() * a @ b.t()
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
