"""Zero-shot protocol arithmetic: least-squares alignment (closed form, Marigold's subsample), resizing,
the ten metrics on a 2×2 example, and the order align → clip → score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tasks.depth.benchmarks import (BENCHMARKS, BenchmarkSample, align_least_squares, align_least_squares_disparity,
                                    alignment_subsample, fit_scale_shift, resize_prediction, score_sample)
from tasks.depth.metrics import BENCHMARK_METRIC_KEYS, pixel_metrics

LN2 = math.log(2.0)


def _sample(depth, valid=None) -> BenchmarkSample:
    depth = np.asarray(depth, np.float32)
    valid = np.ones(depth.shape, bool) if valid is None else np.asarray(valid, bool)
    return BenchmarkSample("x.png", np.zeros((*depth.shape, 3), np.uint8), depth, valid)


def test_fit_recovers_an_affine_map_exactly_and_matches_numpy_lstsq():
    rng = np.random.default_rng(0)
    g = rng.uniform(1.0, 9.0, 500)
    assert fit_scale_shift(3.0 * g + 2.0, g) == pytest.approx((1 / 3, -2 / 3), rel=1e-12)
    assert fit_scale_shift(g + 0.7, g) == pytest.approx((1.0, -0.7), rel=1e-12)  # a constant offset
    noisy = 0.5 * g + rng.normal(0, 0.3, g.size)
    reference = np.linalg.lstsq(np.stack([noisy, np.ones_like(noisy)], 1), g, rcond=None)[0]
    np.testing.assert_allclose(fit_scale_shift(noisy, g), reference, rtol=1e-10)
    assert fit_scale_shift(np.full(4, 5.0), np.array([1.0, 2.0, 3.0, 6.0])) == (0.0, 3.0)  # constant → mean


def test_alignment_fits_on_the_valid_mask_only_and_applies_everywhere():
    g = np.array([[1.0, 2.0], [3.0, 4.0]])
    p = (g - 1.0) / 2.0
    p_bad = p.copy()
    p_bad[1, 1] = 100.0
    valid = np.array([[True, True], [True, False]])
    aligned, s, t = align_least_squares(p_bad, g, valid)
    assert (s, t) == pytest.approx((2.0, 1.0))
    np.testing.assert_allclose(aligned, [[1.0, 2.0], [3.0, 201.0]])


def test_disparity_alignment_recovers_an_affine_map_of_inverse_depth():
    g = np.random.default_rng(1).uniform(1.0, 9.0, (5, 6))
    aligned, s, t = align_least_squares_disparity(4.0 / g + 0.5, g, np.ones_like(g, bool))
    np.testing.assert_allclose(aligned, g, rtol=1e-10)
    assert (s, t) == pytest.approx((0.25, -0.125))


@pytest.mark.parametrize("shape,max_res", [((4032, 6048), 1024), ((30, 50), 7), ((50, 30), 7), ((20, 21), 20)])
def test_alignment_subsample_takes_the_columns_marigolds_torch_upsample_takes(shape, max_res):
    # Marigold: torch.nn.Upsample(scale_factor=f, mode="nearest") on a (1, H, W) tensor
    h, w = shape
    columns = torch.arange(w, dtype=torch.float32).expand(1, 3, w)  # 3 rows suffice: rows are untouched
    factor = float(np.min(max_res / np.array(shape)))
    picked = torch.nn.Upsample(scale_factor=factor, mode="nearest")(columns)[0, 0].long().numpy()
    np.testing.assert_array_equal(alignment_subsample(shape, max_res), picked)
    if shape == (4032, 6048):
        assert picked.size == 1024
    assert alignment_subsample(shape, None).size == w and alignment_subsample(shape, 10_000).size == w


def test_resize_is_bilinear_with_half_pixel_centres_when_enlarging_and_averages_when_shrinking():
    small = np.array([[1.0, 2.0, 4.0], [3.0, 5.0, 9.0]])
    reference = F.interpolate(torch.tensor(small)[None, None], size=(4, 6), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(resize_prediction(small, (4, 6)), reference[0, 0].numpy(), rtol=1e-12)
    big = np.arange(16, dtype=np.float64).reshape(4, 4)
    np.testing.assert_allclose(resize_prediction(big, (2, 2)), [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(resize_prediction(big, (4, 4)), big)  # same size: untouched


def test_ten_metrics_against_hand_computed_values_on_a_2x2_image():
    p = np.array([[1.0, 2.0], [4.0, 8.0]])
    result = score_sample(p, _sample(np.full((2, 2), 2.0)), BENCHMARKS["scannet"], alignment=None)
    # p/g = .5, 1, 2, 4 ; e = ln(p/g) = -ln2, 0, ln2, 2 ln2 ; 1/p - 1/g = .5, 0, -.25, -.375
    expected = {
        "abs_rel": (0.5 + 0 + 1 + 3) / 4,
        "sq_rel": (0.5 + 0 + 2 + 18) / 4,
        "rmse": math.sqrt((1 + 0 + 4 + 36) / 4),
        "rmse_log": LN2 * math.sqrt((1 + 0 + 1 + 4) / 4),
        "log10": math.log10(2) * (1 + 0 + 1 + 2) / 4,
        "delta1": 0.25, "delta2": 0.25, "delta3": 0.25,  # only p = g; ratio 2 ≥ 1.25³ = 1.953
        "i_rmse": math.sqrt((0.25 + 0 + 0.0625 + 0.140625) / 4),
        "silog_rmse": 100 * LN2 * math.sqrt(6 / 4 - (2 / 4) ** 2),  # 100·sqrt(mean e² − (mean e)²)
    }
    for key in BENCHMARK_METRIC_KEYS:
        assert result[key] == pytest.approx(expected[key], rel=1e-12), key
    assert (result["scale"], result["shift"]) == (1.0, 0.0)
    ratio = np.array([1.2, 1.25, 1.5625, 1.6])  # strict thresholds: 1.25 is not < 1.25, 1.5625 not < 1.25²
    d = pixel_metrics(ratio, np.ones(4))
    assert (d["delta1"], d["delta2"], d["delta3"]) == (0.25, 0.5, 1.0)


def test_the_prediction_is_aligned_first_then_clipped_to_the_dataset_range():
    g = np.array([[1.0, 4.0], [7.0, 9.5]])
    scannet = BENCHMARKS["scannet"]  # 1e-3 < d < 10, no crop
    aligned = score_sample(2.0 * g, _sample(g), scannet)  # 19 m before alignment: clipping first would bend it
    assert aligned["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert aligned["scale"] == pytest.approx(0.5)
    clipped = score_sample(np.full((2, 2), 25.0), _sample(g), scannet, alignment=None)
    assert clipped["abs_rel"] == pytest.approx(np.mean((10.0 - g) / g))  # 25 m clipped to 10 m
    shallow = score_sample(np.full((2, 2), -3.0), _sample(g), scannet, alignment=None)
    assert shallow["rmse"] == pytest.approx(math.sqrt(np.mean((1e-3 - g) ** 2)))  # clipped up to 1e-3


def test_metrics_skip_pixels_outside_the_mask_even_when_the_prediction_there_is_wild():
    g = np.array([[2.0, 2.0], [2.0, 0.0]])
    valid = np.array([[True, True], [False, False]])
    result = score_sample(np.array([[2.0, 3.0], [1e6, -5.0]]), _sample(g, valid), BENCHMARKS["scannet"],
                          alignment=None)
    assert result["abs_rel"] == pytest.approx(0.25)
