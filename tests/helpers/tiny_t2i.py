"""A tiny untrained text-to-image export (real MiniLM tokens → tiny VE/DiT on 3×32×32) for tool and eval tests."""

from __future__ import annotations

from pathlib import Path

import torch

from crossflow.registry import experiment_from_dict
from crossflow.train.trainer import export_model

VELOCITY_NET = {"patch_size": 8, "hidden_size": 32, "depth": 1, "num_heads": 2}


def tiny_t2i_raw(cache_dir: Path, kind: str = "crossflow") -> dict:
    """Raw config of the toy-world t2i task with a tiny CrossFlow (``kind="crossflow"``) or cross-attention
    baseline (``kind="xattn_baseline"``); prompts are embedded by the real MiniLM into ``cache_dir``."""
    if kind == "crossflow":
        model = {"kind": kind, "source_encoder": {"width": 32, "depth": 1, "num_heads": 2, "num_queries": 2},
                 "velocity_net": dict(VELOCITY_NET), "contrastive": {"widths": [8], "hidden_dim": 16}}
    else:
        model = {"kind": kind, "velocity_net": dict(VELOCITY_NET)}
    return {
        "task": {"name": "t2i", "dataset": "toyworld", "language_model": {"max_length": 16},
                 "toyworld": {"num_train": 64, "num_test": 6}, "cache_dir": str(cache_dir), "preview_prompts": 2},
        "model": model,
        "train": {"batch_size": 8, "max_steps": 2, "warmup_steps": 1, "checkpoint_every": 10, "log_every": 1},
        "sample": {"steps": 3, "guidance": 2.0, "batch_size": 4},
    }


def export_tiny_t2i(out_dir: Path, kind: str = "crossflow", seed: int = 0) -> Path:
    """Build the tiny model with perturbed weights (so outputs depend on the prompt) and write ``out_dir/export``."""
    cfg, task_cls = experiment_from_dict(tiny_t2i_raw(out_dir / "cache", kind))
    torch.manual_seed(seed)
    model = task_cls(cfg).build_model()
    with torch.no_grad():  # zero-initialised output layers would make every image identical
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return export_model(model.state_dict(), cfg, out_dir / "export")
