"""The one DiT, with and without cross-attention: shapes, zero start, options, state-dict layout."""
from __future__ import annotations

import json

import pytest
import torch

from crossflow.config import ConfigError, from_dict
from crossflow.models.dit import DiT
from crossflow.nn import sincos_2d_position_embedding
from crossflow.schema import DiTConfig
from helpers.paths import DATA_DIR



def _perturbed_dit(**kw):
    torch.manual_seed(0)
    net = DiT((2, 8, 8), patch_size=2, hidden_size=32, depth=2, num_heads=2, **kw)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _xattn_dit(perturb: bool = True, **kw) -> DiT:
    torch.manual_seed(0)
    kw = {"patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 2} | kw
    net = DiT((2, 8, 8), context_dim=16, indicator=False, **kw)
    if perturb:  # leave the zero init so that every path carries signal
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return net.eval()



def test_dit_shapes_and_initial_zero_output():
    net = DiT((3, 16, 16), patch_size=4, hidden_size=64, depth=2, num_heads=4)
    x, t = torch.randn(3, 3, 16, 16), torch.rand(3)
    out = net(x, t, torch.tensor([False, True, False]))
    assert out.shape == x.shape
    assert float(out.detach().abs().max()) == 0.0  # adaLN-Zero: the output layer starts at zero


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
        from_dict(DiTConfig, {"conv_head_channels": -1}, path="model.velocity_net")
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


def test_dit_state_dict_layout_is_unchanged():
    """The keys (and shapes) the official checkpoints and our exports load into, recorded before the DiT gained
    its cross-attention path; construction also draws the same initial weights from the same seed."""
    cases = json.loads((DATA_DIR / "dit_state_keys.json").read_text())
    assert {"plain", "official", "conv_head_cond", "unconditional"} <= set(cases)
    for name, case in cases.items():
        args = dict(case["args"])
        net = DiT(tuple(args.pop("latent_shape")), **args)
        assert [[k, list(v.shape)] for k, v in net.state_dict().items()] == case["state"], name


def test_cross_attention_dit_starts_at_zero_and_adds_only_its_own_weights():
    net = _xattn_dit(perturb=False, null_tokens=3)
    with torch.no_grad():
        out = net(torch.randn(3, 2, 8, 8), torch.rand(3), torch.tensor([False, True, False]),
                  context=torch.randn(3, 5, 16))
    assert out.shape == (3, 2, 8, 8) and float(out.abs().max()) == 0.0  # adaLN-Zero + zeroed cross-attention output
    assert all(not b.cross_attn.proj.weight.any() for b in net.blocks)
    plain = DiT((2, 8, 8), patch_size=2, hidden_size=32, depth=2, num_heads=2, indicator=False)
    extra = set(net.state_dict()) - set(plain.state_dict())
    assert set(plain.state_dict()) <= set(net.state_dict())
    assert {k.split(".")[0] for k in extra} == {"context_embedder", "null_context", "blocks"}
    assert {k.split(".")[2] for k in extra if k.startswith("blocks.")} == {"norm_cross", "cross_attn"}
    assert net.null_context.shape == (3, 32)
    with pytest.raises(ValueError, match="indicator=False"):
        DiT((2, 8, 8), context_dim=16)


def test_cross_attention_dit_ignores_masked_padding_and_null_rows_ignore_the_context():
    net = _xattn_dit(null_tokens=2)
    x, t = torch.randn(1, 2, 8, 8).repeat(2, 1, 1, 1), torch.full((2,), 0.3)
    ctx = torch.randn(1, 7, 16).repeat(2, 1, 1)
    mask = torch.tensor([[True] * 4 + [False] * 3] * 2)
    ctx[1, 4:] = 50 * torch.randn(3, 16)  # different garbage in the padding of row 1
    with torch.no_grad():
        out = net(x, t, None, context=ctx, context_mask=mask)
        torch.testing.assert_close(out[0], out[1])
        torch.testing.assert_close(net(x[:1], t[:1], context=ctx[:1, :4]), out[:1], atol=1e-5, rtol=1e-5)
        other = torch.randn(2, 7, 16)
        null = net(x, t, torch.ones(2, dtype=torch.bool), context=other)
        torch.testing.assert_close(null[0], null[1])  # the context is gone
        cond = net(x, t, torch.zeros(2, dtype=torch.bool), context=other)
        assert float((cond[0] - cond[1]).abs().max()) > 1e-4  # ... and it matters on the conditional rows
        # the null sequence (2 tokens) is longer than this context (1 token): padded in
        short = net(x[:1], t[:1], torch.ones(1, dtype=torch.bool), context=other[:1, :1])
        torch.testing.assert_close(short, null[:1], atol=1e-5, rtol=1e-5)


def test_cross_attention_dit_checks_its_inputs():
    net = _xattn_dit()
    x, t = torch.randn(1, 2, 8, 8), torch.rand(1)
    with pytest.raises(ValueError, match="context_dim=16 got context=None"):
        net(x, t)
    with pytest.raises(ValueError, match="at least one unmasked"):
        net(x, t, context=torch.randn(1, 3, 16), context_mask=torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="context width 8"):
        net(x, t, context=torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="context_dim=None got context"):
        DiT((2, 8, 8), patch_size=2, hidden_size=32, depth=1, num_heads=2)(x, t, context=torch.randn(1, 3, 16))


def test_cross_attention_dit_keeps_every_dit_option():
    """time_scale, conv head, position order, stored positions and checkpointing work with cross-attention too."""
    kw = {"time_scale": 1000.0, "conv_head_channels": 4, "pos_embed_order": "wh", "store_pos_embed": True}
    net = _xattn_dit(**kw)
    assert "pos_embed" in net.state_dict() and net.conv_head is not None
    x, t, ctx = torch.randn(2, 2, 8, 8), torch.tensor([0.25, 0.5]), torch.randn(2, 3, 16)
    null = torch.tensor([False, True])
    with torch.no_grad():
        out = net(x, t, null, context=ctx)
        assert out.shape == x.shape and float(out.abs().max()) > 0
        plain_time = _xattn_dit(**(kw | {"time_scale": 1.0}))
        torch.testing.assert_close(plain_time(x, t * 1000.0, null, context=ctx), out)
    grads = []
    for ckpt in (False, True):
        net = _xattn_dit(gradient_checkpointing=ckpt, **kw).train()
        net(x, t, null, context=ctx).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])

