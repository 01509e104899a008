"""z0 interpolation and latent arithmetic (the official demo's math)."""

from __future__ import annotations

import pytest
import torch

from crossflow.latent_ops import interpolate_latents, latent_arithmetic, standardize


def test_interpolation_frames_are_evenly_spaced_with_exact_endpoints():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 8, 8, generator=g), torch.randn(4, 8, 8, generator=g)
    z = interpolate_latents(a, b, 7)
    assert z.shape == (7, 4, 8, 8)
    assert torch.equal(z[0], a) and torch.equal(z[-1], b)
    for i in range(7):
        torch.testing.assert_close(z[i], a + (b - a) * i / 6)
    steps = z[1:] - z[:-1]  # a straight line: equal steps
    torch.testing.assert_close(steps, (b - a).expand_as(steps) / 6)


@pytest.mark.parametrize("frames", [1, 0, 2.5, True])
def test_interpolation_rejects_bad_frame_counts(frames):
    with pytest.raises(ValueError, match="frames"):
        interpolate_latents(torch.zeros(2), torch.ones(2), frames)


def test_interpolation_rejects_mismatched_endpoints():
    with pytest.raises(ValueError, match="shape"):
        interpolate_latents(torch.zeros(2, 3), torch.zeros(3, 2), 5)


def test_arithmetic_combines_then_standardises_each_latent():
    g = torch.Generator().manual_seed(1)
    ori, add, sub = (torch.randn(3, 4, 8, 8, generator=g) + 2 for _ in range(3))
    z = latent_arithmetic(ori, add, sub, add_scale=0.5)
    assert z.shape == ori.shape
    flat = z.flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(flat.std(1), torch.ones(3))  # unbiased, as torch's .std() in the demo
    raw = (ori + 0.5 * add - sub).flatten(1)  # hand computation
    expected = (raw - raw.mean(1, keepdim=True)) / raw.std(1, keepdim=True)
    torch.testing.assert_close(flat, expected)


def test_arithmetic_either_term_is_optional():
    ori, other = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(latent_arithmetic(ori, add=other), standardize(ori + other))
    torch.testing.assert_close(latent_arithmetic(ori, sub=other), standardize(ori - other))
    torch.testing.assert_close(latent_arithmetic(ori, sub=other, renormalize=False), ori - other)
    with pytest.raises(ValueError, match="add or to subtract"):
        latent_arithmetic(ori)
    with pytest.raises(ValueError, match="add latent has shape"):
        latent_arithmetic(ori, add=torch.randn(1, 2, 4, 2))


def test_standardize_refuses_a_constant_latent():
    with pytest.raises(ValueError, match="constant"):
        standardize(torch.ones(1, 4))
