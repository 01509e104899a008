"""Super-resolution throughput: the ImageNet data pipeline (images/s) and super-resolved images/s of a config.

    python benchmarks/super_resolution.py [--config configs/super_resolution/imagenet_64_256.yaml] [--num 32]
                                          [--batch 8] [--steps N] [--device cpu] [--no-model]

Data: toy scenes written in ImageNet's layout at 320 px (`crossflow toy-data imagenet`), read by
``ImageNetSR`` at 256 px (decode, central square crop, antialiased resize, 8-bit 4x downsampling, bicubic
upsampling back) in one process. Model: the config's model with its own random initialisation (the same FLOPs
as trained weights) super-resolving ``--num`` low-res images through the Pipeline's model.generate with the
config's solver steps (or ``--steps``). Training samples/s: benchmarks/train_step.py CONFIG. Prints Markdown rows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import common  # noqa: F401 - puts the repository root on sys.path

from crossflow.registry import load_experiment  # noqa: E402
from tasks.super_resolution.imagenet import ImageNetSR  # noqa: E402
from tasks.super_resolution.toy_imagenet import write_toy_imagenet  # noqa: E402


def data_row(num: int, batch: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        info = write_toy_imagenet(Path(tmp) / "imagenet", num=num, resolution=320, num_val=0)
        data = ImageNetSR(Path(info["train_dir"]), 256, 4)
        start = time.perf_counter()
        for lo in range(0, len(data), batch):
            data.__getitems__(list(range(lo, min(lo + batch, len(data)))))
        seconds = time.perf_counter() - start
    return (f"| data: ImageNetSR 256 px (decode 320 px JPEG, crop, resize, 8-bit LR, bicubic up), 1 process | cpu | "
            f"{len(data)} | {len(data) / seconds:.1f} images/s |")


@torch.no_grad()
def model_row(config: str, num: int, batch: int, steps: int | None, device: str) -> str:
    cfg, task_cls = load_experiment(config, [])
    task = task_cls(cfg)
    model = task.build_model().to(device).eval()
    options = cfg.sample
    if steps:
        options.steps = steps
    shape = task.target_spec().shape
    source = torch.rand(batch, *shape, device=device) * 2 - 1
    model.generate(source, options=options, noise=torch.randn(batch, *shape, device=device))  # warm-up
    start, done = time.perf_counter(), 0
    while done < num:
        model.generate(source, options=options, noise=torch.randn(batch, *shape, device=device))
        done += batch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (f"| super-resolution: {Path(config).name} ({params:.1f}M, {options.solver} {options.steps} steps, batch "
            f"{batch}, random weights) | {device} | {done} | {done / seconds:.3f} images/s |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/super_resolution/imagenet_64_256.yaml", help="config to time")
    p.add_argument("--num", type=int, default=32, help="images (default 32)")
    p.add_argument("--batch", type=int, default=8, help="images per call (default 8)")
    p.add_argument("--steps", type=int, help="solver steps (default: the config's)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--no-model", action="store_true", help="time only the data pipeline")
    args = p.parse_args()
    print("| stage | device | items | throughput |")
    print("|---|---|---|---|")
    print(data_row(args.num, args.batch), flush=True)
    if not args.no_model:
        print(model_row(args.config, args.num, args.batch, args.steps, args.device), flush=True)


if __name__ == "__main__":
    main()
