"""A tiny task defined outside ``tasks/``: 4 classes of token sequences → 1×8×8 quadrant images.

It implements the whole task contract (specs, dataset, source processor, codec, evaluator) in one file,
as docs/adding_a_task.md describes, and is what the trainer and pipeline tests run on. Configs name it
``helpers.synthetic_task:SyntheticTask`` (``tests/`` is on ``sys.path``), or ``synthetic`` once registered
as an entry point (tests/crossflow/test_registry.py).
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch.utils.data import Dataset

from crossflow.codecs import ImageCodec
from crossflow.schema import SampleConfig
from crossflow.specs import ImageSpec, TokenSpec
from crossflow.task import Source, Task


#: How configs name this task without registering it (``package.module:Class``).
TASK_NAME = "helpers.synthetic_task:SyntheticTask"


def tiny_raw_config(**train: Any) -> dict:
    """A complete raw config of the synthetic task with a very small model; ``train`` updates the train section."""
    return {
        "task": {"name": TASK_NAME, "num_items": 256},
        "model": {"source_encoder": {"width": 32, "depth": 1, "num_heads": 2, "num_queries": 2},
                  "velocity_net": {"patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 2},
                  "contrastive": {"widths": [8, 16], "hidden_dim": 32}},
        "flow": {"null_probability": 0.2},
        "train": {"batch_size": 16, "max_steps": 20, "lr": 1e-3, "warmup_steps": 2, "checkpoint_every": 10,
                  "log_every": 5, "seed": 3, **train},
        "sample": {"steps": 10, "guidance": 1.0, "batch_size": 32},
    }


@dataclass
class SyntheticConfig:
    name: str = TASK_NAME
    num_items: int = 256
    seed: int = 0
    nan_at_step: int = 0  # >0: the loss of that step's batch becomes NaN (for the NaN-stop test)


def quadrant_images(labels: torch.Tensor) -> torch.Tensor:
    """Class k lights quadrant k of an 8×8 image: values -1 (off) / +1 (on), shape (B, 1, 8, 8)."""
    img = -torch.ones(labels.shape[0], 1, 8, 8)
    for i, k in enumerate(labels.tolist()):
        r, c = divmod(k, 2)
        img[i, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 1.0
    return img


def quadrant_of(images: torch.Tensor) -> torch.Tensor:
    """The brightest quadrant of ``(B, 1, 8, 8)`` images: ``(B,)`` class labels."""
    quads = torch.stack([images[:, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4].mean(dim=(1, 2))
                         for r in range(2) for c in range(2)], dim=1)
    return quads.argmax(1)


class SyntheticData(Dataset):
    def __init__(self, n: int, seed: int, nan_at_step: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.vocab = torch.randn(4, 16, generator=g)
        self.labels = torch.randint(0, 4, (n,), generator=g)
        self.lengths = torch.randint(2, 7, (n,), generator=g)
        self.noise = 0.1 * torch.randn(n, 6, 16, generator=g)
        self.nan_at_step, self.batches_seen = nan_at_step, 0

    def __len__(self) -> int:
        return self.labels.shape[0]

    def source(self, labels: torch.Tensor, lengths: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.arange(6)[None] < lengths[:, None]
        tokens = (self.vocab[labels][:, None] + noise) * mask[..., None]
        return tokens, mask

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices)
        tokens, mask = self.source(self.labels[idx], self.lengths[idx], self.noise[idx])
        return {"source": tokens, "source_mask": mask, "target": quadrant_images(self.labels[idx])}

    def prepare(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        """Move to the device; the batch of step ``nan_at_step`` gets a NaN target.

        Preemption tests: with ``SYNTHETIC_SIGTERM_AT=N`` in the environment this process sends itself SIGTERM
        while preparing its N-th batch (only on the ranks listed in ``SYNTHETIC_SIGTERM_RANKS``, if set), as a
        cluster would in the middle of a step.
        """
        self.batches_seen += 1
        at, ranks = int(os.environ.get("SYNTHETIC_SIGTERM_AT", 0)), os.environ.get("SYNTHETIC_SIGTERM_RANKS")
        if self.batches_seen == at and (ranks is None or os.environ.get("RANK", "0") in ranks.split(",")):
            os.kill(os.getpid(), signal.SIGTERM)
        out = {k: v.to(device) for k, v in batch.items()}
        if self.batches_seen == self.nan_at_step:
            out["target"] = out["target"] * float("nan")
        return out


class LabelProcessor:
    """Inputs are class labels 0..3 → their clean token sequences (length 4)."""

    def __init__(self, data: SyntheticData) -> None:
        self.data = data

    def __call__(self, inputs: Sequence[int], device: torch.device | str) -> Source:
        labels = torch.as_tensor(list(inputs), dtype=torch.long)
        tokens, mask = self.data.source(labels, torch.full_like(labels, 4), torch.zeros(len(labels), 6, 16))
        return Source(tokens.to(device), mask.to(device))


class QuadrantEvaluator:
    """Accuracy of the lit quadrant over 8 samples of each class."""

    def __init__(self, task: "SyntheticTask") -> None:
        self.task = task

    def evaluate(self, pipe: Any, out_dir: Path, *, num: Optional[int] = None,
                 options: Optional[SampleConfig] = None) -> dict[str, Any]:
        labels = torch.arange(4).repeat(8)[:num]
        images = pipe(labels.tolist(), options=options).images
        metrics = {"accuracy": float((quadrant_of(images) == labels).float().mean())}
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    def preview(self, pipe: Any, path: Path) -> None:
        from crossflow.utils.images import save_grid

        save_grid(pipe([0, 1, 2, 3], steps=4).tiles(), path)


class SyntheticTask(Task):
    config_class = SyntheticConfig

    def __init__(self, config) -> None:
        super().__init__(config)
        t = config.task
        self.data = SyntheticData(t.num_items, t.seed, t.nan_at_step)

    def source_spec(self) -> TokenSpec:
        return TokenSpec(max_tokens=6, dim=16)

    def target_spec(self) -> ImageSpec:
        return ImageSpec(1, 8, 8)

    def train_dataset(self) -> SyntheticData:
        return self.data

    def source_processor(self) -> LabelProcessor:
        return LabelProcessor(self.data)

    def codec(self) -> ImageCodec:
        return ImageCodec()

    def evaluator(self) -> QuadrantEvaluator:
        return QuadrantEvaluator(self)
