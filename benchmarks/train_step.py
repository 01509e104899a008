"""Training-step throughput of a config: samples/s, step time, peak memory, FLOPs and MFU.

    python benchmarks/train_step.py configs/t2i/toy.yaml [key=value ...] [--precision bf16] [--device cuda]

Measures forward + backward + AdamW step on a random batch with the task's shapes (data loading
excluded). Prints one Markdown table row for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import torch

from common import autocast, base_parser, build, count_flops, device_name, mfu, peak_memory_mib, time_per_call


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    cfg, task, model, batch = build(args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=tuple(cfg.train.betas))
    model.train()

    def step() -> None:
        with autocast(args):
            loss = model(batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    flops = count_flops(step)
    seconds = time_per_call(step, iters=args.iters, warmup=args.warmup, device=args.device)
    b = batch["target"].shape[0]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print("| config | device | precision | batch | params (M) | step (ms) | samples/s | GFLOP/step | TFLOP/s | MFU | peak mem (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.config} {' '.join(args.overrides)} | {device_name(args.device)} | {args.precision} | {b} | "
          f"{params:.1f} | {1000 * seconds:.1f} | {b / seconds:.1f} | {flops / 1e9:.1f} | "
          f"{flops / seconds / 1e12:.3f} | {mfu(flops / seconds, args.device, args.precision)} | "
          f"{peak_memory_mib(args.device):.0f} |")


if __name__ == "__main__":
    main()
