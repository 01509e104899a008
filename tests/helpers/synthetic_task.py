"""A tiny in-memory task for fast trainer tests: 4 classes of token sequences → 1×8×8 quadrant images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from crossflow.task import Task


@dataclass
class SyntheticConfig:
    name: str = "synthetic_task:SyntheticTask"
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


class SyntheticData(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.vocab = torch.randn(4, 16, generator=g)
        self.labels = torch.randint(0, 4, (n,), generator=g)
        self.lengths = torch.randint(2, 7, (n,), generator=g)
        self.noise = 0.1 * torch.randn(n, 6, 16, generator=g)

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


class SyntheticTask(Task):
    config_class = SyntheticConfig

    def __init__(self, config, cache_dir=None) -> None:
        super().__init__(config, cache_dir=cache_dir)
        self.data = SyntheticData(config.task.num_items, config.task.seed)
        self.batches_seen = 0

    latent_shape = property(lambda self: (1, 8, 8))
    source_dim = property(lambda self: 16)
    max_tokens = property(lambda self: 6)

    def train_dataset(self):
        return self.data

    def prepare_batch(self, batch, device):
        self.batches_seen += 1
        out = super().prepare_batch(batch, device)
        if self.batches_seen == self.config.task.nan_at_step:
            out["target"] = out["target"] * float("nan")
        return out

    def evaluate(self, model, out_dir: Path, **options):
        labels = torch.arange(4).repeat(8)
        tokens, mask = self.data.source(labels, torch.full_like(labels, 4), torch.zeros(len(labels), 6, 16))
        images = model.generate(tokens, mask, sample=self.config.sample, **options)
        quads = torch.stack([images[:, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4].mean(dim=(1, 2))
                             for r in range(2) for c in range(2)], dim=1)
        metrics = {"accuracy": float((quads.argmax(1) == labels).float().mean())}
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics))
        return metrics
