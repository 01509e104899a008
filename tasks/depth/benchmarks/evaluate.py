"""Marigold's zero-shot depth protocol for any depth model: predict, resize, align, clip, score, average.

Per image (``script/depth/eval.py`` in prs-eth/Marigold, commit b1dffaa):

1. ``predict(rgb)`` gets the RGB as the protocol presents it: ``(H, W, 3)`` uint8 at the file's resolution,
   after KITTI's 352×1216 benchmark crop. Marigold's own inference works at 756 px (ETH3D) or 640 px
   (DIODE) and resizes back bilinearly: that is the model's business here; a prediction of another size is
   resized to the ground truth (:func:`~tasks.depth.benchmarks.alignment.resize_prediction`).
2. Alignment (``alignment="least_square"``, the setting of all five of Marigold's scripts): ``s, t`` by
   least squares over the evaluation mask (range, crops, mask file), ``s·pred + t`` over the whole map;
   ``"least_square_disparity"`` aligns in disparity; ``None`` scores metric depth as it is.
3. Clip to the dataset's ``[min_depth, max_depth]`` (Marigold clips again to ≥ 1e-6, a no-op since every
   ``min_depth`` ≥ 1e-5).
4. The ten metrics over the evaluation mask (:func:`tasks.depth.metrics.pixel_metrics`); the result is the
   plain mean over images (not pooled over pixels).

Differences from Marigold's numbers: ground truth is decoded to float32 like Marigold's, but alignment and
metrics run in float64 (Marigold: float32), so values can differ in the 6th–7th significant digit.
Differences from BTS's KITTI numbers: BTS pads the KB-cropped prediction back into the full frame and
takes Eigen's crop fractions of the full-size ground truth; Marigold (and we) take the fractions of the
352×1216 crop, a different pixel set, so KITTI numbers of the two protocols are not directly comparable.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from tasks.depth.benchmarks.alignment import (ALIGNMENTS, align_least_squares, align_least_squares_disparity,
                                              resize_prediction)
from tasks.depth.benchmarks.datasets import BenchmarkData, BenchmarkSample, BenchmarkSpec
from tasks.depth.metrics import BENCHMARK_METRIC_KEYS, pixel_metrics

log = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], Any]
PER_SAMPLE_CSV = "per_sample_metrics.csv"
SUMMARY_JSON = "metrics.json"


def _as_depth_map(pred: Any, rgb_path: str) -> np.ndarray:
    if hasattr(pred, "detach"):  # a torch tensor, without importing torch here
        pred = pred.detach().cpu().numpy()
    array = np.asarray(pred, dtype=np.float64)
    if array.ndim != 2:
        array = array.squeeze()
    if array.ndim != 2:
        raise ValueError(f"predict must return an (H, W) depth map; for {rgb_path} it returned shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"predict returned non-finite values for {rgb_path}")
    return array


def score_sample(pred: Any, sample: BenchmarkSample, spec: BenchmarkSpec, *,
                 alignment: Optional[str] = "least_square") -> dict[str, float]:
    """Steps 2–4 of the protocol for one prediction.

    Args:
        pred: ``(h, w)`` prediction (numpy or torch); resized to the ground truth's size when it differs.
        sample: the ground truth and evaluation mask.
        spec: the dataset's spec (range, alignment subsample).
        alignment: one of :data:`~tasks.depth.benchmarks.alignment.ALIGNMENTS`.

    Returns:
        The ten metrics plus ``scale`` and ``shift`` of the alignment (1 and 0 without one).
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {alignment!r}; valid: {', '.join(map(str, ALIGNMENTS))}")
    depth = sample.depth.astype(np.float64)
    valid = sample.valid
    if not valid.any():
        raise ValueError(f"{sample.rgb_path}: no valid ground-truth pixel ({spec.min_depth} < depth < "
                         f"{spec.max_depth}, crops and masks)")
    if (depth[valid] <= 0).any():
        raise ValueError(f"{sample.rgb_path}: the evaluation mask includes pixels with depth <= 0")
    p = resize_prediction(_as_depth_map(pred, sample.rgb_path), depth.shape)
    scale, shift = 1.0, 0.0
    if alignment == "least_square":
        p, scale, shift = align_least_squares(p, depth, valid, max_res=spec.alignment_max_res)
    elif alignment == "least_square_disparity":
        p, scale, shift = align_least_squares_disparity(p, depth, valid, max_res=spec.alignment_max_res)
    p = np.clip(p, spec.min_depth, spec.max_depth)
    out = pixel_metrics(p[valid], depth[valid])
    out.update(scale=float(scale), shift=float(shift))
    return out


