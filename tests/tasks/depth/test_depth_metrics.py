"""Depth metrics against hand-computed values; least-squares scale-and-shift alignment; dataset averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tasks.depth.metrics import METRIC_KEYS, align_scale_shift, depth_metrics, evaluate_depth

PRED = np.array([[1.0, 2.0], [3.0, 4.0]])
GT = np.full((2, 2), 2.0)


def test_depth_metrics_match_hand_computed_values():
    m = depth_metrics(PRED, GT)
    # |p-g|/g = .5, 0, .5, 1 ; (p-g)^2/g = .5, 0, .5, 2 ; max(p/g, g/p) = 2, 1, 1.5, 2
    assert m["abs_rel"] == pytest.approx(0.5)
    assert m["sq_rel"] == pytest.approx(0.75)
    assert m["rmse"] == pytest.approx(math.sqrt(1.5))
    assert m["rmse_log"] == pytest.approx(math.sqrt((math.log(0.5) ** 2 + math.log(1.5) ** 2 + math.log(2) ** 2) / 4))
    assert m["log10"] == pytest.approx((2 * math.log10(2) + math.log10(1.5)) / 4)
    assert (m["delta1"], m["delta2"], m["delta3"]) == (0.25, 0.5, 0.5)  # thresholds 1.25, 1.5625, 1.953
    assert tuple(m) == METRIC_KEYS


def test_depth_metrics_use_only_valid_pixels_and_take_torch():
    gt = GT.copy()
    gt[0, 1] = 0.0  # invalid ground truth (p = g there anyway)
    mask = np.array([[True, True], [True, False]])  # drop the pixel with error 2
    m = depth_metrics(torch.tensor(PRED), torch.tensor(gt), mask)
    assert m["abs_rel"] == pytest.approx((0.5 + 0.5) / 2)
    assert m["delta1"] == 0.0 and m["delta2"] == 0.5
    with pytest.raises(ValueError, match="no valid pixel"):
        depth_metrics(PRED, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="same shape"):
        depth_metrics(PRED, np.ones((3, 2)))


def test_align_scale_shift_is_the_least_squares_affine_fit():
    gt = np.array([[1.0, 3.0]])
    np.testing.assert_allclose(align_scale_shift(np.array([[0.0, 1.0]]), gt), gt)  # s = 2, b = 1 exactly
    rng = np.random.default_rng(0)
    g = rng.uniform(1, 5, size=(6, 7))
    p = (g - 0.7) / 3.0
    p_bad = p.copy()
    p_bad[0, 0] = 100.0  # an outlier outside the mask does not disturb the fit
    mask = np.ones_like(g, dtype=bool)
    mask[0, 0] = False
    aligned = align_scale_shift(p_bad, g, mask)
    np.testing.assert_allclose(aligned[mask], g[mask], atol=1e-10)
    # three points, closed form of simple linear regression
    p3, g3 = np.array([[0.0, 1.0, 2.0]]), np.array([[1.0, 2.0, 4.0]])
    slope = np.sum((p3 - 1) * (g3 - 7 / 3)) / np.sum((p3 - 1) ** 2)  # = 1.5
    np.testing.assert_allclose(align_scale_shift(p3, g3), slope * p3 + (7 / 3 - slope))


def test_dataset_metrics_average_per_image_metrics():
    pred_a, gt_a = np.full((2, 2), 2.0), np.full((2, 2), 1.0)  # abs_rel 1
    pred_b, gt_b = np.full((4, 4), 1.0), np.full((4, 4), 1.0)  # abs_rel 0, 4x the pixels
    out = evaluate_depth([pred_a, pred_b], [gt_a, gt_b])
    assert out["abs_rel"] == pytest.approx(0.5)  # mean over images, not the pixel-pooled 0.2
    assert out["num_images"] == 2
    aligned = evaluate_depth([pred_a * 3 + 1], [gt_a + np.eye(2)], align=True)
    assert aligned["abs_rel"] < evaluate_depth([pred_a * 3 + 1], [gt_a + np.eye(2)])["abs_rel"]
