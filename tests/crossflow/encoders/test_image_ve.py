"""Image VE, noise source, concatenation conditioning and the source-reconstruction term in the core."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossflow.config import ConfigError
from crossflow.encoders import ImageVE, NoiseSource
from crossflow.encoders.build import build_source_encoder
from crossflow.model import build_crossflow
from crossflow.models.conditioning import BoundCondition
from crossflow.models.dit import DiT
from crossflow.schema import FlowConfig, ModelConfig, SourceEncoderConfig


@pytest.mark.parametrize("source, latent", [
    ((3, 32, 32), (1, 32, 32)),   # depth: same size, fewer channels
    ((3, 32, 32), (4, 4, 4)),     # captioning: a small text latent
    ((3, 8, 8), (3, 32, 32)),     # a latent finer than the source
    ((4, 32, 32), (16, 2, 2)),    # latents in, many channels out
    ((3, 30, 30), (2, 7, 7)),     # sizes that are not powers of two
])
def test_image_ve_gives_a_gaussian_of_any_target_shape(source, latent):
    ve = ImageVE(source, latent, widths=(8, 16, 16))
    post = ve(torch.randn(2, *source))
    assert post.mean.shape == post.logvar.shape == (2, *latent)
    assert post.kl().shape == (2,)
    assert torch.isfinite(post.sample()).all()


def test_image_ve_input_skip_starts_as_the_source_itself():
    x = torch.randn(3, 3, 16, 16)
    post = ImageVE((3, 16, 16), (3, 16, 16), widths=(8, 16), input_skip=True, head_init_scale=0.0,
                   logvar_init=-3.0)(x)
    torch.testing.assert_close(post.mean, x)
    torch.testing.assert_close(post.logvar, torch.full_like(x, -3.0))
    # a coarser latent gets the area-averaged source
    post = ImageVE((3, 16, 16), (3, 8, 8), widths=(8,), input_skip=True, head_init_scale=0.0)(x)
    torch.testing.assert_close(post.mean, F.avg_pool2d(x, 2))


def test_image_ve_checks_shapes():
    with pytest.raises(ValueError, match="input_skip needs source channels"):
        ImageVE((3, 8, 8), (1, 8, 8), input_skip=True)
    ve = ImageVE((3, 8, 8), (1, 8, 8), widths=(8,))
    with pytest.raises(ValueError, match=r"\(B, 3, 8, 8\)"):
        ve(torch.randn(1, 3, 16, 16))


def test_noise_source_is_standard_normal_with_zero_kl():
    post = NoiseSource((2, 4, 4))(torch.randn(5, 7, 3))
    assert post.mean.shape == (5, 2, 4, 4)
    assert float(post.mean.abs().max()) == 0.0 and float(post.logvar.abs().max()) == 0.0
    assert torch.equal(post.kl(), torch.zeros(5))


def test_build_source_encoder_dispatches_and_names_bad_settings():
    shape = (1, 8, 8)
    assert isinstance(build_source_encoder(SourceEncoderConfig(arch="image", image_widths=[8]), latent_shape=shape,
                                           source_dim=3, max_tokens=0, source_shape=(3, 8, 8)), ImageVE)
    assert isinstance(build_source_encoder(SourceEncoderConfig(arch="noise"), latent_shape=shape, source_dim=3,
                                           max_tokens=0), NoiseSource)
    with pytest.raises(ConfigError, match="model.source_encoder.arch: 'image' needs"):
        build_source_encoder(SourceEncoderConfig(arch="image"), latent_shape=shape, source_dim=16, max_tokens=4)
    with pytest.raises(ConfigError, match="model.source_encoder: input_skip"):
        build_source_encoder(SourceEncoderConfig(arch="image", input_skip=True), latent_shape=shape, source_dim=3,
                             max_tokens=0, source_shape=(3, 8, 8))


def test_dit_concatenation_conditioning():
    torch.manual_seed(0)
    net = DiT((3, 8, 8), patch_size=2, hidden_size=32, depth=1, num_heads=2, cond_channels=3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, t = torch.randn(2, 3, 8, 8), torch.rand(2)
    cond = torch.randn(2, 3, 8, 8)
    out = net(x, t, None, cond=cond)
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, t, None, cond=cond + 1.0))  # the condition reaches the output
    with pytest.raises(ValueError, match="cond_channels=3"):
        net(x, t)
    # guidance doubles the batch: the bound condition is tiled to match
    bound = BoundCondition(net, cond)
    doubled = bound(torch.cat([x, x]), torch.cat([t, t]), torch.tensor([False, False, True, True]))
    torch.testing.assert_close(doubled[:2], out)
    with pytest.raises(ValueError, match="not a multiple"):
        bound(torch.randn(3, 3, 8, 8), torch.rand(3))


def _image_model(**flow):
    model_cfg = ModelConfig()
    model_cfg.source_encoder = SourceEncoderConfig(arch="image", image_widths=[8, 16])
    model_cfg.velocity_net.hidden_size, model_cfg.velocity_net.depth, model_cfg.velocity_net.num_heads = 32, 1, 2
    model_cfg.contrastive.enabled = False
    return build_crossflow(model_cfg, FlowConfig(**flow), source_dim=3, max_tokens=0, latent_shape=(1, 8, 8),
                           source_shape=(3, 8, 8))


def test_source_reconstruction_term_is_the_mse_of_the_ve_mean():
    torch.manual_seed(0)
    model = _image_model(source_recon_weight=0.5, null_probability=0.0)
    batch = {"source": torch.randn(4, 3, 8, 8), "target": torch.randn(4, 1, 8, 8)}
    out = model.loss(batch)
    expected_recon = (model.encode_source(batch["source"]).mean - batch["target"]).pow(2).mean()
    torch.testing.assert_close(out.recon, expected_recon.detach())
    torch.testing.assert_close(out.loss, out.fm + model.flow.kl_weight * out.kl + 0.5 * out.recon)
    assert "loss_recon" in out.scalars()
    assert "loss_recon" not in _image_model().loss(batch).scalars()  # weight 0: no term, no log key


def test_crossflow_with_image_source_generates_the_target_shape():
    model = _image_model().eval()
    out = model.generate(torch.randn(3, 3, 8, 8), steps=2, guidance=1.0)
    assert out.shape == (3, 1, 8, 8)


def test_noise_source_with_conditioning_trains_and_generates():
    model_cfg = ModelConfig()
    model_cfg.source_encoder = SourceEncoderConfig(arch="noise")
    model_cfg.velocity_net.hidden_size, model_cfg.velocity_net.depth, model_cfg.velocity_net.num_heads = 32, 1, 2
    model_cfg.velocity_net.cond_channels = 3
    with pytest.raises(ConfigError, match="model.contrastive.enabled"):
        build_crossflow(model_cfg, FlowConfig(), source_dim=3, max_tokens=0, latent_shape=(3, 8, 8))
    model_cfg.contrastive.enabled = False
    model = build_crossflow(model_cfg, FlowConfig(), source_dim=3, max_tokens=0, latent_shape=(3, 8, 8))
    cond = torch.randn(4, 3, 8, 8)
    out = model.loss({"source": cond, "cond": cond, "target": torch.randn(4, 3, 8, 8)})
    assert float(out.kl) == 0.0
    out.loss.backward()
    assert model.velocity_net.final_layer.linear.weight.grad.abs().sum() > 0
    gen = torch.Generator().manual_seed(0)
    sample = model.eval().generate(cond, cond=cond, steps=2, guidance=2.0, z0="sample", generator=gen)
    assert sample.shape == (4, 3, 8, 8)
