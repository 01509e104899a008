"""The CFG indicator rule: null probability, at least two nulls, targets rolled among the nulls only."""

from __future__ import annotations

import torch

from crossflow.flow.indicator import draw_null_indicator, roll_null_targets


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
