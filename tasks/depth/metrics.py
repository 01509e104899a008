"""Depth metrics: the standard error and accuracy measures, scale-and-shift alignment, dataset averages.

Definitions (over valid pixels: ``gt > 0`` and the mask):
``abs_rel = mean(|p − g| / g)``, ``sq_rel = mean((p − g)² / g)``, ``rmse = sqrt(mean((p − g)²))``,
``rmse_log = sqrt(mean((ln p − ln g)²))``, ``log10 = mean(|log10 p − log10 g|)``,
``delta_k = mean(max(p / g, g / p) < 1.25^k)``; the zero-shot benchmarks
(:mod:`tasks.depth.benchmarks`) add ``i_rmse = sqrt(mean((1/p − 1/g)²))`` and
``silog_rmse = 100·sqrt(mean(e²) − mean(e)²)``, ``e = ln p − ln g`` (Marigold's ``src/util/metric.py``).
:func:`pixel_metrics` computes all ten from the valid pixels' values.
Log measures need positive predictions; :func:`depth_metrics` clips predictions to ``min_depth`` first.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np

METRIC_KEYS: tuple[str, ...] = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")
BENCHMARK_METRIC_KEYS: tuple[str, ...] = METRIC_KEYS + ("i_rmse", "silog_rmse")


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _valid(gt: np.ndarray, valid_mask: Optional[Any]) -> np.ndarray:
    valid = gt > 0
    if valid_mask is not None:
        mask = _as_numpy(valid_mask).astype(bool)
        if mask.shape != gt.shape:
            raise ValueError(f"valid_mask has shape {mask.shape}, depth maps have {gt.shape}")
        valid &= mask
    return valid


def _check(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"expected two (H, W) depth maps of the same shape, got {pred.shape} and {gt.shape}")


def depth_metrics(pred: Any, gt: Any, valid_mask: Optional[Any] = None, *, min_depth: float = 1e-3) -> dict[str, float]:
    """Standard depth metrics of one image.

    Args:
        pred: ``(H, W)`` predicted depth (numpy or torch).
        gt: ``(H, W)`` ground-truth depth; pixels with ``gt <= 0`` are invalid.
        valid_mask: optional ``(H, W)`` bool, False excludes a pixel.
        min_depth: predictions are clipped to at least this before ratios and logs.

    Returns:
        ``abs_rel, sq_rel, rmse, rmse_log, log10, delta1, delta2, delta3`` as floats.

    Raises:
        ValueError: on shape mismatch or when no pixel is valid.
    """
    p, g = _as_numpy(pred), _as_numpy(gt)
    _check(p, g)
    valid = _valid(g, valid_mask)
    if not valid.any():
        raise ValueError("depth_metrics: no valid pixel (gt > 0 and mask)")
    out = pixel_metrics(np.maximum(p[valid], min_depth), g[valid])
    return {k: out[k] for k in METRIC_KEYS}


def pixel_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """All ten depth metrics of one image from its valid pixels' values (no masking, no clipping here).

    Args:
        pred: ``(N,)`` positive predicted depths of the valid pixels.
        gt: ``(N,)`` positive ground-truth depths of the same pixels.

    Returns:
        The keys of :data:`BENCHMARK_METRIC_KEYS` as floats (computed in float64). ``delta_k`` counts
        ``max(p/g, g/p) < 1.25^k`` strictly; ``silog_rmse`` is scaled by 100 as in Marigold and BTS.
    """
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if p.shape != g.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"pixel_metrics needs two non-empty 1-D arrays of equal length, got {p.shape} and {g.shape}")
    diff = p - g
    ratio = np.maximum(p / g, g / p)
    log_diff = np.log(p) - np.log(g)
    out = {
        "abs_rel": np.mean(np.abs(diff) / g),
        "sq_rel": np.mean(diff**2 / g),
        "rmse": np.sqrt(np.mean(diff**2)),
        "rmse_log": np.sqrt(np.mean(log_diff**2)),
        "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
        "i_rmse": np.sqrt(np.mean((1.0 / p - 1.0 / g) ** 2)),
        # a variance: rounding can make it a hair negative for a perfect prediction
        "silog_rmse": 100.0 * np.sqrt(max(np.mean(log_diff**2) - np.mean(log_diff) ** 2, 0.0)),
    }
    for k in (1, 2, 3):
        out[f"delta{k}"] = np.mean(ratio < 1.25**k)
    return {k: float(out[k]) for k in BENCHMARK_METRIC_KEYS}


def align_scale_shift(pred: Any, gt: Any, valid_mask: Optional[Any] = None) -> np.ndarray:
    """Least-squares affine alignment ``s·pred + b`` to ``gt`` over valid pixels (affine-invariant protocol).

    Args:
        pred: ``(H, W)`` prediction (depth, or relative/affine-invariant depth).
        gt: ``(H, W)`` ground truth; ``gt <= 0`` is invalid.
        valid_mask: optional ``(H, W)`` bool.

    Returns:
        ``(H, W)`` float64 array ``s·pred + b`` (all pixels), with ``(s, b)`` minimising
        ``Σ_valid (s·p + b − g)²``. A constant prediction gets ``s = 0`` and ``b = mean(g)``.
    """
    p, g = _as_numpy(pred), _as_numpy(gt)
    _check(p, g)
    valid = _valid(g, valid_mask)
    if not valid.any():
        raise ValueError("align_scale_shift: no valid pixel (gt > 0 and mask)")
    pv, gv = p[valid], g[valid]
    design = np.stack([pv, np.ones_like(pv)], axis=1)
    (scale, shift), *_ = np.linalg.lstsq(design, gv, rcond=None)
    return scale * p + shift


def evaluate_depth(preds: Iterable[Any], gts: Iterable[Any], valid_masks: Optional[Iterable[Any]] = None, *,
                   align: bool = False) -> dict[str, float]:
    """Dataset-level metrics: the per-image metrics averaged over images (as KITTI/NYUv2 benchmarks report).

    Args:
        preds: ``(H, W)`` predictions, one per image (an ``(N, H, W)`` array works too).
        gts: matching ground truths.
        valid_masks: optional matching masks.
        align: fit scale and shift per image first (:func:`align_scale_shift`).

    Returns:
        The mean of each key of :func:`depth_metrics`, plus ``num_images``.
    """
    preds, gts = list(preds), list(gts)
    masks = list(valid_masks) if valid_masks is not None else [None] * len(gts)
    if not (len(preds) == len(gts) == len(masks)) or not preds:
        raise ValueError(f"evaluate_depth needs matching non-empty lists, got {len(preds)} predictions, "
                         f"{len(gts)} ground truths, {len(masks)} masks")
    rows = []
    for p, g, m in zip(preds, gts, masks):
        if align:
            p = align_scale_shift(p, g, m)
        rows.append(depth_metrics(p, g, m))
    out = {k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS}
    out["num_images"] = len(rows)
    return out
