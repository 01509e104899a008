"""Short learning test of depth: it must beat the mean depth map by a wide margin (marked slow).

It trains a shrunk version of configs/depth/toy.yaml (same code path: config → task → Trainer → export →
pipeline → evaluator) for well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import pytest

from helpers.learning import train_and_load


@pytest.mark.slow
def test_depth_learns_far_better_than_the_mean_depth_map(tmp_path):
    pipe = train_and_load("configs/depth/toy.yaml", tmp_path / "run", [
        "train.max_steps=80", "train.batch_size=32", "task.toyworld.num_train=2000", "task.toyworld.num_test=32",
        "task.toyworld.resolution=16", "model.velocity_net.depth=2"])
    metrics = pipe.task.evaluator().evaluate(pipe, tmp_path / "eval", options=pipe.options(steps=4))
    assert metrics["abs_rel"] < 0.4 * metrics["mean_depth_baseline"]["abs_rel"], metrics  # measured ~0.23x
    assert metrics["delta1"] > 0.9 > metrics["mean_depth_baseline"]["delta1"], metrics
