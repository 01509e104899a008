"""Super-resolution scores of 8-bit images: PSNR, SSIM, FID and Inception Score (SR3's ImageNet protocol).

Images are ``(N, H, W, 3)`` uint8 arrays (channels last, as ``ImageOutput.uint8()`` and
:func:`crossflow.metrics.fid.uint8_to_input`); a ``(B, 3, H, W)`` tensor ``t`` is passed as
``t.permute(0, 2, 3, 1).numpy()``.

- PSNR and SSIM: per image, RGB, full size, then averaged over images (not one PSNR from the pooled
  MSE). Scored on ``x / 255`` with ``data_range = 1`` — the same numbers as ``data_range = 255`` on
  [0, 255] — by :mod:`tasks.super_resolution.metrics` (SSIM: Gaussian 11×11 window, σ = 1.5,
  K1 = 0.01, K2 = 0.03, valid positions, population moments). Identical images have an infinite PSNR;
  each image's PSNR is capped at :func:`psnr_cap` (the PSNR of the smallest nonzero 8-bit error: one
  value off by one level), so the mean stays finite and never ranks an exact copy below a near copy
  (the two tie); ``psnr_identical`` counts the identical pairs.
- FID and IS (when an Inception is given, e.g. ``load_fid_inception(task.metrics.inception_weights)``):
  the FID input path of :mod:`crossflow.metrics.fid` — uint8 → [0, 1] → the network's bilinear
  resize to 299 → [-1, 1] — without the 512 → 256 step of the text-to-image evaluation; one forward
  per batch gives the pool3 features (FID) and the 1008 logits without bias (IS, consecutive splits).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from crossflow.metrics.fid import ActivationStatistics, batch_statistics, frechet_distance_to_features, uint8_to_input
from crossflow.metrics.inception_score import inception_score
from tasks.super_resolution.metrics import psnr, ssim

log = logging.getLogger(__name__)

#: Result key of the FID against given reference statistics (e.g. of the whole HR evaluation set).
FID_VS_REFERENCE = "fid_vs_reference"
#: Result key of the FID against the statistics of the ``truths`` passed in (no reference given).
FID_VS_TRUTHS = "fid_vs_truths"


def psnr_cap(height: int, width: int, channels: int = 3) -> float:
    """PSNR (dB) reported for identical 8-bit images: ``10·log10(255² · H·W·C)``.

    That is the PSNR of the smallest nonzero 8-bit error (one value off by one level), e.g. 101.1 dB
    for 256×256 RGB, so a capped value is at least any achievable finite one.
    """
    return 10.0 * math.log10(255.0**2 * height * width * channels)


def _as_images(x: Any, name: str) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 numpy array from a numpy array or a CPU tensor, or a ValueError naming ``name``."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected uint8 images of shape (N, H, W, 3), got {x.dtype} {x.shape} "
                         f"(a (N, 3, H, W) tensor t goes in as t.permute(0, 2, 3, 1))")
    return x


def _chunks(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size]


def _check_inception(inception: nn.Module) -> None:
    if not hasattr(inception, "features_and_logits"):
        raise TypeError(f"the Inception must have features_and_logits (FIDInceptionV3), got {type(inception).__name__}")
    if inception.training:  # BatchNorm would use batch statistics and update its running averages
        raise ValueError("the Inception is in training mode; call .eval() (load_fid_inception returns it in eval mode)")


@torch.no_grad()
def inception_outputs(images: np.ndarray, inception: nn.Module, *, batch_size: int = 50,
                      device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Pool3 features ``(N, 2048)`` and unbiased logits ``(N, 1008)``, float32 on the CPU, of ``(N, H, W, 3)`` uint8."""
    _check_inception(inception)
    images = _as_images(images, "images")
    feats, logits = [], []
    for batch in _chunks(images, batch_size):
        x = torch.stack(uint8_to_input(batch, resize_512=False)).to(device)
        f, z = inception.features_and_logits(x)
        feats.append(f.float().cpu())
        logits.append(z.float().cpu())
    return torch.cat(feats), torch.cat(logits)


