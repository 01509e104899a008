"""``--help`` lists every key that exists, and only keys that exist: the task section of a config's task,
the config's own values next to the defaults, real keys in examples."""

from __future__ import annotations

import re

import pytest
import yaml

from crossflow.cli import main
from crossflow.cli_help import help_config
from crossflow.config import describe
from crossflow.registry import load_task_class, registered_tasks
from helpers.synthetic_task import tiny_raw_config
from tasks.t2i.config import TextToImageConfig


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    return capsys.readouterr().out


def _rows(text: str) -> dict[str, str]:
    """``key -> rest of the line`` of the config-key listing."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^  ([a-z_]+(?:\.[a-z_0-9]+)+)\s+(.*)$", text, re.M)}


def test_train_config_help_lists_the_task_keys_of_that_config_with_its_values(capsys):
    rows = _rows(_help(["train", "configs/t2i/toy.yaml", "--help"], capsys))
    for key, _, _, _ in describe(TextToImageConfig, "task"):
        assert key in rows, key
    assert "task.language_model.max_length" in rows and "task.toyworld.num_train" in rows
    assert rows["sample.guidance"].startswith("float = 1.1 (default 7.0)")  # the toy's guidance, not the paper's
    assert "model.source_encoder.reduction_layers" not in rows  # the toy VE is arch=tokens


def test_train_help_of_another_task_lists_its_keys(tmp_path, capsys):
    config = tmp_path / "synthetic.yaml"
    config.write_text(yaml.safe_dump(tiny_raw_config()))
    rows = _rows(_help(["train", str(config), "train.max_steps=3", "--help"], capsys))
    assert rows["task.num_items"].startswith("int = 256") and "task.language_model.max_length" not in rows


def test_train_help_without_a_config_says_how_to_see_the_task_keys(capsys):
    text = " ".join(_help(["train", "--help"], capsys).split())
    assert "`crossflow train CONFIG --help` lists them" in text
    for name in registered_tasks():
        assert name in text
    assert "train.log_with" in text and "sample.guidance" in text


@pytest.mark.parametrize("argv, config", [(["train", "c.yaml", "--help"], "c.yaml"),
                                          (["train", "--run-dir", "r", "c.yaml", "a=1", "-h"], "c.yaml"),
                                          (["train", "--help"], None), (["sample", "c.yaml", "--help"], None),
                                          (["train", "c.yaml"], None)])
def test_help_config_finds_the_config_argument(argv, config):
    assert help_config(argv) == config


def test_task_keys_named_in_eval_help_exist_in_some_task(capsys):
    text = _help(["eval", "--help"], capsys)
    named = set(re.findall(r"\btask\.[a-z_]+(?:\.[a-z_]+)*", text))
    assert named, "eval --help names no task key"
    known = {key.partition(" [")[0] for task in registered_tasks()
             for key, _, _, _ in describe(load_task_class(task).config_class, "task")}
    assert named <= known, named - known
