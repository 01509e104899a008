"""What fits on a GPU: the largest micro-batch per card size for the paper configs, from the memory estimate.

    python benchmarks/memory_plan.py [CONFIG ...] [--cards 16,24,40,80] [--processes 8] [--reserve-gib 1.5]

For each config and setup (DDP bf16; DDP bf16 + gradient checkpointing; FSDP bf16 + checkpointing over
--processes GPUs) prints one Markdown row: the per-GPU state (weights, gradients, AdamW, EMA, parallel working
copies), the memory per sample, and the largest micro-batch whose estimated peak (``crossflow params CONFIG
--memory``) stays below the card minus --reserve-gib (CUDA context, cuBLAS workspaces, allocator slack: not in
the estimate). Gradient accumulation is assumed (the gradients stay alive for the whole step), as global batches
of 256-1024 on 8 GPUs need. Nothing is allocated: every model is traced on fake tensors (~5-20 s per config).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossflow.registry import load_experiment  # noqa: E402
from crossflow.utils.memory import GIB, MemoryPlanner  # noqa: E402

PAPER_CONFIGS = ["configs/t2i/dit_256_clip.yaml", "configs/t2i/dit_512_t5.yaml", "configs/captioning/coco_karpathy.yaml",
                 "configs/depth/zero_shot.yaml", "configs/super_resolution/imagenet_64_256.yaml"]
SETUPS = {"DDP bf16": {"parallel": "ddp", "checkpointing": "off"},
          "DDP bf16 + ckpt": {"parallel": "ddp", "checkpointing": "on"},
          "FSDP bf16 + ckpt": {"parallel": "fsdp", "checkpointing": "on"}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="*", default=PAPER_CONFIGS, help="experiment YAMLs (default: the paper configs)")
    p.add_argument("--cards", default="16,24,40,80", help="GPU memory sizes in GiB, comma-separated")
    p.add_argument("--processes", type=int, default=8, help="GPUs of the DDP / FSDP setups (default 8)")
    p.add_argument("--reserve-gib", type=float, default=1.5, help="memory of a card the estimate leaves out "
                                                                  "(default 1.5 GiB)")
    p.add_argument("--limit", type=int, default=1024, help="largest micro-batch tried (default 1024)")
    args = p.parse_args()
    cards = [float(c) for c in args.cards.split(",")]

    head = " | ".join(f"{c:g} GB" for c in cards)
    print(f"| config | params | setup ({args.processes} GPUs) | state (GiB) | GiB / sample | {head} |")
    print("|---|---|---|---|---|" + "---|" * len(cards))
    for config in args.configs:
        planner = MemoryPlanner(*load_experiment(config, []))
        millions = (planner.sizes.trainable + planner.sizes.frozen) / 1e6
        for name, flags in SETUPS.items():
            setup = planner.setup(processes=args.processes, micro_batch=1, precision="bf16", **flags)
            setup = replace(setup, grad_accum_steps=max(setup.grad_accum_steps, 2))
            one, two = (planner.estimate(replace(setup, micro_batch=m), exact=False).total for m in (4, 8))
            per_sample = (two - one) / 4
            fits = [planner.largest_micro_batch(setup, (c - args.reserve_gib) * GIB, limit=args.limit) for c in cards]
            cells = " | ".join("—" if m == 0 else f"≥{m}" if m >= args.limit else str(m) for m in fits)
            print(f"| {Path(config).parent.name}/{Path(config).stem} | {millions:.0f}M | {name} | "
                  f"{(one - 4 * per_sample) / GIB:.1f} | {per_sample / GIB:.3f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
