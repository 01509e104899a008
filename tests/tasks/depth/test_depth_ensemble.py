"""Test-time ensembling: per-member scale and shift removed, median, rescaled to [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.depth.ensemble import ensemble_depth


def test_affine_copies_of_one_map_ensemble_to_that_map_in_unit_range():
    rng = np.random.default_rng(0)
    truth = rng.uniform(1.0, 5.0, size=(6, 8))
    members = np.stack([a * truth + b for a, b in ((1.0, 0.0), (0.5, 2.0), (3.0, -1.0), (0.2, 0.1))])
    out = ensemble_depth(members)
    expected = (truth - truth.min()) / (truth.max() - truth.min())
    np.testing.assert_allclose(out, expected, atol=1e-9)
    assert out.min() == 0.0 and out.max() == 1.0


def test_the_median_rejects_one_outlying_member():
    truth = np.linspace(0.0, 1.0, 20).reshape(4, 5)
    bad = truth.copy()
    bad[0, 0] = 50.0  # one wild pixel in one member
    out = ensemble_depth(np.stack([truth, truth, bad]))
    np.testing.assert_allclose(out, truth, atol=1e-6)


def test_one_member_and_constant_maps_and_bad_shapes():
    x = np.array([[2.0, 4.0], [6.0, 8.0]])
    np.testing.assert_allclose(ensemble_depth(x[None]), (x - 2) / 6)
    assert not ensemble_depth(np.ones((3, 2, 2))).any()
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        ensemble_depth(x)
