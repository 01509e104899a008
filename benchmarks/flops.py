"""Matmul FLOPs of one velocity-network evaluation at any size, counted on the meta device (nothing allocated).

    python benchmarks/flops.py configs/t2i/official/t2i_512px_t5_dimr.yaml configs/t2i/official/t2i_512px_t5_dit.yaml
    python benchmarks/flops.py configs/t2i/toy.yaml configs/t2i/toy_dimr.yaml --set task.language_model.dim=384

Compares backbones at paper scale on a machine that cannot run them (e.g. DiMR vs DiT-H/2 on the same
4×64×64 latent). A training step costs about 3× the forward FLOPs (4× with gradient checkpointing); a
guided Euler sample costs ``2 · steps`` forwards. Prints Markdown rows for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

import common  # noqa: F401 - puts the repository root on sys.path

from crossflow.registry import load_experiment  # noqa: E402
from crossflow.utils.params import build_on_meta  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+", help="experiment YAMLs (their task must know its shapes)")
    parser.add_argument("--steps", type=int, default=50, help="sampler steps for the per-image column")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every config, e.g. task.language_model.dim=384 (no LM load)")
    args = parser.parse_args()
    print("| config | latent | velocity net params (M) | GFLOP / forward / sample | GFLOP / training step / sample "
          f"(3× fwd) | GFLOP / guided {args.steps}-step sample |")
    print("|---|---|---|---|---|---|")
    for path in args.configs:
        cfg, task_cls = load_experiment(path, args.set)
        model = build_on_meta(cfg, task_cls)
        shape = task_cls(cfg).target_spec().shape
        x = torch.empty(1, *shape, device="meta")
        t = torch.empty(1, device="meta")
        null = torch.zeros(1, dtype=torch.bool, device="meta")
        with FlopCounterMode(display=False) as counter:
            model.velocity_net(x, t, null)
        gflop = counter.get_total_flops() / 1e9
        params = sum(p.numel() for p in model.velocity_net.parameters()) / 1e6
        print(f"| {path} | {'×'.join(map(str, shape))} | {params:.1f} | {gflop:.1f} | {3 * gflop:.1f} | "
              f"{2 * args.steps * gflop:.0f} |")


if __name__ == "__main__":
    main()
