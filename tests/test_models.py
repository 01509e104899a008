"""Shape contracts and invariants of the VE, the DiT and the CrossFlow model."""

from __future__ import annotations

import pytest
import torch

from crossflow.config import ConfigError, from_dict
from crossflow.encoders import ConvFeatureEncoder, TokenSequenceVE
from crossflow.models.dit import DiT
from crossflow.nn import sincos_2d_position_embedding
from crossflow.schema import VelocityNetConfig


def test_token_ve_gives_a_gaussian_of_the_target_shape():
    ve = TokenSequenceVE(16, (3, 8, 8), max_tokens=10, width=32, depth=2, num_heads=4, num_queries=3)
    post = ve(torch.randn(5, 7, 16), torch.ones(5, 7, dtype=torch.bool))
    assert post.mean.shape == post.logvar.shape == (5, 3, 8, 8)
    assert post.sample().shape == (5, 3, 8, 8)
    assert post.kl().shape == (5,)


def test_token_ve_ignores_padded_tokens():
    torch.manual_seed(0)
    ve = TokenSequenceVE(16, (2, 4, 4), max_tokens=8, width=32, depth=2, num_heads=4).eval()
    tokens = torch.randn(1, 8, 16).repeat(2, 1, 1)
    mask = torch.tensor([[True] * 5 + [False] * 3] * 2)
    tokens[1, 5:] = 100 * torch.randn(3, 16)  # different garbage in the padding of row 1
    post = ve(tokens, mask)
    torch.testing.assert_close(post.mean[0], post.mean[1])
    # and a shorter (unpadded) sequence gives the same result as the padded one
    torch.testing.assert_close(ve(tokens[:1, :5], mask[:1, :5]).mean, post.mean[:1], atol=1e-5, rtol=1e-5)


def test_token_ve_rejects_too_long_sequences():
    ve = TokenSequenceVE(16, (1, 4, 4), max_tokens=4, width=32, depth=1, num_heads=4)
    with pytest.raises(ValueError, match="max_tokens=4"):
        ve(torch.randn(1, 5, 16))


def test_dit_shapes_and_initial_zero_output():
    net = DiT((3, 16, 16), patch_size=4, hidden_size=64, depth=2, num_heads=4)
    x, t = torch.randn(3, 3, 16, 16), torch.rand(3)
    out = net(x, t, torch.tensor([False, True, False]))
    assert out.shape == x.shape
    assert float(out.detach().abs().max()) == 0.0  # adaLN-Zero: the output layer starts at zero


def _perturbed_dit(**kw):
    torch.manual_seed(0)
    net = DiT((2, 8, 8), patch_size=2, hidden_size=32, depth=2, num_heads=2, **kw)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def test_dit_indicator_changes_the_output_and_unpatchify_is_consistent():
    net = _perturbed_dit()
    x, t = torch.randn(2, 2, 8, 8), torch.full((2,), 0.5)
    cond = net(x, t, torch.zeros(2, dtype=torch.bool))
    null = net(x, t, torch.ones(2, dtype=torch.bool))
    assert not torch.allclose(cond, null)
    torch.testing.assert_close(net(x, t, None), cond)
    # each sample is computed independently of the others
    torch.testing.assert_close(net(x[:1], t[:1], None), cond[:1])


def test_dit_time_scale_multiplies_t_before_the_embedding():
    torch.manual_seed(0)
    plain = DiT((3, 8, 8), patch_size=4, hidden_size=32, depth=1, num_heads=4)
    scaled = DiT((3, 8, 8), patch_size=4, hidden_size=32, depth=1, num_heads=4, time_scale=1000.0)
    for p in plain.parameters():  # leave the zero init so that time reaches the output
        torch.nn.init.normal_(p, std=0.1)
    scaled.load_state_dict(plain.state_dict())  # the scale is not a weight
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.25, 0.5])
    torch.testing.assert_close(scaled(x, t), plain(x, t * 1000.0))
    assert not torch.allclose(scaled(x, t), plain(x, t))


