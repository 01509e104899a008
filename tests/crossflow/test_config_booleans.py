"""YAML 1.2 booleans in configs and overrides: `no`, `yes`, `on`, `off` are the words typed, not False/True."""

from __future__ import annotations

import json

import pytest
import yaml

from crossflow.cli import main as cli_main
from crossflow.config import ConfigError, apply_overrides, load_yaml, parse_overrides
from crossflow.registry import experiment_from_dict, load_experiment
from helpers.synthetic_task import tiny_raw_config


def test_overrides_keep_the_words_as_typed() -> None:
    assert parse_overrides(["a=no", "b=yes", "c=on", "d=off", "e=true", "f=False", "g=[no, true]"]) == [
        ("a", "no"), ("b", "yes"), ("c", "on"), ("d", "off"), ("e", True), ("f", False), ("g", ["no", True])]


def test_mixed_precision_no_from_the_command_line_and_from_a_file(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_raw_config()))
    cfg, _ = load_experiment(path, ["train.mixed_precision=no"])
    assert cfg.train.mixed_precision == "no"
    raw = tiny_raw_config()
    text = yaml.safe_dump(raw).replace("train:\n", "train:\n  mixed_precision: no\n  ema_warmup: false\n")
    path.write_text(text)
    assert load_yaml(path)["train"]["mixed_precision"] == "no"
    cfg, _ = load_experiment(path)
    assert cfg.train.mixed_precision == "no" and cfg.train.ema_warmup is False


def test_bool_fields_take_true_false_and_name_the_yaml_1_1_words() -> None:
    raw = apply_overrides(tiny_raw_config(), parse_overrides(["train.ema_warmup=false", "train.compile=True"]))
    cfg, _ = experiment_from_dict(raw)
    assert cfg.train.ema_warmup is False and cfg.train.compile is True
    with pytest.raises(ConfigError, match=r"train\.ema_warmup: expected bool \(true or false\), got str 'yes'"):
        experiment_from_dict(apply_overrides(tiny_raw_config(), parse_overrides(["train.ema_warmup=yes"])))


def test_params_command_accepts_mixed_precision_no(tmp_path, capsys) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_raw_config()))
    assert cli_main(["params", str(path), "train.mixed_precision=no"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["total"] > 0
