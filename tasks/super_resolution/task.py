"""Super-resolution adapter: low-res → high-res by direct evolution from the upsampled low-res image.

CrossFlow (``model.source_encoder.arch: image``): z0 = VE(bicubic-upsampled low-res), no noise, no
concatenation; with ``input_skip`` the VE mean is the upsampled image plus a learned correction.
Baseline (``arch: noise`` + ``velocity_net.cond_channels: 3``): Gaussian noise → high-res with the
upsampled low-res image concatenated to the velocity net's input, as the paper's flow-matching baseline.
Both go through the same trainer, solver and guidance code; the config alone picks one.
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
from tasks.image_source import ImageSourceTask
from tasks.super_resolution.config import SuperResolutionConfig
from tasks.super_resolution.data import SuperResolutionPairs, downsample, upsample
from tasks.super_resolution.metrics import psnr, ssim
from tasks.toyworld.pairs import RenderedSplit, rendered_splits

log = logging.getLogger(__name__)


def image_scores(preds: np.ndarray, truths: np.ndarray) -> dict[str, float]:
    """Mean PSNR and SSIM over images; ``(N, H, W, C)`` uint8 arrays, scored in [0, 1]."""
    p, t = preds.astype(np.float64) / 255.0, truths.astype(np.float64) / 255.0
    return {"psnr": float(np.mean([psnr(a, b) for a, b in zip(p, t)])),
            "ssim": float(np.mean([ssim(a, b) for a, b in zip(p, t)])), "num_images": len(p)}


class SuperResolutionTask(ImageSourceTask):
    """Low-res image → high-res image. Source and target are ``(3, R, R)`` in [-1, 1]."""

    config_class = SuperResolutionConfig

    def __init__(self, config, *, cache_dir: Optional[Path] = None) -> None:
        super().__init__(config, cache_dir=cache_dir)
        self.tc: SuperResolutionConfig = config.task
        self._splits: Optional[tuple[RenderedSplit, RenderedSplit]] = None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        r = self.tc.toyworld.resolution
        return (3, r, r)

    @property
    def source_shape(self) -> tuple[int, int, int]:
        return self.latent_shape

    @property
    def uses_cond(self) -> bool:
        """Whether the velocity net takes the upsampled low-res image as concatenated conditioning."""
        return self.config.model.velocity_net.cond_channels > 0

    def splits(self) -> tuple[RenderedSplit, RenderedSplit]:
        if self._splits is None:
            self._splits = rendered_splits(self.tc.toyworld)
        return self._splits

    def train_dataset(self) -> SuperResolutionPairs:
        train, _ = self.splits()
        log.info("toy world super-resolution: %d training pairs, %d → %d", len(train),
                 self.tc.toyworld.resolution // self.tc.scale, self.tc.toyworld.resolution)
        return SuperResolutionPairs(train, self.tc.scale, with_cond=self.uses_cond)

    def low_res_inputs(self, images_uint8: Tensor) -> tuple[Tensor, Tensor]:
        """High-res uint8 ``(B, 3, R, R)`` → (low-res uint8, bicubic-upsampled float in [-1, 1])."""
        low = downsample(images_uint8, self.tc.scale)
        return low, upsample(low, tuple(images_uint8.shape[-2:]))

    # -------------------------------------------------------------- prediction
    @torch.no_grad()
    def predict(self, model: CrossFlow, upsampled: Tensor, *, seed: int = 0, ve_only: bool = False,
                **overrides: Any) -> Tensor:
        """Upsampled low-res ``(B, 3, R, R)`` → high-res ``(B, 3, R, R)`` in [-1, 1], batched.

        ``ve_only`` returns the VE mean z0 without running the flow.
        """
        model.eval()
        device = next(model.parameters(), torch.empty(0)).device
        gen = torch.Generator(device=device).manual_seed(seed)
        bs = self.config.sample.batch_size
        out = []
        for i in range(0, upsampled.shape[0], bs):
            src = upsampled[i:i + bs].to(device)
            if ve_only:
                z = model.initial_latent(src, z0="mean")
            else:
                z = model.generate(src, sample=self.config.sample, generator=gen,
                                   cond=src if self.uses_cond else None, **overrides)
            out.append(z.float().clamp(-1.0, 1.0).cpu())
        return torch.cat(out)

    def _picture(self, low: Tensor, bicubic: Tensor, preds: Tensor, truths: Tensor, path: Path) -> Path:
        """Rows of ``low-res (nearest) | bicubic | prediction | truth``."""
        factor = self.tc.scale
        low_big = low.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
        cols = [low_big.permute(0, 2, 3, 1).numpy(), to_uint8(bicubic), to_uint8(preds), to_uint8(truths)]
        tiles = np.stack([x for row in zip(*cols) for x in row])
        return save_png(make_grid(tiles, nrow=4 * min(2, len(truths)), upscale=4), path)

    def preview(self, model: CrossFlow, path: Path) -> None:
        _, test = self.splits()
        n = self.tc.preview_items
        low, up = self.low_res_inputs(test.images[:n])
        preds = self.predict(model, up, steps=min(self.config.sample.steps, 10))
        self._picture(low, up, preds, test.images_float(slice(0, n)), path)

    # -------------------------------------------------------------- evaluation
    def evaluate(self, model: CrossFlow, out_dir: Path, *, num: Optional[int] = None, **overrides: Any) -> dict:
        """Super-resolve the held-out scenes; PSNR/SSIM (mean over images, on 8-bit outputs) of the model, of
        bicubic upsampling and of the VE mean alone (z0, no flow). Writes ``metrics.json`` and ``sr.png``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _, test = self.splits()
        n = min(num or len(test), len(test))
        truths_u8 = test.images[:n]
        low, up = self.low_res_inputs(truths_u8)
        seed = overrides.pop("seed", self.config.sample.seed)
        start = time.time()
        preds = self.predict(model, up, seed=seed, **overrides)
        seconds = time.time() - start
        truth_hwc = truths_u8.permute(0, 2, 3, 1).numpy()
        metrics: dict[str, Any] = image_scores(to_uint8(preds), truth_hwc)
        metrics["bicubic"] = image_scores(to_uint8(up), truth_hwc)
        if not self.uses_cond and self.config.model.source_encoder.arch != "noise":
            metrics["ve_mean"] = image_scores(to_uint8(self.predict(model, up, ve_only=True)), truth_hwc)
        metrics["psnr_gain_over_bicubic"] = metrics["psnr"] - metrics["bicubic"]["psnr"]
        s = self.config.sample
        metrics["settings"] = {"solver": overrides.get("solver", s.solver), "steps": overrides.get("steps", s.steps),
                               "guidance": overrides.get("guidance", s.guidance), "z0": overrides.get("z0", s.z0),
                               "seed": seed, "num_images": n, "model": "concat_baseline" if self.uses_cond
                               else "crossflow"}
        metrics["generation_seconds"] = round(seconds, 2)
        k = min(self.tc.picture_items, n)
        self._picture(low[:k], up[:k], preds[:k], test.images_float(slice(0, k)), out_dir / "sr.png")
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("super-resolution: PSNR %.2f dB (bicubic %.2f), SSIM %.4f (bicubic %.4f)", metrics["psnr"],
                 metrics["bicubic"]["psnr"], metrics["ssim"], metrics["bicubic"]["ssim"])
        return metrics

    # -------------------------------------------------------------- crossflow sample
    def sample_inputs(self, model: CrossFlow, inputs: Sequence[str | Path], out_dir: Path, *, seed: int = 0,
                      **overrides: Any) -> dict:
        """Super-resolve low-res image files (resized to ``R/scale`` first): ``NNNN.png`` and ``sr.png``."""
        low_res = self.tc.toyworld.resolution // self.tc.scale
        low = ((self.load_input_images(inputs, size=low_res) + 1.0) * 127.5).round().to(torch.uint8)
        up = upsample(low, (self.tc.toyworld.resolution,) * 2)
        preds = self.predict(model, up, seed=seed, **overrides)
        out_dir = Path(out_dir)
        for i, img in enumerate(to_uint8(preds)):
            save_png(img, out_dir / f"{i:04d}.png")
        factor = self.tc.scale
        low_big = low.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3).permute(0, 2, 3, 1).numpy()
        tiles = np.stack([x for row in zip(low_big, to_uint8(up), to_uint8(preds)) for x in row])
        save_png(make_grid(tiles, nrow=3, upscale=4), out_dir / "sr.png")
        return {"inputs": len(inputs), "out": str(out_dir)}
