"""Train a shrunk toy config through the whole path (config → task → Trainer → export → pipeline)."""

from __future__ import annotations

from pathlib import Path

from crossflow.pipeline import Pipeline
from crossflow.registry import load_experiment
from crossflow.train.trainer import Trainer


def train_and_load(config: str, run_dir: Path, overrides: list[str]) -> Pipeline:
    """Train ``config`` with ``overrides`` (no time budget, no intermediate checkpoints or log rows) into
    ``run_dir`` and load its export into a CPU pipeline."""
    cfg, task_cls = load_experiment(config, ["train.max_minutes=null", "train.checkpoint_every=1000",
                                             "train.log_every=1000", "train.warmup_steps=10", *overrides])
    Trainer(cfg, task_cls(cfg), run_dir).fit()
    return Pipeline.from_pretrained(run_dir, device="cpu")


def synthetic_accuracy(raw: dict, run_dir: Path, steps: int = 10) -> float:
    """Train the synthetic task of config ``raw`` into ``run_dir``; quadrant accuracy of its EMA model."""
    from crossflow.registry import experiment_from_dict

    cfg, task_cls = experiment_from_dict(raw)
    task = task_cls(cfg)
    trainer = Trainer(cfg, task, run_dir)
    trainer.fit()
    pipe = Pipeline(trainer.ema.model, task)
    return task.evaluator().evaluate(pipe, run_dir / "eval", options=pipe.options(steps=steps))["accuracy"]
