"""The official per-sample .npy feature layout: safe reading (no arbitrary pickle) and field selection."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from crossflow.data.official_npy import load_official_npy, official_sample_features
from helpers.official_npy import official_training_sample


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


