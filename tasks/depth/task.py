"""Monocular depth adapter: image → (image VE) → z0 of the depth map's shape → flow → depth, in pixel space.

As in the paper, the image VE is trained jointly with the flow plus a reconstruction term that maps the
image into the depth map's shape (``flow.source_recon_weight``); there is no SD-VAE on either side.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from crossflow.outputs import DepthOutput
from crossflow.pipeline import Pipeline
from crossflow.schema import SampleConfig
from crossflow.specs import ImageSpec
from crossflow.utils.images import colorize_depth, make_grid, save_png
from tasks.depth.config import DepthConfig
from tasks.depth.data import ImageDepthPairs, denormalize_depth
from tasks.depth.metrics import evaluate_depth
from tasks.image_source import HeldOutEvaluator, ImageSourceTask
from tasks.toyworld.pairs import RenderedSplit

log = logging.getLogger(__name__)


class DepthCodec:
    """Generated latents ``(B, 1, H, W)`` in [-1, 1] → metric depth ``(B, H, W)`` in ``[depth_min, depth_max]``."""

    def __init__(self, depth_min: float, depth_max: float) -> None:
        self.depth_min, self.depth_max = depth_min, depth_max

    def decode(self, latents: Tensor) -> DepthOutput:
        depth = denormalize_depth(latents.float(), self.depth_min, self.depth_max)[:, 0].cpu()
        return DepthOutput(depth=depth, vmin=self.depth_min, vmax=self.depth_max)


class DepthEvaluator(HeldOutEvaluator):
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


class DepthTask(ImageSourceTask):
    """Image → depth map. Source: the RGB image; target: depth scaled to [-1, 1], ``(1, R, R)``."""

    config_class = DepthConfig

    def target_spec(self) -> ImageSpec:
        return ImageSpec(1, self.resolution, self.resolution)

    def train_dataset(self) -> ImageDepthPairs:
        train, _ = self.splits()
        log.info("toy world depth: %d training pairs", len(train))
        return ImageDepthPairs(train, self.tc.depth_min, self.tc.depth_max)

    def codec(self) -> DepthCodec:
        return DepthCodec(self.tc.depth_min, self.tc.depth_max)

    def evaluator(self) -> DepthEvaluator:
        return DepthEvaluator(self)
