"""Shipped configs by name from any directory (`crossflow train t2i/dit_256_clip`); a path still works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crossflow.cli import main as cli_main
from crossflow.config import ConfigError, load_yaml
from crossflow.config_names import find_config, shipped_config_dir, shipped_configs
from crossflow.registry import load_experiment
from helpers.paths import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"


def test_every_repository_config_is_shipped_under_its_name() -> None:
    names = sorted(p.relative_to(CONFIGS).with_suffix("").as_posix() for p in CONFIGS.rglob("*.yaml"))
    assert shipped_configs() == names and "t2i/dit_256_clip" in names
    assert shipped_config_dir().resolve() == CONFIGS.resolve()


@pytest.mark.parametrize("spelling", ["t2i/dit_256_clip", "t2i/dit_256_clip.yaml", "configs/t2i/dit_256_clip.yaml"])
def test_names_resolve_outside_the_clone(spelling: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config(spelling).resolve() == (CONFIGS / "t2i" / "dit_256_clip.yaml").resolve()
    cfg, _ = load_experiment(spelling)
    assert cfg.train.batch_size == 1024


def test_an_existing_path_wins_and_unknown_names_list_the_shipped_ones(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t2i").mkdir()
    (tmp_path / "t2i" / "toy.yaml").write_text("task: {name: t2i}\ntrain: {max_steps: 3}\n")
    assert load_yaml("t2i/toy.yaml")["train"] == {"max_steps": 3}  # the user's file, not the shipped one
    with pytest.raises(ConfigError, match=r"config file not found: t2i/nope .*shipped: .*t2i/dit_256_clip"):
        load_yaml("t2i/nope")


def test_params_and_train_help_work_from_another_directory(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli_main(["params", "configs/t2i/dit_256_clip.yaml"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["velocity_net"] > 1e9
    assert cli_main(["params", "t2i/toy"]) == 0


def test_installed_package_finds_its_configs(tmp_path: Path) -> None:
    """The installed package (not the clone on sys.path) finds the configs: run from an empty directory."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "from crossflow.config_names import find_config; print(find_config('t2i/dit_256_clip'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert Path(out).name == "dit_256_clip.yaml" and Path(out).is_file()
