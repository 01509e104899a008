"""frechet_distance_to_features: the exact N×N route for few samples agrees with the D×D definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossflow.metrics.fid import frechet_distance, frechet_distance_to_features


def _eig_fid(mu1, s1, mu2, s2) -> float:
    """tr((S1 S2)^½) = Σ sqrt(eig(S1^½ S2 S1^½)), independent of sqrtm and of the N×N identity."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(inner)))


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(0), np.cov(x, rowvar=False)


def test_few_rows_give_the_exact_value():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 64)) * 2 + 1  # rank-9 covariance in 64 dimensions
    mu2, s2 = _stats(rng.normal(size=(200, 64)) @ rng.normal(size=(64, 64)))
    value = frechet_distance_to_features(x, mu2, s2)
    # rel 1e-7: the reference takes square roots of S1's 55 rounding-noise eigenvalues (≈ 1e-15 each)
    assert value == pytest.approx(_eig_fid(*_stats(x), mu2, s2), rel=1e-7)
    assert value == pytest.approx(frechet_distance(*_stats(x), mu2, s2), rel=1e-3)  # sqrtm's eps-regularised value
    assert frechet_distance_to_features(torch.from_numpy(x).float(), mu2, s2) == pytest.approx(value, rel=1e-5)


def test_rows_against_their_own_statistics_give_zero():
    x = np.random.default_rng(1).normal(size=(6, 32))
    assert frechet_distance_to_features(x, *_stats(x)) == pytest.approx(0.0, abs=1e-9)


def test_many_rows_use_the_standard_route():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(50, 8)), rng.normal(size=(40, 8)) + 0.5
    assert frechet_distance_to_features(x, *_stats(y)) == frechet_distance(*_stats(x), *_stats(y))


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match="do not match 4-d features"):
        frechet_distance_to_features(np.zeros((3, 4)), np.zeros(5), np.eye(5))
    with pytest.raises(ValueError, match="N ≥ 2"):
        frechet_distance_to_features(np.zeros((1, 4)), np.zeros(4), np.eye(4))
