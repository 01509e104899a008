"""Load a trained model for inference from an export or a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from crossflow.config import ConfigError, apply_overrides, load_yaml
from crossflow.model import CrossFlow
from crossflow.schema import ExperimentConfig
from crossflow.task import Task, experiment_from_dict
from crossflow.train.checkpoint import CheckpointError, latest_checkpoint, load_safetensors


def resolve_weights(path: str | Path) -> tuple[Path, Path]:
    """Find ``(weights, config.yaml)`` for an export dir, a run dir, or a checkpoint dir.

    Order: ``DIR/model.safetensors`` (an export), ``DIR/export/model.safetensors`` (a finished run), the
    newest complete checkpoint's ``ema.safetensors`` (an interrupted run).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a run directory or an export directory)")
    candidates = [(path / "model.safetensors", path / "config.yaml"),
                  (path / "export" / "model.safetensors", path / "export" / "config.yaml")]
    last = latest_checkpoint(path / "checkpoints")
    if last is not None:
        candidates.append((last / "ema.safetensors", path / "config.yaml"))
    if (path / "ema.safetensors").exists():
        candidates.append((path / "ema.safetensors", path.parent.parent / "config.yaml"))
    for weights, config in candidates:
        if weights.is_file() and config.is_file():
            return weights, config
    raise CheckpointError(f"no weights found under {path}: expected model.safetensors + config.yaml (an export), "
                          f"export/ (a run), or a complete checkpoint")


def load_model(path: str | Path, *, device: str | torch.device = "cpu",
               overrides: Optional[list[tuple[str, object]]] = None) -> tuple[CrossFlow, Task, ExperimentConfig]:
    """Build the task and model described by the saved config and load the weights strictly."""
    weights, config_path = resolve_weights(path)
    raw = apply_overrides(load_yaml(config_path), overrides or [])
    cfg, task_cls = experiment_from_dict(raw)
    task = task_cls(cfg)
    model = task.build_model()
    state = load_safetensors(weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match the model of {config_path}: "
                              f"missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}")
    return model.to(device).eval(), task, cfg


__all__ = ["ConfigError", "load_model", "resolve_weights"]
