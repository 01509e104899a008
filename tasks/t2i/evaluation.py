"""FID and CLIP score in the text-to-image evaluation.

:class:`ImageMetrics` accumulates Inception statistics and CLIP scores of generated images batch by
batch (so FID-30K never holds 30K images in memory) and reports each metric, or why it was skipped.
:class:`ToyWorldEvaluator` scores the toy world's held-out prompts with the analytic checker;
:class:`PromptFileEvaluator` evaluates models trained on real data: generate from
``task.metrics.prompts_file`` (e.g. COCO val captions), write PNGs, score, write ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from crossflow.metrics.fid import ActivationStatistics, fid_against_reference, inception_features, uint8_to_input
from crossflow.config import to_dict
from crossflow.schema import SampleConfig
from crossflow.utils.images import make_grid, save_gif, save_grid, save_png, to_uint8
from tasks.t2i.config import ImageMetricsConfig

log = logging.getLogger(__name__)


def skip_reasons(mc: ImageMetricsConfig) -> dict[str, Optional[str]]:
    """Why FID / the CLIP score cannot run with this config (None: it runs)."""
    fid = None
    if mc.inception_weights is None:
        fid = "task.metrics.inception_weights is not set (local pt_inception-2015-12-05-6726825d.pth)"
    elif mc.fid_reference is None:
        fid = "task.metrics.fid_reference is not set (.npz with mu and sigma; see tools/fid_reference_stats.py)"
    clip = None if mc.clip_model else "task.metrics.clip_model is not set (local transformers CLIPModel directory)"
    return {"fid": fid, "clip_score": clip}


class ImageMetrics:
    """Streaming FID statistics and CLIP scores of generated images.

    Args:
        mc: the ``task.metrics`` section (weight paths, reference, scale).
        device: where Inception and CLIP run.
    """

    def __init__(self, mc: ImageMetricsConfig, device: torch.device | str) -> None:
        self.mc, self.device = mc, device
        self.reasons = skip_reasons(mc)
        self.inception = self.clip = None
        if self.reasons["fid"] is None:
            from crossflow.metrics.fid_inception import load_fid_inception

            for key in ("inception_weights", "fid_reference"):
                if not Path(getattr(mc, key)).is_file():
                    raise FileNotFoundError(f"task.metrics.{key}: {getattr(mc, key)} does not exist")
            self.inception = load_fid_inception(mc.inception_weights, device=device)
        if self.reasons["clip_score"] is None:
            from crossflow.metrics.clip_score import CLIPScorer

            self.clip = CLIPScorer(mc.clip_model, scale=mc.clip_scale, device=device, batch_size=mc.batch_size)
        self.stats = ActivationStatistics()
        self.clip_scores: list[Tensor] = []

    @property
    def active(self) -> bool:
        return self.inception is not None or self.clip is not None

    @torch.no_grad()
    def update(self, images: Tensor, prompts: list[str]) -> None:
        """Add ``(B, 3, H, W)`` images in [-1, 1] and their prompts."""
        if self.inception is not None:  # as saved PNGs: uint8 first, then the official 512 → 256 rule
            inputs = uint8_to_input(to_uint8(images), resize_512=self.mc.resize_512)
            for i in range(0, len(inputs), self.mc.batch_size):
                self.stats.update(inception_features(self.inception, inputs[i:i + self.mc.batch_size],
                                                     device=self.device))
        if self.clip is not None:
            self.clip_scores.append(self.clip.score(images, prompts))

    def result(self) -> dict[str, Any]:
        """``{"fid": {...}, "clip_score": {...}}``: value and settings, or ``{"skipped": reason}``."""
        out: dict[str, Any] = {}
        if self.inception is None:
            out["fid"] = {"skipped": self.reasons["fid"]}
        elif self.stats.count < 2:
            out["fid"] = {"skipped": f"FID needs at least 2 images, got {self.stats.count}"}
        else:
            n = self.stats.count
            out["fid"] = {"value": fid_against_reference(self.stats, self.mc.fid_reference), "num_samples": n,
                          "name": f"FID-{n // 1000}K" if n % 1000 == 0 else f"FID-{n}",
                          "reference": str(self.mc.fid_reference), "weights": str(self.mc.inception_weights),
                          "preprocessing": "uint8 PNG values; 512x512 -> 256x256 (PIL default) "
                                           f"{'on' if self.mc.resize_512 else 'off'}; bilinear to 299; [-1, 1]"}
        if self.clip is None:
            out["clip_score"] = {"skipped": self.reasons["clip_score"]}
        else:
            scores = torch.cat(self.clip_scores) if self.clip_scores else torch.zeros(0)
            out["clip_score"] = {"value": float(scores.mean()) if len(scores) else float("nan"),
                                 "num_samples": len(scores)} | self.clip.describe()
        return out


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a ``.txt`` (one per line; ``#`` lines are comments) or ``.jsonl`` (field ``prompt``) file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task.metrics.prompts_file: {path} does not exist")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return [line for line in lines if not line.startswith("#")]
    prompts = []
    for i, line in enumerate(lines):
        row = json.loads(line)
        if "prompt" not in row:
            raise ValueError(f"{path} line {i + 1}: no 'prompt' field (keys: {sorted(row)})")
        prompts.append(str(row["prompt"]))
    return prompts


class PromptFileEvaluator:
    """Evaluation of models trained on real data: generate from ``task.metrics.prompts_file`` batch by batch
    (e.g. COCO val captions), write the PNGs, FID and CLIP score, ``metrics.json``.

    Writes ``samples/NNNN.png`` + ``samples/prompts.jsonl`` (``task.metrics.save_images``), ``grid.png`` (the
    first 64) and ``metrics.json`` under ``out_dir``.
    """

    def __init__(self, task: Any) -> None:
        self.task = task

    @torch.no_grad()
    def evaluate(self, pipe: Any, out_dir: Path, *, num: Optional[int] = None,
                 options: Optional[SampleConfig] = None) -> dict[str, Any]:
        mc: ImageMetricsConfig = self.task.tc.metrics
        if mc.prompts_file is None:
            raise ValueError("task.metrics.prompts_file: not set; evaluation on real data generates from a prompt "
                             "file (.txt or .jsonl, e.g. COCO val captions)")
        options = pipe.options(options)
        prompts = read_prompts(mc.prompts_file)[: num or mc.num_samples]
        out_dir = Path(out_dir)
        samples = out_dir / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        metrics = ImageMetrics(mc, pipe.device)
        start, shown = time.time(), []
        batch = options.batch_size
        width = max(4, len(str(len(prompts) - 1)))  # file names sort in prompt order
        index_file = open(samples / "prompts.jsonl", "w", encoding="utf-8") if mc.save_images else None
        try:
            for i in tqdm(range(0, len(prompts), batch), desc="eval", unit="batch"):
                chunk = prompts[i:i + batch]
                out = pipe(chunk, options=options, first_index=i)
                metrics.update(out.images, chunk)
                uint8 = out.uint8()
                shown += list(uint8[: max(0, 64 - len(shown))])
                if index_file is not None:
                    for j, (img, prompt) in enumerate(zip(uint8, chunk)):
                        name = f"{i + j:0{width}d}.png"  # NNNN.png as `crossflow sample` writes them
                        save_png(img, samples / name)
                        index_file.write(json.dumps({"file": name, "prompt": prompt}) + "\n")
        finally:
            if index_file is not None:
                index_file.close()
        if shown:
            save_grid(np.stack(shown), out_dir / "grid.png", nrow=8)
        result = metrics.result() | {
            "settings": to_dict(options) | {"num_prompts": len(prompts), "prompts_file": str(mc.prompts_file)},
            "seconds": round(time.time() - start, 2)}
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        log.info("eval: %s", {k: v.get("value", v.get("skipped")) for k, v in result.items() if isinstance(v, dict)
                              and k in ("fid", "clip_score")})
        return result

    def preview(self, pipe: Any, path: Path) -> None:
        """A grid of the preview prompts (at most 25 solver steps)."""
        prompts = self.task.preview_prompts()
        if prompts:
            save_grid(pipe(prompts, steps=min(pipe.options().steps, 25)).uint8(), path)


class ToyWorldEvaluator:
    """The toy world's held-out prompts, scored by the analytic checker.

    Writes ``metrics.json`` (the checker's accuracies at the given options, plus the same under
    ``no_guidance``, ``null_branch`` and the other z0 start, FID/CLIP when configured), ``samples/NNNN.png``,
    ``samples/prompts.jsonl``, ``grid.png`` and ``trajectory.gif`` under ``out_dir``.
    """

    def __init__(self, task: Any) -> None:
        self.task = task

    @torch.no_grad()
    def evaluate(self, pipe: Any, out_dir: Path, *, num: Optional[int] = None,
                 options: Optional[SampleConfig] = None) -> dict[str, Any]:
        from tasks.toyworld import checker

        options = pipe.options(options)
        out_dir = Path(out_dir)
        _, test = self.task.toy_split()
        test = test[:num] if num else test
        prompts, attrs = [ex.caption for ex in test], [ex.attributes for ex in test]
        other_z0 = "sample" if options.z0 == "mean" else "mean"
        variants = {"default": (options, "guided"),
                    "no_guidance": (replace(options, guidance=1.0), "guided"),
                    "null_branch": (options, "null"),
                    f"z0_{other_z0}": (replace(options, z0=other_z0), "guided")}
        metrics: dict[str, Any] = {}
        start = time.time()
        for name, (opts, mode) in variants.items():
            out = pipe(prompts, options=opts, mode=mode)
            uint8 = out.uint8()
            scores = checker.score(uint8, attrs)
            described = scores | {"guidance": opts.guidance, "z0": opts.z0, "temperature": opts.temperature}
            if name == "default":
                metrics |= scores
                metrics[f"z0_{opts.z0}"] = described
                self._write_samples(out_dir, uint8, test)
                metrics |= score_generated(self.task.tc.metrics, out.images, prompts, pipe.device)
            else:
                metrics[name] = described
            log.info("%s: %s", name, {k: round(v, 3) for k, v in scores.items() if isinstance(v, float)})
        write_trajectory_gif(pipe, prompts[:16], out_dir / "trajectory.gif", options=options)
        metrics["settings"] = to_dict(options) | {"num_prompts": len(prompts)}
        metrics["seconds"] = round(time.time() - start, 2)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics

    def preview(self, pipe: Any, path: Path) -> None:
        """A grid of the first held-out prompts (at most 25 solver steps), ×4."""
        images = pipe(self.task.preview_prompts(), steps=min(pipe.options().steps, 25)).uint8()
        save_grid(images, path, upscale=4)

    @staticmethod
    def _write_samples(out_dir: Path, images: np.ndarray, examples) -> None:
        samples = out_dir / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        with open(samples / "prompts.jsonl", "w", encoding="utf-8") as fh:
            for i, (img, ex) in enumerate(zip(images, examples)):
                name = f"{i:04d}.png"
                save_png(img, samples / name)
                fh.write(json.dumps({"file": name, "prompt": ex.caption, **ex.attributes}) + "\n")
        save_grid(images[:64], out_dir / "grid.png", nrow=8, upscale=4)


@torch.no_grad()
def write_trajectory_gif(pipe: Any, prompts: list[str], path: Path, *, frames: int = 12,
                         options: Optional[SampleConfig] = None) -> Path:
    """Animate the ODE from z0 (t=0) to the image (t=1) for ``prompts`` as a grid GIF."""
    states: list[Tensor] = []  # the start (z0, or noise for the cross-attention baseline), then every step
    pipe(prompts, options=options, callback=lambda info: states.append(info["x"]))
    keep = sorted({round(i * (len(states) - 1) / (frames - 1)) for i in range(frames)})
    grids = [make_grid(pipe.decode(states[i]).uint8(), upscale=4) for i in keep]
    return save_gif(grids + [grids[-1]] * 4, path, duration_ms=150)
def score_generated(mc: ImageMetricsConfig, images: Tensor, prompts: list[str],
                    device: torch.device | str) -> dict[str, Any]:
    """FID and CLIP score of images already in memory ``(N, 3, H, W)`` in [-1, 1] (the toy-world evaluation)."""
    metrics = ImageMetrics(mc, device)
    if metrics.active:
        for i in range(0, len(prompts), mc.batch_size):
            metrics.update(images[i:i + mc.batch_size], prompts[i:i + mc.batch_size])
    return metrics.result()
