"""Files in the layout of the official CrossFlow feature extraction (per-sample ``.npy`` dicts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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


def small_official_folder(root: Path, n: int = 6) -> list[dict]:
    """``n`` small official training samples (tokens 16×32 CLIP / 16×48 T5, latent key ``image_latent_32``) as
    ``root/{i:04x}.npy``; file 3 is then overwritten with garbage. Returns the samples."""
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
