"""Short learning tests of the image-source tasks: each must beat a trivial baseline by a wide margin.

Each trains a shrunk version of its toy config (same code path: config → task → Trainer → export →
load_model → evaluate) for well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import pytest

from crossflow.inference import load_model
from crossflow.task import load_experiment
from crossflow.train.trainer import Trainer


def _train_and_load(config: str, run_dir, overrides: list[str]):
    cfg, task_cls = load_experiment(config, ["train.max_minutes=null", "train.checkpoint_every=1000",
                                             "train.log_every=1000", "train.warmup_steps=10", *overrides])
    Trainer(cfg, task_cls(cfg), run_dir).fit()
    model, task, _ = load_model(run_dir)
    return model, task


@pytest.mark.slow
def test_depth_learns_far_better_than_the_mean_depth_map(tmp_path):
    model, task = _train_and_load("configs/depth/toy.yaml", tmp_path / "run", [
        "train.max_steps=80", "train.batch_size=32", "task.toyworld.num_train=2000", "task.toyworld.num_test=32",
        "task.toyworld.resolution=16", "model.velocity_net.depth=2"])
    metrics = task.evaluate(model, tmp_path / "eval", steps=4)
    assert metrics["abs_rel"] < 0.4 * metrics["mean_depth_baseline"]["abs_rel"], metrics  # measured ~0.23x
    assert metrics["delta1"] > 0.9 > metrics["mean_depth_baseline"]["delta1"], metrics


@pytest.mark.slow
def test_super_resolution_beats_bicubic(tmp_path):
    model, task = _train_and_load("configs/super_resolution/toy.yaml", tmp_path / "run", [
        "train.max_steps=80", "train.batch_size=32", "task.toyworld.num_train=2000", "task.toyworld.num_test=32",
        "task.toyworld.resolution=16", "task.scale=2", "model.velocity_net.depth=2"])
    metrics = task.evaluate(model, tmp_path / "eval", steps=4)
    assert metrics["psnr"] > metrics["bicubic"]["psnr"] + 3.0, metrics  # measured +5.5 dB


@pytest.mark.slow
def test_captioning_text_vae_then_flow_names_attributes_far_above_chance(tmp_path):
    """Stage 1 (text VAE, run by the task through the same trainer) then stage 2 (image → text latent)."""
    tvae = tmp_path / "text_vae"
    model, task = _train_and_load("configs/captioning/toy.yaml", tmp_path / "run", [
        f"task.text_vae_dir={tvae}",
        "task.text_vae_overrides=[train.max_steps=250,train.max_minutes=null,task.toyworld.num_train=4000]",
        "train.max_steps=600", "train.batch_size=32", "task.toyworld.num_train=2000", "task.toyworld.num_test=36",
        "task.toyworld.resolution=16", "model.velocity_net.depth=2"])
    assert (tvae / "export" / "model.safetensors").is_file()
    metrics = task.evaluate(model, tmp_path / "eval")
    assert metrics["text_vae_reconstruction"]["token_accuracy"] >= 0.95
    assert metrics["color_accuracy"] > 0.4, metrics  # chance 1/6
    assert metrics["all_accuracy"] >= 0.1, metrics  # chance 1/180
