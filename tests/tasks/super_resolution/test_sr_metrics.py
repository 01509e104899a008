"""PSNR and SSIM against hand-computed values and a direct windowed reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.super_resolution.metrics import K1, gaussian_window, psnr, ssim


def test_psnr_hand_computed():
    target = np.full((4, 4, 3), 0.5)
    assert psnr(target + 0.1, target) == pytest.approx(20.0)  # MSE 0.01
    assert psnr(target * 255 + 25.5, target * 255, data_range=255.0) == pytest.approx(20.0)
    assert psnr(target, target) == math.inf
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(target, target[:2])


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 0.2, 0.6
    c1 = (K1 * 1.0) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # no variance: the contrast-structure term is C2/C2 = 1
    assert ssim(np.full((16, 16, 3), a), np.full((16, 16, 3), b)) == pytest.approx(expected)
    img = np.random.default_rng(0).uniform(size=(12, 12, 3))
    assert ssim(img, img) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(np.zeros((10, 10)), np.zeros((10, 10)))


def _ssim_by_windows(x: np.ndarray, y: np.ndarray) -> float:
    """Direct definition: a normalised 11x11 Gaussian (sigma 1.5) window at every fully-inside position,
    weighted population moments, mean over positions and channels."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    per_channel = []
    for c in range(x.shape[2]):
        vals = []
        for i in range(x.shape[0] - 10):
            for j in range(x.shape[1] - 10):
                px, py = x[i:i + 11, j:j + 11, c], y[i:i + 11, j:j + 11, c]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cov = (w * (px - mx) * (py - my)).sum()
                vals.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
        per_channel.append(np.mean(vals))
    return float(np.mean(per_channel))


def test_ssim_matches_the_windowed_definition():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(15, 14, 2))
    y = np.clip(x + 0.1 * rng.normal(size=x.shape), 0, 1)
    assert ssim(x, y) == pytest.approx(_ssim_by_windows(x, y), abs=1e-12)
    assert gaussian_window().sum() == pytest.approx(1.0) and gaussian_window().argmax() == 5
