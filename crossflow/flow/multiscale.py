"""Multi-scale flow-matching loss of multi-resolution velocity networks (DiMR).

The target velocity ``v̂`` ``(B, C, H, W)`` is pooled to every lower resolution the network predicts.
Level ``l`` (factor ``r = 2^l``) uses a box filter whose sum is divided by its side rather than its
area ("scale correction": a ``k×k`` sum over ``k``), which keeps the per-element variance of pooled
i.i.d. noise equal to the full-resolution one:

* even ``H``: kernel ``r×r``, stride ``r``, no padding, sum / ``r``;
* odd ``H`` (e.g. 33 → 17): kernel ``(r+1)×(r+1)``, stride ``r``, zero padding ``(r+1)//2``,
  sum / ``(r+1)``.

The loss is ``Σ_i w_i · mean_{C,h_i,w_i} (pred_i − target_{w_i})²`` per sample, each prediction
matched to the target of its width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def multiscale_targets(target: Tensor, levels: int) -> dict[int, Tensor]:
    """Pool the target velocity to ``levels`` resolutions (factors 1, 2, 4, ...), keyed by width.

    Args:
        target: ``(B, C, H, W)`` full-resolution target.
        levels: number of resolutions, the full one included.

    Returns:
        ``{width: (B, C, h, w)}``; the full-resolution entry is ``target`` itself.
    """
    _, channels, height, width = target.shape
    odd = height % 2 == 1
    out = {width: target}
    for level in range(1, levels):
        ratio = 2 ** level
        if odd:
            if (height - 1) % ratio or (width - 1) % ratio:
                raise ValueError(f"odd target size {height}x{width}: (size - 1) is not divisible by {ratio}")
            kernel_size, padding = ratio + 1, (ratio + 1) // 2
        else:
            if height % ratio or width % ratio:
                raise ValueError(f"target size {height}x{width} is not divisible by {ratio}")
            kernel_size, padding = ratio, 0
        kernel = torch.full((channels, 1, kernel_size, kernel_size), 1.0 / kernel_size,
                            dtype=target.dtype, device=target.device)
        pooled = F.conv2d(target, kernel, stride=ratio, padding=padding, groups=channels)
        out[pooled.shape[-1]] = pooled
    return out


def multiscale_flow_matching_loss(preds: Sequence[Tensor], target: Tensor, weights: Sequence[float]) -> Tensor:
    """Weighted per-sample MSE of every stage output against the pooled target.

    Args:
        preds: velocities ``(B, C, h_i, w_i)``, lowest resolution first (any order works: matched by width).
        target: ``(B, C, H, W)`` full-resolution target velocity.
        weights: one weight per prediction.

    Returns:
        ``(B,)`` loss per sample (float32).
    """
    if len(preds) != len(weights):
        raise ValueError(f"{len(preds)} predictions but {len(weights)} loss weights")
    targets = multiscale_targets(target.float(), len(preds))
    loss = target.new_zeros(target.shape[0], dtype=torch.float32)
    for pred, weight in zip(preds, weights):
        ref = targets.get(pred.shape[-1])
        if ref is None or ref.shape[-2:] != pred.shape[-2:]:
            raise ValueError(f"no pooled target of size {tuple(pred.shape[-2:])}; available widths: {sorted(targets)}")
        loss = loss + weight * (pred.float() - ref).pow(2).flatten(1).mean(dim=1)
    return loss
