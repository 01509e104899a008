"""Zero-shot depth evaluation as the field runs it: Marigold's prepared NYUv2, KITTI (Eigen test), ETH3D,
ScanNet and DIODE sets, read as distributed, and Marigold's protocol (least-squares alignment, clipping,
ten metrics averaged per image) for any depth model::

    from tasks.depth.benchmarks import evaluate_benchmark
    result = evaluate_benchmark("nyu_v2", "nyuv2/nyu_labeled_extracted.tar",
                                "filename_list_test.txt", predict)   # predict(rgb uint8 HxWx3) -> (H, W)

Modules: :mod:`.datasets` (per-dataset specs and the reader), :mod:`.alignment` (resizing and least
squares), :mod:`.evaluate` (the loop).
"""

from tasks.depth.benchmarks.alignment import (ALIGNMENTS, align_least_squares, align_least_squares_disparity,
                                              alignment_subsample, fit_scale_shift, resize_prediction)
from tasks.depth.benchmarks.datasets import (BENCHMARKS, BenchmarkData, BenchmarkSample, BenchmarkSpec, DataRoot,
                                             benchmark_spec, kitti_benchmark_crop, read_filename_list)
from tasks.depth.benchmarks.evaluate import evaluate_benchmark, score_sample

__all__ = [
    "ALIGNMENTS", "BENCHMARKS", "BenchmarkData", "BenchmarkSample", "BenchmarkSpec", "DataRoot",
    "align_least_squares", "align_least_squares_disparity", "alignment_subsample", "benchmark_spec",
    "evaluate_benchmark", "fit_scale_shift", "kitti_benchmark_crop", "read_filename_list", "resize_prediction",
    "score_sample",
]
