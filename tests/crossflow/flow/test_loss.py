"""Flow-matching loss and InfoNCE against hand computation and closed forms."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crossflow.flow.loss import flow_matching_loss, info_nce


def test_flow_matching_loss_per_sample_mean_squared_error():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [3.0, 1.0]])
    torch.testing.assert_close(flow_matching_loss(pred, target), torch.tensor([2.5, 5.0]))


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


def test_masked_flow_matching_loss_averages_over_valid_elements_only():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])  # (2, 1, 2, 2)
    target = torch.zeros(2, 1, 2, 2)
    mask = torch.tensor([[[[True, False], [True, False]]], [[[False, False], [False, False]]]])
    # sample 0: (1² + 3²) / 2 valid pixels = 5; sample 1 has no valid pixel: 0
    torch.testing.assert_close(flow_matching_loss(pred, target, mask), torch.tensor([5.0, 0.0]))
    # a one-channel mask covers every channel; an all-true mask is the plain mean
    pred3, target3 = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(flow_matching_loss(pred3, target3, torch.ones(2, 1, 4, 4, dtype=torch.bool)),
                               flow_matching_loss(pred3, target3))
    half = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    half[..., :2] = True
    torch.testing.assert_close(flow_matching_loss(pred3, target3, half),
                               (pred3 - target3)[..., :2].pow(2).flatten(1).mean(1))