def test_dit_conv_head_starts_at_zero_and_trains():
    torch.manual_seed(0)
    net = DiT((3, 8, 8), patch_size=4, hidden_size=32, depth=1, num_heads=4, conv_head_channels=8)
    x, t = torch.randn(2, 3, 8, 8), torch.rand(2)
    out = net(x, t)
    assert out.shape == (2, 3, 8, 8) and out.abs().max() == 0  # zero output at init, like adaLN-Zero
    out.sum().backward()
    assert net.conv_head.conv2.weight.grad.abs().sum() > 0  # ... but the last conv gets a gradient
    assert net.final_layer.linear.out_features == 4 * 4 * 8  # k feature channels per pixel
    with pytest.raises(ConfigError, match=r"model\.velocity_net: conv_head_channels must be >= 0"):
        from_dict(VelocityNetConfig, {"conv_head_channels": -1}, path="model.velocity_net")
    plain = DiT((3, 8, 8), patch_size=4, hidden_size=32, depth=1, num_heads=4)
    assert plain.conv_head is None and "conv_head.conv1.weight" not in plain.state_dict()


def test_dit_gradient_checkpointing_gives_the_same_gradients():
    x, t = torch.randn(2, 2, 8, 8), torch.rand(2)
    grads = []
    for ckpt in (False, True):
        net = _perturbed_dit(gradient_checkpointing=ckpt).train()
        net(x, t, None).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_sincos_position_embedding_is_unique_per_position():
    emb = sincos_2d_position_embedding(32, 4, 6)
    assert emb.shape == (24, 32)
    assert torch.cdist(emb, emb).add(torch.eye(24) * 10).min() > 1e-3


def test_conv_feature_encoder_output_width():
    enc = ConvFeatureEncoder(3, 48, widths=(8, 16), hidden_dim=32)
    assert enc(torch.randn(4, 3, 32, 32)).shape == (4, 48)


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
    scalars = out.scalars()
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
    g = torch.Generator().manual_seed(1)
    z_cold = model.initial_latent(tokens, mask, z0="sample", temperature=0.0, generator=g)
    torch.testing.assert_close(z_cold, z_mean)
    with pytest.raises(ValueError, match="z0 mode"):
        model.initial_latent(tokens, mask, z0="bogus")
    out = model.generate(tokens, mask, steps=3, guidance=2.0, solver="heun")
    assert out.shape == (4, 1, 8, 8)


def test_tiled_ve_head_repeats_one_code_over_the_grid():
    torch.manual_seed(0)
    ve = TokenSequenceVE(16, (3, 8, 8), max_tokens=6, width=32, depth=1, num_heads=2, tile=4)
    post = ve(torch.randn(2, 5, 16))
    assert post.mean.shape == post.logvar.shape == (2, 3, 8, 8)
    with torch.no_grad():
        ve.grid_bias.zero_()
    post = ve(torch.randn(2, 5, 16))
    for tensor in (post.mean, post.logvar):
        tiles = tensor.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, C, 2, 2, 4, 4)
        assert torch.equal(tiles, tiles[:, :, :1, :1].expand_as(tiles))
    # the head only emits C·k·k means and as many log-variances
    assert ve.head.out_features == 2 * 3 * 4 * 4
    with pytest.raises(ValueError, match="tile=3"):
        TokenSequenceVE(16, (3, 8, 8), tile=3)


def test_conv_ve_head_gives_the_latent_shape_and_learns_an_image_fast():
    torch.manual_seed(0)
    ve = TokenSequenceVE(16, (3, 16, 16), max_tokens=6, width=32, depth=1, num_heads=2, num_queries=2,
                         conv_head_channels=8, head_init_scale=0.0, logvar_init=-4.0)
    tokens = torch.randn(2, 5, 16)
    post = ve(tokens)
    assert post.mean.shape == post.logvar.shape == (2, 3, 16, 16)
    assert torch.equal(post.mean, torch.zeros_like(post.mean))  # head_init_scale 0: z0 starts at zero
    torch.testing.assert_close(post.logvar, torch.full_like(post.logvar, -4.0))
    # two prompts → two different images: regression of the mean reaches them
    target = torch.zeros(2, 3, 16, 16)
    target[0, :, 2:8, 2:8], target[1, 0, 8:14, 4:12] = 1.0, -1.0
    opt = torch.optim.Adam(ve.parameters(), lr=3e-3)
    for _ in range(150):
        loss = (ve(tokens).mean - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01
    with pytest.raises(ValueError, match="exclusive"):
        TokenSequenceVE(16, (3, 8, 8), tile=4, conv_head_channels=8)
