"""Token-sequence VE: a Gaussian of the target shape, padding ignored, head options."""
from __future__ import annotations


import pytest
import torch

from crossflow.encoders import ConvFeatureEncoder, TokenSequenceVE



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


def test_conv_feature_encoder_output_width():
    enc = ConvFeatureEncoder(3, 48, widths=(8, 16), hidden_dim=32)
    assert enc(torch.randn(4, 3, 32, 32)).shape == (4, 48)

