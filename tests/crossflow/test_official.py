"""Loading the released CrossFlow checkpoints: key coverage, parameter counts, outputs of the official code,
conversion to our export and sampling from it."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

from crossflow.cli import main as cli_main
from crossflow.config import to_dict
from crossflow.official import (OfficialCrossFlow, build_from_official_args, load_official_state_dict,
                                official_model_config, parameter_count)
from crossflow.official_layout import official_to_ours, ours_to_official
from helpers.official_golden import CASES, inputs, subsample, synthetic_state
from helpers.paths import DATA_DIR, REPO_ROOT

DATA = DATA_DIR / "official"
CONFIGS = REPO_ROOT / "configs" / "t2i" / "official"
ARGS = json.loads((DATA / "official_model_args.json").read_text())
NAMES = sorted(ARGS)

#: Facts file, sections A.3 and C (flow backbone with TDPs ×4 and, for DiT, the frozen pos_embed; Text VE).
EXPECTED = {"t2i_256px_clip_dimr": (950_778_890, 110_156_512), "t2i_256px_t5_dimr": (950_778_890, 165_197_440),
            "t2i_512px_clip_dimr": (985_439_246, 97_482_344), "t2i_512px_t5_dimr": (985_439_246, 142_430_728),
            "t2i_512px_t5_dit": (1_068_977_936, 142_430_728)}


def official_shapes(name: str) -> dict[str, tuple[int, ...]]:
    rows = (line.split("\t") for line in (DATA / f"keys_{name}.txt").read_text().splitlines() if line)
    return {key: tuple(json.loads(shape.replace("(", "[").replace(",)", ")").replace(")", "]")))
            for key, shape in rows}


def build(name: str, device=None) -> OfficialCrossFlow:
    a = ARGS[name]
    return build_from_official_args(a["model_args"], a["arch"], tuple(a["latent_shape"]), device=device)


@pytest.mark.parametrize("name", NAMES)
def test_every_inference_key_is_consumed_with_its_shape_and_nothing_is_left_unset(name):
    shapes = official_shapes(name)
    model = build(name, device="meta")
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    ours = model.model.state_dict()
    report = load_official_state_dict(model, state)
    image_tower = sorted(k for k in shapes if k.startswith(("open_clip.", "open_clip_output.")))
    assert sorted(report.skipped) == [k for k in image_tower if k != "open_clip.logit_scale"]
    assert report.kept == [] and report.loaded == len(ours)  # every tensor of ours came from the checkpoint
    converted = official_to_ours(state, ARGS[name]["arch"])
    assert not converted.unknown
    assert set(converted.mapping) == set(shapes) - set(report.skipped)  # every inference key used
    # Our loaded tensors have the official shapes (fused Q/K/V: three (d, d) blocks stacked).
    for key, ours_key in converted.mapping.items():
        n = 3 if any(f".attn.W_{c}." in key for c in "QKV") else 1
        want = shapes[key] if n == 1 else (n * shapes[key][0], *shapes[key][1:])
        assert tuple(ours[ours_key].shape) == (want if ours_key != "logit_scale" else (1,))  # 0-d there
    # The inverse translation reproduces the official key set and shapes.
    back = ours_to_official({k: torch.empty(v.shape, device="meta") for k, v in ours.items()}, ARGS[name]["arch"])
    assert {k: tuple(v.shape) for k, v in back.items()} == {k: shapes[k] for k in shapes if k not in report.skipped}


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_match_the_facts_file(name):
    model = build(name, device="meta")
    net, ve = EXPECTED[name]
    assert parameter_count(model.velocity_net) == net
    assert parameter_count(model.model.source_encoder) == ve
    official_total = sum(math.prod(s) for k, s in official_shapes(name).items()
                         if not k.startswith(("open_clip", "open_clip_output")))
    assert parameter_count(model.velocity_net) + parameter_count(model.model.source_encoder) == official_total


@pytest.mark.parametrize("name", NAMES)
def test_shipped_official_config_matches_the_official_arguments(name):
    from crossflow.registry import load_experiment

    cfg, _ = load_experiment(CONFIGS / f"{name}.yaml")
    a = ARGS[name]
    model_cfg, flow_cfg = official_model_config(a["model_args"], a["arch"], tuple(a["latent_shape"]))
    assert type(cfg.model) is type(model_cfg)
    assert cfg.model.source_encoder.arch == "reduction"
    assert to_dict(cfg.model.source_encoder) == to_dict(model_cfg.source_encoder)
    ours, official = to_dict(cfg.model.velocity_net), to_dict(model_cfg.velocity_net)
    assert ours["arch"] == official["arch"] == a["arch"]
    # everything but the memory switch (the shipped configs checkpoint; the official arguments may not)
    assert {k: v for k, v in ours.items() if k != "gradient_checkpointing"} == \
        {k: v for k, v in official.items() if k != "gradient_checkpointing"}
    assert cfg.model.velocity_net.gradient_checkpointing
    assert cfg.model.contrastive.enabled is False
    assert cfg.flow.null_probability == flow_cfg.null_probability == a["model_args"]["cfg_indicator"]
    s = cfg.sample
    assert (s.solver, s.steps, s.time_grid, s.guidance, s.z0) == ("euler", 50, "official", 7.0, "sample")
    assert cfg.task.resolution == 8 * a["latent_shape"][1] and cfg.task.language_model.max_length == 77
    assert cfg.task.language_model.dim == a["model_args"]["clip_dim"]
    assert cfg.task.language_model.output_scale == (10.0 if a["model_args"]["clip_dim"] == 4096 else 1.0)


def _official_state_for(model: OfficialCrossFlow) -> dict[str, torch.Tensor]:
    """A reproducible official-layout state dict for ``model``'s sizes (see tests/helpers/official_golden.py)."""
    ours = model.model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in ours_to_official(ours, model.arch).items()}
    return synthetic_state(shapes)


