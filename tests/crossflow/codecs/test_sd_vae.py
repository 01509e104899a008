"""SD-VAE codec with a tiny random AutoencoderKL: moments, per-step latent sampling, scale factor, decode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from crossflow.codecs import OFFICIAL_SCALE_FACTOR, SDVAECodec, sample_latent  # noqa: E402
from helpers.tiny_models import make_tiny_vae  # noqa: E402


def _images(n: int = 3, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_moments_match_diffusers(tiny_vae: Path) -> None:
    codec = SDVAECodec(str(tiny_vae), device="cpu")
    assert codec.scale_factor == OFFICIAL_SCALE_FACTOR == 0.23010
    assert codec.latent_channels == 4 and codec.downsample_factor == 8
    x = _images()
    moments = codec.encode_moments(x)
    ref = diffusers.AutoencoderKL.from_pretrained(tiny_vae).eval()
    with torch.no_grad():
        dist = ref.encode(x).latent_dist
    assert moments.shape == (3, 8, 4, 4) and moments.dtype == torch.float32
    torch.testing.assert_close(moments, torch.cat([dist.mean, dist.logvar], 1), rtol=1e-5, atol=1e-5)


def test_sample_latent_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    logvar[0, 0, 0, 0] = 50.0  # clamped to 20 like the official / diffusers posterior
    moments = torch.cat([mean, logvar], 1)
    z = sample_latent(moments, 0.5, torch.Generator().manual_seed(7))
    eps = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(z, 0.5 * (mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps))
    # A fresh latent each call; over many draws mean → scale·mean and std → scale·σ.
    big = moments[1:].expand(4000, -1, -1, -1)
    draws = sample_latent(big, OFFICIAL_SCALE_FACTOR, torch.Generator().manual_seed(1))
    torch.testing.assert_close(draws.mean(0), OFFICIAL_SCALE_FACTOR * mean[1], atol=0.06 * OFFICIAL_SCALE_FACTOR * 3,
                               rtol=0)
    torch.testing.assert_close(draws.std(0) / (OFFICIAL_SCALE_FACTOR * torch.exp(0.5 * logvar[1])),
                               torch.ones(4, 3, 3), atol=0.08, rtol=0)
    with pytest.raises(ValueError, match="mean ‖ logvar"):
        sample_latent(torch.zeros(2, 3, 4, 4), 1.0)


@pytest.mark.parametrize("scale", [OFFICIAL_SCALE_FACTOR, 0.18215])
def test_decode_undoes_the_scale(tiny_vae: Path, scale: float) -> None:
    codec = SDVAECodec(str(tiny_vae), device="cpu", scale_factor=scale, decode_batch_size=2)
    x = _images(3)
    z = codec.encode(x, torch.Generator().manual_seed(3))
    assert z.shape == (3, 4, 4, 4)
    ref = diffusers.AutoencoderKL.from_pretrained(tiny_vae).eval()
    with torch.no_grad():
        direct = ref.decode(z / scale).sample.clamp(-1, 1)
    out = codec.decode(z)  # decoded in chunks of 2
    assert out.shape == (3, 3, 32, 32) and out.min() >= -1 and out.max() <= 1
    torch.testing.assert_close(out, direct, rtol=1e-5, atol=1e-5)


def test_loading_paths(tmp_path: Path, tiny_vae: Path) -> None:
    pipeline = make_tiny_vae(tmp_path / "pipeline", subfolder="vae")  # a diffusers pipeline layout
    a = SDVAECodec(str(pipeline), device="cpu").encode_moments(_images(1))
    b = SDVAECodec(str(tiny_vae), device="cpu").encode_moments(_images(1))
    torch.testing.assert_close(a, b)  # same seed, same weights, found in vae/
    same_weights = SDVAECodec(str(pipeline)).identifier.replace("pipeline", tiny_vae.name)
    assert SDVAECodec(str(tiny_vae)).identifier == same_weights
    with pytest.raises(FileNotFoundError, match="no_vae"):
        _ = SDVAECodec(str(tmp_path / "no_vae")).vae
    with pytest.raises(OSError, match="could not load VAE"):
        _ = SDVAECodec(str(tmp_path)).vae  # a directory without a VAE
    with pytest.raises(ValueError, match="scale_factor"):
        SDVAECodec(str(tiny_vae), scale_factor=0.0)
