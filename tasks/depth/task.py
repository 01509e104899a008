"""Monocular depth adapter: image → (image VE) → z0 of the depth map's shape → flow → depth, in pixel space.

As in the paper, the image VE is trained jointly with the flow plus a reconstruction term that maps the
image into the depth map's shape (``flow.source_recon_weight``); there is no SD-VAE on either side.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from crossflow.model import CrossFlow
from crossflow.utils.images import make_grid, save_png, to_uint8
from tasks.depth.config import DepthConfig
from tasks.depth.data import ImageDepthPairs, denormalize_depth
from tasks.depth.metrics import evaluate_depth
from tasks.depth.visualize import colorize_depth
from tasks.image_source import ImageSourceTask
from tasks.toyworld.pairs import RenderedSplit, rendered_splits

log = logging.getLogger(__name__)


class DepthTask(ImageSourceTask):
    """Image → depth map. Source: the RGB image; target: depth scaled to [-1, 1], ``(1, R, R)``."""

    config_class = DepthConfig

    def __init__(self, config, *, cache_dir: Optional[Path] = None) -> None:
        super().__init__(config, cache_dir=cache_dir)
        self.tc: DepthConfig = config.task
        self._splits: Optional[tuple[RenderedSplit, RenderedSplit]] = None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        r = self.tc.toyworld.resolution
        return (1, r, r)

    @property
    def source_shape(self) -> tuple[int, int, int]:
        r = self.tc.toyworld.resolution
        return (3, r, r)

    def splits(self) -> tuple[RenderedSplit, RenderedSplit]:
        if self._splits is None:
            self._splits = rendered_splits(self.tc.toyworld)
        return self._splits

    def train_dataset(self) -> ImageDepthPairs:
        train, _ = self.splits()
        log.info("toy world depth: %d training pairs", len(train))
        return ImageDepthPairs(train, self.tc.depth_min, self.tc.depth_max)

    # -------------------------------------------------------------- prediction
    @torch.no_grad()
    def predict(self, model: CrossFlow, images: Tensor, *, seed: int = 0, ve_only: bool = False,
                **overrides: Any) -> Tensor:
        """Images ``(B, 3, R, R)`` in [-1, 1] → metric depth ``(B, R, R)`` (batched by ``sample.batch_size``).

        ``ve_only`` decodes the VE mean z0 without running the flow (how far the encoder alone gets).
        """
        model.eval()
        device = next(model.parameters()).device
        gen = torch.Generator(device=device).manual_seed(seed)
        bs = self.config.sample.batch_size
        out = []
        for i in range(0, images.shape[0], bs):
            src = images[i:i + bs].to(device)
            if ve_only:
                z = model.initial_latent(src, z0="mean")
            else:
                z = model.generate(src, sample=self.config.sample, generator=gen, **overrides)
            out.append(denormalize_depth(z.float(), self.tc.depth_min, self.tc.depth_max)[:, 0].cpu())
        return torch.cat(out)

    # -------------------------------------------------------------- pictures
    def _picture(self, images: Tensor, preds: Tensor, truths: Tensor, path: Path, per_row: int = 4) -> Path:
        """Rows of ``input | prediction | truth`` triplets, depth colour-mapped on one shared scale."""
        lo, hi = float(truths.min()), float(truths.max())
        inputs = to_uint8(images)
        pred_rgb, true_rgb = colorize_depth(preds, lo, hi), colorize_depth(truths, lo, hi)
        tiles = np.stack([x for triple in zip(inputs, pred_rgb, true_rgb) for x in triple])
        return save_png(make_grid(tiles, nrow=3 * min(per_row, len(inputs)), upscale=4), path)

    def preview(self, model: CrossFlow, path: Path) -> None:
        _, test = self.splits()
        n = self.tc.preview_items
        images = test.images_float(slice(0, n))
        preds = self.predict(model, images, steps=min(self.config.sample.steps, 10))
        self._picture(images, preds, test.depths[:n, 0], path)

    # -------------------------------------------------------------- evaluation
    def evaluate(self, model: CrossFlow, out_dir: Path, *, num: Optional[int] = None, **overrides: Any) -> dict:
        """Predict depth for the held-out scenes and score it; writes ``metrics.json`` and ``depth.png``.

        Top-level metrics use the in-domain protocol (metric depth, no alignment); ``aligned`` repeats them
        after per-image least-squares scale and shift; ``ve_mean`` decodes the VE mean without the flow;
        ``mean_depth_baseline`` predicts the training-set mean depth map for every image.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        train, test = self.splits()
        n = min(num or len(test), len(test))
        images, truths = test.images_float(slice(0, n)), test.depths[:n, 0]
        seed = overrides.pop("seed", self.config.sample.seed)
        start = time.time()
        preds = self.predict(model, images, seed=seed, **overrides)
        seconds = time.time() - start
        ve_preds = self.predict(model, images, ve_only=True)
        mean_map = train.depths[:, 0].double().mean(0).float()
        baseline = mean_map.expand(n, -1, -1)
        metrics: dict[str, Any] = evaluate_depth(preds.numpy(), truths.numpy())
        metrics["aligned"] = evaluate_depth(preds.numpy(), truths.numpy(), align=True)
        metrics["ve_mean"] = evaluate_depth(ve_preds.numpy(), truths.numpy())
        metrics["mean_depth_baseline"] = evaluate_depth(baseline.numpy(), truths.numpy())
        metrics["abs_rel_vs_mean_baseline"] = metrics["abs_rel"] / metrics["mean_depth_baseline"]["abs_rel"]
        s = self.config.sample
        metrics["settings"] = {"solver": overrides.get("solver", s.solver), "steps": overrides.get("steps", s.steps),
                               "guidance": overrides.get("guidance", s.guidance), "z0": overrides.get("z0", s.z0),
                               "seed": seed, "num_images": n}
        metrics["generation_seconds"] = round(seconds, 2)
        k = min(self.tc.picture_items, n)
        self._picture(images[:k], preds[:k], truths[:k], out_dir / "depth.png")
        np.save(out_dir / "predictions.npy", preds.numpy().astype(np.float32))
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("depth: abs_rel %.4f (mean-map baseline %.4f), delta1 %.3f", metrics["abs_rel"],
                 metrics["mean_depth_baseline"]["abs_rel"], metrics["delta1"])
        return metrics

    # -------------------------------------------------------------- crossflow sample
    def sample_inputs(self, model: CrossFlow, inputs: Sequence[str | Path], out_dir: Path, *, seed: int = 0,
                      **overrides: Any) -> dict:
        """Depth for image files: ``NNNN.png`` (colour-mapped), ``depth.npy`` (metric) and ``depth.png`` (triplets)."""
        images = self.load_input_images(inputs)
        preds = self.predict(model, images, seed=seed, **overrides)
        out_dir = Path(out_dir)
        colored = colorize_depth(preds, self.tc.depth_min, self.tc.depth_max)
        for i, img in enumerate(colored):
            save_png(img, out_dir / f"{i:04d}.png")
        np.save(out_dir / "depth.npy", preds.numpy().astype(np.float32))
        inputs_u8 = to_uint8(images)
        tiles = np.stack([x for pair in zip(inputs_u8, colored) for x in pair])
        save_png(make_grid(tiles, nrow=2, upscale=4), out_dir / "depth.png")
        return {"inputs": len(inputs), "out": str(out_dir)}
