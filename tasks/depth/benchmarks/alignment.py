"""Bringing a prediction to the ground truth: resizing, and Marigold's least-squares scale-and-shift alignment.

Affine-invariant models (Marigold, DepthAnything's relative head, ours) predict depth up to an unknown scale
and shift; the zero-shot protocol fits ``s, t`` minimising ``Σ_valid (s·pred + t − gt)²`` per image, over the
same pixels the metrics use, and scores ``s·pred + t`` (Marigold ``src/util/alignment.py``,
``script/depth/eval.py --alignment least_square``).
"""

from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

ALIGNMENTS: tuple[Optional[str], ...] = ("least_square", "least_square_disparity", None)
MIN_DISPARITY = 1e-3  # aligned disparities are clipped to at least this before inverting (Marigold)


def fit_scale_shift(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Closed-form least squares ``argmin_{s,t} Σ (s·pred + t − target)²`` in float64.

    Args:
        pred, target: ``(N,)`` values of the pixels to fit.

    Returns:
        ``(s, t)``. A constant ``pred`` gets ``s = 0, t = mean(target)`` (any minimiser gives the same
        fitted values there).
    """
    p, g = np.asarray(pred, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    if p.size == 0 or p.size != g.size:
        raise ValueError(f"fit_scale_shift needs matching non-empty arrays, got {p.size} and {g.size} values")
    p_mean, g_mean = p.mean(), g.mean()
    p_c = p - p_mean
    var = float(np.dot(p_c, p_c))
    if var == 0.0:
        return 0.0, float(g_mean)
    scale = float(np.dot(p_c, g - g_mean)) / var
    return scale, float(g_mean - scale * p_mean)


def alignment_subsample(shape: tuple[int, int], max_res: Optional[int]) -> np.ndarray:
    """Column indices Marigold's ``--alignment_max_res`` keeps for the fit (all columns when no reduction).

    Marigold calls ``torch.nn.Upsample(scale_factor=f, mode="nearest")`` with
    ``f = min(max_res / H, max_res / W)`` on a ``(1, H, W)`` tensor, which torch reads as one sample with
    ``H`` channels of a 1-D signal: only the columns are subsampled (``floor(W·f)`` of them, column
    ``min(floor(j · float32(1/f)), W − 1)``) and every row is kept. We reproduce that pixel set so the
    fitted ``s, t`` match (ETH3D, ``max_res`` 1024: 1024 of 6048 columns).
    """
    h, w = shape
    columns = np.arange(w)
    if max_res is None:
        return columns
    factor = min(max_res / h, max_res / w)
    if factor >= 1:
        return columns
    out = math.floor(float(w) * factor)
    step = np.float32(1.0 / factor)
    return np.minimum(np.floor(np.arange(out, dtype=np.float32) * step).astype(np.int64), w - 1)


def _fit_pixels(pred: np.ndarray, target: np.ndarray, valid: np.ndarray,
                max_res: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    columns = alignment_subsample(pred.shape, max_res)
    keep = valid[:, columns]
    if not keep.any():
        raise ValueError("least-squares alignment: no valid pixel to fit")
    return pred[:, columns][keep], target[:, columns][keep]


def align_least_squares(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, *,
                        max_res: Optional[int] = None) -> tuple[np.ndarray, float, float]:
    """Affine alignment in depth space.

    Args:
        pred: ``(H, W)`` prediction (any affine-invariant depth).
        gt: ``(H, W)`` ground-truth depth.
        valid: ``(H, W)`` bool, the pixels to fit (the evaluation mask).
        max_res: fit on :func:`alignment_subsample`'s columns (Marigold's ``--alignment_max_res``).

    Returns:
        ``(s·pred + t, s, t)``, the aligned ``(H, W)`` float64 map over all pixels.
    """
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    scale, shift = fit_scale_shift(*_fit_pixels(p, g, valid, max_res))
    return scale * p + shift, scale, shift


def align_least_squares_disparity(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, *,
                                  max_res: Optional[int] = None) -> tuple[np.ndarray, float, float]:
    """Affine alignment of ``pred`` to the ground-truth disparity ``1/gt`` (Marigold's
    ``least_square_disparity``; not used by its evaluation scripts).

    The fit uses the pixels where ``valid``, ``gt > 0`` and ``pred > 0``; the aligned disparity is clipped to
    at least ``1e-3`` and inverted.

    Returns:
        ``(1 / max(s·pred + t, 1e-3), s, t)`` as float64 depth.
    """
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    positive = g > 0
    disparity = np.zeros_like(g)
    disparity[positive] = 1.0 / g[positive]
    scale, shift = fit_scale_shift(*_fit_pixels(p, disparity, valid & positive & (p > 0), max_res))
    return 1.0 / np.maximum(scale * p + shift, MIN_DISPARITY), scale, shift


def resize_prediction(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bring an ``(h, w)`` prediction to the ground truth's ``(H, W)``.

    Enlarging is bilinear with half-pixel centres (``cv2.INTER_LINEAR``, the same as torch's
    ``interpolate(mode="bilinear", align_corners=False)`` and as Marigold's resize back to the input size);
    shrinking in both directions averages areas (``cv2.INTER_AREA``) instead of sampling, close to
    torchvision's antialiased bilinear resize.
    """
    p = np.asarray(pred, np.float64)
    h, w = shape
    if p.shape == (h, w):
        return p
    shrink = h <= p.shape[0] and w <= p.shape[1]
    return cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
