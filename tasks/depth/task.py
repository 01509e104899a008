"""Monocular depth adapter: image → (image VE) → z0 of the depth map's shape → flow → depth, in pixel space.

As in the paper, the image VE is trained jointly with the flow plus a reconstruction term that maps the
image into the depth map's shape (``flow.source_recon_weight``); there is no SD-VAE on either side.
Three kinds of data (``task.dataset``): the built-in toy world (metric depth, linear in [depth_min,
depth_max]); Marigold's zero-shot recipe (Hypersim + Virtual KITTI 2, per-image quantile-normalised
targets, affine-invariant predictions in [0, 1], evaluated with least-squares alignment); KITTI / NYUv2
in-domain (metric depth, log-mapped). Every model is scored on the field's benchmarks through
:func:`tasks.depth.benchmarks.evaluate_benchmark` (``crossflow eval RUN --benchmark nyu_v2 ...``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from crossflow.config import ConfigError
from crossflow.outputs import DepthOutput
from crossflow.pipeline import Pipeline
from crossflow.schema import SampleConfig
from crossflow.specs import ImageSpec
from crossflow.utils.images import colorize_depth, make_grid, save_png
from tasks.depth.benchmark_eval import BenchmarkEvaluation
from tasks.depth.config import DepthConfig
from tasks.depth.data import ImageDepthPairs, denormalize_depth
from tasks.depth.metrics import evaluate_depth
from tasks.depth.toy_formats import TOY_FORMATS
from tasks.depth.toy_training import TOY_TRAINING_FORMATS
from tasks.depth.training import (IN_DOMAIN_MAPPINGS, DepthTrainingPairs, HypersimDepth, KittiEigenTrain,
                                  MetricDepthMapping, NyuLabeledMat, NyuSyncTrain, QuantileNormalizer,
                                  TrainingTransform, VirtualKittiDepth, in_domain_pairs, resize_rgb, zero_shot_pairs)
from tasks.image_source import HeldOutEvaluator, ImageProcessor, ImageSourceTask
from tasks.toyworld.pairs import RenderedSplit

log = logging.getLogger(__name__)


class DepthCodec:
    """Generated latents ``(B, 1, H, W)`` in [-1, 1] → metric depth ``(B, H, W)`` in ``[depth_min, depth_max]``."""

    def __init__(self, depth_min: float, depth_max: float) -> None:
        self.depth_min, self.depth_max = depth_min, depth_max

    def decode(self, latents: Tensor) -> DepthOutput:
        depth = denormalize_depth(latents.float(), self.depth_min, self.depth_max)[:, 0].cpu()
        return DepthOutput(depth=depth, vmin=self.depth_min, vmax=self.depth_max)


class DepthEvaluator(BenchmarkEvaluation, HeldOutEvaluator):
    """In-domain metrics (metric depth, no alignment) on the held-out scenes; ``aligned`` after per-image
    least-squares scale and shift; ``ve_mean`` decodes the VE mean without the flow; ``mean_depth_baseline``
    predicts the training-set mean depth map for every image. Writes ``depth.png`` and ``predictions.npy``."""

    picture_name = "depth.png"

    def score(self, pipe: Pipeline, output: DepthOutput, inputs: Tensor, test: RenderedSplit, n: int,
              options: SampleConfig, out_dir: Path) -> dict[str, Any]:
        train, _ = self.task.splits()
        preds, truths = output.depth.numpy(), test.depths[:n, 0].numpy()
        ve_mean = pipe.decode(pipe.initial_latents(list(inputs), z0="mean")).depth.numpy()
        mean_map = train.depths[:, 0].double().mean(0).float().expand(n, -1, -1).numpy()
        metrics: dict[str, Any] = evaluate_depth(preds, truths)
        metrics["aligned"] = evaluate_depth(preds, truths, align=True)
        metrics["ve_mean"] = evaluate_depth(ve_mean, truths)
        metrics["mean_depth_baseline"] = evaluate_depth(mean_map, truths)
        metrics["abs_rel_vs_mean_baseline"] = metrics["abs_rel"] / metrics["mean_depth_baseline"]["abs_rel"]
        np.save(out_dir / "predictions.npy", preds.astype(np.float32))
        return metrics

    def picture(self, inputs: Tensor, output: DepthOutput, test: RenderedSplit, k: int, path: Path) -> Path:
        """Rows of ``input | prediction | truth`` triplets, depth colour-mapped on the truths' shared scale."""
        truths = test.depths[:k, 0]
        lo, hi = float(truths.min()), float(truths.max())
        tiles = zip(inputs[:k].permute(0, 2, 3, 1).numpy(), colorize_depth(output.depth[:k], lo, hi),
                    colorize_depth(truths, lo, hi))
        return save_png(make_grid(np.stack([x for triple in tiles for x in triple]), nrow=3 * min(4, k), upscale=4),
                        path)

    def summary(self, metrics: dict[str, Any]) -> str:
        return (f"abs_rel {metrics['abs_rel']:.4f} (mean-map baseline {metrics['mean_depth_baseline']['abs_rel']:.4f}), "
                f"delta1 {metrics['delta1']:.3f}")


