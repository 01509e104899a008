"""Shared helpers of the benchmarks: build a model from a config, synthetic batches, memory, FLOPs, MFU."""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossflow.registry import load_experiment  # noqa: E402

#: Dense bf16 tensor-core peaks (FLOP/s) for MFU; fp32 peaks are far lower and not listed.
GPU_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("config", nargs="?", default="configs/t2i/toy.yaml", help="experiment YAML")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the config's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast precision")
    p.add_argument("--iters", type=int, default=10, help="timed iterations")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up iterations")
    p.add_argument("--compile", action="store_true", help="torch.compile the velocity network")
    return p


def random_batch(task, b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random training batch with the shapes of ``task``'s source and target specs."""
    g = torch.Generator().manual_seed(seed)
    source = task.source_spec()
    batch = {"source": torch.randn(b, *source.shape, generator=g),
             "target": torch.randn(b, *task.target_spec().shape, generator=g)}
    if source.kind == "tokens":
        batch["source_mask"] = torch.ones(b, source.max_tokens, dtype=torch.bool)
    return batch


def build(args: argparse.Namespace):
    """Model and a random batch with the shapes of the config's task."""
    cfg, task_cls = load_experiment(args.config, args.overrides)
    task = task_cls(cfg)
    model = task.build_model().to(args.device)
    if args.compile:
        for module in model.compile_modules():
            module.compile()
    batch = random_batch(task, args.batch_size or cfg.train.batch_size)
    return cfg, task, model, {k: v.to(args.device) for k, v in batch.items()}


def autocast(args: argparse.Namespace):
    device_type = "cuda" if str(args.device).startswith("cuda") else "cpu"
    if args.precision == "bf16" and device_type == "cpu":
        from crossflow.utils.cpu import ensure_cpu_bf16
        ensure_cpu_bf16()
    return torch.autocast(device_type, torch.bfloat16, enabled=args.precision == "bf16")


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def time_per_call(fn, *, iters: int, warmup: int, device: str) -> float:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls (device synchronised)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_mib(device: str) -> float:
    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def device_name(device: str) -> str:
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def mfu(flops_per_s: float, device: str, precision: str) -> str:
    if not str(device).startswith("cuda") or precision != "bf16":
        return "n/a"
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in GPU_BF16_PEAK.items() if k in name), None)
    return f"{100 * flops_per_s / peak:.1f}%" if peak else "n/a"
