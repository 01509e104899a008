"""The CrossFlow model: the loss reaches every trained part, generation modes, the FM gradient into the VE."""

from __future__ import annotations

import math

import pytest
import torch

from crossflow.build import build_model
from crossflow.schema import CrossFlowModelConfig, DiTConfig, FlowConfig, SampleConfig, TokenVEConfig
from crossflow.specs import ImageSpec, TokenSpec


def test_crossflow_loss_backpropagates_into_all_trained_parts(tiny_config):
    cfg, task_cls = tiny_config()
    task = task_cls(cfg)
    model = task.build_model()
    batch = task.train_dataset().__getitems__(list(range(16)))
    out = model.loss(batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    for name in ("source_encoder", "velocity_net", "target_encoder"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), name
    assert model.logit_scale.grad is not None
    scalars = {k: float(v) for k, v in out.logs.items()}
    assert set(scalars) == {"loss", "loss_fm", "loss_kl", "loss_clip", "null_fraction"}
    expected = scalars["loss_fm"] + cfg.flow.kl_weight * scalars["loss_kl"] + scalars["loss_clip"]
    assert abs(scalars["loss"] - expected) < 1e-4


def test_generation_modes(tiny_config):
    cfg, task_cls = tiny_config()
    task = task_cls(cfg)
    model = task.build_model().eval()
    tokens, mask = task.data.source(torch.arange(4), torch.full((4,), 3), torch.zeros(4, 6, 16))
    z_mean = model.initial_latent(tokens, mask, z0="mean")
    torch.testing.assert_close(z_mean, model.encode_source(tokens, mask).mean)
    z_cold = model.initial_latent(tokens, mask, z0="sample", temperature=0.0, noise=torch.randn(4, 1, 8, 8))
    torch.testing.assert_close(z_cold, z_mean)
    with pytest.raises(ValueError, match="z0 mode"):
        model.initial_latent(tokens, mask, z0="bogus")
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    z_hot = model.initial_latent(tokens, mask, z0="sample", temperature=0.5, noise=noise)
    torch.testing.assert_close(z_hot, z_mean + 0.5 * model.encode_source(tokens, mask).std * noise)
    out = model.generate(tokens, mask, options=SampleConfig(steps=3, guidance=2.0, solver="heun"))
    assert out.shape == (4, 1, 8, 8)


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_fm_grad_to_source_scales_the_flow_matching_gradient_into_the_ve(scale):
    torch.manual_seed(0)
    cfg = CrossFlowModelConfig(source_encoder=TokenVEConfig(width=16, depth=1, num_heads=2, num_queries=2),
                               velocity_net=DiTConfig(patch_size=2, hidden_size=16, depth=1, num_heads=2))
    cfg.contrastive.enabled = False
    flow = FlowConfig(kl_weight=0.0, fm_grad_to_source=scale)  # the FM loss is the only term left
    model = build_model(cfg, flow, source=TokenSpec(max_tokens=4, dim=6), target=ImageSpec(2, 4, 4))
    with torch.no_grad():  # leave the zero init so that the loss depends on z0 through the velocity net too
        for p in model.velocity_net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = {"source": torch.randn(8, 4, 6), "target": torch.randn(8, 2, 4, 4)}
    model.loss(batch, generator=torch.Generator().manual_seed(0)).loss.backward()
    ve_grads = [p.grad for p in model.source_encoder.parameters() if p.grad is not None]
    assert ve_grads and any(float(p.grad.abs().max()) > 0 for p in model.velocity_net.parameters())
    if scale == 0.0:
        assert all(float(g.abs().max()) == 0.0 for g in ve_grads)  # the VE gets nothing from the FM loss
    else:
        assert any(float(g.abs().max()) > 0 for g in ve_grads)


@pytest.mark.parametrize("learn", [True, False])
def test_contrastive_temperature_starts_at_its_init_and_is_learned_only_when_asked(learn):
    cfg = CrossFlowModelConfig(source_encoder=TokenVEConfig(width=16, depth=1, num_heads=2, num_queries=2),
                               velocity_net=DiTConfig(hidden_size=16, depth=1, num_heads=2))
    cfg.contrastive.widths, cfg.contrastive.hidden_dim = [4], 8
    cfg.contrastive.init_temperature, cfg.contrastive.learn_temperature = 0.2, learn
    model = build_model(cfg, FlowConfig(), source=TokenSpec(max_tokens=3, dim=4), target=ImageSpec(1, 4, 4))
    assert math.isclose(float(model.logit_scale), math.log(1 / 0.2), rel_tol=1e-6)  # logits = cos / tau
    batch = {"source": torch.randn(4, 3, 4), "target": torch.randn(4, 1, 4, 4)}
    model(batch).loss.backward()
    assert model.logit_scale.requires_grad is learn and (model.logit_scale.grad is not None) is learn


def test_a_0d_temperature_of_older_exports_still_loads():
    """``logit_scale`` has one element (FSDP shards no 0-d parameter); exports written before hold a 0-d one."""
    cfg = CrossFlowModelConfig(source_encoder=TokenVEConfig(width=16, depth=1, num_heads=2, num_queries=2),
                               velocity_net=DiTConfig(hidden_size=16, depth=1, num_heads=2))
    cfg.contrastive.widths, cfg.contrastive.hidden_dim = [4], 8
    model = build_model(cfg, FlowConfig(), source=TokenSpec(max_tokens=3, dim=4), target=ImageSpec(1, 4, 4))
    state = model.state_dict()
    state["logit_scale"] = torch.tensor(1.5)
    model.load_state_dict(state)
    assert model.logit_scale.shape == (1,) and float(model.logit_scale) == 1.5


def test_target_mask_restricts_the_loss_to_valid_pixels():
    cfg = CrossFlowModelConfig(source_encoder=TokenVEConfig(width=16, depth=1, num_heads=2, num_queries=2),
                               velocity_net=DiTConfig(hidden_size=16, depth=1, num_heads=2))
    cfg.contrastive.enabled = False
    flow = FlowConfig(null_probability=0.5, source_recon_weight=1.0)
    model = build_model(cfg, flow, source=TokenSpec(max_tokens=3, dim=4), target=ImageSpec(1, 4, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    batch = {"source": torch.randn(8, 3, 4), "target": torch.randn(8, 1, 4, 4)}

    def loss(**extra):
        return model({**batch, **extra}, generator=torch.Generator().manual_seed(0)).logs

    plain, all_valid = loss(), loss(target_mask=torch.ones(8, 1, 4, 4, dtype=torch.bool))
    assert all(torch.equal(plain[k], all_valid[k]) for k in plain)  # an all-true mask changes nothing
    mask = torch.zeros(8, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :] = True  # the top half is valid
    masked = loss(target_mask=mask)
    assert torch.isfinite(masked["loss"]) and masked["loss_fm"] != plain["loss_fm"]
    # invalid target pixels do not enter the reconstruction term (taken before the null roll)
    changed = batch["target"].clone()
    changed[..., 2:, :] = 100.0
    again = model({"source": batch["source"], "target": changed, "target_mask": mask},
                  generator=torch.Generator().manual_seed(0)).logs
    torch.testing.assert_close(again["loss_recon"], masked["loss_recon"])
