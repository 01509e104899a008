"""Evaluation of super-resolution on an image folder (ImageNet's validation images, or toy scenes in its layout).

``N`` usable images of ``task.imagenet.root / eval_dir`` (evenly spaced over the sorted list, so every class is
represented; ``N`` = ``crossflow eval --num``, else ``task.imagenet.num_eval``, else all) are cropped to the
high-res truth (HR), downsampled to the 8-bit low-res input (LR), and the pipeline is given the LR images, batch
by batch (the noise of image ``i`` is seeded by ``i``, so the outputs do not depend on the batch size). Scores,
written to ``metrics.json``:

* PSNR and SSIM per image on 8-bit RGB at full size, averaged, for the model and for bicubic upsampling;
* FID (against the Inception statistics of the same HR images, cached in the output folder, or
  ``task.metrics.fid_reference``) and the Inception Score (``task.metrics.is_splits`` consecutive splits) with the
  network of ``task.metrics.inception_weights`` (:mod:`tasks.super_resolution.image_metrics`); without that file
  both are ``null`` and ``fid_skipped`` says why.

PSNR/SSIM follow :func:`~tasks.super_resolution.image_metrics.sr_image_metrics` (an identical image's PSNR is
capped, so the means stay finite).

``sr.png`` shows rows of ``LR (nearest) | bicubic | model | HR``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from crossflow.config import to_dict
from crossflow.pipeline import Pipeline
from crossflow.schema import SampleConfig
from crossflow.utils.images import to_uint8
from tasks.image_source import upsample_bicubic
from tasks.super_resolution.data import downsample
from tasks.super_resolution.task import SuperResolutionTask, model_name, sr_picture

if TYPE_CHECKING:
    from tasks.super_resolution.imagenet import ImageNetSR

log = logging.getLogger(__name__)


class _Scores:
    """PSNR/SSIM means of :func:`~tasks.super_resolution.image_metrics.sr_image_metrics`, accumulated batch by batch
    (each batch's means weighted by its size: the mean over all images)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {"psnr": 0.0, "ssim": 0.0, "psnr_identical": 0}
        self.count = 0

    def add(self, preds: np.ndarray, truths: np.ndarray) -> None:
        from tasks.super_resolution.image_metrics import sr_image_metrics

        out = sr_image_metrics(preds, truths)
        self.sums["psnr"] += out["psnr"] * len(preds)
        self.sums["ssim"] += out["ssim"] * len(preds)
        self.sums["psnr_identical"] += out["psnr_identical"]
        self.count += len(preds)

    def result(self) -> dict[str, Any]:
        return {"psnr": self.sums["psnr"] / self.count, "ssim": self.sums["ssim"] / self.count,
                "num_images": self.count, "psnr_identical": self.sums["psnr_identical"]}


class ImageNetSREvaluator:
    """Super-resolution scores on the first images of ``task.imagenet.root / eval_dir`` (see the module docstring)."""

    picture_name = "sr.png"

    def __init__(self, task: SuperResolutionTask) -> None:
        self.task = task

    def _upscale(self) -> int:
        """Tile magnification of the picture: small images are enlarged to about 128 px."""
        return max(1, 128 // self.task.resolution)

    def reference(self, data: ImageNetSR, inception: torch.nn.Module, out_dir: Path,
                  device: torch.device) -> tuple[tuple[np.ndarray, np.ndarray], Path]:
        """FID reference ``(mu, sigma)`` and its file: ``task.metrics.fid_reference``, or the statistics of the HR
        evaluation images computed with the same Inception and cached in ``out_dir`` (reused when present)."""
        from crossflow.metrics.fid import load_statistics, save_statistics
        from tasks.super_resolution.image_metrics import reference_statistics

        mc = self.task.tc.metrics
        if mc.fid_reference:
            path = Path(mc.fid_reference).expanduser()
            return load_statistics(path), path
        path = out_dir / f"fid_reference_{self.task.resolution}px_{len(data)}images.npz"
        if path.is_file():
            return load_statistics(path), path
        step = mc.batch_size
        batches = (data.hr(range(i, min(i + step, len(data)))).permute(0, 2, 3, 1).numpy()
                   for i in range(0, len(data), step))
        mu, sigma = reference_statistics(batches, inception, batch_size=step, device=device)
        return (mu, sigma), save_statistics(path, mu, sigma)

    def inception_scores(self, preds: np.ndarray, data: ImageNetSR, out_dir: Path,
                         device: torch.device) -> dict[str, Any]:
        """``fid`` (against :meth:`reference`), ``inception_score`` and ``inception_score_std`` of ``(N, H, W, 3)``
        uint8 predictions, with the Inception of ``task.metrics.inception_weights``."""
        from crossflow.metrics.fid import frechet_distance_to_features
        from crossflow.metrics.fid_inception import load_fid_inception
        from crossflow.metrics.inception_score import inception_score
        from tasks.super_resolution.image_metrics import (
            FID_VS_REFERENCE,
            inception_outputs,
        )

        mc = self.task.tc.metrics
        if len(preds) < mc.is_splits:
            raise ValueError(f"task.metrics.is_splits={mc.is_splits} needs at least that many evaluation images, got "
                             f"{len(preds)} (raise --num or task.imagenet.num_eval)")
        inception = load_fid_inception(mc.inception_weights, device=device)
        (mu, sigma), ref_path = self.reference(data, inception, out_dir, device)
        features, logits = inception_outputs(preds, inception, batch_size=mc.batch_size, device=device)
        mean, std = inception_score(logits, splits=mc.is_splits)
        fid = frechet_distance_to_features(features, mu, sigma)
        return {"fid": fid, FID_VS_REFERENCE: fid, "inception_score": mean, "inception_score_std": std,
                "is_splits": mc.is_splits, "fid_reference": str(ref_path)}

    def evaluate(self, pipe: Pipeline, out_dir: Path, *, num: Optional[int] = None,
                 options: Optional[SampleConfig] = None) -> dict[str, Any]:
        """Generate for the evaluation images, score, write ``metrics.json`` and ``sr.png`` under ``out_dir``.

        Memory: without Inception weights only one batch is held; with them the predictions of all ``N`` images
        are kept as uint8 for FID/IS (``N·3·H·W`` bytes: 9.8 GB for 50,000 images at 256 px).
        """
        options = pipe.options(options)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tc = self.task.tc
        data = self.task.imagenet_split("eval_dir", num or tc.imagenet.num_eval)
        n, size = len(data), (self.task.resolution, self.task.resolution)
        keep = bool(tc.metrics.inception_weights)
        model_scores, bicubic_scores = _Scores(), _Scores()
        kept, shown = [], None
        start_time = time.time()
        for start in range(0, n, options.batch_size):
            hr = data.hr(range(start, min(start + options.batch_size, n)))  # (b, 3, H, W) uint8
            lr = downsample(hr, tc.scale)
            preds = pipe(list(lr), options=options, first_index=start).uint8()  # (b, H, W, 3)
            truths = hr.permute(0, 2, 3, 1).numpy()
            model_scores.add(preds, truths)
            bicubic_scores.add(to_uint8(upsample_bicubic(lr, size)), truths)
            shown = shown or (lr, preds, truths)
            if keep:
                kept.append(preds)
        seconds = time.time() - start_time
        metrics: dict[str, Any] = model_scores.result()
        metrics["bicubic"] = bicubic_scores.result()
        metrics["psnr_gain_over_bicubic"] = metrics["psnr"] - metrics["bicubic"]["psnr"]
        if keep:
            metrics |= self.inception_scores(np.concatenate(kept), data, out_dir, pipe.device)
        else:
            metrics |= {"fid": None, "inception_score": None,
                        "fid_skipped": "task.metrics.inception_weights is not set (the FID Inception weights file)"}
        metrics["model"] = model_name(pipe.model)
        metrics["data"] = {"folder": str(data.folder), "hr_size": self.task.resolution, "scale": tc.scale,
                           "dropped_small": data.dropped_small, "skipped": data.skipped}
        metrics["settings"] = to_dict(options) | {"num_images": n}
        metrics["generation_seconds"] = round(seconds, 2)
        k = min(tc.picture_items, len(shown[0]))
        sr_picture(shown[0][:k], shown[1][:k], shown[2][:k], out_dir / self.picture_name, upscale=self._upscale())
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("super_resolution (%s): %s", data.folder, self.summary(metrics))
        return metrics

    def summary(self, metrics: dict[str, Any]) -> str:
        """One log line of the headline numbers."""
        fid = metrics.get("fid")
        return (f"PSNR {metrics['psnr']:.2f} dB (bicubic {metrics['bicubic']['psnr']:.2f}), SSIM {metrics['ssim']:.4f} "
                f"(bicubic {metrics['bicubic']['ssim']:.4f}), FID {fid if fid is None else round(fid, 2)}")

    def preview(self, pipe: Pipeline, path: Path) -> None:
        """The picture for the first ``task.preview_items`` evaluation images, with at most 10 solver steps."""
        tc = self.task.tc
        data = self.task.imagenet_split("eval_dir", tc.preview_items)
        hr = data.hr(range(len(data)))
        lr = downsample(hr, tc.scale)
        preds = pipe(list(lr), steps=min(pipe.options().steps, 10)).uint8()
        sr_picture(lr, preds, hr.permute(0, 2, 3, 1).numpy(), Path(path), upscale=self._upscale())
