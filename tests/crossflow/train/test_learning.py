"""Learning test of the trainer: a small model must beat chance by a wide margin (marked slow; CI runs it)."""

from __future__ import annotations

import pytest

from crossflow.pipeline import Pipeline
from crossflow.train.trainer import Trainer


@pytest.mark.slow
def test_synthetic_task_learns_the_class_to_quadrant_map(tiny_config, tmp_path):
    cfg, task_cls = tiny_config(max_steps=150, checkpoint_every=1000, lr=2e-3, warmup_steps=10)
    task = task_cls(cfg)
    trainer = Trainer(cfg, task, tmp_path)
    trainer.fit()
    pipe = Pipeline(trainer.ema.model, task)
    metrics = task.evaluator().evaluate(pipe, tmp_path / "eval", options=pipe.options(steps=10))
    assert metrics["accuracy"] >= 0.9  # chance is 0.25
