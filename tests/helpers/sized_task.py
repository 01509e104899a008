"""A task of random data in shapes set by its config, for memory measurements of real training.

Token sequences ``(tokens, token_dim)`` → latents ``(channels, size, size)``, drawn from a seeded generator per
batch (no dataset held in memory). Its dataset records the process's peak RSS (``ru_maxrss``) each time the
trainer prepares a batch, so a test can read the peak of the steps trained so far without knowing the
trainer's internals. Configs name it ``helpers.sized_task:SizedTask``.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from crossflow.codecs import ImageCodec
from crossflow.schema import SampleConfig
from crossflow.specs import ImageSpec, TokenSpec
from crossflow.task import Source, Task

TASK_NAME = "helpers.sized_task:SizedTask"


@dataclass
class SizedConfig:
    name: str = TASK_NAME
    num_items: int = 1024
    tokens: int = 16
    token_dim: int = 64
    channels: int = 4
    size: int = 32
    seed: int = 0


class RandomPairs(Dataset):
    """``num_items`` random (tokens, latent) pairs, each drawn from its index (nothing stored)."""

    def __init__(self, cfg: SizedConfig) -> None:
        self.cfg = cfg
        self.peak_rss_kib: list[int] = []  # ru_maxrss when each batch was prepared

    def __len__(self) -> int:
        return self.cfg.num_items

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        c = self.cfg
        g = torch.Generator().manual_seed(c.seed * 1_000_003 + int(indices[0]))
        b = len(indices)
        return {"source": torch.randn(b, c.tokens, c.token_dim, generator=g),
                "source_mask": torch.ones(b, c.tokens, dtype=torch.bool),
                "target": torch.randn(b, c.channels, c.size, c.size, generator=g)}

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        self.peak_rss_kib.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        return {k: v.to(device) for k, v in batch.items()}


class RandomTokens:
    """Inputs are seeds → random token sequences (the pipeline needs a source processor)."""

    def __init__(self, cfg: SizedConfig) -> None:
        self.cfg = cfg

    def __call__(self, inputs: Sequence[int], device: torch.device | str) -> Source:
        c = self.cfg
        tokens = torch.stack([torch.randn(c.tokens, c.token_dim, generator=torch.Generator().manual_seed(int(i)))
                              for i in inputs])
        return Source(tokens.to(device), torch.ones(len(inputs), c.tokens, dtype=torch.bool, device=device))


class NoEvaluation:
    """This task measures memory: nothing to score, no preview picture."""

    def evaluate(self, pipe: Any, out_dir: Path, *, num: int | None = None,
                 options: SampleConfig | None = None) -> dict[str, Any]:
        return {}

    def preview(self, pipe: Any, path: Path) -> None:
        return None


class SizedTask(Task):
    config_class = SizedConfig

    def __init__(self, config) -> None:
        super().__init__(config)
        self.data = RandomPairs(config.task)

    def source_spec(self) -> TokenSpec:
        return TokenSpec(max_tokens=self.config.task.tokens, dim=self.config.task.token_dim)

    def target_spec(self) -> ImageSpec:
        t = self.config.task
        return ImageSpec(t.channels, t.size, t.size)

    def train_dataset(self) -> RandomPairs:
        return self.data

    def source_processor(self) -> RandomTokens:
        return RandomTokens(self.config.task)

    def codec(self) -> ImageCodec:
        return ImageCodec()

    def evaluator(self) -> NoEvaluation:
        return NoEvaluation()
