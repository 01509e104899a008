"""The cross-attention baseline (paper Table 1): network invariants, CFG, loss, and training through the Trainer."""

from __future__ import annotations

import pytest
import torch

from crossflow.baseline import CrossAttentionFlow, _TextBoundNet, build_xattn_baseline
from crossflow.config import ConfigError
from crossflow.flow.guidance import GuidedVelocity
from crossflow.flow.loss import flow_matching_loss
from crossflow.flow.path import sample_time
from crossflow.inference import load_model
from crossflow.models.dit_xattn import CrossAttentionDiT
from crossflow.schema import FlowConfig
from crossflow.task import experiment_from_dict, load_experiment
from crossflow.train.trainer import Trainer

from conftest import tiny_raw_config


def _net(perturb: bool = True, **kw) -> CrossAttentionDiT:
    torch.manual_seed(0)
    net = CrossAttentionDiT((2, 8, 8), 16, patch_size=2, hidden_size=32, depth=2, num_heads=2, **kw)
    if perturb:  # leave the zero init so that every path carries signal
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return net.eval().requires_grad_(False)


def test_output_shape_and_zero_output_at_init():
    net = _net(perturb=False)
    out = net(torch.randn(3, 2, 8, 8), torch.rand(3), torch.tensor([False, True, False]), torch.randn(3, 5, 16))
    assert out.shape == (3, 2, 8, 8)
    assert float(out.detach().abs().max()) == 0.0  # adaLN-Zero and zeroed cross-attention outputs


def test_padded_text_tokens_are_ignored():
    net = _net()
    x, t = torch.randn(1, 2, 8, 8).repeat(2, 1, 1, 1), torch.full((2,), 0.3)
    ctx = torch.randn(1, 7, 16).repeat(2, 1, 1)
    mask = torch.tensor([[True] * 4 + [False] * 3] * 2)
    ctx[1, 4:] = 50 * torch.randn(3, 16)  # different garbage in the padding of row 1
    out = net(x, t, None, ctx, mask)
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(net(x[:1], t[:1], None, ctx[:1, :4]), out[:1], atol=1e-5, rtol=1e-5)


def test_null_rows_see_the_learned_null_sequence_not_the_text():
    net = _net(null_tokens=2)
    x, t = torch.randn(1, 2, 8, 8).repeat(2, 1, 1, 1), torch.full((2,), 0.6)
    ctx = torch.randn(2, 5, 16)
    null = net(x, t, torch.ones(2, dtype=torch.bool), ctx)
    torch.testing.assert_close(null[0], null[1])  # the text is gone
    cond = net(x, t, torch.zeros(2, dtype=torch.bool), ctx)
    assert float((cond[0] - cond[1]).abs().max()) > 1e-4  # the text matters on the conditional rows
    # a null sequence longer than the text is padded in
    short = net(x[:1], t[:1], torch.ones(1, dtype=torch.bool), ctx[:1, :1])
    torch.testing.assert_close(short, null[:1], atol=1e-5, rtol=1e-5)


def test_fully_masked_text_is_rejected():
    net = _net()
    with pytest.raises(ValueError, match="at least one unmasked"):
        net(torch.randn(1, 2, 8, 8), torch.rand(1), None, torch.randn(1, 3, 16), torch.zeros(1, 3, dtype=torch.bool))


def test_guidance_is_one_batched_forward_of_text_and_null_branches():
    net = _net()
    x, t, ctx = torch.randn(3, 2, 8, 8), torch.rand(3), torch.randn(3, 4, 16)
    mask = torch.tensor([[True, True, False, False], [True] * 4, [True, False, False, False]])
    guided = GuidedVelocity(_TextBoundNet(net, ctx, mask), scale=3.0)
    v = guided(x, t)
    v_text = net(x, t, torch.zeros(3, dtype=torch.bool), ctx, mask)
    v_null = net(x, t, torch.ones(3, dtype=torch.bool), ctx, mask)
    torch.testing.assert_close(v, v_null + 3.0 * (v_text - v_null), atol=1e-5, rtol=1e-5)
    assert guided.evaluations == 1


