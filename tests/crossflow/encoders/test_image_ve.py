"""Image VE, noise source, source-encoder builder, concatenation conditioning and the source-reconstruction
term in the core."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossflow.build import build_model
from crossflow.config import ConfigError
from crossflow.encoders import ImageVE, NoiseSource, ReductionTextVE, TokenSequenceVE
from crossflow.encoders.build import build_source_encoder
from crossflow.models.build import build_velocity_net
from crossflow.models.conditioning import BoundCondition
from crossflow.models.dit import DiT
from crossflow.schema import (CrossFlowModelConfig, DiTConfig, FlowConfig, ImageVEConfig, NoiseSourceConfig,
                              ReductionVEConfig, SampleConfig, TokenVEConfig)
from crossflow.specs import ImageSpec, TokenSpec


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


IMAGE, TOKENS, TARGET = ImageSpec(3, 8, 8), TokenSpec(max_tokens=5, dim=16), ImageSpec(1, 8, 8)


def test_build_source_encoder_dispatches_on_the_config_class():
    ve = build_source_encoder(ImageVEConfig(widths=[8], blocks=2), source=IMAGE, target=TARGET)
    assert isinstance(ve, ImageVE) and ve(torch.randn(2, 3, 8, 8)).mean.shape == (2, 1, 8, 8)
    assert isinstance(build_source_encoder(NoiseSourceConfig(), source=IMAGE, target=TARGET), NoiseSource)
    assert isinstance(build_source_encoder(NoiseSourceConfig(), source=TOKENS, target=TARGET), NoiseSource)
    ve = build_source_encoder(TokenVEConfig(width=8, depth=1, num_heads=2, num_queries=2), source=TOKENS, target=TARGET)
    assert isinstance(ve, TokenSequenceVE) and ve.pos_embed.shape == (1, 5, 8) and ve.input_proj.in_features == 16
    ve = build_source_encoder(ReductionVEConfig(width=16, depth=1, num_heads=2, reduction_layers=1, ffn_dim=8),
                              source=TOKENS, target=TARGET)
    assert isinstance(ve, ReductionTextVE) and ve(torch.randn(2, 5, 16)).mean.shape == (2, 1, 8, 8)
    # the token VE's head options reach the module
    tiled = build_source_encoder(TokenVEConfig(width=8, depth=1, num_heads=2, tile=4), source=TOKENS, target=TARGET)
    assert tiled.tile == 4 and tiled.head.out_features == 2 * 1 * 4 * 4
    conv = build_source_encoder(TokenVEConfig(width=8, depth=1, num_heads=2, conv_head_channels=4), source=TOKENS,
                                target=TARGET)
    assert conv.conv_head and conv(torch.randn(2, 5, 16)).mean.shape == (2, 1, 8, 8)


@pytest.mark.parametrize("cfg, source, pattern", [
    (ImageVEConfig(), TOKENS, r"model\.source_encoder\.arch: 'image' needs a source that is image-shaped.*tokens "
                              r"\(5, 16\) \(use 'tokens', 'reduction' or 'noise'\)"),
    (TokenVEConfig(), IMAGE, r"model\.source_encoder\.arch: 'tokens' needs a source that is a token sequence.*"
                             r"an image \(3, 8, 8\) \(use 'image' or 'noise'\)"),
    (ReductionVEConfig(), IMAGE, r"model\.source_encoder\.arch: 'reduction' needs a source that is a token sequence"),
    (ImageVEConfig(input_skip=True), IMAGE, r"model\.source_encoder: input_skip needs source channels"),
    (TokenVEConfig(tile=4, conv_head_channels=8), TOKENS, r"model\.source_encoder: tile and conv_head_channels are "
                                                          r"exclusive"),
])
def test_build_source_encoder_names_settings_that_do_not_fit(cfg, source, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_source_encoder(cfg, source=source, target=TARGET)


def test_concat_source_needs_an_image_source_of_the_target_size():
    cfg = DiTConfig(patch_size=2, hidden_size=16, depth=1, num_heads=2, concat_source=True)
    net = build_velocity_net(cfg, TARGET, source=IMAGE)
    assert net.cond_channels == 3 and net.x_embedder.in_channels == 1 + 3
    assert build_velocity_net(DiTConfig(patch_size=2, hidden_size=16, depth=1, num_heads=2), TARGET,
                              source=IMAGE).cond_channels == 0
    for source in (TOKENS, ImageSpec(3, 4, 4), None):
        with pytest.raises(ConfigError, match=r"model\.velocity_net\.concat_source: needs an image-shaped source "
                                              r"with the target's height and width \(8, 8\)"):
            build_velocity_net(cfg, TARGET, source=source)


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
    model_cfg = CrossFlowModelConfig(source_encoder=ImageVEConfig(widths=[8, 16]),
                                     velocity_net=DiTConfig(hidden_size=32, depth=1, num_heads=2))
    model_cfg.contrastive.enabled = False
    return build_model(model_cfg, FlowConfig(**flow), source=IMAGE, target=TARGET)


def test_source_reconstruction_term_is_the_mse_of_the_ve_mean():
    torch.manual_seed(0)
    model = _image_model(source_recon_weight=0.5, null_probability=0.0)
    batch = {"source": torch.randn(4, 3, 8, 8), "target": torch.randn(4, 1, 8, 8)}
    out = model.loss(batch)
    logs = out.logs
    expected_recon = (model.encode_source(batch["source"]).mean - batch["target"]).pow(2).mean()
    torch.testing.assert_close(logs["loss_recon"], expected_recon.detach())
    torch.testing.assert_close(out.loss, logs["loss_fm"] + model.flow.kl_weight * logs["loss_kl"]
                               + 0.5 * logs["loss_recon"])
    assert "loss_recon" not in _image_model().loss(batch).logs  # weight 0: no term, no log key


def test_crossflow_with_image_source_generates_the_target_shape():
    model = _image_model().eval()
    out = model.generate(torch.randn(3, 3, 8, 8), options=SampleConfig(steps=2, guidance=1.0))
    assert out.shape == (3, 1, 8, 8)


def test_noise_source_with_the_source_concatenated_trains_and_generates():
    model_cfg = CrossFlowModelConfig(source_encoder=NoiseSourceConfig(),
                                     velocity_net=DiTConfig(hidden_size=32, depth=1, num_heads=2, concat_source=True))
    target = ImageSpec(3, 8, 8)
    with pytest.raises(ConfigError, match="model.contrastive.enabled"):
        build_model(model_cfg, FlowConfig(), source=IMAGE, target=target)
    model_cfg.contrastive.enabled = False
    torch.manual_seed(0)
    model = build_model(model_cfg, FlowConfig(), source=IMAGE, target=target)
    assert model.concat_source and model.velocity_net.cond_channels == 3
    source, z1 = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    out = model.loss({"source": source, "target": z1})
    assert float(out.logs["loss_kl"]) == 0.0
    out.loss.backward()
    assert model.velocity_net.final_layer.linear.weight.grad.abs().sum() > 0
    with torch.no_grad():  # leave the zero init: the source now reaches the velocity through the input channels
        for p in model.velocity_net.parameters():
            p.add_(0.05 * torch.randn_like(p))
        losses = [model.loss({"source": s, "target": z1}, generator=torch.Generator().manual_seed(1)).loss
                  for s in (source, source, source + 1.0)]
    assert losses[0] == losses[1] and losses[0] != losses[2]  # z0 is noise: only the concatenation sees the source
    with pytest.raises(ConfigError, match="model.velocity_net.concat_source"):
        build_model(model_cfg, FlowConfig(), source=TOKENS, target=target)
    sample = model.eval().generate(source, options=SampleConfig(steps=2, guidance=2.0, z0="sample"),
                                   noise=torch.randn(4, 3, 8, 8))
    assert sample.shape == (4, 3, 8, 8)
