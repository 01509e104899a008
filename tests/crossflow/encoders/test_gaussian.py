"""Diagonal Gaussian posterior: KL against the closed form and torch.distributions, reparameterised draws."""

from __future__ import annotations

import math

import pytest
import torch

from crossflow.encoders import DiagonalGaussian


def test_kl_matches_closed_form_and_monte_carlo():
    mean = torch.tensor([[0.5, -1.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0), math.log(0.25)]])
    post = DiagonalGaussian(mean, logvar)
    # ½ Σ (μ² + σ² − 1 − ln σ²)
    expected = 0.5 * ((0.25 + 1 - 1 - 0) + (1 + 4 - 1 - math.log(4)) + (4 + 0.25 - 1 - math.log(0.25)))
    torch.testing.assert_close(post.kl(), torch.tensor([expected]))
    q = torch.distributions.Normal(mean, logvar.mul(0.5).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    torch.testing.assert_close(post.kl(), torch.distributions.kl_divergence(q, p).sum(-1))
    assert float(DiagonalGaussian(torch.zeros(2, 5), torch.zeros(2, 5)).kl().abs().max()) == 0.0


def test_reparameterised_sample_statistics_and_temperature():
    post = DiagonalGaussian(torch.full((1, 50000), 3.0), torch.full((1, 50000), math.log(4.0)))
    z = post.sample(generator=torch.Generator().manual_seed(0))
    assert abs(float(z.mean()) - 3.0) < 0.05 and abs(float(z.std()) - 2.0) < 0.05
    z_cold = post.sample(temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert abs(float(z_cold.std()) - 1.0) < 0.03
    torch.testing.assert_close(post.sample(temperature=0.0), post.mean)


def test_given_noise_is_used_as_the_standard_normal_draw():
    post = DiagonalGaussian(torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, math.log(9.0)]]))
    noise = torch.tensor([[0.5, -1.0]])
    # mean + temperature·std·ε with std = (1, 3)
    torch.testing.assert_close(post.sample(temperature=2.0, noise=noise), torch.tensor([[2.0, -8.0]]))
    drawn = post.sample(generator=torch.Generator().manual_seed(4))
    given = post.sample(noise=torch.randn(1, 2, generator=torch.Generator().manual_seed(4)))
    assert torch.equal(drawn, given)  # a generator draw is the same ε
    with pytest.raises(ValueError, match=r"noise has shape \(2, 2\), expected \(1, 2\)"):
        post.sample(noise=torch.zeros(2, 2))