def reference_statistics(hr_uint8: Iterable[Any], inception: nn.Module, batch_size: int = 50,
                         device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """FID reference ``(mu (2048,), sigma (2048, 2048))`` of high-res images, streamed batch by batch.

    Args:
        hr_uint8: one ``(N, H, W, 3)`` uint8 array/tensor, or an iterable of such batches (any sizes;
            each is re-cut into ``batch_size`` forwards), e.g. a generator over an evaluation folder.
        inception: the FID Inception in eval mode.
        batch_size: images per forward.
        device: where the forwards run.

    Returns:
        float64 mean and unbiased covariance (save with :func:`crossflow.metrics.fid.save_statistics`).
    """
    _check_inception(inception)
    if isinstance(hr_uint8, (np.ndarray, Tensor)):
        hr_uint8 = [hr_uint8]
    batches = (chunk for batch in hr_uint8 for chunk in _chunks(_as_images(batch, "hr_uint8"), batch_size))
    stats = batch_statistics(batches, inception, device=device, resize_512=False, progress=False)
    return stats.mu, stats.sigma


def sr_image_metrics(preds_uint8: Any, truths_uint8: Any, *, inception: nn.Module | None = None,
                     reference: tuple[np.ndarray, np.ndarray] | None = None, splits: int = 10,
                     batch_size: int = 50, device: torch.device | str = "cpu") -> dict[str, Any]:
    """PSNR and SSIM of predictions against truths; FID and Inception Score when an Inception is given.

    Args:
        preds_uint8: ``(N, H, W, 3)`` uint8 predictions.
        truths_uint8: ``(N, H, W, 3)`` uint8 ground truth (same shape).
        inception: the FID Inception in eval mode (``FIDInceptionV3``); None: no FID/IS.
        reference: ``(mu, sigma)`` of the reference set (:func:`reference_statistics`); None: the FID is
            taken against the statistics of ``truths_uint8`` (≥ 2 images).
        splits: Inception Score splits (consecutive, no shuffling; N ≥ splits).
        batch_size: images per Inception forward.
        device: where the Inception forwards run.

    Returns:
        ``psnr`` (dB, mean of capped per-image values), ``ssim``, ``num_images``, ``psnr_identical``
        (identical pairs, scored at the cap), ``psnr_cap_db``; with an Inception also ``inception_score``,
        ``inception_score_std``, ``is_splits`` and one FID key: :data:`FID_VS_REFERENCE` when
        ``reference`` is given, else :data:`FID_VS_TRUTHS`.
    """
    preds, truths = _as_images(preds_uint8, "preds_uint8"), _as_images(truths_uint8, "truths_uint8")
    if preds.shape != truths.shape:
        raise ValueError(f"predictions {preds.shape} and truths {truths.shape} differ in shape")
    if len(preds) == 0:
        raise ValueError("sr_image_metrics needs at least one image")
    cap = psnr_cap(*preds.shape[1:])
    psnrs, ssims, identical = [], [], 0
    for p, t in zip(preds, truths):
        identical += int(np.array_equal(p, t))
        p, t = p.astype(np.float64) / 255.0, t.astype(np.float64) / 255.0
        psnrs.append(min(psnr(p, t, data_range=1.0), cap))
        ssims.append(ssim(p, t, data_range=1.0))
    out: dict[str, Any] = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "num_images": len(preds),
                           "psnr_identical": identical, "psnr_cap_db": cap}
    if inception is None:
        return out
    features, logits = inception_outputs(preds, inception, batch_size=batch_size, device=device)
    out["inception_score"], out["inception_score_std"] = inception_score(logits, splits=splits)
    out["is_splits"] = splits
    if reference is not None:
        mu, sigma = reference
        out[FID_VS_REFERENCE] = frechet_distance_to_features(features, mu, sigma)
    else:
        if len(truths) < 2:
            raise ValueError("FID against the truths needs at least 2 images (or give reference statistics)")
        stats = ActivationStatistics(features.shape[1])
        stats.update(inception_outputs(truths, inception, batch_size=batch_size, device=device)[0])
        out[FID_VS_TRUTHS] = frechet_distance_to_features(features, stats.mu, stats.sigma)
    return out
