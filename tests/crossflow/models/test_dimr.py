"""DiMR and its pieces against hand-derived formulas; the official Text VE pieces; the official time grid."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from crossflow.config import from_dict
from crossflow.encoders.reduction_ve import GridAdaptor, ReductionTextVE, official_head
from crossflow.flow.multiscale import multiscale_flow_matching_loss, multiscale_targets
from crossflow.flow.solvers import official_time_grid, solve
from crossflow.models.dimr import DiMR, PixelShuffleUpsample
from crossflow.models.dit import DiT
from crossflow.nn.norms import StdLayerNorm
from crossflow.nn.td_norms import TDLayerNorm, TDRMSNorm, TimeDependentParameter, log_snr_from_time, time_condition
from crossflow.schema import CrossFlowModelConfig, DiMRStageConfig, FlowConfig, SampleConfig
from crossflow.specs import ImageSpec, TokenSpec


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))


def tiny_stages() -> list[DiMRStageConfig]:
    return [DiMRStageConfig(dim=16, hidden_dim=32, num_heads=2, num_blocks=3, patch_size=4),
            DiMRStageConfig(block="convnext", dim=8, hidden_dim=16, num_blocks=3, patch_size=2, kernel_size=3),
            DiMRStageConfig(block="convnext", dim=8, hidden_dim=16, num_blocks=1, patch_size=1, kernel_size=3)]


# ---------------------------------------------------------------- time-dependent parameters and norms
def test_time_condition_is_log_snr_over_four():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    torch.testing.assert_close(log_snr_from_time(t), torch.tensor([4.0, 2.0, 0.0, -4.0]))
    torch.testing.assert_close(time_condition(t), torch.tensor([1.0, 0.5, 0.0, -1.0]))


def test_time_dependent_parameter_formula():
    tdp = TimeDependentParameter((3,), torch.nn.init.ones_)
    tau = torch.tensor([-1.0, 0.2, 0.9])
    torch.testing.assert_close(tdp(tau), torch.ones(3, 3))  # starts time-independent at its init value
    with torch.no_grad():
        tdp.param0.copy_(torch.tensor([2.0, -1.0, 0.5]))
        tdp.param1.copy_(torch.tensor([0.0, 3.0, 0.5]))
        tdp.nodecay_weight.copy_(torch.tensor([0.5, -2.0, 1.0]))
        tdp.nodecay_bias.copy_(torch.tensor([0.1, 0.0, -0.3]))
    for i, tv in enumerate(tau.tolist()):
        for j in range(3):
            p0, p1 = tdp.param0[j].item(), tdp.param1[j].item()
            w, b = tdp.nodecay_weight[j].item(), tdp.nodecay_bias[j].item()
            s = 1 / (1 + math.exp(-((1 + w) * tv + b)))
            assert tdp(tau)[i, j].item() == pytest.approx(p1 + s * (p0 - p1), abs=1e-6)
    same = tdp(torch.full((5,), 0.2))  # equal times: one row, broadcast by the caller
    assert same.shape == (1, 3)
    torch.testing.assert_close(same[0], tdp(tau)[1])


def test_td_rms_norm_formula():
    norm = TDRMSNorm(4)
    randomize(norm)
    x, tau = torch.randn(2, 5, 4), torch.tensor([0.3, -0.7])
    scale = norm.scale(tau)
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(norm(x, tau), x / (rms + 1e-8) * scale[:, None, :])
    assert norm(x, tau).shape == x.shape


def test_td_layer_norm_formula():
    norm = TDLayerNorm(6)
    randomize(norm)
    x, tau = torch.randn(3, 2, 2, 6), torch.tensor([1.0, 0.0, -1.0])
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight(tau)[:, None, None] + norm.bias(tau)[:, None, None]
    torch.testing.assert_close(norm(x, tau), expected)


def test_std_layer_norm_adds_eps_to_the_unbiased_std():
    norm = StdLayerNorm(5, eps=0.1)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(5.0))
        norm.bias.fill_(0.5)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 10.0]])
    std = ((x - 4.0) ** 2).sum() / 4  # unbiased variance
    torch.testing.assert_close(norm(x), (x - 4.0) / (std.sqrt() + 0.1) * torch.arange(5.0) + 0.5)


# ---------------------------------------------------------------- multi-scale targets and loss
def test_multiscale_targets_even_sizes_sum_pool_divided_by_kernel_side():
    v = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    targets = multiscale_targets(v, 3)
    assert sorted(targets) == [1, 2, 4] and targets[4] is v
    c, i, j = 1, 1, 0
    block = v[0, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
    assert targets[2][0, c, i, j].item() == pytest.approx(block.sum().item() / 2)
    assert targets[1][0, 0, 0, 0].item() == pytest.approx(v[0, 0].sum().item() / 4)
    # scale correction: i.i.d. unit noise keeps (about) unit variance at every level
    noise = torch.randn(64, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    for width, pooled in multiscale_targets(noise, 3).items():
        assert pooled.var().item() == pytest.approx(1.0, rel=0.05), width


def test_multiscale_targets_odd_sizes_padded_kernel_side_plus_one():
    v = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
    t = multiscale_targets(v, 2)[3]  # 5 -> 3, kernel 3, stride 2, zero padding 1, sum / 3
    padded = F.pad(v, (1, 1, 1, 1))[0, 0]
    assert t[0, 0, 1, 2].item() == pytest.approx(padded[2:5, 4:7].sum().item() / 3)
    assert t[0, 0, 0, 0].item() == pytest.approx(v[0, 0, :2, :2].sum().item() / 3)


def test_multiscale_loss_is_the_weighted_sum_of_per_resolution_mses():
    target = torch.randn(3, 2, 8, 8)
    preds = [torch.randn(3, 2, 2, 2), torch.randn(3, 2, 4, 4), torch.randn(3, 2, 8, 8)]
    weights = [0.25, 0.5, 1.0]
    ref = multiscale_targets(target, 3)
    expected = sum(w * (p - ref[p.shape[-1]]).pow(2).mean(dim=(1, 2, 3)) for p, w in zip(preds, weights))
    torch.testing.assert_close(multiscale_flow_matching_loss(preds, target, weights), expected)
    with pytest.raises(ValueError, match="loss weights"):
        multiscale_flow_matching_loss(preds, target, weights[:2])


# ---------------------------------------------------------------- layouts
def test_pixel_shuffle_layout():
    up = PixelShuffleUpsample(3, 2, ratio=2)
    x = torch.randn(1, 2, 3, 3)
    y = up(x)
    lin = up.proj(x)  # (1, 2, 3, 8): feature (a·r + c)·out + ch goes to pixel (i·r + a, j·r + c)
    for i, j, a, c, ch in [(0, 0, 0, 1, 1), (1, 2, 1, 0, 0), (1, 1, 1, 1, 1)]:
        assert y[0, i * 2 + a, j * 2 + c, ch] == lin[0, i, j, (a * 2 + c) * 2 + ch]
    assert y.shape == (1, 4, 6, 2)


def test_adaptor_reshape_layout():
    adaptor = GridAdaptor(7, (4, 4), out_channels=4)
    x = torch.randn(2, 7)
    out = adaptor(x)
    h = torch.relu(adaptor.ln_fc2(adaptor.fc2(torch.relu(adaptor.ln_fc1(adaptor.fc1(x))))))
    grid = h.view(2, 1, 4, 4)  # the MLP output is one 4x4 map, row-major
    assert grid[1, 0, 2, 3] == h[1, 2 * 4 + 3]
    maps = adaptor.conv3(torch.relu(adaptor.ln_conv2(adaptor.conv2(torch.relu(adaptor.ln_conv1(adaptor.conv1(grid)))))))
    torch.testing.assert_close(out, maps.flatten(1))  # channel-major flattening
    # In the VE the first half of the flat output is the mean, i.e. channels 0..C-1 of the conv output.
    ve = ReductionTextVE(8, (2, 4, 4), num_tokens=3, width=8, depth=1, reduction_layers=1, num_heads=2, ffn_dim=8,
                         dropout=0.0, head="adaptor")
    posterior = ve(torch.randn(2, 3, 8))
    assert posterior.mean.shape == posterior.logvar.shape == (2, 2, 4, 4)
    assert official_head((4, 32, 32)) == "linear" and official_head((4, 64, 64)) == "adaptor"


def test_reduction_ve_widths_and_key_masking():
    ve = ReductionTextVE(12, (2, 4, 4), num_tokens=5, width=16, depth=2, reduction_layers=2, num_heads=2,
                         ffn_dim=8, dropout=0.0, head="linear")
    assert ve.compressor is not None and ve.compressor.fc1.in_features == 12
    assert [layer.reduction.out_features for layer in ve.reduction_layers] == [8, 4]
    assert ve.head.in_features == 5 * 4
    tokens, mask = torch.randn(2, 5, 12), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    changed = tokens.clone()
    changed[0, 3:] += 10  # padded keys are never attended to, but padded queries still feed the head
    a, b = ve(tokens, mask), ve(changed, mask)
    assert not torch.allclose(a.mean[0], b.mean[0]) and torch.equal(a.mean[1], b.mean[1])
    ve.head.weight.data[:, 3 * 4:] = 0  # zero the padded tokens' head columns: now the mean is unchanged
    torch.testing.assert_close(ve(tokens, mask).mean[0], ve(changed, mask).mean[0])
    with pytest.raises(ValueError, match="exactly 5 tokens"):
        ve(tokens[:, :4])


def test_dit_official_position_table_is_column_first():
    dit = DiT((4, 8, 8), patch_size=2, hidden_size=8, depth=1, num_heads=2, pos_embed_order="wh", store_pos_embed=True)
    assert "pos_embed" in dit.state_dict()
    omega = 1.0 / 10000 ** (torch.arange(2, dtype=torch.float64) / 2)

    def enc(p: float) -> torch.Tensor:
        return torch.cat([torch.sin(p * omega), torch.cos(p * omega)])

    row, col = 1, 3  # token row·4 + col; first half encodes the column (official DiT/MAE table)
    torch.testing.assert_close(dit.pos_embed[0, row * 4 + col].double(), torch.cat([enc(col), enc(row)]))
    assert "pos_embed" not in DiT((4, 8, 8), hidden_size=8, depth=1, num_heads=2).state_dict()


# ---------------------------------------------------------------- the network
def test_dimr_outputs_lowest_resolution_first_and_counts():
    net = DiMR((3, 16, 16), tiny_stages())
    outs = net(torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([True, False]))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 4, 4), (2, 3, 8, 8), (2, 3, 16, 16)]
    assert net.loss_weights == (0.25, 0.5, 1.0)
    s0, s1, s2 = net.stages
    assert len(s0.blocks) == 3 and len(s0.skip_proj) == 1 and len(s2.blocks) == 1 and len(s2.skip_proj) == 0
    assert s1.upsample.norm_in.dim == 16 * 4 and s1.upsample.shuffle.ratio == 2  # input + 3 block outputs
    assert s2.upsample.norm_in.dim == 8 * 4
    assert s0.indicator_null is not None and s1.indicator_null is None  # only Transformer stages


def test_dimr_indicator_time_and_batch_independence():
    net = DiMR((3, 16, 16), tiny_stages()).eval()
    randomize(net)
    x, t = torch.randn(4, 3, 16, 16), torch.tensor([0.1, 0.5, 0.5, 0.9])
    null = torch.tensor([False, True, False, True])
    with torch.no_grad():
        full = net(x, t, null)[-1]
        for i in range(4):  # per-sample times (one TDP row each) = one sample at a time (broadcast row)
            torch.testing.assert_close(net(x[i:i + 1], t[i:i + 1], null[i:i + 1])[-1], full[i:i + 1],
                                       rtol=1e-4, atol=1e-5)
        assert not torch.allclose(net(x, t, ~null)[-1], full)  # the indicator token matters
        assert not torch.allclose(net(x, 1 - t, null)[-1], full)  # time enters through the TD norms
        # the indicator token is prepended and stripped: nothing of it reaches the output grid shape
        torch.testing.assert_close(net(x, t, None)[-1], net(x, t, torch.zeros(4, dtype=torch.bool))[-1])


def test_dimr_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = DiMR((3, 16, 16), tiny_stages())
    b = DiMR((3, 16, 16), tiny_stages(), gradient_checkpointing=True)
    b.load_state_dict(a.state_dict())
    x, t, null = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([True, False])
    for net in (a, b):
        sum(o.square().mean() for o in net(x, t, null)).backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_dimr_config_errors_name_the_stage():
    from crossflow.config import ConfigError
    from crossflow.models.build import build_velocity_net

    cfg = from_dict(CrossFlowModelConfig, {"velocity_net": {"arch": "dimr", "stages": [
        {"dim": 8, "hidden_dim": 8, "num_heads": 2, "num_blocks": 1, "patch_size": 3}]}}, path="model")
    with pytest.raises(ConfigError, match=r"^model\.velocity_net\.stages\[0\]: latent 16x16"):
        build_velocity_net(cfg.velocity_net, ImageSpec(3, 16, 16))
    cfg.velocity_net.stages = [DiMRStageConfig(dim=8, hidden_dim=8, num_heads=2, num_blocks=1, patch_size=4)] * 4
    with pytest.raises(ConfigError, match=r"^model\.velocity_net: no default multi-scale loss weights for 4 stages"):
        build_velocity_net(cfg.velocity_net, ImageSpec(3, 16, 16))
    with pytest.raises(ConfigError, match=r"^model\.velocity_net\.stages\[1\]: kernel_size must be odd"):
        from_dict(CrossFlowModelConfig, {"velocity_net": {"arch": "dimr", "stages": [{}, {"kernel_size": 4}]}},
                  path="model")
    # options of the DiT are not DiMR keys (and the DiMR sizes are not DiT keys)
    with pytest.raises(ConfigError, match=r"^model\.velocity_net\.concat_source: unknown key.*for arch='dimr'"):
        from_dict(CrossFlowModelConfig, {"velocity_net": {"arch": "dimr", "concat_source": True}}, path="model")
    with pytest.raises(ConfigError, match=r"^model\.velocity_net\.stages: unknown key.*for arch='dit'"):
        from_dict(CrossFlowModelConfig, {"velocity_net": {"stages": []}}, path="model")


def test_crossflow_uses_the_multiscale_loss_and_the_last_output_for_sampling():
    from crossflow.build import build_model

    cfg = from_dict(CrossFlowModelConfig, {
        "source_encoder": {"width": 16, "depth": 1, "num_heads": 2, "num_queries": 2},
        "velocity_net": {"arch": "dimr", "stages": [
            {"dim": 16, "hidden_dim": 32, "num_heads": 2, "num_blocks": 1, "patch_size": 2},
            {"block": "convnext", "dim": 8, "hidden_dim": 16, "num_blocks": 1, "patch_size": 1}]},
        "contrastive": {"enabled": False}})
    model = build_model(cfg, FlowConfig(null_probability=0.0, kl_weight=0.0), source=TokenSpec(max_tokens=4, dim=6),
                        target=ImageSpec(3, 8, 8))
    assert not model.concat_source
    batch = {"source": torch.randn(4, 4, 6), "target": torch.randn(4, 3, 8, 8)}
    gen = torch.Generator().manual_seed(0)
    out = model.loss(batch, generator=gen)
    # Re-draw the same randomness and compute the official objective by hand.
    gen = torch.Generator().manual_seed(0)
    posterior = model.encode_source(batch["source"])
    z0 = posterior.sample(generator=gen)
    torch.rand(4, generator=gen)  # the (all-conditional) indicator draw
    t = torch.sigmoid(torch.randn(4, generator=gen))
    x_t = (1 - (1 - 1e-5) * t.view(-1, 1, 1, 1)) * z0 + t.view(-1, 1, 1, 1) * batch["target"]
    v = batch["target"] - (1 - 1e-5) * z0
    preds = model.velocity_net(x_t, t, torch.zeros(4, dtype=torch.bool))
    expected = 0.25 * (preds[0] - F.avg_pool2d(v, 2) * 2).pow(2).mean() + (preds[1] - v).pow(2).mean()
    torch.testing.assert_close(out.logs["loss_fm"], expected.detach(), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        z1 = model.integrate(torch.zeros(1, 3, 8, 8), SampleConfig(steps=1, guidance=1.0))
        torch.testing.assert_close(z1, model.velocity_net(torch.zeros(1, 3, 8, 8), torch.zeros(1))[-1])


# ---------------------------------------------------------------- official sampler grid
def test_official_time_grid_and_euler_solve():
    ts, evals = official_time_grid(4)
    torch.testing.assert_close(ts, torch.linspace(1e-5, 1.0, 5))
    torch.testing.assert_close(evals, torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]) * (1 - 1e-5))
    seen = []

    def velocity(x, t):
        seen.append(float(t[0]))
        return x * 0 + t[:, None]

    x = solve(velocity, torch.zeros(2, 1), steps=4, grid="official")
    # x_N = Σ_i v(t_i)·Δ with Δ = (1 - 1e-5)/4 and t_i = linspace(0, 1 - 1e-5, 4)
    assert seen == pytest.approx(evals.tolist())
    assert x[0, 0].item() == pytest.approx(sum(evals.tolist()) * (1 - 1e-5) / 4, rel=1e-6)
    with pytest.raises(ValueError, match="official"):
        solve(velocity, torch.zeros(2, 1), method="heun", steps=4, grid="official")


# ---------------------------------------------------------------- learning
def test_dimr_learns_the_synthetic_class_to_quadrant_map(tmp_path):
    """Same trainer and task as the DiT learning test, with a two-stage DiMR (4×4 Transformer, 8×8 ConvNeXt)."""
    from helpers.learning import synthetic_accuracy
    from helpers.synthetic_task import tiny_raw_config

    raw = tiny_raw_config(max_steps=150, checkpoint_every=1000, lr=2e-3, warmup_steps=10)
    raw["model"]["velocity_net"] = {"arch": "dimr", "stages": [
        {"dim": 32, "hidden_dim": 64, "num_heads": 2, "num_blocks": 3, "patch_size": 2},
        {"block": "convnext", "dim": 16, "hidden_dim": 32, "num_blocks": 1, "patch_size": 1, "kernel_size": 3}]}
    assert synthetic_accuracy(raw, tmp_path) >= 0.9  # chance is 0.25


def test_generate_follows_sample_time_grid():
    from crossflow.build import build_model
    from crossflow.schema import SampleConfig

    cfg = from_dict(CrossFlowModelConfig, {"source_encoder": {"width": 8, "depth": 1, "num_heads": 2, "num_queries": 1},
                                           "velocity_net": {"hidden_size": 8, "depth": 1, "num_heads": 2},
                                           "contrastive": {"enabled": False}})
    model = build_model(cfg, FlowConfig(), source=TokenSpec(max_tokens=3, dim=4), target=ImageSpec(1, 4, 4)).eval()
    seen: list[float] = []
    model.velocity_net.register_forward_pre_hook(lambda mod, args: seen.append(float(args[1][0])))
    model.generate(torch.randn(2, 3, 4), options=SampleConfig(steps=3, guidance=1.0, time_grid="official"))
    assert seen == pytest.approx(official_time_grid(3)[1].tolist())
    seen.clear()
    model.generate(torch.randn(2, 3, 4), options=SampleConfig(steps=3, guidance=1.0))
    assert seen == pytest.approx([0.0, 1 / 3, 2 / 3])
