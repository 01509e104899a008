"""Path, losses, indicator rule and guidance against hand computation and closed forms."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crossflow.encoders import DiagonalGaussian
from crossflow.flow.guidance import GuidedVelocity
from crossflow.flow.indicator import draw_null_indicator, roll_null_targets
from crossflow.flow.loss import flow_matching_loss, info_nce
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


def test_flow_matching_loss_per_sample_mean_squared_error():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    torch.testing.assert_close(flow_matching_loss(pred, target), torch.tensor([2.5, 5.0]))


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


def test_info_nce_matches_closed_form():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    scale = torch.tensor(math.log(10.0))
    an, bn = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = 10.0 * an @ bn.t()
    # row-wise CE: -log softmax(logits)[i, i]; column-wise on the transpose
    rows = -(logits.diag() - torch.logsumexp(logits, dim=1)).mean()
    cols = -(logits.diag() - torch.logsumexp(logits, dim=0)).mean()
    torch.testing.assert_close(info_nce(a, b, scale), 0.5 * (rows + cols))
    # by hand: cos = [[1, 0], [1/√2, 1/√2]]
    c = 1 / math.sqrt(2)
    l_rows = (-(10 - math.log(math.exp(10) + 1)) - (10 * c - math.log(2 * math.exp(10 * c)))) / 2
    l_cols = (-(10 - math.log(math.exp(10) + math.exp(10 * c))) - (10 * c - math.log(1 + math.exp(10 * c)))) / 2
    assert abs(float(info_nce(a, b, scale)) - 0.5 * (l_rows + l_cols)) < 1e-5


def test_info_nce_is_low_for_matched_pairs_and_chance_for_random():
    x = torch.randn(32, 64)
    assert float(info_nce(x, x, torch.tensor(math.log(100.0)))) < 1e-3
    y = torch.randn(32, 64)
    assert abs(float(info_nce(x, y, torch.tensor(0.0))) - math.log(32)) < 0.1


def test_indicator_probability_and_minimum_two_nulls():
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([draw_null_indicator(64, 0.1, generator=g) for _ in range(2000)])
    assert abs(float(draws.float().mean()) - 0.1) < 0.01
    # a batch with at most one null is treated as all-conditional
    for row in draws:
        assert int(row.sum()) == 0 or int(row.sum()) >= 2
    assert not draw_null_indicator(1, 0.99).any()


def test_roll_null_targets_rolls_among_the_null_subset_only():
    target = torch.arange(6.0).view(6, 1)
    null = torch.tensor([False, True, False, True, True, False])
    out = roll_null_targets(target, null)
    # nulls at 1, 3, 4 take the targets of 3, 4, 1
    assert out.flatten().tolist() == [0.0, 3.0, 2.0, 4.0, 1.0, 5.0]
    assert roll_null_targets(target, torch.zeros(6, dtype=torch.bool)).equal(target)
    assert out.data_ptr() != target.data_ptr()


class _RecordingNet(torch.nn.Module):
    """v = x·(1 + 2·null) + t: different on the null branch, and records batch sizes."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x, t, null):
        self.batches.append(x.shape[0])
        return x * (1 + 2 * null.float()).view(-1, 1) + t.view(-1, 1)


def test_guidance_is_one_batched_forward_with_the_cfg_formula():
    net = _RecordingNet()
    x, t = torch.randn(4, 3), torch.full((4,), 0.3)
    v = GuidedVelocity(net, scale=3.0)(x, t)
    v_cond, v_null = x + 0.3, 3 * x + 0.3
    torch.testing.assert_close(v, v_null + 3.0 * (v_cond - v_null))
    assert net.batches == [8]  # one forward of the doubled batch


def test_guidance_scale_one_and_null_mode_use_a_single_branch():
    net = _RecordingNet()
    x, t = torch.randn(4, 3), torch.zeros(4)
    torch.testing.assert_close(GuidedVelocity(net, scale=1.0)(x, t), x)
    torch.testing.assert_close(GuidedVelocity(net, scale=5.0, mode="null")(x, t), 3 * x)
    assert net.batches == [4, 4]
