"""Short learning test of captioning: text VAE, then image → text latent, names attributes far above chance
(marked slow)."""

from __future__ import annotations

import pytest

from helpers.learning import train_and_load


@pytest.mark.slow
def test_captioning_text_vae_then_flow_names_attributes_far_above_chance(tmp_path):
    """Stage 1 (text VAE, run by the task through the same trainer) then stage 2 (image → text latent)."""
    tvae = tmp_path / "text_vae"
    pipe = train_and_load("configs/captioning/toy.yaml", tmp_path / "run", [
        f"task.text_vae_dir={tvae}",
        "task.text_vae_overrides=[train.max_steps=250,train.max_minutes=null,task.toyworld.num_train=4000]",
        "train.max_steps=600", "train.batch_size=32", "task.toyworld.num_train=2000", "task.toyworld.num_test=36",
        "task.toyworld.resolution=16", "model.velocity_net.depth=2"])
    assert (tvae / "export" / "model.safetensors").is_file()
    metrics = pipe.task.evaluator().evaluate(pipe, tmp_path / "eval")
    assert metrics["text_vae_reconstruction"]["token_accuracy"] >= 0.95
    assert metrics["color_accuracy"] > 0.4, metrics  # chance 1/6
    assert metrics["all_accuracy"] >= 0.1, metrics  # chance 1/180
