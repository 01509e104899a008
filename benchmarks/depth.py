"""Depth throughput: the training-data pipeline (samples/s) and benchmark evaluation (images/s per dataset).

    python benchmarks/depth.py [--run RUN_DIR] [--size 480x640] [--num 64]

Writes toy scenes in the real formats into a temporary folder (Hypersim at 768×1024, NYUv2 and KITTI as
Marigold's evaluation sets), then times (1) reading + normalising + resizing zero-shot training pairs to the
working size, and (2) ``evaluate_benchmark`` on NYUv2 and KITTI with the model of ``--run`` (or, without one, a
constant predictor, which times the protocol alone: decoding, crops, resize, alignment, metrics). Prints
Markdown rows for benchmarks/RESULTS.md. For the model's training step use benchmarks/train_step.py with a
depth config.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import common  # noqa: F401 - puts the repository root on sys.path

from tasks.depth.benchmarks import evaluate_benchmark  # noqa: E402
from tasks.depth.toy_formats import write_toy_kitti, write_toy_nyu  # noqa: E402
from tasks.depth.toy_training import write_toy_hypersim  # noqa: E402
from tasks.depth.training import DepthTrainingPairs, HypersimDepth, QuantileNormalizer, TrainingTransform  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a trained depth run or export to evaluate (default: a constant predictor)")
    p.add_argument("--size", default="480x640", help="working size HxW of the training pairs (default 480x640)")
    p.add_argument("--num", type=int, default=64, help="toy scenes per set (default 64)")
    args = p.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        info = write_toy_hypersim(root / "hypersim", num=args.num)
        pairs = DepthTrainingPairs(HypersimDepth(info["reader_kwargs"]["root"], info["reader_kwargs"]["filenames"],
                                                 size=None), TrainingTransform(size, QuantileNormalizer()))
        pairs.__getitems__([0])
        start = time.perf_counter()
        pairs.__getitems__(list(range(args.num)))
        seconds = time.perf_counter() - start
        print("| stage | data | working size | samples | samples/s |")
        print("|---|---|---|---|---|")
        print(f"| training pairs (read, quantile-normalise, resize), 1 process | toy Hypersim 768×1024 | "
              f"{size[0]}×{size[1]} | {args.num} | {args.num / seconds:.1f} |")
        if args.run:
            from crossflow.pipeline import Pipeline
            from tasks.depth.benchmark_eval import depth_predictor

            pipe = Pipeline.from_pretrained(args.run, device="cpu")
            predict, what = depth_predictor(pipe, pipe.options()), f"model {args.run}"
        else:
            predict, what = (lambda rgb: np.ones(rgb.shape[:2])), "constant predictor (protocol only)"
        print("\n| benchmark | predictor | images | images/s |")
        print("|---|---|---|---|")
        for name, writer in (("nyu_v2", write_toy_nyu), ("kitti", write_toy_kitti)):
            toy = writer(root / name, num=args.num)
            start = time.perf_counter()
            result = evaluate_benchmark(toy.name, toy.data, toy.filenames, predict)
            seconds = time.perf_counter() - start
            print(f"| {name} (toy, real format) | {what} | {result['count']} | {result['count'] / seconds:.2f} |")


if __name__ == "__main__":
    main()
