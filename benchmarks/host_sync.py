"""Host reads per training step and per sampling call, and what a read per step costs.

    python benchmarks/host_sync.py [configs/t2i/toy.yaml] [key=value ...] [--steps 20] [--device cuda]

Builds the config's Trainer and times ``Trainer._train_step`` on one prepared batch (data loading
excluded) in two modes: ``device`` (the default: scalars summed on the device, non-finite steps skipped by
the fused optimizer, nothing read until a log row) and ``host`` (the check every step reads the loss, as
the unfused optimizer or fp16 loss scaling need). Counts host reads with
:class:`crossflow.utils.host_sync.HostReadCounter`. On a CPU a read costs nothing (there is no queue to
drain), so the two modes time the same; on a GPU each read waits for all queued kernels. Prints Markdown
table rows for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import replace

import torch

from common import base_parser, device_name, random_batch, synchronize, time_per_call

from crossflow.registry import load_experiment  # noqa: E402
from crossflow.train.trainer import Trainer  # noqa: E402
from crossflow.utils.host_sync import HostReadCounter  # noqa: E402


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="solver steps of the sampling row")
    args = parser.parse_args()
    cfg, task_cls = load_experiment(args.config, args.overrides)
    cfg.train.cpu = not str(args.device).startswith("cuda")
    if args.batch_size:
        cfg.train.batch_size = args.batch_size
    task = task_cls(cfg)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, task, run_dir)
        batch = {k: v.to(trainer.accelerator.device) for k, v in random_batch(task, trainer.micro_batch).items()}
        batches = itertools.repeat(batch)
        print("| config | device | mode | batch | host reads / step | step (ms) |")
        print("|---|---|---|---|---|---|")
        for mode in ("device", "host"):
            trainer._device_skip = mode == "device"
            trainer._train_step(batches)  # warm-up
            with HostReadCounter() as reads:
                trainer._train_step(batches)
            seconds = time_per_call(lambda: trainer._train_step(batches), iters=args.iters, warmup=args.warmup,
                                    device=args.device)
            print(f"| {args.config} | {device_name(args.device)} | {mode} | {cfg.train.batch_size} | {reads.total} | "
                  f"{1000 * seconds:.1f} |")
        model = trainer.ema.model.eval()
        options = replace(cfg.sample, steps=args.steps)
        with torch.no_grad(), HostReadCounter() as reads:
            model.generate(batch["source"], batch.get("source_mask"), options=options)
        synchronize(args.device)
        print(f"\nsampling ({options.solver}, {args.steps} steps, guidance {options.guidance}): {reads.total} host "
              f"reads per call ({dict(reads.counts)})")


if __name__ == "__main__":
    main()
