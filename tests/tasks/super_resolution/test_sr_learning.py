"""Short learning test of super-resolution: it must beat bicubic upsampling by a wide margin (marked slow)."""

from __future__ import annotations

import pytest

from helpers.learning import train_and_load


@pytest.mark.slow
def test_super_resolution_beats_bicubic(tmp_path):
    pipe = train_and_load("configs/super_resolution/toy.yaml", tmp_path / "run", [
        "train.max_steps=80", "train.batch_size=32", "task.toyworld.num_train=2000", "task.toyworld.num_test=32",
        "task.toyworld.resolution=16", "task.scale=2", "model.velocity_net.depth=2"])
    metrics = pipe.task.evaluator().evaluate(pipe, tmp_path / "eval", options=pipe.options(steps=4))
    assert metrics["psnr"] > metrics["bicubic"]["psnr"] + 3.0, metrics  # measured +5.5 dB
