"""The linear probability path and the training-time samplers against hand computation."""

from __future__ import annotations

import torch

from crossflow.flow.path import LinearPath, sample_time


def test_linear_path_matches_hand_computation():
    z0 = torch.tensor([[2.0, -1.0]])
    z1 = torch.tensor([[4.0, 3.0]])
    t = torch.tensor([0.25])
    sample = LinearPath(sigma_min=0.1).sample(z0, z1, t)
    # x_t = (1 - 0.9*0.25) z0 + 0.25 z1 = 0.775 z0 + 0.25 z1
    torch.testing.assert_close(sample.x_t, torch.tensor([[0.775 * 2 + 1.0, -0.775 + 0.75]]))
    # v = z1 - 0.9 z0
    torch.testing.assert_close(sample.velocity, torch.tensor([[4.0 - 1.8, 3.0 + 0.9]]))


def test_path_endpoints_and_velocity_is_time_derivative():
    path = LinearPath(1e-5)
    z0, z1 = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(path.sample(z0, z1, torch.zeros(3)).x_t, z0)
    torch.testing.assert_close(path.sample(z0, z1, torch.ones(3)).x_t, z1 + 1e-5 * z0)
    t, h = torch.full((3,), 0.4, dtype=torch.float64), 1e-6
    finite_diff = (path.sample(z0, z1, t + h).x_t - path.sample(z0, z1, t - h).x_t) / (2 * h)
    torch.testing.assert_close(finite_diff, path.sample(z0, z1, t).velocity)


def test_time_samplers_range_and_logit_normal_median():
    g = torch.Generator().manual_seed(0)
    t = sample_time(20000, kind="logit_normal", generator=g)
    assert 0 < t.min() and t.max() < 1
    assert abs(float(t.median()) - 0.5) < 0.02
    # logit(t) ~ N(0, 1)
    assert abs(float(torch.logit(t).std()) - 1.0) < 0.03
    u = sample_time(20000, kind="uniform", generator=g)
    assert abs(float(u.mean()) - 0.5) < 0.01
