"""Training-step throughput of a config: samples/s, step time, peak memory, FLOPs and MFU; DDP vs FSDP.

    python benchmarks/train_step.py configs/t2i/toy.yaml [key=value ...] [--precision bf16] [--device cuda]
    torchrun --nproc_per_node 2 benchmarks/train_step.py CONFIG --parallel fsdp [--device cpu]

Measures forward + backward + AdamW step (+ the EMA update with ``--parallel``) on a random batch with the
task's shapes (data loading excluded). ``--batch-size`` is the global batch, split over the processes. With
``--parallel ddp`` the model is wrapped in torch's DDP, with ``--parallel fsdp`` sharded exactly as the trainer
does (``crossflow.train.sharding.apply_fsdp``, the EMA copy too). Peak memory is per process (the largest
over processes): CUDA's allocator peak on GPUs, the peak resident set on CPUs (including the ~0.4 GB of the
runtime). Prints one Markdown table row for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from common import autocast, base_parser, build, count_flops, device_name, mfu, peak_memory_mib, time_per_call


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--parallel", choices=["none", "ddp", "fsdp"], default="none",
                        help="none: the bare model in one process; ddp / fsdp: as the trainer wraps it (run under "
                             "torchrun for several processes; one process works too)")
    args = parser.parse_args()
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    if args.parallel != "none" or world > 1:
        if args.parallel == "none":
            parser.error("several processes need --parallel ddp or fsdp")
        if str(args.device).startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            args.device = f"cuda:{torch.cuda.current_device()}"
        if world > 1:
            dist.init_process_group("cpu:gloo,cuda:nccl" if str(args.device).startswith("cuda") else "gloo")
    global_batch = args.batch_size
    cfg, task, model, batch = build(args)
    global_batch = global_batch or cfg.train.batch_size
    if global_batch % world:
        parser.error(f"--batch-size {global_batch} is not divisible by {world} processes")
    batch = {k: v[rank * (global_batch // world):(rank + 1) * (global_batch // world)] for k, v in batch.items()}
    ema = None
    if args.parallel != "none":
        from crossflow.train.ema import EMA

        ema = EMA(model, decay=0.999)
        if args.parallel == "fsdp":
            from crossflow.train.sharding import apply_fsdp

            apply_fsdp([model, ema.model], torch.device(args.device),
                       mixed_precision="bf16" if args.precision == "bf16" else "no", cpu_offload=False)
        else:
            ema.model.to(args.device)
            if world > 1:
                model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                            betas=tuple(cfg.train.betas), fused=True)
    model.train()

    def step() -> None:
        with autocast(args):
            loss = model(batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model)

    flops = count_flops(step) * world  # every process counts its own share of the global batch
    seconds = time_per_call(step, iters=args.iters, warmup=args.warmup, device=args.device)
    peak = torch.tensor([peak_memory_mib(args.device)])
    if world > 1:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        seconds_t = torch.tensor([seconds])
        dist.all_reduce(seconds_t, op=dist.ReduceOp.MAX)  # the slowest process sets the pace
        seconds = float(seconds_t)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    if rank == 0:
        print("| config | device | parallel | processes | precision | batch | params (M) | step (ms) | samples/s | "
              "GFLOP/step | TFLOP/s | MFU | peak mem/process (MiB) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        print(f"| {args.config} {' '.join(args.overrides)} | {device_name(args.device)} | {args.parallel} | {world} | "
              f"{args.precision} | {global_batch} | {params:.1f} | {1000 * seconds:.1f} | {global_batch / seconds:.1f} | "
              f"{flops / 1e9:.1f} | {flops / seconds / 1e12:.3f} | "
              f"{mfu(flops / seconds / world, args.device, args.precision)} | {float(peak):.0f} |")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
