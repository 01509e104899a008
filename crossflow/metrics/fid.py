"""Fréchet Inception Distance: Fréchet distance, streaming activation statistics, image folders, reference ``.npz``.

The pipeline follows the official CrossFlow evaluation (pytorch-fid with the FID Inception weights):
images as saved PNGs (uint8), 512×512 images first resized to 256×256 with PIL's default filter,
then [0, 1] tensors that :class:`~crossflow.metrics.fid_inception.FIDInceptionV3` resizes to 299×299
bilinearly and maps to [-1, 1]; 2048-d pool3 features; ``mu`` = mean, ``sigma`` = unbiased covariance.
Reference statistics are ``.npz`` files with the keys ``mu`` and ``sigma``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from crossflow.metrics.fid_inception import FID_FEATURE_DIM

log = logging.getLogger(__name__)

#: Image file extensions read from a folder (as pytorch-fid).
IMAGE_EXTENSIONS = {".bmp", ".jpg", ".jpeg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}


# ----------------------------------------------------------------------------- distance
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance ``|mu1 − mu2|² + tr(S1 + S2 − 2 (S1 S2)^½)`` between two Gaussians.

    As the standard FID code: if the matrix square root of ``S1 S2`` is not finite (a singular
    product) it is recomputed with ``eps`` added to both diagonals; a small imaginary part from
    numerical error is dropped, a large one (diagonal ``|imag| > 1e-3``) is an error.

    Args:
        mu1, mu2: ``(D,)`` means.
        sigma1, sigma2: ``(D, D)`` covariances.
        eps: diagonal offset for the singular case.

    Returns:
        The distance as a Python float.
    """
    try:
        from scipy import linalg
    except ImportError as exc:  # scipy comes with the test extra and with sentence-transformers
        raise ImportError("frechet_distance needs scipy (pip install scipy)") from exc
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"covariances {sigma1.shape} and {sigma2.shape} do not match the mean dimension {mu1.shape[0]}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("FID: singular product of covariances; adding %g to the diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: matrix square root has a large imaginary component "
                             f"({np.max(np.abs(covmean.imag)):.3g}); the covariances are not valid")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance_to_features(features: Tensor | np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between the Gaussian of feature rows (mean, unbiased covariance) and ``(mu2, sigma2)``.

    With ``N ≤ D`` rows the sample covariance is ``S1 = AᵀA`` with ``A = (X − mean) / √(N − 1)`` of rank
    < N, and the nonzero eigenvalues of ``S1 S2`` are those of the symmetric PSD ``N×N`` matrix
    ``A S2 Aᵀ``, so ``tr((S1 S2)^½) = Σ √eig(A S2 Aᵀ)`` exactly, in ``O(N·D²)`` (milliseconds for a few
    hundred images, where a 2048-d ``sqrtm`` takes ~10 s per call on one CPU thread). This is the exact
    value, which :func:`frechet_distance` only approximates on such singular covariances (its ``eps``
    retry). With ``N > D`` it is :func:`frechet_distance` of the rows' statistics.

    Args:
        features: ``(N, D)`` rows, N ≥ 2.
        mu2: ``(D,)`` reference mean.
        sigma2: ``(D, D)`` reference covariance.
    """
    x = features.detach().double().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features, np.float64)
    mu2, sigma2 = np.asarray(mu2, np.float64), np.asarray(sigma2, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"expected (N, D) features with N ≥ 2, got shape {x.shape}")
    n, d = x.shape
    if mu2.shape != (d,) or sigma2.shape != (d, d):
        raise ValueError(f"reference statistics {mu2.shape}, {sigma2.shape} do not match {d}-d features")
    mu1 = x.mean(axis=0)
    if n > d:
        return frechet_distance(mu1, np.cov(x, rowvar=False), mu2, sigma2)
    a = (x - mu1) / np.sqrt(n - 1)
    inner = a @ sigma2 @ a.T
    eig = np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)  # PSD up to rounding
    diff = mu1 - mu2
    return float(diff @ diff + np.sum(a * a) + np.trace(sigma2) - 2 * np.sum(np.sqrt(eig)))


# ----------------------------------------------------------------------------- statistics
class ActivationStatistics:
    """Running mean and covariance of feature rows, merged batch by batch (Chan et al.) in float64.

    Args:
        dim: feature width (2048 for Inception pool3).
    """

    def __init__(self, dim: int = FID_FEATURE_DIM) -> None:
        self.dim = dim
        self.count = 0
        self._mean = np.zeros(dim, np.float64)
        self._m2 = np.zeros((dim, dim), np.float64)  # sum of outer products of deviations

    def update(self, features: Tensor | np.ndarray) -> None:
        """Add ``(B, dim)`` feature rows."""
        x = features.detach().double().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected features of shape (B, {self.dim}), got {x.shape}")
        n_b = x.shape[0]
        if n_b == 0:
            return
        mean_b = x.mean(axis=0)
        centered = x - mean_b
        m2_b = centered.T @ centered
        n = self.count + n_b
        delta = mean_b - self._mean
        self._m2 += m2_b + np.outer(delta, delta) * (self.count * n_b / n)
        self._mean += delta * (n_b / n)
        self.count = n

    @property
    def mu(self) -> np.ndarray:
        """``(dim,)`` mean."""
        return self._mean.copy()

    @property
    def sigma(self) -> np.ndarray:
        """``(dim, dim)`` unbiased covariance (as ``np.cov(rowvar=False)``); needs two rows."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        return self._m2 / (self.count - 1)


def save_statistics(path: str | Path, mu: np.ndarray, sigma: np.ndarray, **extra: Any) -> Path:
    """Write reference statistics as ``.npz`` with keys ``mu``, ``sigma`` (+ any ``extra`` arrays)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # a file handle: np.savez would append .npz to other suffixes
        np.savez(fh, mu=mu, sigma=sigma, **extra)
    return path


def load_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(mu, sigma)`` from a reference ``.npz`` (keys ``mu`` and ``sigma``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID reference statistics {path} not found")
    with np.load(path) as data:
        missing = [k for k in ("mu", "sigma") if k not in data.files]
        if missing:
            raise ValueError(f"{path} lacks the key(s) {missing}; found {data.files} (expected 'mu' and 'sigma')")
        return data["mu"].astype(np.float64), data["sigma"].astype(np.float64)


# ----------------------------------------------------------------------------- images
def official_resize(image: Image.Image) -> Image.Image:
    """The official evaluation's only resize: a 512×512 image becomes 256×256 (PIL's default filter)."""
    return image.resize((256, 256)) if image.size == (512, 512) else image


def uint8_to_input(images: np.ndarray, *, resize_512: bool = True) -> list[Tensor]:
    """``(N, H, W, 3)`` uint8 images → ``(3, H', W')`` float tensors in [0, 1] (after :func:`official_resize`)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
    out = []
    for img in images:
        if resize_512 and img.shape[:2] == (512, 512):
            img = np.asarray(official_resize(Image.fromarray(img)))
        out.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0)  # a writable copy
    return out


