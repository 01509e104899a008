"""Our depth models on the field's benchmarks: a predictor around the pipeline, ensembling, baseline, pictures.

``crossflow eval RUN --benchmark nyu_v2 --data PATH --filenames LIST [--ensemble N]`` lands here. The
predictor gives the pipeline the benchmark's RGB (resized to the model's working size by the source
processor) and returns the decoded depth at that size; :func:`tasks.depth.benchmarks.evaluate_benchmark`
resizes it to the ground truth, aligns it (least squares for affine-invariant models: zero-shot and the toy
world; none for in-domain metric models), clips it to the dataset's range and scores it per image.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from crossflow.config import to_dict
from crossflow.schema import SampleConfig
from crossflow.utils.images import colorize_depth, save_png
from tasks.depth.benchmarks import BENCHMARKS, evaluate_benchmark
from tasks.depth.ensemble import ensemble_depth

log = logging.getLogger(__name__)

#: Items of the training set averaged into the mean-depth-map baseline.
BASELINE_ITEMS = 256


def depth_predictor(pipe: Any, options: SampleConfig, ensemble: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """``predict(rgb (H, W, 3) uint8) -> (h, w) float64`` depth at the model's working size.

    With ``ensemble > 1`` the image is predicted ``ensemble`` times from posterior samples of z0 (noise seeded
    by ``(seed, k)``), and the members are combined by :func:`~tasks.depth.ensemble.ensemble_depth`.
    """
    if ensemble < 1:
        raise ValueError(f"--ensemble must be >= 1, got {ensemble}")
    sampled = replace(options, z0="sample")

    def predict(rgb: np.ndarray) -> np.ndarray:
        if ensemble == 1:
            return pipe([rgb], options=options).depth[0].double().numpy()
        members = pipe([rgb] * ensemble, options=sampled).depth.double().numpy()
        return ensemble_depth(members)
    return predict


def _picture(rgb: np.ndarray, depth: np.ndarray, path: Path) -> Path:
    """``input | prediction`` side by side, the prediction colour-mapped on its own range (near is bright)."""
    h, w = rgb.shape[:2]
    pred = np.asarray(Image.fromarray(depth.astype(np.float32)).resize((w, h), Image.BILINEAR))
    lo, hi = np.percentile(pred, [2, 98]) if pred.size else (0.0, 1.0)
    return save_png(np.concatenate([rgb, colorize_depth(pred, float(lo), float(max(hi, lo + 1e-6)))[0]], axis=1), path)


class BenchmarkEvaluation:
    """Mixin of the depth evaluators: ``evaluate_benchmark(pipe, name, ...)`` for ``crossflow eval --benchmark``."""

    task: Any

    def benchmarks(self) -> list[str]:
        return list(BENCHMARKS)

    def default_alignment(self) -> Optional[str]:
        """Least squares for affine-invariant models (zero-shot, toy world); none for in-domain metric models."""
        return None if self.task.tc.dataset in ("kitti", "nyu") else "least_square"

    def mean_depth_map(self, pipe: Any) -> Optional[np.ndarray]:
        """The mean of (up to 256) training targets, decoded: the mean-depth-map baseline; None without data."""
        try:
            data = self.task.train_dataset()
        except (OSError, ValueError) as exc:
            log.info("no mean-depth baseline: the training data cannot be read (%s)", exc)
            return None
        targets = data.__getitems__(list(range(min(len(data), BASELINE_ITEMS))))["target"]
        return pipe.codec.decode(targets.float().mean(0, keepdim=True)).depth[0].double().numpy()

    def evaluate_benchmark(self, pipe: Any, name: str, *, data: str | Path, filenames: str | Path,
                           out_dir: Path, num: Optional[int] = None, options: Optional[SampleConfig] = None,
                           ensemble: Optional[int] = None, alignment: Optional[str] = "auto",
                           pictures: int = 8) -> dict[str, Any]:
        """Score ``pipe`` on benchmark ``name``; write ``metrics.json``, ``per_sample_metrics.csv`` and
        ``predictions/NNNN.png`` (input | colour-mapped prediction for the first ``pictures`` images)."""
        options = pipe.options(options)
        ensemble = ensemble or self.task.tc.ensemble
        alignment = self.default_alignment() if alignment == "auto" else alignment
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        predict = depth_predictor(pipe, options, ensemble)
        shown: list[Path] = []

        def predict_and_show(rgb: np.ndarray) -> np.ndarray:
            depth = predict(rgb)
            if len(shown) < pictures:
                shown.append(_picture(rgb, depth, out_dir / "predictions" / f"{len(shown):04d}.png"))
            return depth

        start = time.time()
        metrics = evaluate_benchmark(name, data, filenames, predict_and_show, alignment=alignment, out_dir=out_dir,
                                     num=num)
        seconds = time.time() - start
        mean_map = self.mean_depth_map(pipe)
        if mean_map is not None:
            baseline = evaluate_benchmark(name, data, filenames, lambda rgb: mean_map, alignment=alignment, num=num)
            metrics["mean_depth_baseline"] = baseline
            metrics["abs_rel_vs_mean_baseline"] = metrics["abs_rel"] / max(baseline["abs_rel"], 1e-12)
        else:
            metrics["mean_depth_baseline"] = {"skipped": "the training data of the run cannot be read"}
        metrics["settings"] = {"benchmark": name, "data": str(data), "filenames": str(filenames),
                               "alignment": alignment, "ensemble": ensemble, "working_size": list(self.task.size),
                               **to_dict(options)}
        metrics["seconds"] = round(seconds, 2)
        metrics["images_per_s"] = round(metrics["count"] / max(seconds, 1e-9), 3)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("%s: abs_rel %.4f, delta1 %.3f over %d images (%s)", name, metrics["abs_rel"], metrics["delta1"],
                 metrics["count"], "mean-map baseline abs_rel %.4f" % metrics["mean_depth_baseline"]["abs_rel"]
                 if mean_map is not None else "no baseline")
        return metrics
