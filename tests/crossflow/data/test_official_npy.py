"""The official per-sample .npy feature layout: safe reading, field selection, conversion to shards, training data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from crossflow.cli import main as cli_main
from crossflow.data.feature_shards import FeatureShards
from crossflow.data.official_npy import OfficialFeatureFolder, load_official_npy, official_sample_features
from crossflow.task import load_experiment


def official_training_sample(rng: np.random.Generator, *, tokens: int = 77, clip_dim: int = 768, t5_dim: int = 4096,
                             latent: int = 32, caption: str = "a cat on a mat") -> dict:
    """A dict with the keys, dtypes and (by default) shapes of the official ``scripts/extract_train_feature.py``."""
    mask = (np.arange(tokens) < 6).astype(np.int64)
    return {"image_latent_256": rng.standard_normal((8, latent, latent)).astype(np.float32),
            "image_latent_512": rng.standard_normal((8, 2 * latent, 2 * latent)).astype(np.float32),
            "token_embedding_clip": rng.standard_normal((tokens, clip_dim)).astype(np.float32),
            "token_embedding_t5": (10 * rng.standard_normal((tokens, t5_dim))).astype(np.float32),
            "token_mask_clip": mask, "token_mask_t5": mask,
            "token_clip": rng.integers(0, 49408, tokens).astype(np.int64),
            "token_t5": rng.integers(0, 32128, tokens).astype(np.int64), "batch_caption": caption}


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_read_official_training_sample(tmp_path: Path) -> None:
    sample = official_training_sample(np.random.default_rng(0))
    np.save(tmp_path / "0a1b.npy", sample)
    loaded = load_official_npy(tmp_path / "0a1b.npy")
    assert set(loaded) == set(sample) and loaded["batch_caption"] == "a cat on a mat"
    for k, v in sample.items():
        if isinstance(v, np.ndarray):
            assert np.array_equal(loaded[k], v) and loaded[k].dtype == v.dtype, k
    clip = official_sample_features(loaded, lm="clip", resolution=256)
    assert clip["tokens"].shape == (77, 768) and clip["moments"].shape == (8, 32, 32)
    assert clip["mask"].dtype == bool and clip["mask"].sum() == 6 and clip["prompt"] == "a cat on a mat"
    t5 = official_sample_features(loaded, lm="t5", resolution=512)
    assert t5["tokens"].shape == (77, 4096) and t5["moments"].shape == (8, 64, 64)
    assert np.array_equal(t5["tokens"], sample["token_embedding_t5"])  # stored already ×10: no rescaling
    with pytest.raises(KeyError, match="image_latent_128"):
        official_sample_features(loaded, resolution=128)


def test_read_official_validation_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    moments = rng.standard_normal((8, 32, 32)).astype(np.float32)
    np.save(tmp_path / "0.npy", moments)  # val/{i}.npy: a plain array
    assert np.array_equal(load_official_npy(tmp_path / "0.npy"), moments)
    prompt = {"promt": "two dogs", "token_embedding": rng.standard_normal((77, 768)).astype(np.float32),
              "token_mask": np.ones(77, np.int64), "token": np.arange(77)}
    np.save(tmp_path / "0_3.npy", prompt)  # val/{i}_{k}.npy
    feats = official_sample_features(load_official_npy(tmp_path / "0_3.npy"), resolution=None)
    assert feats["prompt"] == "two dogs" and "moments" not in feats and feats["mask"].all()


def test_refuses_arbitrary_pickle(tmp_path: Path) -> None:
    np.save(tmp_path / "evil.npy", np.array({"x": _Evil()}, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="refusing to unpickle .*system"):
        load_official_npy(tmp_path / "evil.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="not a .npy file"):
        load_official_npy(tmp_path / "junk.npy")


def _small_official_folder(root: Path, n: int = 6) -> list[dict]:
    rng = np.random.default_rng(2)
    root.mkdir(parents=True)
    samples = []
    for i in range(n):
        s = official_training_sample(rng, tokens=16, clip_dim=32, t5_dim=48, latent=2, caption=f"caption {i}")
        s["image_latent_32"] = rng.standard_normal((8, 4, 4)).astype(np.float32)  # key image_latent_{resolution}
        np.save(root / f"{i:04x}.npy", s)
        samples.append(s)
    (root / "0003.npy").write_bytes(b"\x93NUMPY broken")  # one unreadable file
    return samples


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
    samples = _small_official_folder(tmp_path / "official")
    (tmp_path / "official" / "0003.npy").unlink()
    cfg, task_cls = load_experiment(_config(tmp_path, "official_npy", tmp_path / "official"))
    task = task_cls(cfg)
    data = task.train_dataset()
    assert isinstance(data, OfficialFeatureFolder) and len(data) == 5
    batch = task.prepare_batch(data.__getitems__([0, 1]), torch.device("cpu"))
    assert batch["source"].shape == (2, 16, 32) and batch["target"].shape == (2, 4, 4, 4)
    torch.testing.assert_close(batch["source"][0], torch.from_numpy(samples[0]["token_embedding_clip"]))


def test_convert_official_folder(tmp_path: Path) -> None:
    samples = _small_official_folder(tmp_path / "official")
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
