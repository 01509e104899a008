"""The cross-attention baseline (paper Table 1): its builder, CFG, loss, and training through the Trainer.

Its network is our DiT with cross-attention (``context_dim``); the network's own invariants (zero start,
masked padding, null rows) are tested in ``test_models.py``.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from helpers.synthetic_task import tiny_raw_config

from crossflow.baseline import CrossAttentionFlow, _TextBoundNet
from crossflow.build import build_model
from crossflow.config import ConfigError
from crossflow.flow.guidance import GuidedVelocity
from crossflow.flow.loss import flow_matching_loss
from crossflow.flow.path import sample_time
from crossflow.models.dit import DiT
from crossflow.pipeline import Pipeline, load_model
from crossflow.registry import experiment_from_dict, load_experiment
from crossflow.schema import DiTConfig, FlowConfig, XAttnBaselineConfig
from crossflow.specs import ImageSpec, TokenSpec
from crossflow.train.trainer import Trainer


def _net(perturb: bool = True, **kw) -> DiT:
    torch.manual_seed(0)
    net = DiT((2, 8, 8), context_dim=16, indicator=False, patch_size=2, hidden_size=32, depth=2, num_heads=2, **kw)
    if perturb:  # leave the zero init so that every path carries signal
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return net.eval().requires_grad_(False)


def test_guidance_is_one_batched_forward_of_text_and_null_branches():
    net = _net()
    x, t, ctx = torch.randn(3, 2, 8, 8), torch.rand(3), torch.randn(3, 4, 16)
    mask = torch.tensor([[True, True, False, False], [True] * 4, [True, False, False, False]])
    guided = GuidedVelocity(_TextBoundNet(net, ctx, mask), scale=3.0)
    v = guided(x, t)
    v_text = net(x, t, torch.zeros(3, dtype=torch.bool), context=ctx, context_mask=mask)
    v_null = net(x, t, torch.ones(3, dtype=torch.bool), context=ctx, context_mask=mask)
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
    expected = flow_matching_loss(net(x_t, t, drop, context=batch["source"], context_mask=batch["source_mask"]),
                                  batch["target"] - (1 - flow.sigma_min) * noise).mean()
    torch.testing.assert_close(out.loss, expected)
    null_fraction = float(out.logs["null_fraction"])
    assert null_fraction == pytest.approx(float(drop.float().mean())) and 0.25 < null_fraction < 0.75
    assert "loss_kl" not in out.logs and "loss_clip" not in out.logs  # no VE, no contrastive term


def _baseline_config(**train):
    raw = tiny_raw_config(**train)
    raw["model"] = {"kind": "xattn_baseline", "velocity_net": {"patch_size": 2, "hidden_size": 32, "depth": 2,
                                                                "num_heads": 2},
                    "cond_drop_probability": 0.2}
    return experiment_from_dict(raw)


def test_trains_through_the_trainer_and_reloads_for_generation(tmp_path):
    cfg, task_cls = _baseline_config(max_steps=6, checkpoint_every=3, log_every=3)
    task = task_cls(cfg)
    result = Trainer(cfg, task, tmp_path).fit()
    assert result.step == 6 and result.final_loss == result.final_loss  # finite (not NaN)
    model, task = load_model(tmp_path, device="cpu")
    assert isinstance(model, CrossAttentionFlow)
    src, mask = task.data.source(torch.arange(4), torch.full((4,), 3), torch.zeros(4, 6, 16))
    options = replace(cfg.sample, guidance=2.0)
    out = model.generate(src, mask, options=options, noise=torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    again = model.generate(src, mask, options=options, noise=torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert out.shape == (4, 1, 8, 8) and torch.isfinite(out).all()
    torch.testing.assert_close(out, again)  # generation is seeded
    states = []
    model.generate(src, mask, options=replace(cfg.sample, steps=4), callback=lambda info: states.append(info["step"]))
    assert states == [-1, 0, 1, 2, 3]  # the start, then every solver step


@pytest.mark.slow
def test_baseline_learns_the_class_to_quadrant_map(tmp_path):
    cfg, task_cls = _baseline_config(max_steps=300, checkpoint_every=1000, lr=2e-3, warmup_steps=10)
    task = task_cls(cfg)
    trainer = Trainer(cfg, task, tmp_path)
    trainer.fit()
    pipe = Pipeline(trainer.ema.model, task)
    metrics = task.evaluator().evaluate(pipe, tmp_path / "eval", options=pipe.options(steps=10, guidance=2.0))
    assert metrics["accuracy"] >= 0.9  # chance is 0.25


def test_toy_baseline_config_validates_and_builds():
    cfg, task_cls = load_experiment("configs/t2i/toy_xattn.yaml")
    assert isinstance(cfg.model, XAttnBaselineConfig) and cfg.model.cond_drop_probability == 0.1
    model = task_cls(cfg).build_model()
    assert isinstance(model, CrossAttentionFlow) and model.cond_drop_probability == 0.1
    net = model.velocity_net
    assert isinstance(net, DiT) and net.y_embedder is None and net.null_context.shape == (1, 256)
    assert all(block.cross_attn is not None for block in net.blocks) and len(net.blocks) == 6
    with pytest.raises(ConfigError, match=r"^model\.kind: unknown 'noise_xattn'; valid: 'crossflow', 'xattn_baseline'"):
        load_experiment("configs/t2i/toy_xattn.yaml", ["model.kind=noise_xattn"])
    with pytest.raises(ConfigError, match=r"^model: cond_drop_probability must be in \[0, 1\)"):
        load_experiment("configs/t2i/toy_xattn.yaml", ["model.cond_drop_probability=1.5"])
    with pytest.raises(ConfigError, match=r"^model\.velocity_net\.arch: invalid value 'dimr'; expected one of 'dit'"):
        load_experiment("configs/t2i/toy_xattn.yaml", ["model.velocity_net.arch=dimr"])
    for key in ("source_encoder", "contrastive", "xattn"):  # CrossFlow's sections (and the old layout) are not keys
        with pytest.raises(ConfigError, match=rf"^model\.{key}: unknown key '{key}'.*for kind='xattn_baseline'"):
            load_experiment("configs/t2i/toy_xattn.yaml", [f"model.{key}={{}}"])


SMALL = {"patch_size": 2, "hidden_size": 16, "depth": 1, "num_heads": 2}
TOKENS, TARGET = TokenSpec(max_tokens=5, dim=12), ImageSpec(2, 8, 8)


def test_baseline_builder_gives_the_dit_with_cross_attention_and_every_dit_option():
    cfg = XAttnBaselineConfig(velocity_net=DiTConfig(**SMALL, time_scale=1000.0, conv_head_channels=4,
                                                     pos_embed_order="wh", store_pos_embed=True,
                                                     gradient_checkpointing=True), null_tokens=3)
    model = build_model(cfg, FlowConfig(), source=TOKENS, target=TARGET)
    net = model.velocity_net
    assert (net.context_dim, net.null_context.shape[0], net.time_scale) == (12, 3, 1000.0)
    assert net.conv_head is not None and "pos_embed" in net.state_dict() and net.gradient_checkpointing
    out = net(torch.randn(2, 2, 8, 8), torch.rand(2), context=torch.randn(2, 4, 12))
    assert out.shape == (2, 2, 8, 8)


@pytest.mark.parametrize("velocity_net, source, pattern", [
    (DiTConfig(**SMALL, indicator_init_std=1.0), TOKENS, r"^model\.velocity_net\.indicator_init_std=1\.0: "
                                                         r"model\.kind=xattn_baseline has no indicator embedding"),
    (DiTConfig(**SMALL, concat_source=True), TOKENS, r"^model\.velocity_net\.concat_source: not supported by "
                                                     r"model\.kind=xattn_baseline"),
    (DiTConfig(**SMALL), ImageSpec(3, 8, 8), r"^model\.kind: 'xattn_baseline' cross-attends to a token sequence; "
                                             r"this task's source is an image \(3, 8, 8\)"),
    (DiTConfig(**(SMALL | {"patch_size": 3})), TOKENS, r"^model\.velocity_net: latent size 8x8 is not divisible"),
])
def test_baseline_builder_names_what_does_not_fit(velocity_net, source, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_model(XAttnBaselineConfig(velocity_net=velocity_net), FlowConfig(), source=source, target=TARGET)
