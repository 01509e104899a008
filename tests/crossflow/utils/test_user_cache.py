"""The user cache: one folder per user ($CROSSFLOW_CACHE_DIR, $XDG_CACHE_HOME/crossflow, ~/.cache/crossflow),
not ./.cache of whatever directory a command runs in."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from crossflow.cli import main
from crossflow.registry import experiment_from_dict
from crossflow.train.trainer import export_model
from crossflow.utils.cache import CACHE_ENV_VAR, user_cache_dir
from helpers.tiny_t2i import tiny_t2i_raw


def test_user_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir("embeddings") == tmp_path / "mine" / "embeddings"
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert user_cache_dir() == tmp_path / "xdg" / "crossflow"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_cache_dir("x") == tmp_path / "home" / ".cache" / "crossflow" / "x"


def test_t2i_embedding_cache_defaults_to_the_user_cache_and_task_cache_dir_overrides_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = tiny_t2i_raw(tmp_path / "unused")
    raw["task"].pop("cache_dir")
    cfg, task_cls = experiment_from_dict(raw)
    encoder = task_cls(cfg).source_processor()
    assert encoder.cache_dir == user_cache_dir("embeddings") and encoder.cache_dir.is_absolute()
    raw["task"]["cache_dir"] = str(tmp_path / "mine")
    cfg, task_cls = experiment_from_dict(raw)
    assert task_cls(cfg).source_processor().cache_dir == tmp_path / "mine"


def test_sampling_from_two_directories_shares_one_cache_and_litters_neither(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "user_cache"))
    raw = tiny_t2i_raw(tmp_path / "unused")
    raw["task"].pop("cache_dir")  # the default, as in the shipped configs
    cfg, task_cls = experiment_from_dict(raw)
    export = export_model(task_cls(cfg).build_model().state_dict(), cfg, tmp_path / "export")
    assert yaml.safe_load((export / "config.yaml").read_text())["task"]["cache_dir"] is None
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        code = main(["sample", str(export), "--prompt", "a small red circle in the center", "--out", "out",
                     "--steps", "2"])
        assert code == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["outputs"] == 1
        assert sorted(p.name for p in Path.cwd().iterdir()) == ["out"]  # no ./.cache
    indexes = list((tmp_path / "user_cache" / "embeddings").rglob("index.json"))
    assert len(indexes) == 1 and len(json.loads(indexes[0].read_text())["entries"]) >= 1
