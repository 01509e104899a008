"""Sampling throughput of a config: images/s for an ODE solver, steps and guidance scale.

    python benchmarks/sampling.py configs/t2i/toy.yaml [--steps 25] [--guidance 2] [--solver euler]

Guidance runs the conditional and null passes as one batched forward; the table reports network
evaluations (NFE) per sample. Prints one Markdown table row for benchmarks/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from common import autocast, base_parser, build, count_flops, device_name, mfu, peak_memory_mib, time_per_call


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25, help="solver steps")
    parser.add_argument("--guidance", type=float, default=2.0, help="CFG scale (1 = no guidance)")
    parser.add_argument("--solver", default="euler", help="ODE solver")
    args = parser.parse_args()
    cfg, task, model, batch = build(args)
    model.eval()

    options = replace(cfg.sample, steps=args.steps, guidance=args.guidance, solver=args.solver)

    def sample() -> torch.Tensor:
        with torch.no_grad(), autocast(args):
            return model.generate(batch["source"], batch.get("source_mask"), options=options)

    flops = count_flops(sample)
    seconds = time_per_call(sample, iters=args.iters, warmup=args.warmup, device=args.device)
    b = batch["target"].shape[0]
    evals_per_step = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}.get(args.solver, float("nan"))
    nfe = args.steps * evals_per_step * (1 if args.guidance == 1.0 else 2)
    print("| config | device | precision | batch | solver | steps | guidance | NFE/sample | batch time (s) | images/s | TFLOP/s | MFU | peak mem (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.config} {' '.join(args.overrides)} | {device_name(args.device)} | {args.precision} | {b} | "
          f"{args.solver} | {args.steps} | {args.guidance} | {nfe} | {seconds:.2f} | {b / seconds:.1f} | "
          f"{flops / seconds / 1e12:.3f} | {mfu(flops / seconds, args.device, args.precision)} | "
          f"{peak_memory_mib(args.device):.0f} |")


if __name__ == "__main__":
    main()
