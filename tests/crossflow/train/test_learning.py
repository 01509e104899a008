"""Learning tests: a small model must beat chance by a wide margin (marked slow; CI runs them)."""

from __future__ import annotations

import pytest

from crossflow.task import load_experiment
from crossflow.train.trainer import Trainer


@pytest.mark.slow
def test_synthetic_task_learns_the_class_to_quadrant_map(tiny_config, tmp_path):
    cfg, task_cls = tiny_config(max_steps=150, checkpoint_every=1000, lr=2e-3, warmup_steps=10)
    task = task_cls(cfg)
    trainer = Trainer(cfg, task, tmp_path)
    trainer.fit()
    metrics = task.evaluate(trainer.ema.model, tmp_path / "eval", steps=10)
    assert metrics["accuracy"] >= 0.9  # chance is 0.25


@pytest.mark.slow
def test_toy_text_to_image_beats_chance_by_a_wide_margin(tmp_path):
    """Real MiniLM → VE → DiT on the toy world: ~2 minutes on 2 cores.

    Colour, position and size are the first attributes the model picks up: 300 steps (batch 32) gave colour 1.00,
    position 1.00, size 0.92 (chance 1/6, 1/5, 1/2); shape (0.43) and the null branch need the full demo budget.
    """
    cfg, task_cls = load_experiment("configs/t2i/toy.yaml", [
        "train.max_steps=300", "train.max_minutes=null", "train.checkpoint_every=1000",
        "task.toyworld.num_train=8000", "task.toyworld.num_test=60", "task.preview_prompts=4",
        f"task.cache_dir={tmp_path / 'cache'}", "sample.steps=15"])
    task = task_cls(cfg)
    Trainer(cfg, task, tmp_path / "run").fit()
    from crossflow.inference import load_model

    model, task, _ = load_model(tmp_path / "run")
    metrics = task.evaluate(model, tmp_path / "eval")
    assert metrics["color_accuracy"] >= 0.8, metrics  # chance: 1/6
    assert metrics["position_accuracy"] >= 0.6, metrics  # chance: 1/5
    assert metrics["size_accuracy"] >= 0.7, metrics  # chance: 1/2
    assert (tmp_path / "eval" / "samples" / "prompts.jsonl").is_file()
    assert (tmp_path / "eval" / "trajectory.gif").is_file()
