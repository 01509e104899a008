"""Paper-scale text-to-image configs: they validate and build on the meta device, with the official sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.paths import REPO_ROOT

from crossflow.cli import main as cli_main
from crossflow.config import ConfigError
from crossflow.registry import load_experiment
from crossflow.utils.params import build_on_meta, parameter_counts

CONFIGS = REPO_ROOT / "configs" / "t2i"
#: Official Text VE sizes (facts A.3, meta-device instantiation of the official configs).
OFFICIAL_VE = {(256, "clip"): 110_156_512, (256, "t5"): 165_197_440, (512, "clip"): 97_482_344,
               (512, "t5"): 142_430_728}
#: Official DiT-H/2 backbone 1,068,977,936 includes its fixed 1024×1280 position table (a buffer here).
OFFICIAL_DIT_H2 = 1_068_977_936 - 1024 * 1280


@pytest.mark.parametrize("res,lm", sorted(OFFICIAL_VE))
def test_paper_config_builds_on_meta(res: int, lm: str) -> None:
    cfg, task_cls = load_experiment(CONFIGS / f"dit_{res}_{lm}.yaml")
    t, tr = cfg.task, cfg.train
    assert (t.resolution, t.language_model.max_length, t.vae.scale_factor) == (res, 77, 0.23010)
    assert t.language_model.output_scale == (10.0 if lm == "t5" else 1.0)
    assert t.language_model.dtype == ("bfloat16" if lm == "t5" else "float32")
    assert (tr.batch_size, tuple(tr.betas), tr.weight_decay, tr.warmup_steps, tr.ema_decay) == (1024, (0.9, 0.9), 0.03,
                                                                                                  5000, 0.9999)
    assert tr.grad_accum_steps > 1 and tr.mixed_precision == "bf16" and cfg.model.velocity_net.gradient_checkpointing
    assert (cfg.flow.time_sampler, cfg.flow.null_probability) == ("logit_normal", 0.1)
    model = build_on_meta(cfg, task_cls)
    tensors = list(model.parameters()) + list(model.buffers())
    assert all(p.is_meta for p in tensors)  # nothing allocated
    counts = parameter_counts(model)
    assert counts["source_encoder"] == OFFICIAL_VE[(res, lm)]
    assert counts["velocity_net"] == OFFICIAL_DIT_H2
    assert model.velocity_net.pos_embed.shape == (1, (res // 16) ** 2, 1280)
    z0 = model.source_encoder(torch.empty(2, 77, 768 if lm == "clip" else 4096, device="meta")).mean
    assert z0.shape == (2, 4, res // 8, res // 8)


def test_params_command(capsys) -> None:
    assert cli_main(["params", str(CONFIGS / "dit_256_clip.yaml")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tensors_not_on_meta"] == [] and out["parameters"]["velocity_net"] == OFFICIAL_DIT_H2
    assert out["parameters"]["total"] == sum(v for k, v in out["parameters"].items()
                                             if k not in ("total", "trainable", "frozen"))


def test_language_model_fields_are_checked() -> None:
    with pytest.raises(ConfigError, match="task.language_model.kind"):
        load_experiment(CONFIGS / "dit_256_t5.yaml", ["task.language_model.kind=gpt"])
    with pytest.raises(ConfigError, match="task.dataset"):
        load_experiment(CONFIGS / "dit_256_t5.yaml", ["task.dataset=laion"])
    cfg, task_cls = load_experiment(CONFIGS / "dit_256_clip.yaml", ["task.resolution=260"])
    with pytest.raises(ConfigError, match="task.resolution"):
        _ = task_cls(cfg).target_spec()


SHIPPED = sorted((CONFIGS.parents[0]).glob("**/*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIGS.parents[0])))
def test_every_shipped_config_validates_round_trips_and_builds_on_meta(path: Path) -> None:
    from crossflow.baseline import CrossAttentionFlow
    from crossflow.config import from_dict, to_dict
    from crossflow.model import CrossFlow
    from crossflow.schema import ExperimentConfig, XAttnBaselineConfig

    # a COCO text-VAE stage builds its word vocabulary from dataset_coco.json unless the config carries one
    words = ["task.text.vocabulary=[a, cat, on, mat]"] if path.name.startswith("coco_") and \
        path.name.endswith("text_vae.yaml") else []
    cfg, task_cls = load_experiment(path, words)
    saved = {k: v for k, v in to_dict(cfg).items() if k != "task"}
    assert from_dict(ExperimentConfig, saved) == ExperimentConfig(**{k: getattr(cfg, k) for k in saved})
    model = build_on_meta(cfg, task_cls)
    if path.name.endswith("text_vae.yaml"):
        return  # the captioning text-VAE stage trains a codec, not a flow model
    if path.name == "toy_t2i_inversion.yaml":  # CrossFlow-T2I captioning: a caption decoder over a frozen T2I model
        assert type(model).__name__ == "InversionCaptioner"
        return
    if path.name.endswith("_regression.yaml"):  # the SR regression baseline: one DiT forward, MSE
        assert type(model).__name__ == "DirectRegression"
        return
    expected = CrossAttentionFlow if isinstance(cfg.model, XAttnBaselineConfig) else CrossFlow
    assert type(model) is expected
    if path.name == "toy_baseline.yaml":  # the SR3-style baseline: noise source, low-res image concatenated
        assert model.concat_source and model.velocity_net.cond_channels == 3