class RealDepthEvaluator(BenchmarkEvaluation):
    """Models trained on real data are scored on the field's benchmarks (:meth:`evaluate_benchmark`); the
    preview shows the first training pairs: input | prediction | truth (invalid pixels black)."""

    def __init__(self, task: "DepthTask") -> None:
        self.task = task

    def evaluate(self, pipe: Pipeline, out_dir: Path, *, num: Optional[int] = None,
                 options: Optional[SampleConfig] = None) -> dict[str, Any]:
        raise ValueError(f"a depth model trained on task.dataset={self.task.tc.dataset!r} is evaluated on a benchmark: "
                         f"crossflow eval RUN --benchmark {{{','.join(self.benchmarks())}}} --data PATH --filenames LIST")

    def preview(self, pipe: Pipeline, path: Path) -> None:
        data = self.task.train_dataset()
        batch = data.__getitems__(list(range(min(self.task.tc.preview_items, len(data)))))
        rgb = ((batch["source"] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        pred = pipe(list(rgb), steps=min(pipe.options().steps, 10)).depth
        truth = pipe.codec.decode(batch["target"]).depth
        lo, hi = float(truth.min()), float(truth.max())
        truth_rgb = colorize_depth(truth, lo, hi) * batch["target_mask"][:, 0, ..., None].numpy().astype(np.uint8)
        tiles = zip(rgb, colorize_depth(pred, lo, hi), truth_rgb)
        save_png(make_grid(np.stack([x for triple in tiles for x in triple]), nrow=3 * min(4, len(rgb)), upscale=2),
                 path)


class RelativeDepthCodec:
    """Zero-shot models: latents in [-1, 1] → affine-invariant depth in [0, 1] (as Marigold's output)."""

    def decode(self, latents: Tensor) -> DepthOutput:
        return DepthOutput(depth=((latents.float().clamp(-1.0, 1.0) + 1.0) / 2.0)[:, 0].cpu(), vmin=0.0, vmax=1.0)


class MetricDepthCodec:
    """In-domain models: latents in [-1, 1] → metres through the training mapping's inverse."""

    def __init__(self, mapping: MetricDepthMapping) -> None:
        self.mapping = mapping

    def decode(self, latents: Tensor) -> DepthOutput:
        depth = self.mapping.decode(latents.float())[:, 0].cpu()
        return DepthOutput(depth=depth, vmin=self.mapping.d_min, vmax=self.mapping.d_max)


class DepthTask(ImageSourceTask):
    """Image → depth map. Source: the RGB image; target: the depth map in [-1, 1], ``(1, H, W)``."""

    config_class = DepthConfig

    @property
    def real(self) -> bool:
        return self.tc.dataset != "toyworld"

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` the model works at."""
        h, w = self.tc.resolution
        return (int(h), int(w)) if self.real else (self.resolution, self.resolution)

    def source_spec(self) -> ImageSpec:
        return ImageSpec(3, *self.size)

    def target_spec(self) -> ImageSpec:
        return ImageSpec(1, *self.size)

    def source_processor(self) -> ImageProcessor:
        """Any image → the working size, stretched, resized as the training data was (area / bilinear)."""
        return ImageProcessor(self.size, resize=resize_rgb if self.real else None)

    def metric_mapping(self) -> MetricDepthMapping:
        """The in-domain depth mapping (``task.dataset`` kitti or nyu)."""
        return IN_DOMAIN_MAPPINGS[self.tc.dataset]

    def train_dataset(self) -> Dataset:
        if not self.real:
            train, _ = self.splits()
            log.info("toy world depth: %d training pairs", len(train))
            return ImageDepthPairs(train, self.tc.depth_min, self.tc.depth_max)
        d = self.tc.data
        pairs = {"max_skipped": d.max_skipped, "hflip_probability": d.hflip_probability}
        if self.tc.dataset == "zero_shot":
            # read at the native size: the quantiles see every pixel, and one resize goes to the working size
            hypersim = HypersimDepth(_required(d, "hypersim_root"), _required(d, "hypersim_list"), size=None)
            if d.vkitti_root is None:
                log.info("zero-shot depth: Hypersim alone (%d samples; task.data.vkitti_root is null)", len(hypersim))
                return DepthTrainingPairs(hypersim, TrainingTransform(self.size, QuantileNormalizer()), **pairs)
            vkitti = VirtualKittiDepth(d.vkitti_root, _required(d, "vkitti_list"))
            log.info("zero-shot depth: Hypersim %d + Virtual KITTI 2 %d samples, mixed 9:1", len(hypersim), len(vkitti))
            return zero_shot_pairs(hypersim, vkitti, self.size, seed=self.config.train.seed, length=d.epoch_length,
                                   **pairs)
        if self.tc.dataset == "kitti":
            reader = KittiEigenTrain(_required(d, "kitti_root"), _required(d, "kitti_list"),
                                     depth_root=d.kitti_depth_root)
        elif d.nyu_mat is not None:
            reader = NyuLabeledMat(d.nyu_mat, _required(d, "nyu_splits"), split="train")
        else:
            reader = NyuSyncTrain(_required(d, "nyu_root"), _required(d, "nyu_list"))
        log.info("in-domain depth (%s): %d training samples", self.tc.dataset, len(reader))
        return in_domain_pairs(reader, self.size, self.metric_mapping(), **pairs)

    def codec(self) -> DepthCodec | RelativeDepthCodec | MetricDepthCodec:
        if self.tc.dataset == "zero_shot":
            return RelativeDepthCodec()
        if self.real:
            return MetricDepthCodec(self.metric_mapping())
        return DepthCodec(self.tc.depth_min, self.tc.depth_max)

    def evaluator(self) -> DepthEvaluator | RealDepthEvaluator:
        return RealDepthEvaluator(self) if self.real else DepthEvaluator(self)

    @classmethod
    def toy_data_formats(cls) -> dict[str, Callable[..., Any]]:
        """``crossflow toy-data FORMAT OUT``: toy scenes in the evaluation layouts (nyu, kitti) and the training
        layouts (hypersim, vkitti, kitti_train, nyu_mat, nyu_sync) of the real datasets."""
        return dict(TOY_FORMATS) | dict(TOY_TRAINING_FORMATS)


def _required(section: Any, key: str) -> str:
    value = getattr(section, key)
    if value is None:
        raise ConfigError(f"task.data.{key}: required for this task.dataset (a directory, .tar or list file)")
    return value
