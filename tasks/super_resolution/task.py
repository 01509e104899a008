"""Super-resolution adapter: low-res → high-res by direct evolution from the upsampled low-res image.

CrossFlow (``model.source_encoder.arch: image``): z0 = VE(bicubic-upsampled low-res), no noise, no
concatenation; with ``input_skip`` the VE mean is the upsampled image plus a learned correction.
Baseline (``arch: noise`` + ``velocity_net.concat_source: true``): Gaussian noise → high-res with the
upsampled low-res image concatenated to the velocity net's input, as the paper's flow-matching baseline.
Both go through the same trainer, pipeline, solver and guidance code; the config alone picks one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from crossflow.codecs import ImageCodec
from crossflow.encoders.image_ve import NoiseSource
from crossflow.model import CrossFlow
from crossflow.outputs import ImageOutput
from crossflow.pipeline import Pipeline
from crossflow.schema import SampleConfig
from crossflow.specs import ImageSpec
from crossflow.utils.images import make_grid, save_png, to_uint8
from tasks.image_source import HeldOutEvaluator, ImageProcessor, ImageSourceTask, upsample_bicubic
from tasks.super_resolution.config import SuperResolutionConfig
from tasks.super_resolution.data import SuperResolutionPairs, downsample
from tasks.super_resolution.metrics import psnr, ssim
from tasks.toyworld.pairs import RenderedSplit

log = logging.getLogger(__name__)


def image_scores(preds: np.ndarray, truths: np.ndarray) -> dict[str, float]:
    """Mean PSNR and SSIM over images; ``(N, H, W, C)`` uint8 arrays, scored in [0, 1]."""
    p, t = preds.astype(np.float64) / 255.0, truths.astype(np.float64) / 255.0
    return {"psnr": float(np.mean([psnr(a, b) for a, b in zip(p, t)])),
            "ssim": float(np.mean([ssim(a, b) for a, b in zip(p, t)])), "num_images": len(p)}


class SuperResolutionEvaluator(HeldOutEvaluator):
    """PSNR/SSIM (mean over images, on 8-bit outputs) of the model, of bicubic upsampling and of the VE mean
    alone (z0, no flow; CrossFlow only). The pipeline is given the low-res images. Writes ``sr.png``."""

    picture_name = "sr.png"

    def inputs(self, test: RenderedSplit, n: int) -> Tensor:
        return downsample(test.images[:n], self.task.tc.scale)

    def score(self, pipe: Pipeline, output: ImageOutput, inputs: Tensor, test: RenderedSplit, n: int,
              options: SampleConfig, out_dir: Path) -> dict[str, Any]:
        truths = test.images[:n].permute(0, 2, 3, 1).numpy()
        bicubic = upsample_bicubic(inputs, tuple(test.images.shape[-2:]))
        metrics: dict[str, Any] = image_scores(output.uint8(), truths)
        metrics["bicubic"] = image_scores(to_uint8(bicubic), truths)
        model = pipe.model
        crossflow = isinstance(model, CrossFlow) and not isinstance(model.source_encoder, NoiseSource)
        if crossflow and not model.concat_source:
            ve_mean = pipe.decode(pipe.initial_latents(list(inputs), z0="mean"))
            metrics["ve_mean"] = image_scores(ve_mean.uint8(), truths)
        metrics["psnr_gain_over_bicubic"] = metrics["psnr"] - metrics["bicubic"]["psnr"]
        metrics["model"] = "concat_baseline" if isinstance(model, CrossFlow) and model.concat_source else "crossflow"
        return metrics

    def picture(self, inputs: Tensor, output: ImageOutput, test: RenderedSplit, k: int, path: Path) -> Path:
        """Rows of ``low-res (nearest) | bicubic | prediction | truth``."""
        factor = self.task.tc.scale
        low = inputs[:k]
        low_big = low.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3).permute(0, 2, 3, 1).numpy()
        bicubic = to_uint8(upsample_bicubic(low, tuple(test.images.shape[-2:])))
        cols = [low_big, bicubic, output.uint8()[:k], test.images[:k].permute(0, 2, 3, 1).numpy()]
        tiles = np.stack([x for row in zip(*cols) for x in row])
        return save_png(make_grid(tiles, nrow=4 * min(2, k), upscale=4), path)

    def summary(self, metrics: dict[str, Any]) -> str:
        return (f"PSNR {metrics['psnr']:.2f} dB (bicubic {metrics['bicubic']['psnr']:.2f}), SSIM {metrics['ssim']:.4f} "
                f"(bicubic {metrics['bicubic']['ssim']:.4f})")


class SuperResolutionTask(ImageSourceTask):
    """Low-res image → high-res image. Source (the upsampled low-res image) and target are ``(3, R, R)`` in [-1, 1]."""

    config_class = SuperResolutionConfig

    def target_spec(self) -> ImageSpec:
        return ImageSpec(3, self.resolution, self.resolution)

    def source_processor(self) -> ImageProcessor:
        """Inputs are low-res images (resized to ``R / scale`` first when they are not), upsampled to ``R``."""
        return ImageProcessor(self.resolution, input_size=self.resolution // self.tc.scale)

    def train_dataset(self) -> SuperResolutionPairs:
        train, _ = self.splits()
        log.info("toy world super-resolution: %d training pairs, %d → %d", len(train),
                 self.resolution // self.tc.scale, self.resolution)
        return SuperResolutionPairs(train, self.tc.scale)

    def codec(self) -> ImageCodec:
        return ImageCodec()

    def evaluator(self) -> SuperResolutionEvaluator:
        return SuperResolutionEvaluator(self)
