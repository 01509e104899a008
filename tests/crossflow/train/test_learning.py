"""Learning test of the trainer: a small model must beat chance by a wide margin (marked slow; CI runs it)."""

from __future__ import annotations

import pytest

from helpers.learning import synthetic_accuracy
from helpers.synthetic_task import tiny_raw_config


@pytest.mark.slow
def test_synthetic_task_learns_the_class_to_quadrant_map(tmp_path):
    raw = tiny_raw_config(max_steps=150, checkpoint_every=1000, lr=2e-3, warmup_steps=10)
    assert synthetic_accuracy(raw, tmp_path) >= 0.9  # chance is 0.25
