"""Guidance: one batched forward with the CFG formula; scale 1 and null mode use a single branch."""

from __future__ import annotations

import torch

from crossflow.flow.guidance import GuidedVelocity


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