def test_loss_is_flow_matching_from_gaussian_noise_with_dropped_text():
    net = _net()
    flow = FlowConfig(time_sampler="uniform")
    model = CrossAttentionFlow(net, flow, cond_drop_probability=0.5)
    batch = {"source": torch.randn(64, 4, 16), "source_mask": torch.ones(64, 4, dtype=torch.bool),
             "target": torch.randn(64, 2, 8, 8)}
    out = model.loss(batch, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)  # the same draws, in the same order, by hand
    noise = torch.randn(batch["target"].shape, generator=g)
    drop = torch.rand(64, generator=g) < 0.5
    t = sample_time(64, kind="uniform", generator=g)
    tb = t.view(-1, 1, 1, 1)
    x_t = (1 - (1 - flow.sigma_min) * tb) * noise + tb * batch["target"]
    expected = flow_matching_loss(net(x_t, t, drop, batch["source"], batch["source_mask"]),
                                  batch["target"] - (1 - flow.sigma_min) * noise).mean()
    torch.testing.assert_close(out.loss, expected)
    assert out.null_fraction == pytest.approx(float(drop.float().mean())) and 0.25 < out.null_fraction < 0.75
    assert float(out.kl) == 0.0 and float(out.contrastive) == 0.0


def _baseline_config(**train):
    raw = tiny_raw_config(**train)
    raw["model"] = {"kind": "xattn_baseline", "velocity_net": {"patch_size": 2, "hidden_size": 32, "depth": 2,
                                                                "num_heads": 2},
                    "xattn": {"cond_drop_probability": 0.2}}
    return experiment_from_dict(raw)


def test_trains_through_the_trainer_and_reloads_for_generation(tmp_path):
    cfg, task_cls = _baseline_config(max_steps=6, checkpoint_every=3, log_every=3)
    task = task_cls(cfg)
    result = Trainer(cfg, task, tmp_path).fit()
    assert result.step == 6 and result.final_loss == result.final_loss  # finite (not NaN)
    model, task, _ = load_model(tmp_path, device="cpu")
    assert isinstance(model, CrossAttentionFlow)
    src, mask = task.data.source(torch.arange(4), torch.full((4,), 3), torch.zeros(4, 6, 16))
    out = model.generate(src, mask, sample=cfg.sample, generator=torch.Generator().manual_seed(0), guidance=2.0)
    again = model.generate(src, mask, sample=cfg.sample, generator=torch.Generator().manual_seed(0), guidance=2.0)
    assert out.shape == (4, 1, 8, 8) and torch.isfinite(out).all()
    torch.testing.assert_close(out, again)  # generation is seeded
    states = []
    model.generate(src, mask, sample=cfg.sample, steps=4, callback=lambda info: states.append(info["step"]))
    assert states == [-1, 0, 1, 2, 3]  # the start, then every solver step


@pytest.mark.slow
def test_baseline_learns_the_class_to_quadrant_map(tmp_path):
    cfg, task_cls = _baseline_config(max_steps=300, checkpoint_every=1000, lr=2e-3, warmup_steps=10)
    task = task_cls(cfg)
    trainer = Trainer(cfg, task, tmp_path)
    trainer.fit()
    metrics = task.evaluate(trainer.ema.model, tmp_path / "eval", steps=10, guidance=2.0)
    assert metrics["accuracy"] >= 0.9  # chance is 0.25


def test_toy_baseline_config_validates_and_builds():
    cfg, _ = load_experiment("configs/t2i/toy_xattn.yaml")
    assert cfg.model.kind == "xattn_baseline" and cfg.model.xattn.cond_drop_probability == 0.1
    with pytest.raises(ConfigError, match="model.kind"):
        load_experiment("configs/t2i/toy_xattn.yaml", ["model.kind=noise_xattn"])
    with pytest.raises(ConfigError, match="cond_drop_probability"):
        load_experiment("configs/t2i/toy_xattn.yaml", ["model.xattn.cond_drop_probability=1.5"])
    for override in ("model.velocity_net.conv_head_channels=32", "model.velocity_net.arch=dimr",
                     "model.velocity_net.time_scale=1000"):  # CrossFlow-DiT options the baseline does not have
        cfg, _ = load_experiment("configs/t2i/toy_xattn.yaml", [override])
        with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.") + ".*xattn_baseline"):
            build_xattn_baseline(cfg.model, cfg.flow, source_dim=384, latent_shape=(3, 32, 32))