@torch.no_grad()
def inception_features(model: torch.nn.Module, images: list[Tensor], *, device: torch.device | str) -> Tensor:
    """Pool3 features ``(N, 2048)`` of ``(3, H, W)`` tensors in [0, 1]; images of equal size share a forward."""
    feats: list[Optional[Tensor]] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    for indices in groups.values():
        batch = torch.stack([images[i] for i in indices]).to(device)
        for i, f in zip(indices, model(batch).float().cpu()):
            feats[i] = f
    return torch.stack(feats)


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}")
    return files


class _ImageFiles(torch.utils.data.Dataset):
    def __init__(self, files: list[Path], resize_512: bool) -> None:
        self.files, self.resize_512 = files, resize_512

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        try:
            with Image.open(self.files[i]) as im:
                img = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"cannot read image {self.files[i]}: {exc}") from exc
        return uint8_to_input(img[None], resize_512=self.resize_512)[0]


def folder_statistics(folder: str | Path, model: torch.nn.Module, *, batch_size: int = 50,
                      device: torch.device | str = "cpu", num_workers: int = 0, resize_512: bool = True,
                      progress: bool = True) -> ActivationStatistics:
    """Inception statistics of every image in ``folder`` (see :func:`list_images`), with a progress bar."""
    files = list_images(folder)
    loader = torch.utils.data.DataLoader(_ImageFiles(files, resize_512), batch_size=batch_size,
                                         num_workers=num_workers, collate_fn=list)
    stats = ActivationStatistics()
    for batch in tqdm(loader, desc=f"FID features {Path(folder).name}", disable=not progress, unit="batch"):
        stats.update(inception_features(model, batch, device=device))
    return stats


def batch_statistics(batches: Iterable[np.ndarray], model: torch.nn.Module, *, device: torch.device | str = "cpu",
                     resize_512: bool = True, progress: bool = True,
                     total: Optional[int] = None) -> ActivationStatistics:
    """Inception statistics of uint8 image batches ``(B, H, W, 3)`` (e.g. generated images after ``to_uint8``)."""
    stats = ActivationStatistics()
    it: Iterator = iter(batches)
    for batch in tqdm(it, desc="FID features", disable=not progress, total=total, unit="batch"):
        stats.update(inception_features(model, uint8_to_input(batch, resize_512=resize_512), device=device))
    return stats


def fid_against_reference(stats: ActivationStatistics, reference: str | Path) -> float:
    """FID between the statistics of a sample and a reference ``.npz``."""
    mu, sigma = load_statistics(reference)
    if mu.shape != (stats.dim,):
        raise ValueError(f"reference {reference} has {mu.shape[0]}-d statistics, the features are {stats.dim}-d")
    return frechet_distance(stats.mu, stats.sigma, mu, sigma)
