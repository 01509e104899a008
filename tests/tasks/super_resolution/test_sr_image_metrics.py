"""SR image metrics: per-image PSNR/SSIM on 8-bit RGB, the identical-image cap, FID and IS end to end with a
random-weight FID Inception (no weights file)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossflow.metrics.fid import batch_statistics, frechet_distance_to_features
from crossflow.metrics.fid_inception import FIDInceptionV3
from crossflow.metrics.inception_score import inception_score
from tasks.super_resolution.image_metrics import (FID_VS_REFERENCE, FID_VS_TRUTHS, inception_outputs, psnr_cap,
                                                  reference_statistics, sr_image_metrics)
from tasks.super_resolution.metrics import ssim


def _images(seed: int, n: int = 2, size: int = 16, low: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, size=(n, size, size, 3), dtype=np.uint8)


def test_psnr_is_averaged_per_image_hand_computed():
    truths = _images(0, low=20, high=200)
    preds = truths.copy()
    preds[0] += 5  # MSE 25 in 8-bit units → 10·log10(255² / 25) = 20·log10(51)
    preds[1] -= 10  # MSE 100 → 20·log10(25.5)
    out = sr_image_metrics(preds, truths)
    assert out["psnr"] == pytest.approx((20 * math.log10(51) + 20 * math.log10(25.5)) / 2, rel=1e-12)
    pooled = 10 * math.log10(255**2 / 62.5)  # one PSNR of the pooled MSE: not the protocol
    assert abs(out["psnr"] - pooled) > 0.5
    assert out["num_images"] == 2 and out["psnr_identical"] == 0 and "inception_score" not in out


def test_identical_images_give_the_finite_cap_and_ssim_one():
    truths = _images(1)
    out = sr_image_metrics(truths, truths)
    cap = psnr_cap(16, 16, 3)
    assert cap == pytest.approx(10 * math.log10(255**2 * 16 * 16 * 3)) and math.isfinite(out["psnr"])
    assert out["psnr"] == cap and out["psnr_cap_db"] == cap and out["psnr_identical"] == 2
    assert out["ssim"] == pytest.approx(1.0)
    near = truths.copy()
    near[0, 0, 0, 0] ^= 1  # one value off by one level: the largest finite PSNR, exactly the cap
    mixed = sr_image_metrics(near, truths)
    assert mixed["psnr"] == pytest.approx(cap) and mixed["psnr_identical"] == 1  # a tie, not counted as identical


def test_ssim_convention_is_range_independent():
    truths = _images(2, size=20)
    noise = np.random.default_rng(3).integers(-30, 31, truths.shape)
    preds = np.clip(truths.astype(int) + noise, 0, 255).astype(np.uint8)
    out = sr_image_metrics(preds, truths)
    on_255 = [ssim(p.astype(float), t.astype(float), data_range=255.0) for p, t in zip(preds, truths)]
    assert out["ssim"] == pytest.approx(np.mean(on_255), rel=1e-10) and 0 < out["ssim"] < 1


def test_layout_and_shape_errors_are_named():
    chw = np.zeros((2, 3, 16, 16), np.uint8)
    with pytest.raises(ValueError, match=r"preds_uint8: expected uint8 images of shape \(N, H, W, 3\).*permute"):
        sr_image_metrics(chw, chw)
    with pytest.raises(ValueError, match="differ in shape"):
        sr_image_metrics(_images(0, n=2), _images(0, n=3))
    with pytest.raises(ValueError, match="truths_uint8: expected uint8"):
        sr_image_metrics(_images(0), _images(0).astype(np.float32))


@pytest.fixture(scope="module")
def inception() -> FIDInceptionV3:
    """Random weights, no 299 resize (80×80 inputs keep the forwards fast); BatchNorm in eval mode."""
    torch.manual_seed(0)
    return FIDInceptionV3(resize_input=False).eval()


def test_fid_and_is_end_to_end_with_a_random_inception(inception):
    truths = _images(4, n=6, size=80)
    noise = np.random.default_rng(5).integers(-60, 61, truths.shape)
    preds = np.clip(truths.astype(int) + noise, 0, 255).astype(np.uint8)

    own = sr_image_metrics(preds, truths, inception=inception, splits=2, batch_size=4)
    features, logits = inception_outputs(preds, inception, batch_size=6)
    assert features.shape == (6, 2048) and logits.shape == (6, 1008)
    assert (own["inception_score"], own["inception_score_std"]) == pytest.approx(inception_score(logits, 2), rel=1e-5)
    assert 1.0 <= own["inception_score"] <= 1008 and own["is_splits"] == 2
    assert FID_VS_REFERENCE not in own and own[FID_VS_TRUTHS] > 0

    # reference statistics from uneven batches follow fid.py's input path (uint8 → [0, 1] → the network)
    mu, sigma = reference_statistics([truths[:1], torch.from_numpy(truths[1:])], inception, batch_size=4)
    expected = batch_statistics([truths], inception, resize_512=False, progress=False)
    np.testing.assert_allclose(mu, expected.mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma, expected.sigma, rtol=1e-4, atol=1e-6)
    against_ref = sr_image_metrics(preds, truths, inception=inception, reference=(mu, sigma), splits=2)
    assert FID_VS_TRUTHS not in against_ref
    assert against_ref[FID_VS_REFERENCE] == pytest.approx(own[FID_VS_TRUTHS], rel=1e-4)
    assert against_ref[FID_VS_REFERENCE] == pytest.approx(frechet_distance_to_features(features, mu, sigma), rel=1e-4)

    same = sr_image_metrics(truths, truths, inception=inception, splits=3)
    assert same[FID_VS_TRUTHS] == pytest.approx(0.0, abs=1e-6 * own[FID_VS_TRUTHS])
    assert same["psnr_identical"] == 6


def test_inception_input_is_resized_to_299_as_fid_py(inception):
    torch.manual_seed(1)
    resizing = FIDInceptionV3().eval()  # the default: bilinear resize to 299 inside the network
    images = _images(6, n=1, size=24)
    features, _ = inception_outputs(images, resizing)
    with torch.no_grad():
        direct = resizing(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)
    torch.testing.assert_close(features, direct)


def test_training_mode_inception_is_rejected(inception):
    with pytest.raises(ValueError, match=r"training mode; call \.eval\(\)"):
        sr_image_metrics(_images(0, size=80), _images(1, size=80), inception=FIDInceptionV3(resize_input=False))
    with pytest.raises(ValueError, match="splits=10 needs at least 10 samples, got 2"):
        sr_image_metrics(_images(0, size=80), _images(1, size=80), inception=inception)
