"""Text-to-image training data from official per-sample .npy files: read directly, or converted to shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from crossflow.cli import main as cli_main
from crossflow.data.feature_shards import FeatureShards
from crossflow.data.official_npy import OfficialFeatureFolder
from crossflow.registry import load_experiment
from crossflow.task import PreparesBatches
from helpers.official_npy import small_official_folder


def _config(tmp_path: Path, dataset: str, features: Path) -> Path:
    path = tmp_path / f"{dataset}.yaml"
    path.write_text(f"""
task: {{name: t2i, dataset: {dataset}, features_dir: {features}, resolution: 32, official_lm: clip,
        language_model: {{name_or_path: unused, max_length: 16, dim: 32}}}}
model:
  source_encoder: {{width: 32, depth: 1, num_heads: 2, num_queries: 2}}
  velocity_net: {{patch_size: 2, hidden_size: 32, depth: 2, num_heads: 2}}
  contrastive: {{widths: [8, 16], hidden_dim: 32}}
""")
    return path


def test_official_folder_trains_and_converts(tmp_path: Path) -> None:
    samples = small_official_folder(tmp_path / "official")
    (tmp_path / "official" / "0003.npy").unlink()
    cfg, task_cls = load_experiment(_config(tmp_path, "official_npy", tmp_path / "official"))
    task = task_cls(cfg)
    assert task.source_spec().shape == (16, 32) and task.target_spec().shape == (4, 4, 4)
    data = task.train_dataset()
    assert isinstance(data.data, OfficialFeatureFolder) and len(data) == 5
    assert isinstance(data, PreparesBatches)  # the trainer draws the SD-VAE latent on the device
    batch = data.prepare(data.__getitems__([0, 1]), torch.device("cpu"))
    assert batch["source"].shape == (2, 16, 32) and batch["target"].shape == (2, 4, 4, 4)
    torch.testing.assert_close(batch["source"][0], torch.from_numpy(samples[0]["token_embedding_clip"]))


def test_convert_official_folder(tmp_path: Path) -> None:
    samples = small_official_folder(tmp_path / "official")
    cfg_path = _config(tmp_path, "features", tmp_path / "feats")
    assert cli_main(["extract", str(cfg_path), "--from-official", str(tmp_path / "official"), "--shard-size", "4"]) == 0
    data = FeatureShards(tmp_path / "feats")
    assert len(data) == 5 and data.prompts == [f"caption {i}" for i in (0, 1, 2, 4, 5)]
    assert [s["index"] for s in data.skipped] == [3] and data.skipped[0]["reason"].startswith("corrupt")
    np.testing.assert_allclose(data.gather("tokens", np.array([3]))[0].astype(np.float32),
                               samples[4]["token_embedding_clip"], rtol=1e-3, atol=1e-3)
    assert data.meta["language_model"]["name_or_path"] == "official:clip"
    cfg, task_cls = load_experiment(cfg_path)
    assert len(task_cls(cfg).train_dataset()) == 5  # the converted shards pass the config checks
