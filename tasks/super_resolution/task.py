"""Super-resolution adapter: low-res → high-res by direct evolution from the upsampled low-res image.

CrossFlow (``model.source_encoder.arch: image``): z0 = VE(bicubic-upsampled low-res), no noise, no
concatenation; with ``input_skip`` the VE mean is the upsampled image plus a learned correction.
Baseline (``arch: noise`` + ``velocity_net.concat_source: true``): Gaussian noise → high-res with the
upsampled low-res image concatenated to the velocity net's input, as the paper's flow-matching baseline.
Regression (``model.kind: regression``): one DiT forward maps the upsampled low-res image to the
high-res one, trained with MSE (:mod:`crossflow.regression`).
All go through the same trainer, pipeline and evaluator; the config alone picks one.

Data: ``task.dataset: toyworld`` renders the built-in toy world; ``imagenet`` reads an image folder
(:mod:`tasks.super_resolution.imagenet`) and evaluates with
:class:`~tasks.super_resolution.imagenet_eval.ImageNetSREvaluator` (PSNR/SSIM, FID/IS). The flow runs in
pixel space (an SD-VAE latent space is not built).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from crossflow.codecs import ImageCodec
from crossflow.config import ConfigError
from crossflow.encoders.image_ve import NoiseSource
from crossflow.model import CrossFlow
from crossflow.outputs import ImageOutput
from crossflow.pipeline import Pipeline
from crossflow.regression import DirectRegression
from crossflow.schema import SampleConfig
from crossflow.specs import ImageSpec
from crossflow.task import Evaluator
from crossflow.utils.images import make_grid, save_png, to_uint8
from tasks.image_source import HeldOutEvaluator, ImageProcessor, ImageSourceTask, upsample_bicubic
from tasks.super_resolution.config import SuperResolutionConfig
from tasks.super_resolution.data import SuperResolutionPairs, downsample
from tasks.super_resolution.metrics import psnr, ssim
from tasks.toyworld.pairs import RenderedSplit

if TYPE_CHECKING:
    from tasks.super_resolution.imagenet import ImageNetSR

log = logging.getLogger(__name__)


def image_scores(preds: np.ndarray, truths: np.ndarray) -> dict[str, float]:
    """Mean PSNR and SSIM over images; ``(N, H, W, C)`` uint8 arrays, scored in [0, 1]."""
    p, t = preds.astype(np.float64) / 255.0, truths.astype(np.float64) / 255.0
    return {"psnr": float(np.mean([psnr(a, b) for a, b in zip(p, t)])),
            "ssim": float(np.mean([ssim(a, b) for a, b in zip(p, t)])), "num_images": len(p)}


def model_name(model: object) -> str:
    """``"crossflow"``, ``"concat_baseline"`` (noise + concatenated source) or ``"regression"``, for metrics.json."""
    if isinstance(model, DirectRegression):
        return "regression"
    return "concat_baseline" if isinstance(model, CrossFlow) and model.concat_source else "crossflow"


def sr_picture(low: Tensor, preds: np.ndarray, truths: np.ndarray, path: Path, *, upscale: int = 4) -> Path:
    """Save rows of ``low-res (nearest) | bicubic | prediction | truth``, two examples per row.

    Args:
        low: ``(k, 3, h, w)`` uint8 low-res inputs.
        preds, truths: ``(k, H, W, 3)`` uint8 predictions and high-res truths (``H = h·factor``).
        path: the PNG to write.
        upscale: nearest-neighbour magnification of every tile (4 for 32 px toy images, 1 at 256 px).
    """
    size = tuple(truths.shape[1:3])
    factor = size[0] // low.shape[-2]
    low_big = low.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3).permute(0, 2, 3, 1).numpy()
    bicubic = to_uint8(upsample_bicubic(low, size))
    cols = [low_big, bicubic, preds, truths]
    tiles = np.stack([x for row in zip(*cols) for x in row])
    return save_png(make_grid(tiles, nrow=4 * min(2, len(low)), upscale=upscale), path)


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
        metrics["model"] = model_name(model)
        return metrics

    def picture(self, inputs: Tensor, output: ImageOutput, test: RenderedSplit, k: int, path: Path) -> Path:
        """Rows of ``low-res (nearest) | bicubic | prediction | truth``."""
        return sr_picture(inputs[:k], output.uint8()[:k], test.images[:k].permute(0, 2, 3, 1).numpy(), path)

    def summary(self, metrics: dict[str, Any]) -> str:
        return (f"PSNR {metrics['psnr']:.2f} dB (bicubic {metrics['bicubic']['psnr']:.2f}), SSIM {metrics['ssim']:.4f} "
                f"(bicubic {metrics['bicubic']['ssim']:.4f})")


class SuperResolutionTask(ImageSourceTask):
    """Low-res image → high-res image. Source (the upsampled low-res image) and target are ``(3, R, R)`` in [-1, 1],
    ``R`` = ``task.toyworld.resolution`` (toy world) or ``task.imagenet.hr_size`` (image folders).
    """

    config_class = SuperResolutionConfig

    @property
    def resolution(self) -> int:
        """High-res side ``R`` of the selected dataset."""
        return int(self.tc.hr_size)

    def image_folder(self, which: str) -> Path:
        """``task.imagenet.root / task.imagenet.<which>`` (``which``: ``"train_dir"`` or ``"eval_dir"``).

        Raises:
            ConfigError: ``task.imagenet.root`` is not set.
        """
        ic = self.tc.imagenet
        if not ic.root:
            raise ConfigError("task.imagenet.root: not set; give the folder holding "
                              f"{ic.train_dir}/ and {ic.eval_dir}/ (e.g. `crossflow toy-data imagenet OUT` writes one)")
        return Path(ic.root).expanduser() / getattr(ic, which)

    def imagenet_split(self, which: str, num: Optional[int] = None) -> ImageNetSR:
        """The :class:`~tasks.super_resolution.imagenet.ImageNetSR` dataset of ``train_dir`` or ``eval_dir``
        (first ``num`` usable images; None: all)."""
        from tasks.super_resolution.imagenet import ImageNetSR

        ic = self.tc.imagenet
        return ImageNetSR(self.image_folder(which), ic.hr_size, self.tc.scale, ic.max_skipped_fraction, num=num)

    def target_spec(self) -> ImageSpec:
        return ImageSpec(3, self.resolution, self.resolution)

    def source_processor(self) -> ImageProcessor:
        """Inputs are low-res images (resized to ``R / scale`` first when they are not), upsampled to ``R``."""
        return ImageProcessor(self.resolution, input_size=self.resolution // self.tc.scale)

    def train_dataset(self) -> Dataset:
        """Toy world: rendered pairs; imagenet: high-res crops of ``root/train_dir`` with their upsampled low-res."""
        if self.tc.dataset == "imagenet":
            return self.imagenet_split("train_dir")
        train, _ = self.splits()
        log.info("toy world super-resolution: %d training pairs, %d → %d", len(train),
                 self.resolution // self.tc.scale, self.resolution)
        return SuperResolutionPairs(train, self.tc.scale)

    def codec(self) -> ImageCodec:
        return ImageCodec()

    def evaluator(self) -> Evaluator:
        """Toy world: the held-out split; imagenet: the first images of ``root/eval_dir`` (FID/IS as configured)."""
        if self.tc.dataset == "imagenet":
            from tasks.super_resolution.imagenet_eval import ImageNetSREvaluator

            return ImageNetSREvaluator(self)
        return SuperResolutionEvaluator(self)

    @classmethod
    def toy_data_formats(cls) -> dict[str, Any]:
        """``crossflow toy-data imagenet OUT``: toy scenes as JPEGs in ImageNet's ``train/<wnid>/``, ``val/<wnid>/``
        layout (with a few too-small and non-square images)."""
        from tasks.super_resolution.toy_imagenet import write_toy_imagenet

        return {"imagenet": write_toy_imagenet}
