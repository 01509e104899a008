"""Shared fixtures: tiny experiment configs for fast trainer tests."""

from __future__ import annotations

import pytest

from crossflow.task import experiment_from_dict


def tiny_raw_config(**train) -> dict:
    """A complete raw config of the synthetic task with a very small model."""
    return {
        "task": {"name": "synthetic_task:SyntheticTask", "num_items": 256},
        "model": {"source_encoder": {"width": 32, "depth": 1, "num_heads": 2, "num_queries": 2},
                  "velocity_net": {"patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 2},
                  "contrastive": {"widths": [8, 16], "hidden_dim": 32}},
        "flow": {"null_probability": 0.2},
        "train": {"batch_size": 16, "max_steps": 20, "lr": 1e-3, "warmup_steps": 2, "checkpoint_every": 10,
                  "log_every": 5, "seed": 3, **train},
        "sample": {"steps": 10, "guidance": 1.0, "batch_size": 32},
    }


@pytest.fixture
def tiny_config():
    def make(**train):
        return experiment_from_dict(tiny_raw_config(**train))
    return make