@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_equal_the_official_codes_outputs(case):
    """Golden outputs were produced by the official code (qihao067/CrossFlow) with the same weights and inputs."""
    arch, latent, args = CASES[case]
    model = build_from_official_args(args, arch, latent).eval()
    load_official_state_dict(model, _official_state_for(model))
    golden = load_file(str(DATA / f"golden_{case}.safetensors"))
    inp = inputs(case)
    with torch.no_grad():
        z, mu, logvar = model.source_encoder(inp["tokens"], inp["mask"])
        outs = model.velocity_net(inp["x"], inp["t"], inp["null"])
    outs = outs if isinstance(outs, list) else [outs]
    assert z.shape == mu.shape == logvar.shape == (2, math.prod(latent))
    torch.testing.assert_close(subsample(mu), golden["mu"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(subsample(logvar), golden["logvar"], rtol=1e-4, atol=1e-5)
    assert len(outs) == len([k for k in golden if k.startswith("velocity_") and not k.endswith("_sum")])
    widths = [o.shape[-1] for o in outs]
    assert widths == sorted(widths) and widths[-1] == latent[-1]  # lowest resolution first
    for i, out in enumerate(outs):
        torch.testing.assert_close(subsample(out), golden[f"velocity_{i}"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.double().sum().float()[None], golden[f"velocity_{i}_sum"], rtol=1e-4, atol=1e-3)


def test_loader_names_unknown_missing_and_misshapen_keys():
    arch, latent, args = CASES["dimr256"]
    model = build_from_official_args(args, arch, latent)
    state = _official_state_for(model)
    with pytest.raises(KeyError, match="stages.0.bogus"):
        load_official_state_dict(model, state | {"stages.0.bogus": torch.zeros(1)})
    with pytest.raises(KeyError, match="velocity_net.stages.1.out_conv.bias"):
        load_official_state_dict(model, {k: v for k, v in state.items() if k != "stages.1.output_layer.2.bias"})
    bad = dict(state, **{"stages.0.skip_denses.0.weight": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match=r"stages.0.skip_denses.0.weight \(3, 3\).*velocity_net.stages.0.skip_proj.0"):
        load_official_state_dict(model, bad)
    with pytest.raises(KeyError, match="W_V"):
        load_official_state_dict(model, {k: v for k, v in state.items() if "layers.0.attn.W_V.weight" not in k})


def test_official_source_encoder_draws_z_around_mu():
    arch, latent, args = CASES["dimr256"]
    model = build_from_official_args(args, arch, latent).eval()
    tokens = torch.randn(2, 77, args["clip_dim"])
    with torch.no_grad():
        z, mu, logvar = model.source_encoder(tokens, torch.ones(2, 77), generator=torch.Generator().manual_seed(0))
        posterior = model.model.encode_source(tokens, torch.ones(2, 77, dtype=torch.bool))
    torch.testing.assert_close(mu, posterior.mean.flatten(1))  # C-major flattening of (C, H, W)
    eps = (z - mu) / torch.exp(0.5 * logvar)
    assert abs(float(eps.mean())) < 0.05 and abs(float(eps.std()) - 1) < 0.05


def test_convert_official_then_sample_round_trip(tmp_path, monkeypatch):
    """Official-layout .pth → `crossflow convert-official` → export → reload: identical outputs; then `sample`."""
    from helpers.tiny_models import make_tiny_clip, make_tiny_vae

    from crossflow.pipeline import load_model

    clip, vae = make_tiny_clip(tmp_path / "clip"), make_tiny_vae(tmp_path / "vae")
    stages = CASES["dimr256"][2]["stage_configs"]
    args = {**CASES["dimr256"][2], "clip_dim": 32, "channels": 4, "stage_configs": stages,
            "textVAE": {**CASES["dimr256"][2]["textVAE"], "num_attention_heads": 4}}
    reference = build_from_official_args(args, "dimr", (4, 32, 32)).eval()
    state = _official_state_for(reference)
    torch.save(state, tmp_path / "official.pth")
    load_official_state_dict(reference, state)

    model_cfg, _ = official_model_config(args, "dimr", (4, 32, 32))
    raw = yaml.safe_load((CONFIGS / "t2i_256px_clip_dimr.yaml").read_text())
    raw["model"]["source_encoder"] = to_dict(model_cfg.source_encoder)
    raw["model"]["velocity_net"] |= {k: to_dict(model_cfg.velocity_net)[k] for k in ("stages", "loss_weights")}
    raw["task"]["language_model"] |= {"name_or_path": str(clip), "dim": 32}
    raw["task"]["vae"] |= {"name_or_path": str(vae), "subfolder": None}
    raw["task"]["cache_dir"] = str(tmp_path / "cache")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "export"
    assert cli_main(["convert-official", "--config", str(tmp_path / "cfg.yaml"), "--checkpoint",
                     str(tmp_path / "official.pth"), "--out", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "conversion.json").is_file()

    model, task = load_model(out)
    cfg = task.config
    assert cfg.sample.time_grid == "official" and cfg.sample.steps == 50 and cfg.sample.guidance == 7.0
    gen = torch.Generator().manual_seed(0)
    tokens, mask = torch.randn(2, 77, 32, generator=gen), torch.ones(2, 77, dtype=torch.bool)
    x, t, null = torch.randn(2, 4, 32, 32, generator=gen), torch.tensor([0.1, 0.9]), torch.tensor([False, True])
    with torch.no_grad():
        for a, b in zip(model.velocity_net(x, t, null), reference.velocity_net(x, t, null)):
            assert torch.equal(a, b)
        assert torch.equal(model.encode_source(tokens, mask).mean, reference.model.encode_source(tokens, mask).mean)

    monkeypatch.chdir(tmp_path)
    assert cli_main(["sample", str(out), "--prompt", "a red cat", "--steps", "2", "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "0000.png").is_file()
