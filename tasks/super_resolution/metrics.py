"""PSNR and SSIM of ``(H, W, C)`` float images in [0, data_range].

SSIM follows Wang et al. (2004): an 11×11 Gaussian window with σ = 1.5, ``K1 = 0.01``, ``K2 = 0.03``,
local statistics as window-weighted population moments (``σ² = E[x²] − E[x]²``, no N/(N−1)
correction), evaluated where the window fits inside the image ("valid"), averaged over positions,
then over channels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

WINDOW_SIZE: int = 11
WINDOW_SIGMA: float = 1.5
K1, K2 = 0.01, 0.03


def _as_hwc(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise ValueError(f"expected an (H, W, C) or (H, W) image, got shape {x.shape}")
    return x


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_hwc(pred), _as_hwc(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and target {t.shape} differ in shape")
    return p, t


def psnr(pred: Any, target: Any, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10·log10(data_range² / MSE)`` in dB (``inf`` for identical images)."""
    p, t = _pair(pred, target)
    mse = float(np.mean((p - t) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def gaussian_window(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian of ``size`` taps centred on the middle tap."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    w = np.exp(-(x**2) / (2.0 * sigma**2))
    return w / w.sum()


def _filter_valid(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable 2-D weighted sums of an ``(H, W)`` array over every fully-inside window: ``(H−k+1, W−k+1)``."""
    k = w.shape[0]
    rows = np.lib.stride_tricks.sliding_window_view(img, k, axis=0) @ w  # (H-k+1, W)
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ w


def ssim(pred: Any, target: Any, data_range: float = 1.0) -> float:
    """Mean structural similarity, averaged over window positions and channels.

    Args:
        pred, target: ``(H, W, C)`` (or ``(H, W)``) float images; H and W at least 11.
        data_range: the value range ``L`` (``C1 = (K1·L)²``, ``C2 = (K2·L)²``).
    """
    p, t = _pair(pred, target)
    if min(p.shape[:2]) < WINDOW_SIZE:
        raise ValueError(f"SSIM needs images of at least {WINDOW_SIZE}×{WINDOW_SIZE}, got {p.shape[:2]}")
    w = gaussian_window()
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    values = []
    for c in range(p.shape[2]):
        x, y = p[..., c], t[..., c]
        mx, my = _filter_valid(x, w), _filter_valid(y, w)
        vx = _filter_valid(x * x, w) - mx**2
        vy = _filter_valid(y * y, w) - my**2
        cov = _filter_valid(x * y, w) - mx * my
        s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        values.append(float(s.mean()))
    return float(np.mean(values))
