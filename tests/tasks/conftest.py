"""Fixtures shared by the task tests: the toy text-to-image model trained once per session for the learning tests."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The toy T2I learning run: 300 steps of `configs/t2i/toy.yaml` (batch 32) on 8,000 scenes, ~2 minutes on 2 cores.
TOY_T2I_OVERRIDES = ["train.max_steps=300", "train.max_minutes=null", "train.checkpoint_every=1000",
                     "task.toyworld.num_train=8000", "task.toyworld.num_test=60", "task.preview_prompts=4",
                     "sample.steps=15"]


@pytest.fixture(scope="session")
def toy_t2i_run(tmp_path_factory) -> Path:
    """Run directory of the toy text-to-image CrossFlow trained with :data:`TOY_T2I_OVERRIDES` (its prompt
    embeddings cached in ``cache/`` next to it). Trained once and shared by the slow learning tests of
    text-to-image and of captioning by T2I inversion; do not write into it."""
    from crossflow.registry import load_experiment
    from crossflow.train.trainer import Trainer

    root = tmp_path_factory.mktemp("toy_t2i")
    cfg, task_cls = load_experiment("configs/t2i/toy.yaml", [*TOY_T2I_OVERRIDES, f"task.cache_dir={root / 'cache'}"])
    Trainer(cfg, task_cls(cfg), root / "run").fit()
    return root / "run"
