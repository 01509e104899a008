"""Experiment tracking as accelerate users know it: ``train.log_with`` feeds accelerate's trackers; the JSONL
log stays, needs nothing installed, and is the default."""

from __future__ import annotations

import json

import pytest
import yaml
from accelerate.tracking import GeneralTracker, get_available_trackers, register_tracker_class

from crossflow.cli import main
from crossflow.config import ConfigError, from_dict
from crossflow.schema import TrainConfig
from crossflow.train.logger import resolve_trackers
from crossflow.train.trainer import Trainer
from helpers.synthetic_task import tiny_raw_config


class RecordingTracker(GeneralTracker):
    """A tracker registered with accelerate under the name ``recording``; keeps what it is given in memory."""

    name = "recording"
    requires_logging_directory = True
    runs: list[dict] = []

    def __init__(self, run_name: str, logging_dir, **kwargs) -> None:
        super().__init__()
        self.run = {"project": run_name, "dir": str(logging_dir), "config": None, "rows": [], "finished": False}
        RecordingTracker.runs.append(self.run)

    @property
    def tracker(self) -> dict:
        return self.run

    def store_init_configuration(self, values: dict) -> None:
        self.run["config"] = dict(values)

    def log(self, values: dict, step=None, **kwargs) -> None:
        self.run["rows"].append((step, dict(values)))

    def finish(self) -> None:
        self.run["finished"] = True


register_tracker_class(RecordingTracker)


def test_log_with_feeds_accelerate_trackers_next_to_the_jsonl_log(tiny_config, tmp_path):
    RecordingTracker.runs.clear()
    cfg, task_cls = tiny_config(max_steps=10, log_every=5, log_with=["recording"], project_name="sweep")
    run_dir = tmp_path / "run"
    Trainer(cfg, task_cls(cfg), run_dir).fit()
    assert len(RecordingTracker.runs) == 1
    run = RecordingTracker.runs[0]
    assert run["project"] == "sweep" and run["dir"] == str(run_dir) and run["finished"]
    assert run["config"]["train.lr"] == pytest.approx(1e-3) and run["config"]["train.log_with"] == "['recording']"
    assert all(isinstance(v, (bool, int, float, str)) for v in run["config"].values())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [step for step, _ in run["rows"]] == [row["step"] for row in rows] == [5, 10]
    for (_, values), row in zip(run["rows"], rows):
        assert values["loss"] == pytest.approx(row["loss"]) and "lr" in values and "time" not in values


def test_without_log_with_only_the_jsonl_log_is_written(tiny_config, tmp_path):
    RecordingTracker.runs.clear()
    cfg, task_cls = tiny_config(max_steps=5, log_every=5)
    assert cfg.train.log_with == []
    Trainer(cfg, task_cls(cfg), tmp_path / "run").fit()
    assert RecordingTracker.runs == [] and (tmp_path / "run" / "metrics.jsonl").is_file()


def test_tracker_names_are_checked_against_accelerate_and_the_installed_packages():
    assert resolve_trackers([]) is None
    assert resolve_trackers(["recording", "recording"]) == ["recording"]
    with pytest.raises(ConfigError, match=r"train.log_with: unknown tracker 'tensorbord'; accelerate knows .*tensorboard"):
        resolve_trackers(["tensorbord"])
    missing = [t for t in ("tensorboard", "wandb", "mlflow") if t not in {str(a) for a in get_available_trackers()}]
    if missing:  # accelerate itself would drop it with a debug message
        with pytest.raises(ConfigError, match=rf"'{missing[0]}' needs its package \(pip install {missing[0]}\)"):
            resolve_trackers([missing[0]])


def test_the_deprecated_tensorboard_switch_means_log_with_tensorboard():
    assert from_dict(TrainConfig, {"tensorboard": True}).log_with == ["tensorboard"]
    assert from_dict(TrainConfig, {"tensorboard": True, "log_with": ["tensorboard"]}).log_with == ["tensorboard"]


def test_an_unknown_tracker_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config()))
    code = main(["train", str(config), "--run-dir", str(tmp_path / "run"), "train.log_with=[nosuchtracker]"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "train.log_with" in err
