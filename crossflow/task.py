"""The contract between the core and a task adapter, and how adapters are found.

A task adapter says what the source and the target are: which dataset feeds the trainer, the
shape of the target latent, the width of the source tokens, how generated latents are decoded
and scored. The core never imports ``tasks`` statically: ``task.name`` in a config is resolved at
run time (``t2i`` → module ``tasks.t2i``, or ``package.module:Class`` for adapters elsewhere).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import Dataset, default_collate

from crossflow.config import ConfigError, apply_overrides, from_dict, load_yaml, parse_overrides
from crossflow.model import CrossFlow, build_crossflow
from crossflow.schema import ExperimentConfig


class Task(ABC):
    """Base class of task adapters.

    Subclasses set ``config_class`` (a dataclass with at least a ``name`` field) and implement the
    abstract members. ``self.config`` is the whole :class:`ExperimentConfig`.
    """

    config_class: type

    def __init__(self, config: ExperimentConfig, *, cache_dir: Optional[Path] = None) -> None:
        self.config = config
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path(".cache")

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the target latent z1 (and of z0)."""

    @property
    @abstractmethod
    def source_dim(self) -> int:
        """Width of the source token embeddings."""

    @property
    @abstractmethod
    def max_tokens(self) -> int:
        """Longest source token sequence."""

    @property
    def source_shape(self) -> Optional[tuple[int, int, int]]:
        """``(C, H, W)`` of an image-shaped source (for ``model.source_encoder.arch=image``); None for tokens."""
        return None

    @abstractmethod
    def train_dataset(self) -> Dataset:
        """Dataset whose collated batches go through :meth:`prepare_batch`."""

    @abstractmethod
    def evaluate(self, model: CrossFlow, out_dir: Path, **options: Any) -> dict[str, Any]:
        """Generate on held-out data, score, write ``metrics.json`` and pictures under ``out_dir``."""

    def build_model(self) -> CrossFlow:
        if self.config.model.kind == "xattn_baseline":  # paper Table 1 baseline (same trainer and interface)
            from crossflow.baseline import build_xattn_baseline

            return build_xattn_baseline(self.config.model, self.config.flow, source_dim=self.source_dim,
                                        latent_shape=self.latent_shape)
        return build_crossflow(self.config.model, self.config.flow, source_dim=self.source_dim,
                               max_tokens=self.max_tokens, latent_shape=self.latent_shape,
                               source_shape=self.source_shape)

    def collate(self, items: Any) -> dict[str, torch.Tensor]:
        return items if isinstance(items, dict) else default_collate(items)

    def prepare_batch(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        """Move a collated batch to ``device`` (and encode targets, for tasks with a codec)."""
        return {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def preview(self, model: CrossFlow, path: Path) -> None:
        """Write a small sample grid to ``path`` (optional)."""

    def sample_inputs(self, model: CrossFlow, inputs: list[str], out_dir: Path, *, seed: int = 0,
                      **overrides: Any) -> dict[str, Any]:
        """Generate from input files (``crossflow sample --input``; image paths for image-source tasks).

        Writes the outputs under ``out_dir`` and returns a small summary. Tasks without file inputs keep
        this default, which says so.
        """
        raise ValueError(f"task {getattr(self.config.task, 'name', '?')!r} does not take input files "
                         f"(--input); give prompts instead")


def load_task_class(name: str) -> type[Task]:
    """Resolve ``t2i`` → ``tasks.t2i.TASK``, or ``pkg.module:Class``."""
    module_name, _, attr = name.partition(":")
    if not attr:
        module_name, attr = f"tasks.{name}", "TASK"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"task.name: no task adapter {name!r} (module {module_name!r} not found)") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"task.name: {name!r} does not name a Task subclass ({module_name}.{attr})")
    return cls


def experiment_from_dict(raw: dict[str, Any]) -> tuple[ExperimentConfig, type[Task]]:
    """Validate a raw config dict: the static sections by the schema, ``task`` by its adapter."""
    task_raw = raw.get("task")
    if not isinstance(task_raw, dict) or "name" not in task_raw:
        raise ConfigError("task.name: missing; every config names its task adapter (e.g. task: {name: t2i})")
    task_cls = load_task_class(str(task_raw["name"]))
    task_cfg = from_dict(task_cls.config_class, task_raw, path="task")
    cfg = from_dict(ExperimentConfig, {k: v for k, v in raw.items() if k != "task"})
    cfg.task = task_cfg
    return cfg, task_cls


def load_experiment(path: str | Path, overrides: list[str] = ()) -> tuple[ExperimentConfig, type[Task]]:
    """YAML file (+ ``key=value`` overrides) → validated config and its task adapter class."""
    raw = apply_overrides(load_yaml(path), parse_overrides(list(overrides)))
    return experiment_from_dict(raw)
