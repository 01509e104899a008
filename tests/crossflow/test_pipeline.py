"""The inference pipeline on the synthetic task: option resolution, per-sample seeding, the null branch,
source latents, and a noise baseline (which has none)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from crossflow.config import ConfigError
from crossflow.outputs import ImageOutput
from crossflow.pipeline import Pipeline, SourceLatentModel, sample_seed
from crossflow.registry import experiment_from_dict
from crossflow.task import Source
from helpers.synthetic_task import LabelProcessor, tiny_raw_config

LABELS = [0, 1, 2, 3, 2, 1, 0, 3, 3]


@pytest.fixture(scope="module")
def pipe(synthetic_run) -> Pipeline:
    return Pipeline.from_pretrained(synthetic_run, device="cpu")


# ---------------------------------------------------------------------- options
def test_options_are_the_model_sample_section_with_overrides_on_top(pipe):
    opts = pipe.options()
    assert opts == pipe.config.sample and (opts.steps, opts.guidance, opts.batch_size) == (10, 1.0, 32)
    assert opts is not pipe.config.sample  # a copy: resolving never edits the config
    given = pipe.options(steps=3, z0="sample", temperature=0.5)
    assert (given.steps, given.z0, given.temperature, given.guidance) == (3, "sample", 0.5, 1.0)
    assert pipe.config.sample.steps == 10
    # None means "keep" (what an option left out on the command line gives)
    assert pipe.options(steps=None, guidance=None, seed=None) == opts
    base = pipe.options(steps=4, guidance=3.0)
    assert pipe.options(base, guidance=None, seed=2) == dataclasses.replace(base, seed=2)


def test_unknown_or_mistyped_options_are_config_errors_naming_them(pipe):
    with pytest.raises(ConfigError, match="stepz") as err:
        pipe.options(stepz=3)
    assert "steps" in str(err.value)  # the valid names are listed
    with pytest.raises(ConfigError, match="stepz"):
        pipe(LABELS, stepz=3)
    with pytest.raises(ConfigError, match=r"sample\.steps"):
        pipe.options(steps="many")
    with pytest.raises(ConfigError, match=r"sample\.solver"):
        pipe.options(solver="leapfrog")
    with pytest.raises(ConfigError, match=r"sample\.z0"):
        pipe(LABELS, z0="noise")


# ---------------------------------------------------------------------- parts
def test_parts_come_from_the_task(pipe):
    assert isinstance(pipe.processor, LabelProcessor) and pipe.processor is pipe.processor  # made once
    source = pipe.encode(LABELS)
    assert isinstance(source, Source) and source.values.shape == (9, 6, 16) and source.mask.shape == (9, 6)
    out = pipe.decode(torch.full((2, 1, 8, 8), 3.0))
    assert isinstance(out, ImageOutput) and float(out.images.max()) == 1.0  # clamped to [-1, 1]
    assert float(out.latents.max()) == 3.0  # the latents are kept as generated
    with pytest.raises(ValueError, match="no inputs"):
        pipe([])


def test_callback_sees_the_start_and_every_solver_step(pipe):
    seen = []
    out = pipe([0, 3], steps=4, callback=seen.append)
    assert [info["step"] for info in seen] == [-1, 0, 1, 2, 3]
    assert seen[0]["t"] == 0.0 and float(seen[-1]["t"]) == pytest.approx(1.0)
    torch.testing.assert_close(seen[0]["x"], pipe.initial_latents([0, 3]), rtol=0, atol=0)
    torch.testing.assert_close(seen[-1]["x"], out.latents, rtol=0, atol=0)


# ---------------------------------------------------------------------- seeding
def test_noise_of_a_sample_depends_only_on_the_seed_and_its_index(pipe):
    rows = pipe.noise(range(6), seed=4)
    assert rows.shape == (6, 1, 8, 8)
    assert torch.equal(pipe.noise([3, 4], seed=4), rows[3:5])
    expected = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(sample_seed(4, 2)))
    assert torch.equal(rows[2], expected)  # drawn on the CPU from its own generator
    assert not torch.equal(pipe.noise(range(6), seed=5), rows)
    assert sample_seed(4, 3) != sample_seed(3, 4) and sample_seed(0, 1) != sample_seed(1, 0)


def test_posterior_samples_do_not_depend_on_the_batch_size_or_the_split(pipe):
    opts = pipe.options(z0="sample", seed=11)
    full = pipe(LABELS, options=opts).latents
    assert torch.equal(pipe(LABELS, options=opts).latents, full)  # the same call is bit-identical
    # each sample has its own noise; other batch shapes only change the float rounding of the network
    torch.testing.assert_close(pipe(LABELS, options=opts, batch_size=1).latents, full, rtol=0, atol=1e-5)
    torch.testing.assert_close(pipe(LABELS, options=opts, batch_size=4).latents, full, rtol=0, atol=1e-5)
    # a process given inputs 4.. passes their offset and gets the same samples
    torch.testing.assert_close(pipe(LABELS[4:], options=opts, first_index=4).latents, full[4:], rtol=0, atol=1e-5)
    other = pipe(LABELS, options=opts, seed=12).latents
    assert float((other - full).flatten(1).abs().amax(1).min()) > 1e-3  # every sample changes with the seed
    # from the VE mean the seed does not matter
    assert torch.equal(pipe(LABELS, seed=1).latents, pipe(LABELS, seed=2).latents)


# ---------------------------------------------------------------------- guidance modes
def test_null_mode_runs_the_null_branch_alone(pipe):
    guided = pipe(LABELS, guidance=7.0).latents
    null = pipe(LABELS, guidance=7.0, mode="null").latents
    assert torch.equal(null, pipe(LABELS, guidance=1.0, mode="null").latents)  # the scale does not apply
    assert not torch.allclose(null, guided)
    # by hand: Euler steps of the velocity net with the null indicator set, from the VE mean
    x, steps = pipe.initial_latents(LABELS), 10
    for i in range(steps):
        t = torch.full((len(LABELS),), i / steps)
        x = x + pipe.model.velocity_net(x, t, torch.ones(len(LABELS), dtype=torch.bool)) / steps
    torch.testing.assert_close(null, x, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="guidance mode 'unguided'"):
        pipe(LABELS, mode="unguided")


# ---------------------------------------------------------------------- source latents
def test_initial_latents_then_from_latents_equals_a_pipeline_call(pipe):
    for opts in (pipe.options(), pipe.options(z0="sample", seed=3, temperature=0.7, guidance=2.0)):
        z0 = pipe.initial_latents(LABELS, options=opts)
        assert z0.shape == (9, 1, 8, 8)
        assert torch.equal(pipe.from_latents(z0, options=opts).latents, pipe(LABELS, options=opts).latents)
    source = pipe.encode(LABELS)
    posterior = pipe.model.encode_source(source.values, source.mask)
    assert torch.equal(pipe.initial_latents(LABELS), posterior.mean)
    drawn = pipe.initial_latents(LABELS, z0="sample", seed=3, temperature=0.7)
    torch.testing.assert_close(drawn, posterior.mean + 0.7 * posterior.std * pipe.noise(range(9), 3))
    torch.testing.assert_close(pipe.initial_latents(LABELS[2:], z0="sample", seed=3, temperature=0.7, first_index=2),
                               drawn[2:])


def _noise_baseline_pipeline() -> Pipeline:
    raw = tiny_raw_config()
    raw["model"] = {"kind": "xattn_baseline",
                    "velocity_net": {"patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 2}}
    cfg, task_cls = experiment_from_dict(raw)
    task = task_cls(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    with torch.no_grad():  # zero-initialised output layers would give a zero velocity
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return Pipeline(model, task, device="cpu")


def test_a_noise_baseline_has_no_source_latent_but_seeds_its_noise_per_sample():
    pipe = _noise_baseline_pipeline()
    assert not isinstance(pipe.model, SourceLatentModel)
    with pytest.raises(ValueError, match="no source latent z0"):
        pipe.initial_latents(LABELS)
    with pytest.raises(ValueError, match="no source latent z0"):
        pipe.from_latents(torch.zeros(2, 1, 8, 8))
    seen = []
    full = pipe(LABELS, seed=2, callback=seen.append).latents
    assert torch.equal(seen[0]["x"], pipe.noise(range(9), 2))  # x0 is the per-sample noise
    torch.testing.assert_close(pipe(LABELS, seed=2, batch_size=2).latents, full, rtol=0, atol=1e-5)
    assert not torch.allclose(pipe(LABELS, seed=3).latents, full)