def evaluate_benchmark(name: str, data: str | Path, filenames: str | Path, predict: Predictor, *,
                       alignment: Optional[str] = "least_square", out_dir: Optional[str | Path] = None,
                       num: Optional[int] = None) -> dict[str, Any]:
    """Evaluate a depth model on one of Marigold's zero-shot benchmarks.

    Args:
        name: ``nyu_v2``, ``kitti``, ``eth3d``, ``scannet`` or ``diode``.
        data: the data root: a directory, or a ``.tar`` with members stored as ``./REL``.
        filenames: the filename list in Marigold's format (KITTI's ``None`` lines are skipped and counted).
        predict: ``rgb (H, W, 3) uint8 -> depth (h, w)`` float (numpy or torch). A map of another size than
            the ground truth is resized to it (bilinear; area-averaged when shrinking) before alignment.
        alignment: ``"least_square"`` (affine-invariant models, Marigold's setting),
            ``"least_square_disparity"``, or ``None`` (metric depth, scored as predicted).
        out_dir: if given, write ``per_sample_metrics.csv`` (one row per image: the RGB path, the ten
            metrics, the alignment's scale and shift) and ``metrics.json`` (the result and the settings).
        num: evaluate only the first ``num`` usable list entries (quick checks).

    Returns:
        The mean over images of ``abs_rel, sq_rel, rmse, rmse_log, log10, delta1, delta2, delta3, i_rmse,
        silog_rmse``, plus ``count`` (images scored) and ``skipped`` (list lines without ground truth).

    KITTI follows Marigold, not BTS: Eigen's crop fractions are taken of the 352×1216 benchmark crop (BTS
    takes them of the full frame after padding the prediction back), so the two give different numbers.
    """
    if alignment not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {alignment!r}; valid: {', '.join(map(str, ALIGNMENTS))}")
    if num is not None and num < 1:
        raise ValueError(f"num must be >= 1 (or None for the whole list), got {num}")
    rows: list[dict[str, Any]] = []
    with BenchmarkData(name, data, filenames) as bench:
        total = len(bench) if num is None else min(num, len(bench))
        if total < 1:
            raise ValueError(f"{filenames} lists no {name} sample with ground truth to evaluate")
        for index in range(total):
            sample = bench[index]
            row = score_sample(predict(sample.rgb), sample, bench.spec, alignment=alignment)
            rows.append({"filename": sample.rgb_path, **row})
            if (index + 1) % 50 == 0 or index + 1 == total:
                log.info("%s: %d/%d images, running abs_rel %.4f", name, index + 1, total,
                         np.mean([r["abs_rel"] for r in rows]))
        skipped, spec = bench.skipped, bench.spec
    result: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in BENCHMARK_METRIC_KEYS}
    result.update(count=len(rows), skipped=skipped)
    if out_dir is not None:
        _write_outputs(Path(out_dir), rows, result, name=name, spec=spec, alignment=alignment, data=data,
                       filenames=filenames)
    return result


def _write_outputs(out: Path, rows: list[dict[str, Any]], result: dict[str, Any], *, name: str,
                   spec: BenchmarkSpec, alignment: Optional[str], data: str | Path, filenames: str | Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fields = ["filename", *BENCHMARK_METRIC_KEYS, "scale", "shift"]
    with open(out / PER_SAMPLE_CSV, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: row[k] for k in fields} for row in rows)
    settings = {"benchmark": name, "alignment": alignment, "data": str(data), "filenames": str(filenames),
                "min_depth": spec.min_depth, "max_depth": spec.max_depth if np.isfinite(spec.max_depth) else None,
                "alignment_max_res": spec.alignment_max_res}
    (out / SUMMARY_JSON).write_text(json.dumps({**result, "settings": settings}, indent=2) + "\n")
