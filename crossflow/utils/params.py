"""Parameter counts of a config's model, built on the meta device (no memory, no weights, no data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def build_on_meta(cfg: Any, task_cls: type) -> nn.Module:
    """Build ``task_cls(cfg).build_model()`` with every tensor on the meta device.

    The task must know its shapes without data or model files (for t2i: set ``task.language_model.dim``).
    Its source and target specs are resolved first, on the real device: reading them may load files or
    models (``from_pretrained`` refuses to run inside a meta-device context); only the model's own tensors
    are then made on meta.
    """
    task = task_cls(cfg)
    source, target = task.source_spec(), task.target_spec()
    task.source_spec, task.target_spec = (lambda: source), (lambda: target)  # this instance only
    with torch.device("meta"):
        return task.build_model()


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level child, plus ``total``, ``trainable`` and ``frozen``."""
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    direct = sum(p.numel() for p in model.parameters(recurse=False))
    if direct:
        counts["(own parameters)"] = direct
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts | {"total": total, "trainable": trainable, "frozen": total - trainable}


def config_parameter_counts(config: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """``crossflow params``: load and validate ``config``, build its model on meta, count parameters."""
    from crossflow.registry import load_experiment

    cfg, task_cls = load_experiment(config, list(overrides))
    model = build_on_meta(cfg, task_cls)
    allocated = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if not t.is_meta]
    counts = parameter_counts(model)
    return {"config": str(config), "parameters": counts,
            "millions": {k: round(v / 1e6, 2) for k, v in counts.items()},
            "tensors_not_on_meta": allocated}
