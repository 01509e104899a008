"""Depth targets: quantile normalisation against a hand-computed example, metric mapping, working resolution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tasks.depth.training import (IN_DOMAIN_MAPPINGS, MetricDepthMapping, QuantileNormalizer, SampleError,
                                  TrainingTransform, resize_nearest)
from tasks.depth.training.geometry import center_crop_window, crop_mask, kb_crop
from tasks.depth.training.readers import depth_sample


def _sample(depth, valid, rgb=None):
    depth = np.asarray(depth, np.float32)
    if rgb is None:
        rgb = np.zeros((*depth.shape, 3), np.uint8)
    return depth_sample(rgb, depth, np.asarray(valid, bool), "probe")


def test_quantile_normalisation_matches_hand_computation_and_ignores_invalid_pixels():
    depth = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 100.0, 0.0, 3.0]])
    valid = np.array([[True, True, True, True], [True, False, True, False]])  # 100 m invalid; 0 "valid" but d=0
    # over {1, 2, 3, 4, 5}: d2 = 1 + 0.02·4 = 1.08, d98 = 4 + 0.92 = 4.92 (linear interpolation)
    lo, hi = QuantileNormalizer().quantiles(depth, valid)
    assert (lo, hi) == pytest.approx((1.08, 4.92))
    z = QuantileNormalizer().encode(depth, valid)
    expected = np.clip((depth - 1.08) / 3.84 * 2 - 1, -1, 1)
    np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-6)
    assert z[0, 2] == pytest.approx(0.0, abs=1e-6) and z[0, 1] == pytest.approx(-0.5208333, rel=1e-5)
    assert z[0, 0] == -1.0 and z[1, 0] == 1.0  # clipped beyond the quantiles
    # the invalid 100 m pixel would have moved the upper quantile
    assert QuantileNormalizer().quantiles(depth, np.ones_like(valid))[1] > 5.0

    out = TrainingTransform((2, 4), QuantileNormalizer())(_sample(depth, valid))
    assert out["target"].shape == (1, 2, 4) and out["target_mask"].dtype == torch.bool
    assert out["target_mask"][0].tolist() == valid.tolist()
    np.testing.assert_allclose(out["target"][0][valid].numpy(), expected[valid], rtol=1e-6, atol=1e-6)
    assert out["target"][0, 1, 1] == 1.0 and out["target"][0, 1, 3] == 1.0  # invalid → far plane (+1)


def test_quantile_normalisation_refuses_empty_or_flat_maps():
    with pytest.raises(SampleError, match="no valid depth pixel"):
        QuantileNormalizer().encode(np.ones((2, 2)), np.zeros((2, 2), bool), "a.png")
    with pytest.raises(SampleError, match="flat map"):
        QuantileNormalizer().encode(np.full((2, 2), 3.0), np.ones((2, 2), bool), "b.png")


def test_metric_log_mapping_round_trip_and_clip():
    m = MetricDepthMapping(1.0, 80.0)
    d = np.array([1.0, math.sqrt(80.0), 80.0, 0.5, 200.0])
    z = m.encode(d)
    np.testing.assert_allclose(z, [-1.0, 0.0, 1.0, -1.0, 1.0], atol=1e-6)
    torch.testing.assert_close(m.decode(torch.from_numpy(z[:3]).double()), torch.tensor(d[:3]), rtol=1e-6, atol=1e-6)
    lin = MetricDepthMapping(0.5, 4.5, "linear")
    np.testing.assert_allclose(lin.encode(np.array([0.5, 1.0, 4.5])), [-1.0, -0.75, 1.0], atol=1e-7)
    assert IN_DOMAIN_MAPPINGS["kitti"] == MetricDepthMapping(1.0, 80.0, "log")
    with pytest.raises(ValueError, match="d_min < d_max"):
        MetricDepthMapping(2.0, 1.0)


def test_transform_working_resolution_stretch_and_center_crop():
    h, w = 8, 24
    depth = np.tile(np.arange(w, dtype=np.float32) + 1.0, (h, 1))
    valid = np.ones((h, w), bool)
    valid[:, :3] = False
    rgb = np.full((h, w, 3), 255, np.uint8)
    mapping = MetricDepthMapping(1.0, 24.0, "linear")
    out = TrainingTransform((4, 6), mapping)(_sample(depth, valid, rgb))
    assert out["source"].shape == (3, 4, 6) and torch.all(out["source"] == 1.0)  # 255 → +1
    cols = np.minimum(((np.arange(6) + 0.5) * 4).astype(int), 23)  # nearest-exact source columns
    np.testing.assert_allclose(out["target"][0, 0].numpy(), np.where(cols < 3, 1.0, mapping.encode(depth[0, cols])))
    assert out["target_mask"][0, 0].tolist() == (cols >= 3).tolist()
    crop = TrainingTransform((4, 4), mapping, fit="center_crop")(_sample(depth, valid, rgb))
    window = center_crop_window((h, w), 1.0)
    assert window == (slice(0, 8), slice(8, 16))
    np.testing.assert_allclose(crop["target"][0, 0].numpy(), mapping.encode(depth[0, [9, 11, 13, 15]]))
    assert crop["target_mask"].all()
    with pytest.raises(ValueError, match="unknown fit"):
        TrainingTransform((4, 4), mapping, fit="pad")


def test_nearest_exact_matches_torch_and_crops():
    a = np.random.default_rng(0).random((37, 53)).astype(np.float32)
    for size in [(16, 20), (60, 90), (37, 53)]:
        ref = torch.nn.functional.interpolate(torch.from_numpy(a)[None, None], size=size, mode="nearest-exact")[0, 0]
        np.testing.assert_array_equal(resize_nearest(a, size), ref.numpy())
    assert kb_crop(np.zeros((375, 1242))).shape == (352, 1216)
    marker = np.zeros((376, 1241))
    marker[24, 12] = 1  # top = 376 − 352, left = (1241 − 1216) // 2
    assert kb_crop(marker)[0, 0] == 1
    eigen = crop_mask((375, 1242), "eigen")
    assert eigen[124:342, 44:1197].all() and eigen.sum() == (342 - 124) * (1197 - 44)
    garg = crop_mask((375, 1242), "garg")
    assert garg[153:371, 44:1197].all() and garg.sum() == (371 - 153) * (1197 - 44)
