"""Shared fixtures: the synthetic task's tiny configs and trained run, tiny CLIP / T5 / VAE checkpoints.

Helper code lives in the ``helpers`` package (tests/helpers); tests import it from there, never from here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crossflow.registry import experiment_from_dict
from helpers.synthetic_task import tiny_raw_config
from helpers.tiny_models import make_tiny_clip, make_tiny_t5, make_tiny_vae


@pytest.fixture(scope="session", autouse=True)
def user_cache_in_tmp(tmp_path_factory):
    """Point the user cache (``CROSSFLOW_CACHE_DIR``) at a session temp folder: tests never write ~/.cache.

    Child processes inherit it through ``os.environ``.
    """
    with pytest.MonkeyPatch.context() as mp:
        cache = tmp_path_factory.mktemp("user_cache")
        mp.setenv("CROSSFLOW_CACHE_DIR", str(cache))
        yield cache


@pytest.fixture
def tiny_config():
    """``make(**train) -> (cfg, task_cls)``: the synthetic task's tiny config with ``train`` overrides."""
    def make(**train):
        return experiment_from_dict(tiny_raw_config(**train))
    return make


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    """A run directory of the synthetic task trained for 20 steps (about 2 s); shared, do not write into it."""
    from crossflow.train.trainer import Trainer

    cfg, task_cls = experiment_from_dict(tiny_raw_config(max_steps=20))
    run_dir = tmp_path_factory.mktemp("synthetic_run")
    Trainer(cfg, task_cls(cfg), run_dir).fit()
    return run_dir


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A whole tiny ``CLIPModel`` (text + 32 px vision tower) with its tokenizer."""
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), full_clip=True)


@pytest.fixture(scope="session")
def tiny_clip_text(tmp_path_factory) -> Path:
    """The text tower alone (``CLIPTextModel``), as text-encoder checkpoints are saved."""
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip_text"))


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    """A tiny T5 encoder-decoder with a unigram tokenizer."""
    return make_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory) -> Path:
    """A tiny SD-style AutoencoderKL (8× downsampling, 4 latent channels)."""
    return make_tiny_vae(tmp_path_factory.mktemp("tiny_vae"))
